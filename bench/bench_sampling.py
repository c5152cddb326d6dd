"""Gumbel-top-k sampling and the RSD-S beam step. Floor: the logits read once
(the noise is generated in-kernel on the seed path)."""
import pytest
import torch

from benchutil import DEVICE, ON_GPU, backend_params, run
from rsd_kernels import sample_without_replacement, stochastic_beam_step

# (R, V, k): first the goal shape of issue 21 (64 rows of Llama 2's vocabulary, k=4), then a draft level
# of a budget-30 tree, more rows, Llama 3's vocabulary
SAMPLE_SHAPES = [(64, 32000, 4), (30, 32000, 4), (256, 32000, 4), (64, 128256, 8)] if ON_GPU else [(8, 4096, 4)]
BEAM_SHAPES = [(1, 5, 32000, 5), (8, 4, 128256, 8), (32, 8, 32000, 8)] if ON_GPU else [(2, 4, 4096, 4)]  # (B, N, V, W)


@pytest.mark.parametrize("shape", SAMPLE_SHAPES, ids=lambda s: "R{}_V{}_k{}".format(*s))
@pytest.mark.parametrize("backend", backend_params("sample_without_replacement"))
def test_sample_without_replacement(benchmark, backend, shape):
    R, V, k = shape
    logits = torch.randn(R, V, device=DEVICE, dtype=torch.bfloat16 if ON_GPU else torch.float32)
    fn = lambda: sample_without_replacement(logits, k, seed=1, validate=False, backend=backend)  # noqa: E731
    run(benchmark, fn, R * V * logits.element_size(), rows=R, op="sample_without_replacement", backend=backend,
        shape=str(shape))


@pytest.mark.parametrize("shape", BEAM_SHAPES, ids=lambda s: "B{}_N{}_V{}_W{}".format(*s))
@pytest.mark.parametrize("backend", backend_params("stochastic_beam_step"))
def test_stochastic_beam_step(benchmark, backend, shape):
    B, N, V, W = shape
    logits = torch.randn(B, N, V, device=DEVICE, dtype=torch.bfloat16 if ON_GPU else torch.float32)
    phi = -torch.rand(B, N, device=DEVICE)
    G = torch.randn(B, N, device=DEVICE)
    fn = lambda: stochastic_beam_step(logits, phi, G, W, seed=2, validate=False, backend=backend)  # noqa: E731
    run(benchmark, fn, B * N * V * logits.element_size(), rows=B * N, op="stochastic_beam_step", backend=backend,
        shape=str(shape))
