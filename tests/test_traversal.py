"""Traversal verification (``verify_tree(mode="traversal")``), the exact acceptance law and
expected accepted length, and SpecTr's merged prefix trees (issue 19).

* On a chain the law is block verification's (Sun et al. 2025), written out here from its
  own definition: ``tau = max{i : eta_i <= h_i}``, ``h_i = A_i / (A_i + 1 - p_i)``, ``h_L = p_L``.
* The sampler follows the law: chi-square of (ending node, next token) over many rows with
  the Philox streams; a broken next-token draw must be caught.
* End to end with the real samplers and noise streams: the first two emitted tokens follow
  the target for every method (chi-square); traversal with the i.i.d. draft update must fail.
* Traversal never accepts less than RRS in expectation on a chain (block verification is
  optimal) -- checked by enumerating the chains.
* The merged SpecTr tree: distinct siblings in order of first appearance, ``source`` mapping.
* Clear errors: a tree with equal sibling tokens, unknown modes and verifiers.
"""
import itertools

import pytest
import torch

import rsd_kernels.verify.reference as ref
import rsd_kernels.verify.traversal_reference as trav
from rsd_kernels import DraftTree, acceptance_law, expected_accepted_length, noise, verify_tree
from rsd_kernels.methods import TreeConfig, build_tree, merge_spectr_tree, verify_mode
from rsd_kernels.testing import chi_square_pvalue, expected_pairs, first_two_tokens
from test_exactness import models  # noqa: F401  (the table models of the method tests, a fixture)
from test_kernel_traversal import random_swor_tree

N = 20000
PASS, CAUGHT = 1e-3, 1e-6


def chain(B, L, V, gen, closeness=1.0):
    tokens = torch.randint(0, V, (B, L + 1), generator=gen)
    parents = (torch.arange(L + 1) - 1).to(torch.int32).expand(B, L + 1).contiguous()
    tl = torch.randn(B, L + 1, V, generator=gen, dtype=torch.float64) * 1.5
    dl = tl + closeness * torch.randn(B, L + 1, V, generator=gen, dtype=torch.float64)
    return tokens, parents, tl, dl


def block_verification_law(P, Q, x):
    """Block verification on one chain (P, Q [L+1, V], x [L+1]; x[0] the root): P(tau = i) and
    the law of Y at tau, from Sun et al.'s definitions."""
    L = len(x) - 1
    p = [1.0]
    for i in range(1, L + 1):
        p.append(min(p[-1] * float(P[i - 1, x[i]]) / float(Q[i - 1, x[i]]), 1.0))
    h, res = [], []
    for i in range(L + 1):
        if i < L:
            r = torch.clamp(p[i] * P[i] - Q[i], min=0)
            A = float(r.sum())
            h.append(A / (A + 1 - p[i]) if A + 1 - p[i] > 0 else 1.0)
            res.append(r / A if A > 0 else P[i])
        else:
            h.append(p[L])
            res.append(P[L])
    h[0] = 1.0  # eta_0 <= h_0 = 1: tau >= 0 always
    prob = [h[i] * float(torch.tensor([1 - hj for hj in h[i + 1:]], dtype=torch.float64).prod()) for i in range(L + 1)]
    return torch.tensor(prob, dtype=torch.float64), torch.stack(res)


def test_traversal_on_a_chain_is_block_verification():
    gen = torch.Generator().manual_seed(0)
    tokens, parents, tl, dl = chain(64, 4, 6, gen)
    law = acceptance_law(tl, dl, tokens, parents, mode="traversal", next_token=True)
    P, Q = torch.softmax(tl, -1), torch.softmax(dl, -1)
    for b in range(64):
        prob, res = block_verification_law(P[b], Q[b], tokens[b].tolist())
        assert torch.allclose(law.prob[b], prob, atol=1e-12)
        for i in range(5):
            if prob[i] > 0:
                assert torch.allclose(law.next_probs[b, i], res[i], atol=1e-12)


