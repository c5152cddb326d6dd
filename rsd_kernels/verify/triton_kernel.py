"""Triton kernel for ``verify_tree``: one launch, one program per batch row walking its tree.

The program follows :mod:`rsd_kernels.verify.reference` step for step:

* ``rrs``: one pass over node indices; node ``j`` is tested iff its parent is the
  current node. The softmax statistics (max, sum of exp) of the target and draft rows of the
  current node are computed when the walk arrives at it (only visited nodes are read). After
  ``k`` rejections at a node the residuals ``p_k, q_k`` are never stored: the program keeps the
  per-step scalars (rejected token ``x_s``, residual mass ``Z_s``, draft denominator
  ``1 - q_s(x_s)``) and recomputes ``p_k(x), q_k(x)`` elementwise with the reference's
  successive divisions. A residual mass is computed (one pass over V) only at a rejection.
* ``greedy``: the longest matching path, ties to the first in sampling order (the rule of
  :mod:`rsd_kernels.verify.reference`): a forward pass marks the nodes whose whole root path
  matches the argmax (a node's argmax is computed once, when its first child is tested, so
  only the rows of matched nodes are read), a backward pass takes each node's deepest matched
  descendant, a forward pass walks from the root through the first child on a longest path.
* ``kseq``: level by level; the candidates are the children of every node of the current
  group; ``rho*`` by :data:`~rsd_kernels.verify.reference.RHO_ITERS` bisection steps (only
  when there are two or more candidates); the final residual ``max(p - rho q, 0)`` and its
  mass come out of the same pass that samples the next token.

The correction/bonus token is ``argmax log(r) + gumbel`` (lowest index on ties), the Gumbel
noise read from ``gumbel`` or generated in-kernel from the ``RESIDUAL`` Philox stream; the
acceptance uniforms likewise from ``uniform`` or the ``ACCEPT`` stream.
Limits: ``T <= MAX_TREE_NODES`` (the per-row state lives in registers of ``next_pow2(T)``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import noise as _noise
from .. import triton_compat  # noqa: F401  (interpreter fix, see module)
from ..triton_noise import STREAM_RESIDUAL, accept_uniform, gumbel, token_uniforms
from .reference import RHO_ITERS

MAX_TREE_NODES = 256
MODE_IDS = {"rrs": 0, "kseq": 1, "greedy": 2}


@triton.jit
def _stats(row_ptr, V, temp, CT: tl.constexpr, BLOCK_V: tl.constexpr):
    """(max, sum exp(x - max)) of ``row / temp`` in dtype CT, online over the vocabulary."""
    offs0 = tl.arange(0, BLOCK_V)
    m = tl.full([], float("-inf"), CT)
    s = tl.zeros([], CT)
    for v0 in range(0, V, BLOCK_V):
        offs = v0 + offs0
        x = tl.load(row_ptr + offs, mask=offs < V, other=float("-inf")).to(CT) / temp
        m_new = tl.maximum(m, tl.max(x, 0))
        alpha = tl.where(m == float("-inf"), 0.0, tl.exp(m - m_new))
        e = tl.where(x == float("-inf"), 0.0, tl.exp(x - m_new))
        s = s * alpha + tl.sum(e, 0)
        m = m_new
    return m, s


@triton.jit
def _row_argmax(row_ptr, V, BLOCK_V: tl.constexpr):
    """Index of the largest entry of the row, lowest index on ties."""
    offs0 = tl.arange(0, BLOCK_V)
    best = tl.full([], float("-inf"), tl.float64)
    arg = tl.zeros([], tl.int32)
    for v0 in range(0, V, BLOCK_V):
        offs = v0 + offs0
        x = tl.load(row_ptr + offs, mask=offs < V, other=float("-inf")).to(tl.float64)
        cm = tl.max(x, 0)
        ci = tl.min(tl.where(x == cm, offs, 2147483647), 0)
        take = cm > best
        arg = tl.where(take, ci, arg)
        best = tl.where(take, cm, best)
    return arg


@triton.jit
def _rejected(p, q, x, n_rej, rej_tok, rej_z, rej_d, idx_t):
    """``p_k, q_k`` at tokens ``x`` from ``p_0, q_0`` and the stored per-rejection scalars.

    The same operations, in the same order, as ``_residual`` / ``_reject_draft_token`` of
    the reference (``p`` first with the old ``q``, then ``q``).
    """
    for s in range(n_rej):
        xs = tl.sum(tl.where(idx_t == s, rej_tok, 0), 0)
        zs = tl.sum(tl.where(idx_t == s, rej_z, 0.0), 0)
        ds = tl.sum(tl.where(idx_t == s, rej_d, 0.0), 0)
        r = tl.maximum(p - q, 0.0)
        p = tl.where(zs > 0, r / zs, p)
        q = tl.where(x == xs, 0.0, q)
        q = tl.where(ds > 0, q / ds, 0.0)
    return p, q


@triton.jit
def _probs_at(t_row, d_row, x, mask, temp, m_t, s_t, m_d, s_d, CT: tl.constexpr):
    """Target and draft softmax probabilities at tokens ``x`` (0 where ``mask`` is false)."""
    lt = tl.load(t_row + x, mask=mask, other=float("-inf")).to(CT) / temp
    ld = tl.load(d_row + x, mask=mask, other=float("-inf")).to(CT) / temp
    p = tl.where(lt == float("-inf"), 0.0, tl.exp(lt - m_t)) / s_t
    q = tl.where(ld == float("-inf"), 0.0, tl.exp(ld - m_d)) / s_d
    return p, q


@triton.jit
def _gumbel_at(g_row, offs, mask, seed, offset, row, GEN: tl.constexpr, CT: tl.constexpr):
    if GEN:
        g = gumbel(token_uniforms(seed, offset, row, STREAM_RESIDUAL, offs >> 2, offs & 3))
    else:
        g = tl.load(g_row + offs, mask=mask, other=0.0)
    return g.to(CT)


@triton.jit
def _uniforms(u_row, T, seed, offset, row, GEN: tl.constexpr, CT: tl.constexpr, BLOCK_T: tl.constexpr):
    """The acceptance uniforms of all nodes of the row, ``[BLOCK_T]`` (one Philox call)."""
    idx = tl.arange(0, BLOCK_T)
    if GEN:
        u = accept_uniform(seed, offset, row, idx)
    else:
        u = tl.load(u_row + idx, mask=idx < T, other=0.5)
    return u.to(CT)


@triton.jit
def _in_group(group, par_v, idx_t, BLOCK_T: tl.constexpr):
    """``group[par_v[j]]`` for every j (False for ``par_v < 0``), via the group packed into
    ``BLOCK_T / 32`` bit words: [BLOCK_T, words] work instead of a [BLOCK_T, BLOCK_T] matrix."""
    NW: tl.constexpr = (BLOCK_T + 31) // 32
    widx = tl.arange(0, NW)
    bits = tl.where(group, 1, 0)[:, None] << (idx_t % 32)[:, None]
    words = tl.sum(tl.where((idx_t // 32)[:, None] == widx[None, :], bits, 0), 0)  # distinct bits: sum == or
    pw = tl.sum(tl.where((par_v // 32)[:, None] == widx[None, :], words[None, :], 0), 1)
    return (par_v >= 0) & (((pw >> (par_v % 32)) & 1) != 0)


@triton.jit
def _verify_tree_kernel(
    tl_ptr, dl_ptr, tok_ptr, par_ptr, nn_ptr, u_ptr, g_ptr, temp_ptr, temp_val,
    path_ptr, nacc_ptr, next_ptr,
    T, V, P, seed, offset,
    MODE: tl.constexpr, GEN: tl.constexpr, CT: tl.constexpr, RHO_STEPS: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_P: tl.constexpr,
):
    b = tl.program_id(0)
    row64 = b.to(tl.int64)
    t_base = tl_ptr + row64 * T * V
    d_base = dl_ptr + row64 * T * V
    tok_row = tok_ptr + row64 * T
    par_row = par_ptr + row64 * T
    u_row = u_ptr + row64 * T
    g_row = g_ptr + row64 * V
    nn = tl.load(nn_ptr + b)
    if CT == tl.float64:  # a float64 temperature needs a tensor (scalar kernel arguments are fp32)
        temp = tl.load(temp_ptr).to(CT)
    else:
        temp = temp_val + tl.zeros([], CT)  # (a literal 1.0 arrives as a Python float)
    idx_t = tl.arange(0, BLOCK_T)
    offs0 = tl.arange(0, BLOCK_V)
    u_all = _uniforms(u_row, T, seed, offset, b, GEN, CT, BLOCK_T)
    # the row's tree in registers: the walk reads node j's fields with a register reduction
    par_v = tl.load(par_row + idx_t, mask=idx_t < T, other=-1)
    tok_v = tl.load(tok_row + idx_t, mask=idx_t < T, other=-1)

    last = 0
    nxt = 0
    if MODE == 2:
        # ---------------- greedy: the longest matching path ----------------
        # reach[j]: depth of node j if its whole root path matches (else -1), the target argmax
        # of a node is read when one of its children is tested, once (best_v caches it)
        best_v = tl.full([BLOCK_T], -1, tl.int32)
        reach = tl.where(idx_t == 0, 0, -1)
        for j in range(1, T):
            if j < nn:
                par = tl.sum(tl.where(idx_t == j, par_v, 0), 0)
                rp = tl.sum(tl.where(idx_t == par, reach, 0), 0)
                if rp >= 0:
                    bp = tl.sum(tl.where(idx_t == par, best_v, 0), 0)
                    if bp < 0:
                        bp = _row_argmax(t_base + par * V, V, BLOCK_V)
                        best_v = tl.where(idx_t == par, bp, best_v)
                    x = tl.sum(tl.where(idx_t == j, tok_v, 0), 0)
                    if x == bp:
                        reach = tl.where(idx_t == j, rp + 1, reach)
        # reach[j] <- the deepest matching depth in j's subtree (children come after parents)
        for jj in range(1, T):
            j = T - jj
            rj = tl.sum(tl.where(idx_t == j, reach, 0), 0)
            if rj >= 0:
                par = tl.sum(tl.where(idx_t == j, par_v, 0), 0)
                reach = tl.where((idx_t == par) & (reach < rj), rj, reach)
        # from the root, the first child (sampling order) through which a longest path passes
        h = tl.sum(tl.where(idx_t == 0, reach, 0), 0)
        cur = 0
        for j in range(1, T):
            par = tl.sum(tl.where(idx_t == j, par_v, 0), 0)
            rj = tl.sum(tl.where(idx_t == j, reach, 0), 0)
            if (par == cur) & (rj == h):
                cur = j
        last = cur
        bl = tl.sum(tl.where(idx_t == cur, best_v, 0), 0)
        if bl < 0:
            bl = _row_argmax(t_base + cur * V, V, BLOCK_V)
        nxt = bl
    elif MODE == 0:
        # ---------------- rrs: a single pass over the node indices ----------------
        cur = 0
        n_rej = 0
        rej_tok = tl.zeros([BLOCK_T], tl.int64)
        rej_z = tl.zeros([BLOCK_T], CT)
        rej_d = tl.zeros([BLOCK_T], CT)
        m_t, s_t = _stats(t_base, V, temp, CT, BLOCK_V)
        m_d, s_d = _stats(d_base, V, temp, CT, BLOCK_V)
        for j in range(1, T):
            par = tl.sum(tl.where(idx_t == j, par_v, 0), 0)
            if (j < nn) & (par == cur):
                x = tl.sum(tl.where(idx_t == j, tok_v, 0), 0)
                t_cur = t_base + cur * V
                d_cur = d_base + cur * V
                p0, q0 = _probs_at(t_cur, d_cur, x, True, temp, m_t, s_t, m_d, s_d, CT)
                px, qx = _rejected(p0, q0, x, n_rej, rej_tok, rej_z, rej_d, idx_t)
                u = tl.sum(tl.where(idx_t == j, u_all, 0.0), 0)
                acc = u * qx < px
                if acc:
                    cur = j
                    n_rej = 0
                    m_t, s_t = _stats(t_base + j * V, V, temp, CT, BLOCK_V)
                    m_d, s_d = _stats(d_base + j * V, V, temp, CT, BLOCK_V)
                else:
                    # residual mass of max(p_k - q_k, 0): one pass, only at a rejection
                    z = tl.zeros([], CT)
                    for v0 in range(0, V, BLOCK_V):
                        offs = v0 + offs0
                        pv, qv = _probs_at(t_cur, d_cur, offs, offs < V, temp, m_t, s_t, m_d, s_d, CT)
                        pv, qv = _rejected(pv, qv, offs, n_rej, rej_tok, rej_z, rej_d, idx_t)
                        z += tl.sum(tl.maximum(pv - qv, 0.0), 0)
                    rej_tok = tl.where(idx_t == n_rej, x, rej_tok)
                    rej_z = tl.where(idx_t == n_rej, z, rej_z)
                    rej_d = tl.where(idx_t == n_rej, 1.0 - qx, rej_d)
                    n_rej += 1
        last = cur
        # correction / bonus token: argmax log p_k + gumbel over the final residual
        t_cur = t_base + cur * V
        d_cur = d_base + cur * V
        best_s = tl.full([], float("-inf"), CT)
        arg = tl.zeros([], tl.int32)
        for v0 in range(0, V, BLOCK_V):
            offs = v0 + offs0
            inb = offs < V
            pv, qv = _probs_at(t_cur, d_cur, offs, inb, temp, m_t, s_t, m_d, s_d, CT)
            pv, qv = _rejected(pv, qv, offs, n_rej, rej_tok, rej_z, rej_d, idx_t)
            g = _gumbel_at(g_row, offs, inb, seed, offset, b, GEN, CT)
            sc = tl.where((pv > 0) & inb, tl.log(pv) + g, float("-inf"))
            cm = tl.max(sc, 0)
            ci = tl.min(tl.where(sc == cm, offs, 2147483647), 0)
            take = cm > best_s
            arg = tl.where(take, ci, arg)
            best_s = tl.where(take, cm, best_s)
        nxt = arg
    else:
        # ---------------- kseq: level by level over groups of equal-context nodes ----------------
        valid_v = idx_t < nn
        group = idx_t == 0
        rep = 0
        active = True
        while active:
            cand = _in_group(group, par_v, idx_t, BLOCK_T) & valid_v
            k = tl.sum(cand.to(tl.int32), 0)
            t_cur = t_base + rep * V
            d_cur = d_base + rep * V
            m_t, s_t = _stats(t_cur, V, temp, CT, BLOCK_V)
            m_d, s_d = _stats(d_cur, V, temp, CT, BLOCK_V)
            rho = tl.full([], 1.0, CT)
            if k > 1:
                kf = k.to(CT)
                lo = tl.full([], 1.0, CT)
                hi = tl.maximum(kf, lo)
                for _ in range(RHO_STEPS):
                    mid = 0.5 * (lo + hi)
                    beta = tl.zeros([], CT)
                    for v0 in range(0, V, BLOCK_V):
                        offs = v0 + offs0
                        pv, qv = _probs_at(t_cur, d_cur, offs, offs < V, temp, m_t, s_t, m_d, s_d, CT)
                        beta += tl.sum(tl.minimum(qv, pv / mid), 0)
                    powk = tl.full([], 1.0, CT)
                    for _i in range(k):
                        powk = powk * (1.0 - beta)
                    f = 1.0 - powk - mid * beta
                    lo = tl.where(f > 0, mid, lo)
                    hi = tl.where(f > 0, hi, mid)
                rho = 0.5 * (lo + hi)
            acc_node = -1
            for j in range(1, T):
                cj = tl.sum(tl.where(idx_t == j, cand.to(tl.int32), 0), 0) > 0
                if cj & (acc_node < 0):
                    x = tl.sum(tl.where(idx_t == j, tok_v, 0), 0)
                    px, qx = _probs_at(t_cur, d_cur, x, True, temp, m_t, s_t, m_d, s_d, CT)
                    u = tl.sum(tl.where(idx_t == j, u_all, 0.0), 0)
                    if u * rho * qx < px:
                        acc_node = j
            if acc_node < 0:
                # sample from max(p - rho q, 0) (p at a leaf, or where that mass is 0)
                leaf = k == 0
                best_r = tl.full([], float("-inf"), CT)
                arg_r = tl.zeros([], tl.int32)
                best_p = tl.full([], float("-inf"), CT)
                arg_p = tl.zeros([], tl.int32)
                mass = tl.zeros([], CT)
                for v0 in range(0, V, BLOCK_V):
                    offs = v0 + offs0
                    inb = offs < V
                    pv, qv = _probs_at(t_cur, d_cur, offs, inb, temp, m_t, s_t, m_d, s_d, CT)
                    rv = tl.where(leaf, pv, tl.maximum(pv - rho * qv, 0.0))
                    mass += tl.sum(rv, 0)
                    g = _gumbel_at(g_row, offs, inb, seed, offset, b, GEN, CT)
                    sc = tl.where((rv > 0) & inb, tl.log(rv) + g, float("-inf"))
                    cm = tl.max(sc, 0)
                    ci = tl.min(tl.where(sc == cm, offs, 2147483647), 0)
                    arg_r = tl.where(cm > best_r, ci, arg_r)
                    best_r = tl.maximum(cm, best_r)
                    sp = tl.where((pv > 0) & inb, tl.log(pv) + g, float("-inf"))
                    cmp = tl.max(sp, 0)
                    cip = tl.min(tl.where(sp == cmp, offs, 2147483647), 0)
                    arg_p = tl.where(cmp > best_p, cip, arg_p)
                    best_p = tl.maximum(cmp, best_p)
                nxt = tl.where(mass > 0, arg_r, arg_p)
                active = False
            else:
                x_acc = tl.load(tok_row + acc_node)
                group = cand & (tok_v == x_acc)
                rep = tl.min(tl.where(group, idx_t, BLOCK_T), 0)
                last = acc_node
    # ---------------- path: root .. last, -1 padded; one vector store ----------------
    idx_p = tl.arange(0, BLOCK_P)
    depth = 0
    n = last
    while n > 0:
        n = tl.load(par_row + n)
        depth += 1
    path = tl.full([BLOCK_P], -1, tl.int64)
    n = last
    for i in range(0, depth + 1):
        path = tl.where(idx_p == depth - i, n, path)
        n = tl.load(par_row + tl.maximum(n, 0))
    tl.store(path_ptr + row64 * P + idx_p, path, mask=idx_p < P)
    tl.store(nacc_ptr + b, depth)
    tl.store(next_ptr + b, nxt)


def _next_pow2(n: int, lo: int = 1) -> int:
    return max(lo, triton.next_power_of_2(max(int(n), 1)))


def verify(target_logits, draft_logits, tokens, parents, num_nodes, mode, temperature, max_depth,
           uniform=None, gumbel=None, seed=None, offset=0, *, block_v=None):
    """Triton ``verify_tree`` backend; arguments and results as :func:`..reference.verify`.

    ``block_v`` (a power of two) overrides the vocabulary tile; the default is
    ``min(next_pow2(V), 4096)``.
    """
    B, T, V = target_logits.shape
    dev = target_logits.device
    if T > MAX_TREE_NODES:
        raise ValueError(f"the Triton verify kernel supports at most {MAX_TREE_NODES} tree nodes, got T={T}")
    if mode not in MODE_IDS:
        raise ValueError(f"mode must be one of {tuple(MODE_IDS)}, got {mode!r}")
    greedy = mode == "greedy"
    ct = torch.float64 if target_logits.dtype == torch.float64 else torch.float32
    gen = (not greedy) and uniform is None
    if gen:
        if seed is None:
            raise ValueError("verify needs uniform/gumbel noise or a seed")
        _noise.check_seed(seed, offset)
        if T - 1 > _noise.MAX_NODE:
            raise ValueError(f"at most {_noise.MAX_NODE + 1} nodes per tree, got {T}")
    P = int(max_depth) + 1
    path = torch.empty(B, P, dtype=torch.int64, device=dev)
    nacc = torch.empty(B, dtype=torch.int64, device=dev)
    nxt = torch.empty(B, dtype=torch.int64, device=dev)
    if B == 0:
        return path, nacc, nxt
    dummy = torch.zeros(1, dtype=torch.float32, device=dev)
    u = dummy if uniform is None else uniform
    g = dummy if gumbel is None else gumbel
    # no host-to-device copy unless fp64 (keeps the launch capturable in a CUDA graph)
    temp = torch.tensor([temperature], dtype=ct, device=dev) if ct == torch.float64 else dummy
    if block_v is None:
        block_v = min(_next_pow2(V, 16), 4096)
    _verify_tree_kernel[(B,)](
        target_logits, target_logits if draft_logits is None else draft_logits, tokens, parents, num_nodes,
        u, g, temp, float(temperature), path, nacc, nxt, T, V, P, 0 if seed is None else int(seed), int(offset),
        MODE=MODE_IDS[mode], GEN=gen, CT=tl.float64 if ct == torch.float64 else tl.float32, RHO_STEPS=RHO_ITERS,
        BLOCK_T=_next_pow2(T, 16), BLOCK_V=block_v, BLOCK_P=_next_pow2(P, 16), num_warps=4 if block_v <= 1024 else 8,
    )
    return path, nacc, nxt
