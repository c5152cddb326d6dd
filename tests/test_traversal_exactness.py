"""Exactness of the verifiers by float64 enumeration, for every tree family (issue 19, item 5).

A prefix-dependent toy model: vocabulary 4 or 5, target and draft next-token laws drawn at
random for every context (the root plus up to three tokens), the draft far from the target.
For each tree family every tree the draft can grow is enumerated with its probability:

* SD chains and RSD-C (constant branching, Gumbel-top-k = ordered sampling without
  replacement) by their product laws;
* SpecTr's K i.i.d. chains, unmerged (``kseq``) and merged into a prefix tree
  (:func:`rsd_kernels.methods.merge_spectr_tree`; ``rrs`` and ``traversal``);
* RSD-S (stochastic beam search) exactly, through the Gumbel-process view: SBS's beams are
  determined by the ranking of the full-length sequences by perturbed log-probability
  (Plackett-Luce in the draft's sequence law), the level-l beams being the first W distinct
  length-l prefixes of that ranking, in ranking order (= their perturbed-score order: a
  prefix's perturbed score is the largest of its completions'). Summing over the ranking
  prefixes that fix the tree gives each tree's probability.

For every tree :func:`rsd_kernels.acceptance_law` gives the exact law of the verifier's outcome
(ending node, next token). The emitted sequence, extended to a fixed length with the target's
conditionals, must have the target's law within 1e-12. The same harness must catch the i.i.d.
draft update used on a without-replacement tree (traversal's negative control), and ``kseq``
on a without-replacement tree.
"""
import itertools
import math
from collections import defaultdict

import pytest
import torch

import rsd_kernels.verify.traversal_reference as trav
from rsd_kernels import acceptance_law
from rsd_kernels.methods import DraftedTree, merge_spectr_tree
from rsd_kernels.tree import DraftTree

TOL = 1e-12


class PrefixModel:
    """Random target and draft next-token laws for every context of up to ``depth`` tokens."""

    def __init__(self, V, depth, seed):
        g = torch.Generator().manual_seed(seed)
        self.V = V
        self.t, self.d = {}, {}
        for n in range(depth + 1):
            for ctx in itertools.product(range(V), repeat=n):
                t = torch.randn(V, generator=g, dtype=torch.float64) * 1.3
                self.t[ctx] = t
                self.d[ctx] = t + torch.randn(V, generator=g, dtype=torch.float64) * 1.5  # far from the target

    def p(self, ctx):
        return torch.softmax(self.t[tuple(ctx)], -1)

    def q(self, ctx):
        return torch.softmax(self.d[tuple(ctx)], -1)


# ---------------------------------------------------------------- tree enumerators: (tokens, parents, prob)

def _swor(q, k):
    """Ordered samples of k distinct tokens without replacement from q, with their probabilities."""
    for xs in itertools.permutations(range(len(q)), k):
        pr, left = 1.0, 1.0
        for x in xs:
            pr *= float(q[x]) / left
            left -= float(q[x])
        if pr > 0:
            yield xs, pr


def chains(model, K, L):
    """SD (K = 1) and SpecTr's unmerged i.i.d. chains, in build_tree's layout (level by level)."""
    seqs = list(itertools.product(range(model.V), repeat=L))
    seq_p = {s: math.prod(float(model.q(s[:i])[s[i]]) for i in range(L)) for s in seqs}
    for combo in itertools.product(seqs, repeat=K):
        tokens, parents = [0], [-1]
        for level in range(L):
            for c in range(K):
                tokens.append(combo[c][level])
                parents.append(0 if level == 0 else 1 + (level - 1) * K + c)
        yield tokens, parents, math.prod(seq_p[s] for s in combo)


def rsd_c(model, branching):
    def grow(tokens, parents, ctxs, frontier, level, prob):
        if level == len(branching):
            yield list(tokens), list(parents), prob
            return
        options = [list(_swor(model.q(ctxs[v]), branching[level])) for v in frontier]
        for pick in itertools.product(*options):
            tok, par, cx, new = list(tokens), list(parents), list(ctxs), []
            pr = prob
            for v, (xs, px) in zip(frontier, pick):
                pr *= px
                for x in xs:
                    new.append(len(tok))
                    tok.append(x)
                    par.append(v)
                    cx.append(ctxs[v] + (x,))
            yield from grow(tok, par, cx, new, level + 1, pr)

    yield from grow([0], [-1], [()], [0], 0, 1.0)


def rsd_s(model, W, L):
    """Stochastic beam search trees, exactly, from Plackett-Luce rankings (module docstring).

    Only the sequences that can still change the beams matter (one with a prefix not yet in a
    level that is not yet full); the next of them in the ranking is drawn with probability
    proportional to its draft probability (a Plackett-Luce ranking restricted to a subset is
    Plackett-Luce in the subset's weights), and the others never matter again.
    """
    seqs = list(itertools.product(range(model.V), repeat=L))
    qs = [math.prod(float(model.q(s[:i])[s[i]]) for i in range(L)) for s in seqs]
    need = [min(W, model.V ** level) for level in range(1, L + 1)]
    trees = defaultdict(float)

    def rec(levels, prob):
        relevant = [i for i, s in enumerate(seqs) if qs[i] > 0 and any(
            len(lv) < n and s[:lv_len + 1] not in lv for lv_len, (lv, n) in enumerate(zip(levels, need)))]
        if not relevant:
            tokens, parents, index = [0], [-1], {(): 0}
            for lv in levels:
                for pre in lv:
                    index[pre] = len(tokens)
                    tokens.append(pre[-1])
                    parents.append(index[pre[:-1]])
            trees[(tuple(tokens), tuple(parents))] += prob
            return
        mass = sum(qs[i] for i in relevant)
        for i in relevant:
            new = [lv + [seqs[i][:l + 1]] if len(lv) < n and seqs[i][:l + 1] not in lv else lv
                   for l, (lv, n) in enumerate(zip(levels, need))]
            rec(new, prob * qs[i] / mass)

    rec([[] for _ in range(L)], 1.0)
    for (tokens, parents), prob in trees.items():
        yield list(tokens), list(parents), prob