def test_traversal_accepts_at_least_rrs_on_chains():
    """Averaged over the chains the draft samples (enumerated), traversal (= block verification,
    optimal) accepts at least as much as token-level RRS, and strictly more here."""
    V, L = 4, 3
    gen = torch.Generator().manual_seed(1)
    tl = torch.randn(V ** L, L + 1, V, dtype=torch.float64, generator=gen)  # a table per position
    tl = tl[:1].expand(V ** L, L + 1, V).clone()
    dl = tl + torch.randn(1, L + 1, V, dtype=torch.float64, generator=gen)
    seqs = torch.tensor(list(itertools.product(range(V), repeat=L)))
    tokens = torch.cat([torch.zeros(V ** L, 1, dtype=torch.long), seqs], 1)
    parents = (torch.arange(L + 1) - 1).to(torch.int32).expand(V ** L, L + 1).contiguous()
    Q = torch.softmax(dl[0], -1)
    weight = torch.stack([Q[i, seqs[:, i]] for i in range(L)], 1).prod(1)  # draft law of each chain
    e_rrs = (weight * expected_accepted_length(tl, dl, tokens, parents, mode="rrs")).sum()
    e_trav = (weight * expected_accepted_length(tl, dl, tokens, parents, mode="traversal")).sum()
    assert e_trav > e_rrs + 1e-3


def _random_swor_tree(B, T, V, gen):
    return random_swor_tree(B, T, V, gen)[:2]  # full rows


@pytest.mark.parametrize("break_sampler", [False, True])
def test_sampler_follows_the_law(break_sampler, monkeypatch):
    """(ending node, next token) of the reference sampler over N rows sharing one tree, with the
    Philox streams, against the exact law; a next token drawn from the target at the ending node
    instead of its updated law must be caught."""
    gen = torch.Generator().manual_seed(2)
    T, V = 9, 5
    tokens, parents = _random_swor_tree(1, T, V, gen)
    tl = torch.randn(1, T, V, generator=gen, dtype=torch.float64)
    dl = tl + 1.5 * torch.randn(1, T, V, generator=gen, dtype=torch.float64)
    law = acceptance_law(tl, dl, tokens, parents, mode="traversal", next_token=True)
    want = (law.prob[0, :, None] * law.next_probs[0]).flatten()
    if break_sampler:
        orig = ref._sample
        monkeypatch.setattr(ref, "_sample", lambda w, g: orig(torch.softmax(tl[0, :1], -1).expand_as(w).clone(), g))
    rep = dict(tl=tl.expand(N, T, V), dl=dl.expand(N, T, V), tok=tokens.expand(N, T), par=parents.expand(N, T))
    res = verify_tree(rep["tl"], rep["dl"], rep["tok"], rep["par"], mode="traversal", seed=11, backend="torch")
    last = res.path.gather(1, res.num_accepted[:, None])[:, 0]
    got = torch.stack([last, res.next_token], 1)
    square = torch.zeros(T, T, dtype=torch.float64)  # the harness takes a square table of cells
    square[:, :V] = want.view(T, V)
    p = chi_square_pvalue(got, square)
    assert (p < CAUGHT) if break_sampler else (p > PASS)


@pytest.mark.parametrize("mode", ["rrs", "kseq", "traversal"])
def test_expected_length_matches_sampling(mode):
    gen = torch.Generator().manual_seed(3)
    T, V = 10, 6
    tokens, parents = _random_swor_tree(1, T, V, gen)
    if mode == "kseq":
        tokens = torch.randint(0, 2, (1, T), generator=gen)  # repeated tokens make groups
    tl = torch.randn(1, T, V, generator=gen) * 1.5
    dl = tl + torch.randn(1, T, V, generator=gen)
    want = float(expected_accepted_length(tl, dl, tokens, parents, mode=mode, temperature=0.8))
    res = verify_tree(tl.expand(N, T, V), dl.expand(N, T, V), tokens.expand(N, T), parents.expand(N, T), mode=mode,
                      temperature=0.8, seed=4, backend="torch")
    got = res.num_accepted.double()
    assert abs(float(got.mean()) - want) < 4 * float(got.std()) / N ** 0.5 + 1e-9


