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

import triton
import triton.language as tl

from conftest import kernel_backend_params
from rsd_kernels import noise, verify_tree
from rsd_kernels.verify import reference
from rsd_kernels.verify.triton_kernel import _solve_rho, _stats2

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
    if backend == "triton":  # several vocabulary tiles per row; node statistics precomputed or not
        u, g = noise.verify_noise(5, 0, B, T, V)
        for mode in ("rrs", "kseq", "greedy"):
            a = (tl_.float(), dl.float(), tokens, parents, nn, mode, 0.8, T - 1)
            want = reference.verify(*a, uniform=u, gumbel=g)
            for pre in (True, False):
                got = triton_kernel.verify(*[x.to(device) if torch.is_tensor(x) else x for x in a],
                                           uniform=u.to(device), gumbel=g.to(device), block_v=64, precompute=pre)
                _same(got, want)


@pytest.mark.parametrize("mode", ["rrs", "kseq", "greedy"])
def test_ties_go_to_the_lowest_token_across_blocks(mode, device):
    """Equal scores in every vocabulary block (flat logits, zero Gumbel noise): the lowest token wins, as
    in the reference, whatever block holds it."""
    from rsd_kernels import backends
    from rsd_kernels.verify import triton_kernel

    if not backends.triton_runs_on(torch.device(device)):
        pytest.skip("no Triton here")
    B, T, V = 2, 1, 200
    flat = torch.zeros(B, T, V)
    flat[1, 0, :37] = float("-inf")  # row 1: the lowest possible token is 37
    a = (flat, flat, torch.zeros(B, T, dtype=torch.long), torch.full((B, T), -1, dtype=torch.int32),
         torch.ones(B, dtype=torch.int32), mode, 1.0, 0)
    kw = {} if mode == "greedy" else dict(uniform=torch.full((B, T), 0.5), gumbel=torch.zeros(B, V))
    want = reference.verify(*a, **kw)
    assert want[2].tolist() == [0, 37]
    for pre in (True, False):
        got = triton_kernel.verify(*[x.to(device) if torch.is_tensor(x) else x for x in a], block_v=16, precompute=pre,
                                   **{n: x.to(device) for n, x in kw.items()})
        _same(got, want)


def test_vocabulary_passes_of_the_walk(device):
    """The walk's vocabulary passes (returned per row): with the node statistics precomputed, rrs makes
    one pass per rejection and greedy none; kseq solves rho* in a few passes per level (the reference's
    bisection takes 40), and every pass count is what the walk reports."""
    from rsd_kernels import backends
    from rsd_kernels.verify import triton_kernel

    if not backends.triton_runs_on(torch.device(device)):
        pytest.skip("no Triton here")
    gen = torch.Generator().manual_seed(11)
    B, T, V = 6, 9, 300
    tokens, parents, nn = random_tree(B, T, V, gen, token_pool=3)
    tl_, dl = random_logits(B, T, V, gen, torch.float32, closeness=0.6)
    args = [x.to(device) for x in (tl_, dl, tokens, parents, nn)]
    for mode in ("rrs", "kseq", "greedy"):
        for pre in (True, False):
            *res, passes = triton_kernel.verify(*args, mode, 1.0, T - 1, seed=5, precompute=pre, return_passes=True)
            _same(res, reference.verify(tl_, dl, tokens, parents, nn, mode, 1.0, T - 1, seed=5))
            passes, nacc = passes.cpu(), res[1].cpu()
            if mode == "greedy":
                assert (passes == 0).all() if pre else ((passes >= 1) & (passes <= nacc + 1)).all()
            elif mode == "rrs":
                # rejections: every tested child that was not accepted, at most the children of the path nodes
                stats = 0 if pre else nacc + 1
                assert ((passes - stats >= 0) & (passes - stats <= nn.long() - 1 - nacc)).all()
            else:
                levels = nacc + 1
                rho_passes = passes - (0 if pre else levels)
                assert (rho_passes <= levels * 8).all(), (passes, levels)  # the reference: 40 per level
                assert rho_passes.sum() > 0


@triton.jit
def _rho_kernel(t_ptr, d_ptr, k_ptr, out_ptr, n_ptr, V, tol, CT: tl.constexpr, BLOCK_V: tl.constexpr):
    r = tl.program_id(0)
    t_row = t_ptr + r * V
    d_row = d_ptr + r * V
    one = tl.full([], 1.0, CT)
    m_t, s_t, m_d, s_d = _stats2(t_row, d_row, V, one, CT, BLOCK_V, True)
    rho, n = _solve_rho(t_row, d_row, V, one, m_t, s_t, m_d, s_d, tl.load(k_ptr + r), tol, 24, CT, BLOCK_V)
    tl.store(out_ptr + r, rho)
    tl.store(n_ptr + r, n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kseq_rho_matches_the_reference_bisection(dtype, device):
    """rho* of the kernel's bracketed Newton iteration equals the reference's 40-step bisection to float
    precision, in a few passes, for close and far drafts and k = 2..8."""
    from rsd_kernels import backends
    from rsd_kernels.verify.reference import spectr_rho
    from rsd_kernels.verify.triton_kernel import RHO_REL_TOL

    if not backends.triton_runs_on(torch.device(device)):
        pytest.skip("no Triton here")
    gen = torch.Generator().manual_seed(4)
    R, V = 12, 500
    t = torch.randn(R, V, generator=gen, dtype=torch.float64) * 2
    d = t + torch.tensor([0.05, 0.3, 1.0, 3.0] * 3, dtype=torch.float64)[:, None] * torch.randn(R, V, generator=gen,
                                                                                               dtype=torch.float64)
    k = torch.tensor([2, 3, 4, 8] * 3, dtype=torch.int32)
    want = spectr_rho(torch.softmax(t, -1), torch.softmax(d, -1), k)
    out = torch.empty(R, dtype=dtype, device=device)
    n = torch.empty(R, dtype=torch.int32, device=device)
    _rho_kernel[(R,)](t.to(dtype).to(device), d.to(dtype).to(device), k.to(device), out, n, V, RHO_REL_TOL[dtype],
                        CT=tl.float64 if dtype == torch.float64 else tl.float32, BLOCK_V=128)
    rel = ((out.cpu().double() - want) / want).abs()
    assert float(rel.max()) < (1e-5 if dtype == torch.float32 else 1e-10), rel
    assert int(n.max()) <= 12 and float(n.double().mean()) <= 8, n


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
    n = 300 if mode == "rrs" else 100  # kseq programs run several rho* passes: slower in the interpreter
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
