"""PyTorch reference for tree verification (SPEC sections 3 and 4), vectorised over rows.

Modes:

* ``rrs`` -- recursive rejection sampling: the children of a node are a without-replacement
  sample of q in sampling order (SD, RSD-C, RSD-S).
* ``kseq`` -- SpecTr's k-sequential selection: the children are i.i.d. draws of q; after
  accepting token x the walk continues from every candidate carrying x.
* ``greedy`` -- a child matches iff its token is the target's argmax at its parent (lowest
  index on ties); the accepted path is the **longest** root path of matching nodes, and among
  equally long ones the first in sampling order (at every node the walk takes the first child,
  in sampling order, through which a longest matching path passes). With one matching child
  per node that is the first-match walk; it differs when several siblings hold the argmax
  token (SpecTr's i.i.d. children can) and a later one has the deeper match. The next token
  is the argmax at the last accepted node. Vectorised: one batched argmax, no walk per node.

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
    if mode == "greedy":
        return _walk_greedy(target_logits, tokens, par, valid, max_depth)
    if mode == "kseq":
        last, nxt = _walk_kseq(target_logits, draft_logits, tokens, par, valid, temperature, uniform, gumbel, dt)
    else:
        last, nxt = _walk_rrs(target_logits, draft_logits, tokens, par, valid, mode, temperature, uniform, gumbel, dt)
    path, nacc = _path_from(parents, last, max_depth)
    return path, nacc, nxt


ARGMAX_CHUNK = 256


def argmax_last(x, chunk=ARGMAX_CHUNK):
    """``x.argmax(-1)`` (lowest index among equal maxima), faster on the CPU: ``amax`` over
    chunks of the last dimension (vectorised, unlike ``argmax``), then ``argmax`` inside the
    first chunk that holds the row maximum only."""
    V = x.shape[-1]
    n = V // chunk
    if n < 2 or x.numel() == 0:
        return x.argmax(-1)
    main = x[..., : n * chunk].unflatten(-1, (n, chunk))
    cmax = main.amax(-1)  # [..., n]
    mmax = cmax.amax(-1, keepdim=True)
    tail = x[..., n * chunk:]
    rmax = torch.maximum(mmax, tail.amax(-1, keepdim=True)) if tail.shape[-1] else mmax
    first = (cmax == rmax).to(torch.uint8).argmax(-1, keepdim=True)  # first chunk holding the maximum
    inner = main.gather(-2, first[..., None].expand(*first.shape, chunk)).squeeze(-2).argmax(-1)
    idx = first.squeeze(-1) * chunk + inner
    if tail.shape[-1]:
        idx = torch.where((mmax >= rmax).squeeze(-1), idx, n * chunk + tail.argmax(-1))
    return idx


def _walk_greedy(tl, tokens, par, valid, max_depth):
    """Greedy verification without a per-node loop (see the module docstring for the rule)."""
    B, T, _ = tl.shape
    dev = tl.device
    idx = torch.arange(T, device=dev)
    best = argmax_last(tl)  # [B, T] target argmax at every node
    real = valid & (idx > 0)[None, :]  # non-root, non-padding nodes
    par_c = torch.where(real, par, 0)  # the root and padding nodes hang on the root
    match = (real & (tokens == best.gather(1, par_c))) | (idx == 0)[None, :]
    # up[b, j, s]: the s-th ancestor of node j (the root is its own ancestor), s = 0..max_depth
    ups = [idx.expand(B, T)]
    for _ in range(max_depth):
        ups.append(par_c.gather(1, ups[-1]))
    up = torch.stack(ups, -1)
    up_flat = up.flatten(1)
    depth = (up > 0).sum(-1)
    ok = match.gather(1, up_flat).view(up.shape).all(-1)  # every node of the root path matches
    reach = torch.where(ok, depth, -1)
    deepest = reach == reach.amax(1, keepdim=True)
    # on[b, j]: node j lies on a longest matching path (an ancestor-or-self of a deepest match)
    on = torch.zeros(B, T, dtype=torch.long, device=dev).scatter_add_(
        1, up_flat, deepest[..., None].expand(up.shape).flatten(1).long()) > 0
    # first[b, j]: no earlier sibling (sampling order = index order) lies on a longest path
    par_s = torch.where(real, par, -1)
    earlier_on = (par_s[:, :, None] == par_s[:, None, :]) & (idx[None, :] < idx[:, None])[None] & on[:, None, :]
    first = on & ~earlier_on.any(-1)
    chosen = first.gather(1, up_flat).view(up.shape).all(-1)
    last = torch.where(chosen, depth, -1).argmax(1)
    # the path, root first, from the last node's ancestors: path[d] = up[last, nacc - d]
    nacc = depth.gather(1, last[:, None])  # [B, 1]
    anc = up.gather(1, last[:, None, None].expand(B, 1, max_depth + 1))[:, 0]  # [B, max_depth + 1]
    d = torch.arange(max_depth + 1, device=dev)[None, :]
    path = torch.where(d <= nacc, anc.gather(1, (nacc - d).clamp(min=0)), -1)
    return path, nacc[:, 0], best.gather(1, last[:, None])[:, 0]


def _walk_rrs(tl, dl, tokens, par, valid, mode, temperature, uniform, gumbel, dt):
    """One pass over nodes in index order: a node is tested iff its parent is the current node."""
    B, T, V = tl.shape
    rows = torch.arange(B, device=tl.device)
    cur = torch.zeros(B, dtype=torch.long, device=tl.device)
    p = _probs(tl[:, 0], temperature, dt)
    q = _probs(dl[:, 0], temperature, dt)
    for j in range(1, T):
        cand = valid[:, j] & (par[:, j] == cur)
        if not bool(cand.any()):
            continue
        x = tokens[:, j]
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
