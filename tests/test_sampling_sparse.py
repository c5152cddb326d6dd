"""The reference samplers' sparse paths (rows that are mostly -inf: a restricted-head draft) give what
the dense paths give, token for token and bit for bit in the scores, with seeded and explicit noise; and
the C++ Philox (rsd_kernels.cpu_philox) gives the NumPy Philox's numbers bit for bit."""
import pytest
import torch

from rsd_kernels import cpu_philox, noise
from rsd_kernels.sampling import reference as ref


def restricted_logits(shape, kept_frac, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    V = shape[-1]
    x = (torch.randn(*shape, generator=g, dtype=torch.float64) * 3).to(dtype)
    kept = torch.randperm(V, generator=g)[: int(V * kept_frac)]
    mask = torch.full((V,), float("-inf"), dtype=dtype)
    mask[kept] = 0
    return x + mask


@pytest.fixture
def paths(monkeypatch):
    def run(fn, *a, sparse):
        monkeypatch.setattr(ref, "SPARSE_BELOW", 1.01 if sparse else 0.0)
        return fn(*a)
    return run


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("R,V,kmax", [(1, 49152, 1), (3, 4096, 4), (5, 8192, 8)])
def test_sample_topk_sparse_equals_dense(paths, R, V, kmax, dtype):
    for seed in range(3):
        logits = restricted_logits((R, V), 1 / 6, seed, dtype)
        k = torch.randint(1, kmax + 1, (R,), generator=torch.Generator().manual_seed(seed)).to(torch.int32)
        for kw in ({"seed": 11 + seed, "offset": 3}, {"gumbel": noise.gumbel_noise(5, seed, R, V)}):
            args = (logits, k, kmax, 0.7, kw.get("gumbel"), kw.get("seed"), kw.get("offset", 0))
            d = paths(ref.sample_topk, *args, sparse=False)
            s = paths(ref.sample_topk, *args, sparse=True)
            for a, b in zip(d, s):
                assert torch.equal(a, b)


def test_sample_topk_sparse_more_samples_than_support(paths):
    logits = restricted_logits((2, 4096), 0.001, 0)  # 4 finite tokens per row
    k = torch.tensor([6, 2], dtype=torch.int32)
    d = paths(ref.sample_topk, logits, k, 6, 1.0, None, 1, 0, sparse=False)
    s = paths(ref.sample_topk, logits, k, 6, 1.0, None, 1, 0, sparse=True)
    assert all(torch.equal(a, b) for a, b in zip(d, s))
    assert d[2].tolist() == [4, 2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,N,V,W", [(1, 1, 49152, 2), (1, 2, 8192, 3), (3, 4, 4096, 5)])
def test_beam_step_sparse_equals_dense(paths, B, N, V, W, dtype):
    for seed in range(3):
        g = torch.Generator().manual_seed(100 + seed)
        logits = restricted_logits((B, N, V), 1 / 6, seed, dtype)
        phi = -torch.rand(B, N, generator=g, dtype=torch.float64).to(dtype) * 3
        G = torch.randn(B, N, generator=g, dtype=torch.float64).to(dtype)
        if N > 1:
            phi[0, -1] = float("-inf")  # an inactive beam
        for kw in ({"seed": 7 + seed, "offset": 2}, {"gumbel": noise.gumbel_noise(9, seed, B * N, V).view(B, N, V)}):
            args = (logits, phi, G, W, 0.8, kw.get("gumbel"), kw.get("seed"), kw.get("offset", 0))
            d = paths(ref.beam_step, *args, sparse=False)
            s = paths(ref.beam_step, *args, sparse=True)
            for a, b in zip(d, s):
                assert torch.equal(a, b), (a, b)


def test_cpu_philox_equals_numpy():
    if cpu_philox.extension() is None:
        pytest.skip(f"C++ Philox not built here: {cpu_philox.unavailable_reason()}")
    g = torch.Generator().manual_seed(0)
    for seed in (0, 1, 2**40 + 17, 2**63 - 1):
        counters = [torch.randint(0, 2**32, (1000,), generator=g), torch.arange(7)[:, None],
                    torch.tensor(noise.STREAM_GUMBEL), torch.randint(-2**40, 2**40, (1, 1000), generator=g)]
        fast = noise.philox4x32(seed, *counters)
        slow = noise.philox4x32(seed, *counters, numpy=True)
        assert fast[0].shape == (7, 1000)
        assert all(torch.equal(a, b) for a, b in zip(fast, slow))
    # the streams themselves, as the samplers and the verifier draw them
    u_fast = noise.verify_noise(3, 5, 2, 11, 4096)
    cpu_philox._state_backup = dict(cpu_philox._state)
    try:
        cpu_philox._state["ext"] = None
        u_slow = noise.verify_noise(3, 5, 2, 11, 4096)
    finally:
        cpu_philox._state.clear()
        cpu_philox._state.update(cpu_philox._state_backup)
    assert all(torch.equal(a, b) for a, b in zip(u_fast, u_slow))


def test_cpu_philox_falls_back_cleanly(monkeypatch):
    """No compiler, no sources or disabled: NumPy's numbers, a reason, no exception."""
    monkeypatch.setattr(cpu_philox, "_state", {})
    monkeypatch.setenv(cpu_philox.ENV_DISABLE, "test")
    assert cpu_philox.extension() is None and "test" in cpu_philox.unavailable_reason()
    a = noise.philox4x32(1, 2, torch.arange(3), 4, 5)
    assert all(torch.equal(x, y) for x, y in zip(a, noise.philox4x32(1, 2, torch.arange(3), 4, 5, numpy=True)))
    monkeypatch.setattr(cpu_philox, "_state", {})
    monkeypatch.delenv(cpu_philox.ENV_DISABLE)
    monkeypatch.setattr(cpu_philox, "source", lambda: None)
    with pytest.warns(RuntimeWarning, match="could not be built"):
        assert cpu_philox.extension() is None
