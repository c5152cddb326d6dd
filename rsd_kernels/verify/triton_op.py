"""Registers the Triton kernel as the ``"triton"`` backend of ``verify_tree``."""
from ..backends import register
from .triton_kernel import verify

register("verify_tree", "triton")(verify)