# ---------------------------------------------------------------- the check

def _batch(model, trees):
    T = max(len(t) for t, _, _ in trees)
    B = len(trees)
    tokens = torch.zeros(B, T, dtype=torch.int64)
    parents = torch.full((B, T), -1, dtype=torch.int32)
    n = torch.tensor([len(t) for t, _, _ in trees], dtype=torch.int32)
    tl = torch.zeros(B, T, model.V, dtype=torch.float64)
    dl = torch.zeros(B, T, model.V, dtype=torch.float64)
    for b, (tok, par, _) in enumerate(trees):
        ctx = [()]
        for j in range(1, len(tok)):
            ctx.append(ctx[par[j]] + (tok[j],))
        for j, c in enumerate(ctx):
            tokens[b, j], parents[b, j] = tok[j], par[j]
            tl[b, j], dl[b, j] = model.t[c], model.d[c]
    return DraftedTree(DraftTree(tokens, parents, n), dl, 0), tl, torch.tensor([p for _, _, p in trees], dtype=torch.float64)


def max_error(model, trees, mode, merge=False):
    """max |P(extended emitted sequence) - P_target| over all sequences of length depth + 1."""
    trees = list(trees)
    assert abs(sum(p for _, _, p in trees) - 1) < 1e-12  # the enumeration is complete
    drafted, tl, probs = _batch(model, trees)
    if merge:
        merged = merge_spectr_tree(drafted)
        tl = tl.gather(1, merged.source.clamp(min=0)[..., None].expand(-1, -1, model.V))
        drafted = merged
    tree = drafted.tree
    law = acceptance_law(tl, drafted.draft_logits, tree, mode=mode, next_token=True)
    D = max(tree.max_depth, 1)
    out = defaultdict(float)
    weight = (probs[:, None] * law.prob).tolist()
    nxt = law.next_probs.tolist()
    toks, pars = tree.tokens.tolist(), tree.parents.tolist()
    for b, n in enumerate(tree.num_nodes.tolist()):
        for v in range(n):
            if weight[b][v] == 0:
                continue
            path, u = [], v
            while u > 0:
                path.append(toks[b][u])
                u = pars[b][u]
            prefix = tuple(path[::-1])
            for y, py in enumerate(nxt[b][v]):
                if py > 0:
                    out[prefix + (y,)] += weight[b][v] * py
    err = 0.0
    for z in itertools.product(range(model.V), repeat=D + 1):
        want = math.prod(float(model.p(z[:i])[z[i]]) for i in range(D + 1))
        got = 0.0
        for m in range(1, D + 2):
            if z[:m] in out:
                got += out[z[:m]] * math.prod(float(model.p(z[:i])[z[i]]) for i in range(m, D + 1))
        err = max(err, abs(got - want))
    return err


FAMILIES = {  # name: (trees, vocabulary, depth, merge SpecTr's chains)
    "sd-3": (lambda m: chains(m, 1, 3), 4, 3, False),
    "rsd-c-2,2": (lambda m: rsd_c(m, (2, 2)), 4, 2, False),
    "rsd-c-3,1": (lambda m: rsd_c(m, (3, 1)), 4, 2, False),
    "rsd-c-2,1,1": (lambda m: rsd_c(m, (2, 1, 1)), 4, 3, False),
    "spectr-2x2-merged": (lambda m: chains(m, 2, 2), 4, 2, True),
    "spectr-3x2-merged": (lambda m: chains(m, 3, 2), 4, 2, True),
    "rsd-s-2x2": (lambda m: rsd_s(m, 2, 2), 5, 2, False),
    "rsd-s-3x2": (lambda m: rsd_s(m, 3, 2), 4, 2, False),
}


@pytest.mark.parametrize("mode", ["traversal", "rrs"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_verifier_is_exact_by_enumeration(family, mode):
    make, V, depth, merge = FAMILIES[family]
    model = PrefixModel(V, depth, seed=len(family))
    assert max_error(model, make(model), mode, merge=merge) < TOL


@pytest.mark.parametrize("K,L", [(2, 2), (3, 1)])
def test_kseq_on_unmerged_spectr_is_exact(K, L):
    model = PrefixModel(4, L, seed=K)
    assert max_error(model, chains(model, K, L), "kseq") < TOL


@pytest.mark.parametrize("family", ["rsd-c-2,2", "spectr-2x2-merged", "rsd-s-2x2"])
def test_negative_control_iid_update_on_a_without_replacement_tree(family, monkeypatch):
    """Traversal with the i.i.d. sibling rule (the draft law not updated) must be caught."""
    make, V, depth, merge = FAMILIES[family]
    model = PrefixModel(V, depth, seed=len(family))
    monkeypatch.setattr(trav, "draft_after_rejection", lambda s, x: s)
    assert max_error(model, make(model), "traversal", merge=merge) > 1e-3


def test_negative_control_kseq_on_a_without_replacement_tree():
    model = PrefixModel(4, 1, seed=3)
    assert max_error(model, rsd_c(model, (3,)), "kseq") > 1e-3
