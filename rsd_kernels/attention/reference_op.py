"""Registers the PyTorch reference as the ``"torch"`` backend of tree attention."""
from ..backends import register
from .reference import tree_attention

register("tree_attention", "torch")(tree_attention)
