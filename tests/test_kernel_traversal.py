"""Kernel backends of ``verify_tree(mode="traversal")`` against the PyTorch reference.

Token for token with the same explicit noise, and the in-kernel Philox path against the
reference's seed path, on fresh random trees whose siblings hold distinct tokens: T = 1, odd
T, ragged rows, vocabularies tiled into several blocks, every input dtype, top-k warps.
Plus a chi-square of the kernel's (ending node, next token) on the Philox path against the
exact law (:func:`rsd_kernels.acceptance_law`), with a negative control that must fail.
"""
import pytest
import torch

from conftest import kernel_backend_params
from rsd_kernels import acceptance_law, noise, verify_tree
from test_kernel_verify import _same, random_logits
from rsd_kernels.testing import chi_square_pvalue
from rsd_kernels.verify import traversal_reference

BACKENDS = kernel_backend_params("verify_tree")
SHAPES = [(1, 1, 37), (3, 7, 61), (4, 16, 300), (2, 33, 129), (5, 12, 2000)]  # (B, T, V)


def random_swor_tree(B, T, V, gen, draft_logits=None, width=3):
    """Random topological trees (parents among the previous ``width`` nodes), siblings holding
    distinct tokens, ragged rows. With ``draft_logits``, half the tokens among their parent's 4
    likeliest draft tokens (as in drafted trees, where the target often disagrees: rejections at
    every level)."""
    parents = torch.full((B, T), -1, dtype=torch.int32)
    tokens = torch.zeros(B, T, dtype=torch.int64)
    for b in range(B):
        for i in range(1, T):
            par = int(torch.randint(max(0, i - width), i, (1,), generator=gen))
            parents[b, i] = par
            used = {int(tokens[b, j]) for j in range(1, i) if int(parents[b, j]) == par}
            pool = range(V)
            if draft_logits is not None and float(torch.rand(1, generator=gen)) < 0.5:
                pool = draft_logits[b, par].float().topk(min(4, V)).indices.tolist()
            free = [t for t in pool if t not in used] or [t for t in range(V) if t not in used]
            tokens[b, i] = free[int(torch.randint(0, len(free), (1,), generator=gen))]
    num_nodes = torch.randint(1, T + 1, (B,), generator=gen).to(torch.int32)
    num_nodes[0] = T
    return tokens, parents, num_nodes


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_traversal_matches_reference(backend, shape, device):
    B, T, V = shape
    gen = torch.Generator().manual_seed(hash(shape) % 2**31)
    for trial, dtype in enumerate((torch.float32, torch.float16, torch.bfloat16, torch.float64)):
        tl_, dl = random_logits(B, T, V, gen, dtype, closeness=[1.0, 2.0, 0.5, 1.5][trial])
        tokens, parents, nn = random_swor_tree(B, T, V, gen, dl, width=2 + trial % 3)
        args = [x.to(device) for x in (tl_, dl, tokens, parents)]
        kw = dict(mode="traversal", temperature=[1.0, 0.7, 1.3, 0.9][trial], num_nodes=nn.to(device))
        u, g = noise.verify_noise(1000 + trial, trial, B, T, V)
        want = verify_tree(*args, backend="torch", uniform=u.to(device), gumbel=g.to(device), **kw)
        _same(verify_tree(*args, backend=backend, uniform=u.to(device), gumbel=g.to(device), **kw), want)
        seeded = dict(kw, seed=7 + trial, offset=[0, 5, 2**32 - 1, 3][trial])
        _same(verify_tree(*args, backend=backend, **seeded), verify_tree(*args, backend="torch", **seeded))


@pytest.mark.parametrize("backend", BACKENDS)
def test_traversal_top_k_and_small_vocab_tiles(backend, device):
    """-inf logits from top-k warping; the vocabulary spread over several tiles."""
    from rsd_kernels.verify import traversal_triton

    gen = torch.Generator().manual_seed(3)
    B, T, V = 3, 11, 300
    tl_, dl = random_logits(B, T, V, gen, torch.float64, closeness=1.0)
    tokens, parents, nn = random_swor_tree(B, T, V, gen, dl)
    args = [x.to(device) for x in (tl_, dl, tokens, parents)]
    kw = dict(mode="traversal", num_nodes=nn.to(device), seed=12, top_k=20)
    _same(verify_tree(*args, backend=backend, **kw), verify_tree(*args, backend="torch", **kw))
    if backend == "triton":  # vocabulary tiles smaller than V; statistics from launch 1 or in the walk
        u, g = noise.verify_noise(5, 0, B, T, V)
        a = (tl_.float(), dl.float(), tokens, parents, nn, "traversal", 0.8, T - 1)
        want = traversal_reference.verify(*a, uniform=u, gumbel=g)
        for pre in (True, False):
            got = traversal_triton.verify(*[x.to(device) if torch.is_tensor(x) else x for x in a], uniform=u.to(device),
                                          gumbel=g.to(device), block_v=64, precompute=pre)
            _same(got, want)


def test_traversal_kernel_limits_and_mode():
    from rsd_kernels.verify import traversal_triton

    T = traversal_triton.MAX_TREE_NODES + 1
    x = torch.zeros(1, T, 4)
    args = (x, x, torch.zeros(1, T, dtype=torch.int64), torch.zeros(1, T, dtype=torch.int32),
            torch.ones(1, dtype=torch.int32))
    with pytest.raises(ValueError, match="at most 256 tree nodes"):
        traversal_triton.verify(*args, "traversal", 1.0, 1, seed=1)
    with pytest.raises(ValueError, match="mode='traversal' only"):
        traversal_triton.verify(*args, "rrs", 1.0, 1, seed=1)


# ---------------- the in-kernel Philox path follows the exact law ----------------

def _law_pvalue(backend, device, n, draft_seen_scale):
    gen = torch.Generator().manual_seed(2024)
    T, V = 4, 4
    tl_ = torch.randn(1, T, V, generator=gen) * 1.2
    dl = tl_ + torch.randn(1, T, V, generator=gen)
    # root -> (a -> c, b): the tokens the draft over-rates, so that rejections happen at both levels
    over = (torch.log_softmax(dl, -1) - torch.log_softmax(tl_, -1)).argsort(-1, descending=True)[0]
    tokens = torch.tensor([[0, int(over[0, 0]), int(over[0, 1]), int(over[1, 0])]])
    parents = torch.tensor([[-1, 0, 0, 1]], dtype=torch.int32)
    law = acceptance_law(tl_, dl, tokens, parents, mode="traversal", next_token=True)
    want = torch.zeros(T, T, dtype=torch.float64)
    want[:, :V] = law.prob[0, :, None] * law.next_probs[0]
    rep = [x.expand(n, *x.shape[1:]).contiguous().to(device) for x in (tl_, dl * draft_seen_scale, tokens, parents)]
    res = verify_tree(*rep, mode="traversal", seed=77, backend=backend)
    last = res.path.cpu().gather(1, res.num_accepted.cpu()[:, None])[:, 0]
    return chi_square_pvalue(torch.stack([last, res.next_token.cpu()], 1), want)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_traversal_philox_path_follows_the_law(backend, device):
    assert _law_pvalue(backend, device, 150, 1.0) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_traversal_philox_negative_control(backend, device):
    """A verifier that believes the draft was uniform (draft logits 0) must be caught (here by
    outcomes the law gives probability 0, which the harness counts as a p-value of 0)."""
    assert _law_pvalue(backend, device, 60, 0.0) < 1e-6