def test_greedy_law():
    gen = torch.Generator().manual_seed(4)
    tokens, parents = _random_swor_tree(3, 8, 5, gen)
    tl = torch.randn(3, 8, 5, generator=gen)
    res = verify_tree(tl, None, tokens, parents, mode="greedy")
    for mode in ("greedy", "traversal", "rrs"):  # temperature 0 is greedy whatever the mode
        law = acceptance_law(tl, tl, tokens, parents, mode=mode, temperature=0.0, next_token=True)
        last = res.path.gather(1, res.num_accepted[:, None])[:, 0]
        assert torch.equal(law.prob.argmax(1), last) and bool((law.prob.max(1).values == 1).all())
        assert torch.equal(law.next_probs[torch.arange(3), last].argmax(1), res.next_token)
    assert torch.equal(expected_accepted_length(tl, None, tokens, parents, mode="greedy"), res.num_accepted.double())


# ---------------------------------------------------------------- end to end, real samplers and noise streams

E2E = [TreeConfig("sd", (3,)), TreeConfig("rsd-c", (2, 2)), TreeConfig("rsd-s", (3, 2)), TreeConfig("spectr", (3, 2))]


@pytest.mark.parametrize("cfg", E2E, ids=str)
def test_traversal_is_exact_end_to_end(models, cfg):
    target, draft = models
    pairs = first_two_tokens(cfg, target, draft, root=0, n=N, seed=1, verifier="traversal", merge=True)
    assert chi_square_pvalue(pairs, expected_pairs(target, 0)) > PASS


def test_rrs_on_merged_spectr_is_exact_end_to_end(models):
    target, draft = models
    pairs = first_two_tokens(TreeConfig("spectr", (4, 2)), target, draft, root=0, n=N, seed=2, verifier="rrs", merge=True)
    assert chi_square_pvalue(pairs, expected_pairs(target, 0)) > PASS


@pytest.mark.parametrize("cfg", [TreeConfig("rsd-c", (3, 2)), TreeConfig("rsd-s", (4, 2))], ids=str)
def test_negative_control_traversal_with_the_iid_update(models, cfg, monkeypatch):
    target, draft = models
    monkeypatch.setattr(trav, "draft_after_rejection", lambda s, x: s)
    pairs = first_two_tokens(cfg, target, draft, root=0, n=N, seed=1, verifier="traversal")
    assert chi_square_pvalue(pairs, expected_pairs(target, 0)) < CAUGHT


# ---------------------------------------------------------------- merged SpecTr trees

def test_merged_spectr_tree():
    V = 3
    g = torch.Generator().manual_seed(0)
    table = torch.randn(V, V, generator=g)

    def draft_fn(level, nodes, tokens, parents):
        return table[tokens.gather(1, nodes.clamp(min=0))]

    cfg = TreeConfig("spectr", (4, 3))
    drafted = build_tree(cfg, torch.tensor([0, 1, 2, 0]), draft_fn, seed=3)
    merged = build_tree(cfg, torch.tensor([0, 1, 2, 0]), draft_fn, seed=3, merge=True)
    assert torch.equal(merge_spectr_tree(drafted).tree.tokens, merged.tree.tokens)
    t, src = merged.tree, merged.source
    trav.check_siblings_distinct(t)  # no error: distinct siblings
    full = drafted.tree
    for b in range(4):
        n = int(t.num_nodes[b])
        assert n < full.num_nodes[b]  # three tokens, four chains: some prefixes repeat
        # every merged node is a drafted node with the same token and the same root path
        for j in range(n):
            assert int(t.tokens[b, j]) == int(full.tokens[b, src[b, j]])
            assert torch.equal(merged.draft_logits[b, j], drafted.draft_logits[b, src[b, j]])
        paths_m = {tuple(t.tokens[b, k].item() for k in _root_path(t, b, j)) for j in range(n)}
        paths_d = {tuple(full.tokens[b, k].item() for k in _root_path(full, b, j)) for j in range(int(full.num_nodes[b]))}
        assert paths_m == paths_d  # the same set of prefixes, each once
        assert len(paths_m) == n
        # siblings in order of first appearance: increasing drafted index
        for j in range(1, n):
            sib = [k for k in range(1, n) if int(t.parents[b, k]) == int(t.parents[b, j])]
            assert [int(src[b, k]) for k in sib] == sorted(int(src[b, k]) for k in sib)
    assert (src[:, 0] == 0).all()
    again = merge_spectr_tree(merged)  # merging twice changes nothing
    assert torch.equal(again.tree.tokens, t.tokens) and torch.equal(again.source, src)
    other = build_tree(TreeConfig("rsd-c", (2, 2)), torch.tensor([0, 1]), draft_fn, seed=3, merge=True)
    assert other.source is None  # only SpecTr's chains are merged


