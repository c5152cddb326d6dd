"""Registers the PyTorch reference as the ``"torch"`` backend of ``verify_tree``."""
from ..backends import register
from . import traversal_reference
from .reference import verify

register("verify_tree", "torch")(traversal_reference.with_traversal(verify, traversal_reference.verify))
