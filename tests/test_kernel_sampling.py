"""Kernel backends of the sampling ops against the PyTorch reference.

Gumbel-top-k and the RSD-S beam step, token for token given the same explicit noise and on
the seed path (Philox noise generated in-kernel vs the reference's materialised stream), on
fresh random logits: several (R, V, k), per-row k, temperature 0, -inf logits (support < k),
all dtypes, a vocabulary spread over several tiles, inactive beams. Plus a chi-square test
that the in-kernel Philox draws are exact samples without replacement (first two tokens),
with a negative control.
"""
import pytest
import torch

from conftest import kernel_backend_params
from rsd_kernels import noise, sample_without_replacement, stochastic_beam_step

scipy_stats = pytest.importorskip("scipy.stats")

SAMPLE = kernel_backend_params("sample_without_replacement")
BEAM = kernel_backend_params("stochastic_beam_step")
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _check_sample(got, want):
    assert torch.equal(got.tokens.cpu(), want.tokens.cpu()), f"{got.tokens}\n{want.tokens}"
    assert torch.equal(got.num_sampled.cpu(), want.num_sampled.cpu())
    assert torch.allclose(got.logprobs.cpu(), want.logprobs.cpu(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", SAMPLE)
@pytest.mark.parametrize("R,V,k", [(1, 7, 1), (3, 50, 4), (5, 333, 9), (2, 3000, 16), (4, 64, 64)])
def test_sample_matches_reference(backend, R, V, k, device):
    gen = torch.Generator().manual_seed(R * 1000 + V + k)
    for i, dtype in enumerate(DTYPES):
        logits = (torch.randn(R, V, generator=gen) * 2).to(dtype)
        if V > 2 * k:  # a row with a small support: fewer than k tokens come back
            logits[0, : V - max(1, k // 2)] = float("-inf")
        logits = logits.to(device)
        kk = torch.randint(1, k + 1, (R,), generator=gen).to(device) if i % 2 else k
        temperature = [1.0, 0.6, 1.7, 1.0][i]
        g = noise.gumbel_noise(50 + i, i, R, V, device=device)
        for kw in (dict(gumbel=g), dict(seed=9 + i, offset=3 * i)):
            want = sample_without_replacement(logits, kk, temperature=temperature, backend="torch", **kw)
            _check_sample(sample_without_replacement(logits, kk, temperature=temperature, backend=backend, **kw),
                          want)


@pytest.mark.parametrize("backend", SAMPLE)
def test_sample_greedy_topk_warp_and_tiles(backend, device):
    from rsd_kernels.sampling import reference, triton_kernel

    gen = torch.Generator().manual_seed(5)
    R, V = 3, 500
    logits = torch.randn(R, V, generator=gen).to(device)  # continuous: no ties at temperature 0
    for kw in (dict(temperature=0.0), dict(temperature=0.8, top_k=20, seed=4), dict(top_p=0.9, seed=5)):
        want = sample_without_replacement(logits, 6, backend="torch", **kw)
        _check_sample(sample_without_replacement(logits, 6, backend=backend, **kw), want)
    if backend == "triton":  # several vocabulary tiles, the running top-k merged across them
        k = torch.tensor([5, 1, 12], dtype=torch.int32, device=device)
        g = noise.gumbel_noise(1, 0, R, V, device=device)
        want = reference.sample_topk(logits, k, 12, 1.0, gumbel=g)
        got = triton_kernel.sample_topk(logits, k, 12, 1.0, gumbel=g, block_v=32)
        for a, b in zip(got, want):
            assert torch.allclose(a.cpu().double(), b.cpu().double(), atol=1e-5)


def _check_beam(got, want):
    assert torch.equal(got.parent.cpu(), want.parent.cpu()), f"{got.parent}\n{want.parent}"
    assert torch.equal(got.tokens.cpu(), want.tokens.cpu())
    for a, b in ((got.phi, want.phi), (got.G, want.G)):
        assert a.dtype == b.dtype
        assert torch.allclose(a.cpu(), b.cpu(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BEAM)
@pytest.mark.parametrize("B,N,V,W", [(1, 1, 9, 1), (2, 3, 40, 4), (3, 4, 257, 6), (1, 2, 30, 45)])
def test_beam_step_matches_reference(backend, B, N, V, W, device):
    gen = torch.Generator().manual_seed(B * 100 + N * 10 + V + W)
    for i, dtype in enumerate(DTYPES):
        logits = (torch.randn(B, N, V, generator=gen) * 1.5).to(dtype).to(device)
        phi = -3 * torch.rand(B, N, generator=gen)
        if N > 1:
            phi[0, -1] = float("-inf")  # an inactive beam
        G = torch.randn(B, N, generator=gen)
        phi, G = phi.to(device), G.to(device)
        g = noise.gumbel_noise(70 + i, 0, B * N, V, device=device).view(B, N, V)
        for kw in (dict(gumbel=g), dict(seed=13 + i, offset=i)):
            want = stochastic_beam_step(logits, phi, G, W, temperature=[1.0, 0.8][i % 2], backend="torch", **kw)
            got = stochastic_beam_step(logits, phi, G, W, temperature=[1.0, 0.8][i % 2], backend=backend, **kw)
            _check_beam(got, want)


# ---------------- statistical exactness of the in-kernel Philox draws ----------------
def _pair_pvalue(backend, probs, n, seed, device, shift_row=None):
    """Chi-square p-value of the (first, second) token pairs of n rows against sampling w/o replacement."""
    V = probs.numel()
    logits = torch.log(probs)[None].expand(n, V).contiguous()
    if shift_row is not None:  # negative control: the kernel is fed other logits than the ones tested
        logits = logits + shift_row
    res = sample_without_replacement(logits.to(device), 2, seed=seed, backend=backend)
    tok = res.tokens.cpu()
    counts = torch.zeros(V, V, dtype=torch.float64)
    counts.index_put_((tok[:, 0], tok[:, 1]), torch.ones(n, dtype=torch.float64), accumulate=True)
    p = probs.double()
    expected = p[:, None] * p[None, :] / (1 - p[:, None])
    expected.fill_diagonal_(0)
    keep = expected > 0
    e = expected[keep] / expected[keep].sum() * n
    return float(scipy_stats.chisquare(counts[keep].numpy(), e.numpy()).pvalue)


@pytest.mark.slow
@pytest.mark.parametrize("backend", SAMPLE)
def test_philox_sampling_is_exact(backend, device):
    probs = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08])
    assert _pair_pvalue(backend, probs, 500, seed=21, device=device) > 1e-3
    # negative control: a different distribution must be rejected by the same statistic
    shift = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.5])
    assert _pair_pvalue(backend, probs, 300, seed=21, device=device, shift_row=shift) < 1e-6
