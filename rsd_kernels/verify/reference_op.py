"""Registers the PyTorch reference as the ``"torch"`` backend of ``verify_tree``."""
from ..backends import register
from .reference import verify

register("verify_tree", "torch")(verify)
