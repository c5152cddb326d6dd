"""PyTorch reference for tree verification (SPEC sections 3 and 4), vectorised over rows.

Modes:

* ``rrs`` -- recursive rejection sampling: the children of a node are a without-replacement
  sample of q in sampling order (SD, RSD-C, RSD-S).
* ``kseq`` -- SpecTr's k-sequential selection: the children are i.i.d. draws of q; after
  accepting token x the walk continues from every candidate carrying x.
* ``greedy`` -- accept a child iff its token is the target's argmax.

Noise: ``uniform [B, T]`` (the acceptance test of node i uses ``uniform[b, i]``) and
``gumbel [B, V]`` (the correction/bonus token is ``argmax log r + gumbel`` over the final
residual r), or ``(seed, offset)`` for the same Philox streams (:mod:`rsd_kernels.noise`).

This reference keeps whole residual vectors; a kernel may instead recompute ``p_k(x)``,
``q_k(x)`` elementwise from p, q and the stored scalars -- the operations below are written
in that same order (successive divisions) so both agree to rounding.
"""
from __future__ import annotations

import torch

from .. import noise as _noise

RHO_ITERS = 40  # bisection steps for SpecTr's rho* on [1, k]


def _probs(logits, temperature, dt):
    return torch.softmax(logits.to(dt) / temperature, dim=-1)


def _reject_draft_token(q, x_onehot):
    """q_{k+1}: q_k with the rejected token removed, renormalised by ``1 - q_k(x_k)``.

    (A module-level function so tests can break it on purpose: the negative control.)
    """
    denom = 1.0 - (q * x_onehot).sum(-1, keepdim=True)
    q = q.masked_fill(x_onehot, 0.0)
    return torch.where(denom > 0, q / denom.clamp(min=torch.finfo(q.dtype).tiny), torch.zeros_like(q))


def _residual(p, q):
    """normalize(max(p - q, 0)), keeping p where the mass rounds to 0 (then p == q)."""
    r = torch.clamp(p - q, min=0)
    mass = r.sum(-1, keepdim=True)
    return torch.where(mass > 0, r / mass.clamp(min=torch.finfo(p.dtype).tiny), p)


def spectr_rho(p, q, k):
    """rho* in [1, k] solving ``1 - (1 - beta)^k = rho * beta``, ``beta(rho) = sum min(q, p/rho)``.

    ``p, q [B, V]``, ``k [B]``; bisection with :data:`RHO_ITERS` steps, midpoint returned.
    k == 1 (or beta(1) == 0) gives rho = 1.
    """
    kf = k.to(p.dtype)
    lo = torch.ones_like(kf)
    hi = torch.maximum(kf, lo)
    for _ in range(RHO_ITERS):
        mid = 0.5 * (lo + hi)
        beta = torch.minimum(q, p / mid[:, None]).sum(-1)
        f = 1.0 - (1.0 - beta) ** kf - mid * beta
        lo = torch.where(f > 0, mid, lo)
        hi = torch.where(f > 0, hi, mid)
    return torch.where(k <= 1, torch.ones_like(kf), 0.5 * (lo + hi))


def _sample(weights, gumbel):
    """argmax over tokens with positive weight of ``log(weight) + gumbel``."""
    score = torch.where(weights > 0, torch.log(weights) + gumbel.to(weights.dtype), float("-inf"))
    return score.argmax(-1)


def _path_from(parents, last, max_depth):
    """Root-to-``last`` node indices per row, ``-1`` padded to ``max_depth + 1``."""
    B = parents.shape[0]
    chain = [last]
    node = last
    for _ in range(max_depth):
        node = torch.where(node > 0, parents.long().gather(1, node.clamp(min=0)[:, None])[:, 0], -1)
        chain.append(node)
    nodes = torch.stack(chain[::-1], dim=1)  # [B, max_depth+1], leading -1s
    depth = (nodes >= 0).sum(1)
    # left-align: the root first
    idx = (torch.arange(max_depth + 1, device=nodes.device)[None, :] + (max_depth + 1 - depth)[:, None])
    out = nodes.gather(1, idx.clamp(max=max_depth))
    out = torch.where(torch.arange(max_depth + 1, device=nodes.device)[None, :] < depth[:, None], out, -1)
    return out, depth - 1


