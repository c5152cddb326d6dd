import itertools
import math

import pytest
import torch
from scipy.stats import chisquare

import rsd_kernels as rk
from rsd_kernels import noise
from rsd_kernels.sampling.reference import truncated_gumbel


def without_replacement_law(p, k):
    """Exact probability of each ordered k-tuple drawn without replacement from p."""
    out = {}
    for seq in itertools.permutations(range(len(p)), k):
        prob, left = 1.0, 1.0
        for x in seq:
            prob *= p[x] / left
            left -= p[x]
        out[seq] = prob
    return out


def test_gumbel_topk_matches_without_replacement_law():
    torch.manual_seed(0)
    logits = torch.tensor([1.0, 0.2, -0.5, 0.7, -1.5], dtype=torch.float64)
    p = torch.softmax(logits, -1).tolist()
    law = without_replacement_law(p, 2)
    n = 40000
    r = rk.sample_without_replacement(logits.expand(n, 5).contiguous(), 2, seed=11)
    seqs = [tuple(t) for t in r.tokens.tolist()]
    keys = sorted(law)
    obs = [seqs.count(k) for k in keys]
    exp = [law[k] * n for k in keys]
    assert sum(obs) == n
    assert chisquare(obs, exp).pvalue > 1e-3
    # negative control: "top-k of logits plus uniform noise" is not the law and must be caught
    bad = torch.topk(logits + torch.rand(n, 5, dtype=torch.float64), 2).indices.tolist()
    obs_bad = [[tuple(t) for t in bad].count(k) for k in keys]
    assert chisquare(obs_bad, exp).pvalue < 1e-6


def test_outputs_logprobs_and_support():
    logits = torch.tensor([[0.0, 1.0, float("-inf"), 2.0], [float("-inf"), 3.0, float("-inf"), float("-inf")]])
    r = rk.sample_without_replacement(logits, torch.tensor([3, 2]), seed=1)
    assert r.num_sampled.tolist() == [3, 1]
    assert r.tokens[1].tolist() == [1, -1, -1]
    assert set(r.tokens[0].tolist()) == {0, 1, 3}  # -inf is never drawn
    lp = torch.log_softmax(logits, -1)
    assert torch.allclose(r.logprobs[0], lp[0, r.tokens[0]])
    assert r.logprobs[1, 0] == 0 and torch.isinf(r.logprobs[1, 1:]).all()


def test_explicit_noise_equals_seed_stream_and_greedy():
    logits = torch.randn(6, 50)
    a = rk.sample_without_replacement(logits, 4, seed=5, offset=3)
    b = rk.sample_without_replacement(logits, 4, gumbel=noise.gumbel_noise(5, 3, 6, 50))
    assert torch.equal(a.tokens, b.tokens)
    g = rk.sample_without_replacement(logits, 4, temperature=0)
    assert torch.equal(g.tokens, torch.topk(logits, 4).indices)


def test_temperature_and_warps():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
    r = rk.sample_without_replacement(logits.expand(200, 5).contiguous(), 2, top_k=2, seed=0)
    assert set(r.tokens.flatten().tolist()) == {0, 1}
    r = rk.sample_without_replacement(logits.expand(200, 5).contiguous(), 1, top_p=0.5, seed=0)
    assert set(r.tokens.flatten().tolist()) == {0}  # p(0) = 0.64 >= 0.5 already
    w = rk.warp_logits(logits, 0.5)
    assert torch.allclose(w, logits * 2)


def test_sampling_bad_input():
    x = torch.randn(2, 5)
    with pytest.raises(ValueError, match="larger than the vocabulary"):
        rk.sample_without_replacement(x, 6)
    with pytest.raises(ValueError, match="k must be >= 1"):
        rk.sample_without_replacement(x, 0)
    with pytest.raises(ValueError, match="temperature must be finite and >= 0"):
        rk.sample_without_replacement(x, 1, temperature=-1.0)
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="logits contains NaN"):
        rk.sample_without_replacement(bad, 1)
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match=r"logits contains \+inf"):
        rk.sample_without_replacement(bad, 1)
    with pytest.raises(ValueError, match="no finite logit"):
        rk.sample_without_replacement(torch.full((1, 3), float("-inf")), 1)
    with pytest.raises(TypeError, match="logits must have dtype"):
        rk.sample_without_replacement(torch.zeros(2, 5, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match="at most one noise source"):
        rk.sample_without_replacement(x, 1, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="gumbel must have shape"):
        rk.sample_without_replacement(x, 1, gumbel=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="backend must be one of"):
        rk.sample_without_replacement(x, 1, backend="tpu")
    with pytest.raises(ValueError, match="top_p must be a float in"):
        rk.sample_without_replacement(x, 1, top_p=1.5)


def test_truncated_gumbel_keeps_parent_max_and_is_stable():
    g = torch.tensor([[0.3, -1.2, 2.5, -40.0, float("-inf")]], dtype=torch.float64)
    Z = g.max(-1, keepdim=True).values
    for G in (-3.0, 0.0, 1.7, 25.0):
        Gc = truncated_gumbel(torch.tensor(G, dtype=torch.float64), g, Z)
        assert float(Gc.max()) == pytest.approx(G, abs=1e-12)
        assert torch.isinf(Gc[0, -1])
        naive = -torch.log(math.exp(-G) - torch.exp(-Z) + torch.exp(-g[:, :4]))
        assert torch.allclose(Gc[:, :4], naive, atol=1e-9)
        assert bool((Gc[:, :4] <= G + 1e-12).all())


def test_beam_step_from_root_is_gumbel_topk():
    """From a single root beam (phi=0, G=0) the beam step's children are a Gumbel-top-W sample."""
    logits = torch.randn(3, 1, 30)
    gum = torch.randn(3, 1, 30).clamp(-3, 3)
    r = rk.stochastic_beam_step(logits, torch.zeros(3, 1), torch.zeros(3, 1), 4, gumbel=gum)
    s = rk.sample_without_replacement(logits[:, 0], 4, gumbel=gum[:, 0])
    assert torch.equal(r.tokens, s.tokens) and (r.parent == 0).all()
    assert torch.allclose(r.phi, s.logprobs, atol=1e-6)
    assert bool((r.G[:, 0] == 0).all())  # the best child keeps the parent's G
    assert bool((r.G[:, 1:] <= r.G[:, :-1]).all())


def test_beam_step_multi_beam_and_inactive():
    logits = torch.randn(2, 3, 10)
    phi = torch.tensor([[-0.5, -1.0, float("-inf")], [0.0, -2.0, -3.0]])
    G = torch.tensor([[1.0, 0.5, 0.0], [2.0, 1.0, -1.0]])
    r = rk.stochastic_beam_step(logits, phi, G, 5, seed=4)
    assert r.parent.shape == (2, 5)
    assert not bool((r.parent[0] == 2).any())  # inactive beam never extended
    lq = torch.log_softmax(logits, -1)
    want = phi.gather(1, r.parent) + lq[torch.arange(2)[:, None], r.parent, r.tokens]
    assert torch.allclose(r.phi.float(), want, atol=1e-5)
    for b in range(2):
        for s in range(5):  # no child beats its parent's G
            assert float(r.G[b, s]) <= float(G[b, r.parent[b, s]]) + 1e-6
    with pytest.raises(ValueError, match="width=31 exceeds"):
        rk.stochastic_beam_step(logits, phi, G, 31)
    with pytest.raises(ValueError, match="at least one active beam"):
        rk.stochastic_beam_step(logits, torch.full((2, 3), float("-inf")), G, 2)
