"""The exact law of a verifier's outcome on a given tree, and its expected accepted length.

For a draft tree and the target and draft logits at its nodes, :func:`acceptance_law` computes,
in float64 and without sampling, the probability that the verifier's accepted path ends at
each node, and (optionally) the law of the next token it then emits. It follows the verifier's
own walk (the same update functions as the samplers in :mod:`.reference` and
:mod:`.traversal_reference`), with every random test replaced by its probability:

* ``rrs``: child ``k`` of an accepted node is accepted with probability
  ``min(1, p_k(x_k) / q_k(x_k))`` (``p_k, q_k`` after the earlier siblings' rejections);
* ``kseq``: SpecTr's first candidate accepted at a group, ``min(1, p(x) / (rho* q(x)))`` each;
* ``traversal``: node v passes its test with its final ratio ``p`` (the root always), after
  every child subtree was rejected -- the walk's states are deterministic given which
  subtrees were rejected, so the recursion is exact;
* ``greedy``: the deterministic result (probability 1).

**What "expected accepted length of a given tree" means.** :func:`expected_accepted_length`
is ``E[num_accepted | tree, logits]``: the expectation over the verifier's own randomness only
(its uniforms and the next-token draw), the tree held fixed. It is not the expectation over the
trees the draft would sample; averaging it over sampled trees gives that (unbiasedly, with far
less variance than running the verifier). Comparing two verifiers on the same trees is a
paired comparison. Two cases deserve a word:

* ``kseq`` (SpecTr's unmerged i.i.d. chains): the length is that of the ``path`` result, the
  node of the last accepted candidate (the walk continues from every candidate holding the
  accepted token; accepted length is the number of levels passed).
* stochastic-beam trees (RSD-S): the tree's shape depends on the tokens drawn (beams end
  early), but given the tree the verifier's walk is as for any tree; the law is exact for the
  tree given. (The exactness of the verifier's *output* on such trees is a statement about the
  average over trees, checked by enumeration in the tests.)

One block emits ``num_accepted + 1`` tokens (the next token); block efficiency is the mean of that.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .. import checks
from ..tree import DraftTree
from ..warp import warp_logits
from . import reference as _ref
from . import traversal_reference as _trav

LAW_MODES = ("rrs", "kseq", "traversal", "greedy")


class AcceptanceLaw(NamedTuple):
    prob: torch.Tensor  # [B, T] float64: P(the accepted path ends at node v); rows sum to 1
    next_probs: torch.Tensor | None  # [B, T, V] float64: law of the next token given that (0 where prob is 0)


def acceptance_law(target_logits, draft_logits, tokens, parents=None, *, mode="traversal", temperature=1.0, top_k=None,
                   top_p=None, num_nodes=None, next_token=False) -> AcceptanceLaw:
    """The exact law of ``verify_tree``'s outcome (see the module docstring), float64.

    Arguments as :func:`rsd_kernels.verify_tree` (``tokens`` may be a :class:`DraftTree`);
    ``mode`` in ``("rrs", "kseq", "traversal", "greedy")``; ``temperature`` 0 means greedy.
    ``next_token=True`` also returns the next token's law at every node (``[B, T, V]``).
    """
    if mode not in LAW_MODES:
        raise ValueError(f"mode must be one of {LAW_MODES}, got {mode!r}")
    checks.tensor("target_logits", target_logits, ndim=3, dtypes=checks.FLOAT_DTYPES)
    B, T, V = target_logits.shape
    if isinstance(tokens, DraftTree):
        if parents is not None or num_nodes is not None:
            raise ValueError("pass either a DraftTree as tokens, or tokens + parents (+ num_nodes)")
        tree = DraftTree(tokens.tokens, tokens.parents, tokens.num_nodes, vocab_size=V)
    else:
        if parents is None:
            raise TypeError("parents is required when tokens is a tensor")
        tree = DraftTree(tokens, parents, num_nodes, vocab_size=V)
    checks.tensor("tokens", tree.tokens, device=target_logits.device, shape=(B, T))
    temperature = checks.temperature(temperature)
    greedy = mode == "greedy" or temperature == 0
    if mode == "greedy" and temperature != 0:
        temperature = 0.0
    if not greedy:
        if draft_logits is None:
            raise TypeError(f"draft_logits is required for mode={mode!r}")
        checks.tensor("draft_logits", draft_logits, ndim=3, dtypes=checks.FLOAT_DTYPES, device=target_logits.device,
                      shape=(B, T, V))
    checks.finite_logits("target_logits", target_logits, rows_mask=tree.valid)
    if greedy:
        return _greedy_law(target_logits, tree, next_token)
    checks.finite_logits("draft_logits", draft_logits, rows_mask=tree.valid)
    if mode == "traversal":
        _trav.check_siblings_distinct(tree)
    P = torch.softmax(warp_logits(target_logits.double(), temperature, top_k, top_p), -1)
    Q = torch.softmax(warp_logits(draft_logits.double(), temperature, top_k, top_p), -1)
    prob = torch.zeros(B, T, dtype=torch.float64, device=P.device)
    nxt = torch.zeros(B, T, V, dtype=torch.float64, device=P.device) if next_token else None
    walk = {"rrs": _rrs_rows, "kseq": _kseq_rows, "traversal": _traversal_rows}[mode]
    # rows whose walks take the same course (same tree shape; kseq: same sibling token pattern) go together
    groups = {}
    for row, (n, par, tok) in enumerate(zip(tree.num_nodes.tolist(), tree.parents.tolist(), tree.tokens.tolist())):
        key = (tuple(par[:n]), _pattern(tok[:n]) if mode == "kseq" else None)
        groups.setdefault(key, []).append(row)
    for (par, _), rows in groups.items():
        n = len(par)
        r = torch.tensor(rows, device=P.device)
        pr, nx = walk(P[r, :n], Q[r, :n], tree.tokens[r, :n], list(par))
        prob[r, :n] = pr
        if nxt is not None:
            nxt[r, :n] = nx
    return AcceptanceLaw(prob, nxt)


def expected_accepted_length(target_logits, draft_logits, tokens, parents=None, *, mode="traversal", temperature=1.0,
                             top_k=None, top_p=None, num_nodes=None) -> torch.Tensor:
    """``E[num_accepted | tree, logits]`` per row, float64 ``[B]`` (see the module docstring):
    the expectation over the verifier's randomness for the tree given. Add 1 for the tokens a
    block emits."""
    law = acceptance_law(target_logits, draft_logits, tokens, parents, mode=mode, temperature=temperature, top_k=top_k,
                         top_p=top_p, num_nodes=num_nodes)
    tree = tokens if isinstance(tokens, DraftTree) else DraftTree(tokens, parents, num_nodes)
    depth = torch.where(tree.valid, tree.depth.long(), 0).to(law.prob.device, torch.float64)
    return (law.prob * depth).sum(1)


def _greedy_law(target_logits, tree, next_token):
    B, T, V = target_logits.shape
    path, nacc, y = _ref.verify(target_logits, None, tree.tokens, tree.parents, tree.num_nodes, "greedy", 1.0,
                                tree.max_depth)
    rows = torch.arange(B, device=target_logits.device)
    last = path.gather(1, nacc[:, None])[:, 0]
    prob = torch.zeros(B, T, dtype=torch.float64, device=target_logits.device)
    prob[rows, last] = 1.0
    nxt = None
    if next_token:
        nxt = torch.zeros(B, T, V, dtype=torch.float64, device=target_logits.device)
        nxt[rows, last, y] = 1.0
    return AcceptanceLaw(prob, nxt)


def _pattern(tokens):
    """The tokens relabelled by first occurrence: rows with equal patterns have equal token equalities."""
    first = {}
    return tuple(first.setdefault(t, len(first)) for t in tokens)


def _accept_prob(p_x, q_x):
    """P(u * q < p) for u ~ U(0, 1): ``min(1, p / q)``, 1 where q == 0 < p, 0 where p == 0."""
    return _trav.child_ratio(torch.ones_like(p_x), p_x, q_x)


def _at(v, x):
    """``v[r, x[r]]`` for ``v [R, V]``, ``x [R]``."""
    return v.gather(1, x[:, None])[:, 0]


# Each walk takes rows sharing one course: P, Q [R, n, V], tokens [R, n], parents (list of n),
# and returns prob [R, n] and the next-token laws [R, n, V].

def _rrs_rows(P, Q, tokens, parents):
    R, n, V = P.shape
    kids = _trav.children_lists(torch.tensor(parents), n)
    prob = torch.zeros(R, n, dtype=P.dtype, device=P.device)
    nxt = torch.zeros_like(P)
    work = [(0, torch.ones(R, dtype=P.dtype, device=P.device))]  # (accepted node, P(arrive))
    while work:
        v, arrive = work.pop()
        p, q = P[:, v], Q[:, v]
        stay = arrive
        for c in kids[v]:
            x = tokens[:, c]
            a = _accept_prob(_at(p, x), _at(q, x))
            work.append((c, stay * a))
            onehot = torch.nn.functional.one_hot(x, V).bool()
            p, q = _ref._residual(p, q), _ref._reject_draft_token(q, onehot)
            stay = stay * (1 - a)
        prob[:, v] = stay
        nxt[:, v] = p
    return prob, nxt


def _kseq_rows(P, Q, tokens, parents):
    R, n, V = P.shape
    tok0 = tokens[0].tolist()  # the rows share the token pattern: groups from the first row
    prob = torch.zeros(R, n, dtype=P.dtype, device=P.device)
    nxt = torch.zeros_like(P)
    work = [([0], 0, torch.ones(R, dtype=P.dtype, device=P.device))]  # (group sharing the context, last node, P)
    while work:
        group, last, arrive = work.pop()
        members = set(group)
        cand = [j for j in range(1, n) if parents[j] in members]
        rep = min(group)
        p, q = P[:, rep], Q[:, rep]
        rho = _ref.spectr_rho(p, q, torch.full((R,), len(cand), device=P.device))
        stay = arrive
        for j in cand:
            x = tokens[:, j]
            a = _accept_prob(_at(p, x), rho * _at(q, x))
            work.append(([i for i in cand if tok0[i] == tok0[j]], j, stay * a))
            stay = stay * (1 - a)
        r = p if not cand else torch.clamp(p - rho[:, None] * q, min=0)
        r = torch.where(r.sum(-1, keepdim=True) > 0, r, p)
        prob[:, last] += stay
        nxt[:, last] += stay[:, None] * r / r.sum(-1, keepdim=True)
    nxt /= torch.where(prob > 0, prob, 1.0)[..., None]
    return prob, nxt


def _traversal_rows(P, Q, tokens, parents):
    """The walk of :func:`.traversal_reference._walk` without the early exit: every node's test
    is weighed by the probability of reaching it (all earlier subtrees rejected)."""
    R, n, V = P.shape
    kids = _trav.children_lists(torch.tensor(parents), n)
    prob = torch.zeros(R, n, dtype=P.dtype, device=P.device)
    nxt = torch.zeros_like(P)
    one = torch.ones(R, dtype=P.dtype, device=P.device)
    # frames: node, p, b, s, next child, P(arrive at node), P(no hit in its subtree so far), P(hit so far)
    stack = [[0, one, P[:, 0], Q[:, 0], 0, one, one, 0 * one]]
    while True:
        v, p, b, s, k, arrive, stay, hit = stack[-1]
        if k < len(kids[v]):
            c = kids[v][k]
            x = tokens[:, c]
            stack.append([c, _trav.child_ratio(p, _at(b, x), _at(s, x)), P[:, c], Q[:, c], 0, arrive * stay, one, 0 * one])
            continue
        acc = one if v == 0 else p
        prob[:, v] = arrive * stay * acc
        nxt[:, v] = b
        h = hit + stay * acc  # P(the subtree of v holds the accepted node | arrive at v)
        stack.pop()
        if not stack:
            return prob, nxt
        parent = stack[-1]
        parent[7] = parent[7] + parent[6] * h
        parent[6] = parent[6] * (1 - h)
        parent[1], parent[2], parent[3] = _trav.reject_child(parent[1], parent[2], parent[3], tokens[:, v])
        parent[4] += 1
