"""Registers the Triton kernels as the ``"triton"`` backend of the sampling ops."""
from ..backends import register
from .triton_kernel import beam_step, sample_topk

register("sample_without_replacement", "triton")(sample_topk)
register("stochastic_beam_step", "triton")(beam_step)