def _root_path(tree, b, j):
    out = []
    while j > 0:
        out.append(j)
        j = int(tree.parents[b, j])
    return out[::-1]


def test_verify_mode():
    assert verify_mode(TreeConfig("spectr", (2, 2))) == "kseq"
    assert verify_mode(TreeConfig("spectr", (2, 2)), "traversal", merged=True) == "traversal"
    assert verify_mode(TreeConfig("spectr", (2, 2)), "rrs", merged=True) == "rrs"
    assert verify_mode(TreeConfig("rsd-s", (2, 2)), "traversal") == "traversal"
    with pytest.raises(ValueError, match="merge=True"):
        verify_mode(TreeConfig("spectr", (2, 2)), "traversal")
    with pytest.raises(ValueError, match="verifier must be one of"):
        verify_mode(TreeConfig("sd", (2,)), "block")


# ---------------------------------------------------------------- errors

def test_traversal_refuses_equal_siblings():
    tokens = torch.tensor([[0, 3, 3, 1]])
    parents = torch.tensor([[-1, 0, 0, 1]], dtype=torch.int32)
    tl = torch.randn(1, 4, 5)
    with pytest.raises(ValueError, match="nodes 1 and 2 of row 0 are siblings holding the same token 3"):
        verify_tree(tl, tl, tokens, parents, mode="traversal", seed=0)
    with pytest.raises(ValueError, match="merge SpecTr"):
        expected_accepted_length(tl, tl, tokens, parents, mode="traversal")
    expected_accepted_length(tl, tl, tokens, parents, mode="kseq")  # i.i.d. siblings: fine for kseq
    padded = DraftTree(tokens, parents, torch.tensor([2], dtype=torch.int32))  # the duplicate is padding
    verify_tree(tl, tl, padded, mode="traversal", seed=0)


def test_law_argument_errors():
    tokens = torch.tensor([[0, 1]])
    parents = torch.tensor([[-1, 0]], dtype=torch.int32)
    tl = torch.randn(1, 2, 4)
    with pytest.raises(ValueError, match="mode must be one of"):
        acceptance_law(tl, tl, tokens, parents, mode="block")
    with pytest.raises(TypeError, match="draft_logits is required"):
        expected_accepted_length(tl, None, tokens, parents, mode="traversal")
    with pytest.raises(TypeError, match="parents is required"):
        expected_accepted_length(tl, tl, tokens, mode="rrs")
    with pytest.raises(ValueError, match="tokens\\[0, 1\\] = 9 is out of range"):
        expected_accepted_length(tl, tl, torch.tensor([[0, 9]]), parents, mode="rrs")
    bad = tl.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="target_logits"):
        expected_accepted_length(bad, tl, tokens, parents, mode="rrs")


def test_explicit_noise_equals_seed_streams():
    gen = torch.Generator().manual_seed(5)
    tokens, parents = _random_swor_tree(4, 12, 20, gen)
    tl = torch.randn(4, 12, 20, generator=gen)
    dl = tl + 0.7 * torch.randn(4, 12, 20, generator=gen)
    u, g = noise.verify_noise(9, 2, 4, 12, 20)
    a = verify_tree(tl, dl, tokens, parents, mode="traversal", seed=9, offset=2, backend="torch")
    b = verify_tree(tl, dl, tokens, parents, mode="traversal", uniform=u, gumbel=g, backend="torch")
    assert all(torch.equal(x, y) for x, y in zip(a, b))
