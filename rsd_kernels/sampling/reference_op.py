"""Registers the PyTorch reference as the ``"torch"`` backend of the sampling ops."""
from ..backends import register
from .reference import beam_step, sample_topk

register("sample_without_replacement", "torch")(sample_topk)
register("stochastic_beam_step", "torch")(beam_step)