def verify(target_logits, draft_logits, tokens, parents, num_nodes, mode, temperature, max_depth,
           uniform=None, gumbel=None, seed=None, offset=0):
    """Walk the tree from the root. See the module docstring. Returns (path, num_accepted, next_token)."""
    B, T, V = target_logits.shape
    dev = target_logits.device
    dt = torch.float64 if target_logits.dtype == torch.float64 else torch.float32
    if mode != "greedy" and uniform is None:
        uniform, gumbel = _noise.verify_noise(seed, offset, B, T, V, device=dev)
    valid = torch.arange(T, device=dev)[None, :] < num_nodes[:, None].long()
    par = parents.long()
    if mode == "kseq":
        last, nxt = _walk_kseq(target_logits, draft_logits, tokens, par, valid, temperature, uniform, gumbel, dt)
    else:
        last, nxt = _walk_rrs(target_logits, draft_logits, tokens, par, valid, mode, temperature, uniform, gumbel, dt)
    path, nacc = _path_from(parents, last, max_depth)
    return path, nacc, nxt


def _walk_rrs(tl, dl, tokens, par, valid, mode, temperature, uniform, gumbel, dt):
    """One pass over nodes in index order: a node is tested iff its parent is the current node."""
    B, T, V = tl.shape
    rows = torch.arange(B, device=tl.device)
    cur = torch.zeros(B, dtype=torch.long, device=tl.device)
    greedy = mode == "greedy"
    if greedy:
        best = tl.argmax(-1)  # [B, T]
    else:
        p = _probs(tl[:, 0], temperature, dt)
        q = _probs(dl[:, 0], temperature, dt)
    for j in range(1, T):
        cand = valid[:, j] & (par[:, j] == cur)
        if not bool(cand.any()):
            continue
        x = tokens[:, j]
        if greedy:
            acc = cand & (x == best[rows, cur])
        else:
            px, qx = p[rows, x], q[rows, x]
            acc = cand & (uniform[:, j].to(dt) * qx < px)
            rej = cand & ~acc
            if bool(rej.any()):
                onehot = torch.nn.functional.one_hot(x, V).bool()
                p_new = _residual(p, q)
                q_new = _reject_draft_token(q, onehot)
                p = torch.where(rej[:, None], p_new, p)
                q = torch.where(rej[:, None], q_new, q)
            if bool(acc.any()):
                p = torch.where(acc[:, None], _probs(tl[:, j], temperature, dt), p)
                q = torch.where(acc[:, None], _probs(dl[:, j], temperature, dt), q)
        cur = torch.where(acc, j, cur)
    if greedy:
        return cur, best[rows, cur]
    return cur, _sample(p, gumbel)


def _walk_kseq(tl, dl, tokens, par, valid, temperature, uniform, gumbel, dt):
    """Level by level: candidates are the children of every node in the current group."""
    B, T, V = tl.shape
    rows = torch.arange(B, device=tl.device)
    idx = torch.arange(T, device=tl.device)
    group = (idx == 0).expand(B, T).clone()  # [B, T] nodes sharing the current context
    rep = torch.zeros(B, dtype=torch.long, device=tl.device)  # lowest-index group member
    last = torch.zeros(B, dtype=torch.long, device=tl.device)
    active = torch.ones(B, dtype=torch.bool, device=tl.device)
    nxt = torch.zeros(B, dtype=torch.long, device=tl.device)
    while bool(active.any()):
        in_group = group.gather(1, par.clamp(min=0)) & (par >= 0)
        cand = in_group & valid & active[:, None]
        k = cand.sum(1)
        p = _probs(tl[rows, rep], temperature, dt)
        q = _probs(dl[rows, rep], temperature, dt)
        rho = spectr_rho(p, q, k)
        acc_node = torch.full((B,), -1, dtype=torch.long, device=tl.device)
        for j in range(1, T):
            test = cand[:, j] & (acc_node < 0)
            if not bool(test.any()):
                continue
            x = tokens[:, j]
            ok = test & (uniform[:, j].to(dt) * rho * q[rows, x] < p[rows, x])
            acc_node = torch.where(ok, j, acc_node)
        ended = active & (acc_node < 0)
        if bool(ended.any()):
            leaf = k == 0
            r = torch.where(leaf[:, None], p, torch.clamp(p - rho[:, None] * q, min=0))
            r = torch.where(r.sum(-1, keepdim=True) > 0, r, p)
            nxt = torch.where(ended, _sample(r, gumbel), nxt)
        moved = active & (acc_node >= 0)
        x_acc = tokens.gather(1, acc_node.clamp(min=0)[:, None])
        group = torch.where(moved[:, None], cand & (tokens == x_acc), group)
        rep = torch.where(moved, group.long().argmax(1), rep)
        last = torch.where(moved, acc_node, last)
        active = moved
    return last, nxt
