"""Kernel backends of ``verify_tree`` against the PyTorch reference.

Token for token given the same explicit noise, and the seed path (noise generated in-kernel
from the Philox streams) against the reference's seed path, on fresh random trees: T = 1,
odd T, ragged rows, several vocabularies (one tiled into several vocabulary blocks), all
input dtypes, the three modes. Plus a chi-square exactness test of the in-kernel Philox path
on a two-level table model (the emitted pair of tokens must follow the target), with a
negative control that must fail.
"""
import pytest
import torch

from conftest import kernel_backend_params
from rsd_kernels import noise, verify_tree
from rsd_kernels.verify import reference

scipy_stats = pytest.importorskip("scipy.stats")

BACKENDS = kernel_backend_params("verify_tree")
SHAPES = [(1, 1, 37), (3, 7, 61), (4, 16, 300), (2, 33, 129), (5, 12, 2000)]  # (B, T, V)


def random_tree(B, T, V, gen, *, width=3, token_pool=None):
    """Random topological trees (parents[i] among the previous ``width`` nodes), ragged rows."""
    parents = torch.full((B, T), -1, dtype=torch.int32)
    for i in range(1, T):
        lo = max(0, i - width)
        parents[:, i] = torch.randint(lo, i, (B,), generator=gen).to(torch.int32)
    pool = V if token_pool is None else token_pool
    tokens = torch.randint(0, pool, (B, T), generator=gen)
    num_nodes = torch.randint(1, T + 1, (B,), generator=gen).to(torch.int32)
    num_nodes[0] = T
    return tokens, parents, num_nodes


def random_logits(B, T, V, gen, dtype, closeness=0.5):
    """Target logits and draft logits near them (so that acceptances and rejections both happen)."""
    t = torch.randn(B, T, V, generator=gen) * 1.5
    d = t + closeness * torch.randn(B, T, V, generator=gen)
    return t.to(dtype), d.to(dtype)


def _same(a, b):
    for x, y, name in zip(a, b, ("path", "num_accepted", "next_token")):
        assert torch.equal(x.cpu(), y.cpu()), f"{name} differs:\n{x}\n{y}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["rrs", "kseq", "greedy"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference_explicit_noise(backend, mode, shape, device):
    B, T, V = shape
    gen = torch.Generator().manual_seed(hash((mode, shape)) % 2**31)
    for trial, dtype in enumerate((torch.float32, torch.float16, torch.bfloat16)):
        pool = 3 if mode == "kseq" else None  # repeated tokens make kseq groups
        tokens, parents, nn = random_tree(B, T, V, gen, width=2 + trial, token_pool=pool)
        tl_, dl = random_logits(B, T, V, gen, dtype, closeness=[0.3, 1.0, 0.1][trial])
        u, g = noise.verify_noise(1000 + trial, trial, B, T, V)
        temperature = [1.0, 0.7, 1.3][trial]
        args = [x.to(device) for x in (tl_, dl, tokens, parents)]
        kw = dict(mode=mode, temperature=temperature, num_nodes=nn.to(device))
        if mode != "greedy":
            kw.update(uniform=u.to(device), gumbel=g.to(device))
        want = verify_tree(*args, backend="torch", **kw)
        got = verify_tree(*args, backend=backend, **kw)
        _same(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["rrs", "kseq"])
def test_seed_path_matches_reference(backend, mode, device):
    gen = torch.Generator().manual_seed(7)
    for B, T, V in [(3, 9, 50), (2, 1, 20), (4, 20, 700)]:
        tokens, parents, nn = random_tree(B, T, V, gen, token_pool=4 if mode == "kseq" else None)
        tl_, dl = random_logits(B, T, V, gen, torch.float32, closeness=0.4)
        args = [x.to(device) for x in (tl_, dl, tokens, parents)]
        for seed, offset in [(3, 0), (2**40 + 17, 5), (123456789, 2**32 - 1)]:
            kw = dict(mode=mode, temperature=0.9, num_nodes=nn.to(device), seed=seed, offset=offset)
            _same(verify_tree(*args, backend=backend, **kw), verify_tree(*args, backend="torch", **kw))


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_top_k_and_small_vocab_tiles(backend, device):
    """fp64 logits (fp64 arithmetic), -inf logits from top-k warping, vocab spread over tiles."""
    from rsd_kernels.verify import triton_kernel

    gen = torch.Generator().manual_seed(3)
    B, T, V = 3, 11, 300
    tokens, parents, nn = random_tree(B, T, V, gen)
    tl_, dl = random_logits(B, T, V, gen, torch.float64, closeness=0.5)
    args = [x.to(device) for x in (tl_, dl, tokens, parents)]
    for mode in ("rrs", "kseq"):
        kw = dict(mode=mode, temperature=1.1, num_nodes=nn.to(device), seed=11)
        _same(verify_tree(*args, backend=backend, **kw), verify_tree(*args, backend="torch", **kw))
        kw = dict(mode=mode, num_nodes=nn.to(device), seed=12, top_k=20)
        _same(verify_tree(*args, backend=backend, **kw), verify_tree(*args, backend="torch", **kw))
    if backend == "triton":  # several vocabulary tiles per row (the default tile covers V)
        u, g = noise.verify_noise(5, 0, B, T, V)
        for mode in ("rrs", "kseq", "greedy"):
            a = (tl_.float(), dl.float(), tokens, parents, nn, mode, 0.8, T - 1)
            want = reference.verify(*a, uniform=u, gumbel=g)
            got = triton_kernel.verify(*[x.to(device) if torch.is_tensor(x) else x for x in a],
                                       uniform=u.to(device), gumbel=g.to(device), block_v=64)
            _same(got, want)


