"""Registers the Triton kernel as the ``"triton"`` backend of ``tree_attention``."""
from ..backends import register
from .triton_kernel import tree_attention

register("tree_attention", "triton")(tree_attention)
