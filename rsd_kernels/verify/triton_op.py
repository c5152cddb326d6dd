"""Registers the Triton kernels as the ``"triton"`` backend of ``verify_tree``."""
from ..backends import register
from . import traversal_triton
from .traversal_reference import with_traversal
from .triton_kernel import verify

register("verify_tree", "triton")(with_traversal(verify, traversal_triton.verify))