def test_too_many_nodes_is_a_clear_error():
    from rsd_kernels.verify import triton_kernel

    T = triton_kernel.MAX_TREE_NODES + 1
    x = torch.zeros(1, T, 4)
    with pytest.raises(ValueError, match="at most 256 tree nodes"):
        triton_kernel.verify(x, x, torch.zeros(1, T, dtype=torch.int64), torch.zeros(1, T, dtype=torch.int32),
                             torch.ones(1, dtype=torch.int32), "rrs", 1.0, 1, seed=1)


# ---------------- statistical exactness of the in-kernel Philox path ----------------
# Table model: a node's logits depend on its token only. The root (token 0) gets K drafted
# children; the first emitted token (the accepted child's, else the correction token) must be
# distributed as p(. | root) whatever happens in the walk. Under the interpreter a program
# costs tens of ms, so N is modest; the negative control shows the statistic has power.
V_TABLE, K_CHILDREN = 5, 3


def _tables():
    gen = torch.Generator().manual_seed(2024)
    target = torch.randn(V_TABLE, V_TABLE, generator=gen) * 1.2  # row = context token
    draft = target + torch.randn(V_TABLE, V_TABLE, generator=gen)
    return target, draft


def _first_tokens(backend, mode, target, draft_true, draft_seen, n, seed, device):
    g = noise.gumbel_noise(seed, 0, n * K_CHILDREN, V_TABLE).view(n, K_CHILDREN, V_TABLE)
    lq = torch.log_softmax(draft_true[0], -1)
    if mode == "rrs":  # siblings without replacement, in sampling order (Gumbel-top-k)
        children = (lq + g[:, 0]).topk(K_CHILDREN, dim=-1).indices
    else:  # kseq: i.i.d. draws
        children = (lq + g).argmax(-1)
    tokens = torch.cat([torch.zeros(n, 1, dtype=torch.long), children], 1)
    parents = torch.tensor([-1] + [0] * K_CHILDREN, dtype=torch.int32).expand(n, -1).contiguous()
    res = verify_tree(target[tokens].to(device), draft_seen[tokens].to(device), tokens.to(device), parents.to(device),
                      mode=mode, seed=seed + 1, backend=backend)
    path, nacc, nxt = (x.cpu() for x in res)
    return torch.where(nacc >= 1, tokens.gather(1, path[:, 1:2].clamp(min=0))[:, 0], nxt)


def _chi2_pvalue(tokens, probs):
    observed = torch.bincount(tokens, minlength=V_TABLE).double()
    expected = probs.double() / probs.double().sum() * observed.sum()
    return float(scipy_stats.chisquare(observed.numpy(), expected.numpy()).pvalue)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["rrs", "kseq"])
def test_philox_path_is_exact(backend, mode, device):
    target, draft = _tables()
    n = 300 if mode == "rrs" else 100  # kseq programs run 40 bisection passes: slower in the interpreter
    first = _first_tokens(backend, mode, target, draft, draft, n, seed=77, device=device)
    assert _chi2_pvalue(first, torch.softmax(target[0], -1)) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_philox_exactness_negative_control(backend, device):
    """Verifying with the wrong draft distribution must be caught by the same statistic."""
    target, draft = _tables()
    wrong = torch.zeros_like(draft)  # the verifier believes the drafts were uniform
    first = _first_tokens(backend, "rrs", target, draft, wrong, 200, seed=77, device=device)
    assert _chi2_pvalue(first, torch.softmax(target[0], -1)) < 1e-6
