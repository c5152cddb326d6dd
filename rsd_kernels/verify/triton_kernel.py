"""Triton kernels for ``verify_tree``: vocabulary-wide work spread over the GPU, the walk sequential.

Up to four launches, none waiting on the host:

1. :func:`_node_stats_kernel` (when every node's rows together are small, :func:`launch_plan`),
   grid ``(B * T, vocabulary blocks)``: per node and block the softmax statistics (max, sum of
   exp) of the target and draft rows, or (greedy) the target's max and lowest argmax.
2. :func:`_verify_walk_kernel`, one program per batch row: the walk over the tree, following
   :mod:`rsd_kernels.verify.reference` step for step with scalar work only, plus the V-wide
   passes that depend on the walk (each tile loop software-pipelined):

   * ``rrs``: node ``j`` is tested iff its parent is the current node; the statistics of the
     current node come from launch 1 (or one fused target+draft pass); after ``k`` rejections
     at a node the residuals ``p_k, q_k`` are never stored: the program keeps the per-step
     scalars (rejected token ``x_s``, residual mass ``Z_s``, draft denominator ``1 - q_s(x_s)``)
     and recomputes ``p_k(x), q_k(x)`` elementwise with the reference's successive divisions;
     a residual mass costs one pass, only at a rejection.
   * ``kseq``: level by level; ``rho*`` by a bracketed Newton iteration on
     ``f(rho) = 1 - (1 - beta)^k - rho beta`` (``beta(rho) = sum min(q, p / rho)``; each pass
     returns ``sum min(rho q, p)`` and its slope), a handful of passes instead of the
     reference's 40 bisection steps (the same root to float precision).
   * ``greedy``: the longest matching path (the rule of the reference), argmax compared in the
     compute dtype (float32 for fp16/bf16/fp32 logits: exact for them, no fp64).

   It writes the path, the number accepted and the state the final draw needs.
3. :func:`_residual_sample_kernel`, grid ``(B, vocabulary blocks)`` (not greedy): each block's
   ``argmax log(r) + gumbel`` over the final residual ``r`` (lowest index on ties), the noise
   read from ``gumbel`` or generated from the ``RESIDUAL`` Philox stream, a ``[BLOCK / 4, 4]``
   tile per block (one Philox call per 4 tokens, float32 logs); the acceptance uniforms come
   from ``uniform`` or the ``ACCEPT`` stream.
4. :func:`_residual_merge_kernel`, one program per row: the winner over the blocks.

``seed``, ``offset``, ``T`` and the path length are not specialised (``do_not_specialize``): a new
step or tree reuses the compiled kernels. Limits: ``T <= MAX_TREE_NODES`` (the per-row state lives in registers of ``next_pow2(T)``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import noise as _noise
from .. import backends
from .. import triton_compat  # noqa: F401  (interpreter fix, see module)
from ..triton_noise import STREAM_RESIDUAL, accept_uniform, gumbel, token_uniforms

MAX_TREE_NODES = 256
MODE_IDS = {"rrs": 0, "kseq": 1, "greedy": 2}
PRE_MAX_BYTES = 16 << 20  # launch 1 reads every node's rows when they total at most this
WALK_BLOCK_V = 4096  # with 16 warps: two 16 KB tiles (bf16 target + draft) in flight, no spills
MAX_RHO_PASSES = 24  # kseq: bound on the Newton/bisection passes per level (typically 4-7)
RHO_REL_TOL = {torch.float32: 2.0**-20, torch.float64: 2.0**-42}
NUM_STAGES = tl.constexpr(2)  # software pipelining of the walk's vocabulary loops (the next tile loads while one reduces)


@triton.jit
def _online(m, s, x):
    """One tile of an online (max, sum exp(x - max)) over ``x`` (1-D)."""
    m_new = tl.maximum(m, tl.max(x, 0))
    alpha = tl.where(m == float("-inf"), 0.0, tl.exp(m - m_new))
    e = tl.where(x == float("-inf"), 0.0, tl.exp(x - m_new))
    return m_new, s * alpha + tl.sum(e, 0)


@triton.jit
def _stats2(t_row, d_row, V, temp, CT: tl.constexpr, BLOCK_V: tl.constexpr, DRAFT: tl.constexpr):
    """(max, sum exp) of ``t_row / temp`` and (DRAFT) ``d_row / temp``: one pass over both rows."""
    offs0 = tl.arange(0, BLOCK_V)
    m_t = tl.full([], float("-inf"), CT)
    s_t = tl.zeros([], CT)
    m_d = tl.full([], float("-inf"), CT)
    s_d = tl.zeros([], CT)
    for v0 in tl.range(0, V, BLOCK_V, num_stages=NUM_STAGES):
        offs = v0 + offs0
        ok = offs < V
        m_t, s_t = _online(m_t, s_t, tl.load(t_row + offs, mask=ok, other=float("-inf")).to(CT) / temp)
        if DRAFT:
            m_d, s_d = _online(m_d, s_d, tl.load(d_row + offs, mask=ok, other=float("-inf")).to(CT) / temp)
    return m_t, s_t, m_d, s_d


@triton.jit
def _row_argmax(row_ptr, V, CT: tl.constexpr, BLOCK_V: tl.constexpr):
    """Index of the largest entry of the row (lowest on ties), compared in CT."""
    offs0 = tl.arange(0, BLOCK_V)
    best = tl.full([], float("-inf"), CT)
    arg = tl.zeros([], tl.int32)
    for v0 in tl.range(0, V, BLOCK_V, num_stages=NUM_STAGES):
        offs = v0 + offs0
        x = tl.load(row_ptr + offs, mask=offs < V, other=float("-inf")).to(CT)
        cm = tl.max(x, 0)
        ci = tl.min(tl.where(x == cm, offs, 2147483647), 0)
        take = cm > best
        arg = tl.where(take, ci, arg)
        best = tl.where(take, cm, best)
    return arg


@triton.jit(do_not_specialize=["T"])
def _node_stats_kernel(tl_ptr, dl_ptr, nn_ptr, temp_ptr, temp_val, stat_ptr, arg_ptr, T, V, NB,
                       GREEDY: tl.constexpr, CT: tl.constexpr, BLOCK: tl.constexpr):
    """Program (row b * T + node, block): the block's (m_t, s_t, m_d, s_d), or (greedy) (max, argmax)."""
    bt = tl.program_id(0)
    blk = tl.program_id(1)
    node = bt % T
    if node < tl.load(nn_ptr + bt // T):
        bt64 = bt.to(tl.int64)
        offs = blk * BLOCK + tl.arange(0, BLOCK)
        ok = offs < V
        p = (bt64 * NB + blk) * 4
        xt = tl.load(tl_ptr + bt64 * V + offs, mask=ok, other=float("-inf")).to(CT)
        if GREEDY:
            cm = tl.max(xt, 0)
            tl.store(stat_ptr + p, cm)
            tl.store(arg_ptr + bt64 * NB + blk, tl.min(tl.where(xt == cm, offs, 2147483647), 0))
        else:
            if CT == tl.float64:
                temp = tl.load(temp_ptr).to(CT)
            else:
                temp = temp_val + tl.zeros([], CT)
            m_t, s_t = _online(tl.full([], float("-inf"), CT), tl.zeros([], CT), xt / temp)
            xd = tl.load(dl_ptr + bt64 * V + offs, mask=ok, other=float("-inf")).to(CT) / temp
            m_d, s_d = _online(tl.full([], float("-inf"), CT), tl.zeros([], CT), xd)
            tl.store(stat_ptr + p, m_t)
            tl.store(stat_ptr + p + 1, s_t)
            tl.store(stat_ptr + p + 2, m_d)
            tl.store(stat_ptr + p + 3, s_d)


@triton.jit
def _merged(stat_ptr, base, k: tl.constexpr, NB, NBP: tl.constexpr):
    """(max, sum exp) of a node from its blocks' (entries k, k + 1 of each block's 4)."""
    b = tl.arange(0, NBP)
    ok = b < NB
    mb = tl.load(stat_ptr + (base + b) * 4 + k, mask=ok, other=float("-inf"))
    sb = tl.load(stat_ptr + (base + b) * 4 + k + 1, mask=ok, other=0.0)
    m = tl.max(mb, 0)
    return m, tl.sum(tl.where(mb > float("-inf"), sb * tl.exp(mb - tl.where(m == float("-inf"), 0.0, m)), 0.0), 0)


@triton.jit
def _node_stats(stat_ptr, row64, T, NB, t_row, d_row, V, temp, node,
                PRE: tl.constexpr, CT: tl.constexpr, BLOCK_V: tl.constexpr, NBP: tl.constexpr):
    """Softmax statistics of ``node``'s target and draft rows: from launch 1 or one pass."""
    if PRE:
        base = (row64 * T + node) * NB
        m_t, s_t = _merged(stat_ptr, base, 0, NB, NBP)
        m_d, s_d = _merged(stat_ptr, base, 2, NB, NBP)
    else:
        m_t, s_t, m_d, s_d = _stats2(t_row, d_row, V, temp, CT, BLOCK_V, True)
    return m_t, s_t, m_d, s_d


@triton.jit
def _node_argmax(stat_ptr, arg_ptr, row64, T, NB, row_ptr, V, node,
                 PRE: tl.constexpr, CT: tl.constexpr, BLOCK_V: tl.constexpr, NBP: tl.constexpr):
    if PRE:
        b = tl.arange(0, NBP)
        ok = b < NB
        base = (row64 * T + node) * NB
        mb = tl.load(stat_ptr + (base + b) * 4, mask=ok, other=float("-inf"))
        ib = tl.load(arg_ptr + base + b, mask=ok, other=2147483647)
        arg = tl.min(tl.where(mb == tl.max(mb, 0), ib, 2147483647), 0)
    else:
        arg = _row_argmax(row_ptr, V, CT, BLOCK_V)
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
def _probs_of(lt, ld, temp, m_t, s_t, m_d, s_d, CT: tl.constexpr):
    """Target and draft softmax probabilities of loaded logits ``lt``, ``ld`` (-inf: probability 0)."""
    lt = lt.to(CT) / temp
    ld = ld.to(CT) / temp
    p = tl.where(lt == float("-inf"), 0.0, tl.exp(lt - m_t)) / s_t
    q = tl.where(ld == float("-inf"), 0.0, tl.exp(ld - m_d)) / s_d
    return p, q


@triton.jit
def _probs_at(t_row, d_row, x, mask, temp, m_t, s_t, m_d, s_d, CT: tl.constexpr):
    """Target and draft softmax probabilities at tokens ``x`` (0 where ``mask`` is false)."""
    lt = tl.load(t_row + x, mask=mask, other=float("-inf"))
    ld = tl.load(d_row + x, mask=mask, other=float("-inf"))
    return _probs_of(lt, ld, temp, m_t, s_t, m_d, s_d, CT)


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
def _rho_pass(t_cur, d_cur, V, temp, m_t, s_t, m_d, s_d, rho, CT: tl.constexpr, BLOCK_V: tl.constexpr):
    """``sum min(rho q, p)`` and its slope in rho, ``sum_{rho q < p} q``: one pass over both rows."""
    offs0 = tl.arange(0, BLOCK_V)
    g = tl.zeros([], CT)
    gp = tl.zeros([], CT)
    for v0 in tl.range(0, V, BLOCK_V, num_stages=NUM_STAGES):
        offs = v0 + offs0
        pv, qv = _probs_at(t_cur, d_cur, offs, offs < V, temp, m_t, s_t, m_d, s_d, CT)
        rq = rho * qv
        g += tl.sum(tl.minimum(rq, pv), 0)
        gp += tl.sum(tl.where(rq < pv, qv, 0.0), 0)
    return g, gp


@triton.jit
def _solve_rho(t_cur, d_cur, V, temp, m_t, s_t, m_d, s_d, k, RHO_TOL, MAX_PASSES,
               CT: tl.constexpr, BLOCK_V: tl.constexpr):
    """``rho*`` in [1, k]: bracketed Newton on the decreasing ``f(rho) = 1 - (1 - beta)^k - rho beta``
    (bisection whenever the Newton step leaves the bracket). Returns (rho, passes)."""
    kf = k.to(CT)
    lo = tl.full([], 1.0, CT)
    hi = tl.maximum(kf, lo)
    rho = lo
    n = 0
    conv = 0
    while (conv == 0) & (n < MAX_PASSES):
        g, gp = _rho_pass(t_cur, d_cur, V, temp, m_t, s_t, m_d, s_d, rho, CT, BLOCK_V)
        n += 1
        beta = g / rho
        pk1 = tl.full([], 1.0, CT)
        for _i in range(k - 1):
            pk1 = pk1 * (1.0 - beta)
        f = 1.0 - pk1 * (1.0 - beta) - g
        fp = kf * pk1 * (gp - beta) / rho - gp
        lo = tl.where(f > 0, rho, lo)
        hi = tl.where(f > 0, hi, rho)
        newton = rho - f / tl.where(fp < 0, fp, -1.0)
        nxt = tl.where((fp < 0) & (newton > lo) & (newton < hi), newton, 0.5 * (lo + hi))
        if (f == 0) | (tl.abs(nxt - rho) <= RHO_TOL * rho) | (hi - lo <= RHO_TOL * hi):
            conv = 1
        if f != 0:
            rho = nxt
    return rho, n


@triton.jit(do_not_specialize=["T", "P", "seed", "offset"])
def _verify_walk_kernel(
    tl_ptr, dl_ptr, tok_ptr, par_ptr, nn_ptr, u_ptr, temp_ptr, temp_val, stat_ptr, arg_ptr,
    path_ptr, nacc_ptr, next_ptr, stf_ptr, sti_ptr, rej_ptr, passes_ptr,
    T, V, P, NB, seed, offset, RHO_TOL, MAX_PASSES,
    MODE: tl.constexpr, GEN: tl.constexpr, CT: tl.constexpr, PRE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_P: tl.constexpr, NBP: tl.constexpr,
):
    b = tl.program_id(0)
    row64 = b.to(tl.int64)
    t_base = tl_ptr + row64 * T * V
    d_base = dl_ptr + row64 * T * V
    tok_row = tok_ptr + row64 * T
    par_row = par_ptr + row64 * T
    nn = tl.load(nn_ptr + b)
    if CT == tl.float64:  # a float64 temperature needs a tensor (scalar kernel arguments are fp32)
        temp = tl.load(temp_ptr).to(CT)
    else:
        temp = temp_val + tl.zeros([], CT)  # (a literal 1.0 arrives as a Python float)
    idx_t = tl.arange(0, BLOCK_T)
    # the row's tree in registers: the walk reads node j's fields with a register reduction
    par_v = tl.load(par_row + idx_t, mask=idx_t < T, other=-1)
    tok_v = tl.load(tok_row + idx_t, mask=idx_t < T, other=-1)
    passes = 0
    last = 0
    if MODE == 2:
        # ---------------- greedy: the longest matching path ----------------
        # reach[j]: depth of node j if its whole root path matches (else -1); the target argmax
        # of a node is taken when one of its children is tested, once (best_v caches it)
        best_v = tl.full([BLOCK_T], -1, tl.int32)
        reach = tl.where(idx_t == 0, 0, -1)
        for j in range(1, T):
            if j < nn:
                par = tl.sum(tl.where(idx_t == j, par_v, 0), 0)
                rp = tl.sum(tl.where(idx_t == par, reach, 0), 0)
                if rp >= 0:
                    bp = tl.sum(tl.where(idx_t == par, best_v, 0), 0)
                    if bp < 0:
                        bp = _node_argmax(stat_ptr, arg_ptr, row64, T, NB, t_base + par * V, V, par, PRE, CT,
                                          BLOCK_V, NBP)
                        if not PRE:
                            passes += 1
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
            bl = _node_argmax(stat_ptr, arg_ptr, row64, T, NB, t_base + cur * V, V, cur, PRE, CT, BLOCK_V, NBP)
            if not PRE:
                passes += 1
        tl.store(next_ptr + b, bl.to(tl.int64))
    else:
        if GEN:
            u_all = accept_uniform(seed, offset, b, idx_t).to(CT)
        else:
            u_all = tl.load(u_ptr + row64 * T + idx_t, mask=idx_t < T, other=0.5).to(CT)
        offs0 = tl.arange(0, BLOCK_V)
        rej_tok = tl.zeros([BLOCK_T], tl.int32)
        rej_z = tl.zeros([BLOCK_T], CT)
        rej_d = tl.zeros([BLOCK_T], CT)
        n_rej = 0
        rho = tl.full([], 1.0, CT)
        leaf = 0
        if MODE == 0:
            # ---------------- rrs: a single pass over the node indices ----------------
            cur = 0
            m_t, s_t, m_d, s_d = _node_stats(stat_ptr, row64, T, NB, t_base, d_base, V, temp, 0, PRE, CT, BLOCK_V,
                                             NBP)
            if not PRE:
                passes += 1
            for j in range(1, T):
                par = tl.sum(tl.where(idx_t == j, par_v, 0), 0)
                if (j < nn) & (par == cur):
                    x = tl.sum(tl.where(idx_t == j, tok_v, 0), 0)
                    t_cur = t_base + cur * V
                    d_cur = d_base + cur * V
                    p0, q0 = _probs_at(t_cur, d_cur, x, True, temp, m_t, s_t, m_d, s_d, CT)
                    px, qx = _rejected(p0, q0, x, n_rej, rej_tok, rej_z, rej_d, idx_t)
                    u = tl.sum(tl.where(idx_t == j, u_all, 0.0), 0)
                    if u * qx < px:
                        cur = j
                        n_rej = 0
                        m_t, s_t, m_d, s_d = _node_stats(stat_ptr, row64, T, NB, t_base + j * V, d_base + j * V, V,
                                                         temp, j, PRE, CT, BLOCK_V, NBP)
                        if not PRE:
                            passes += 1
                    else:
                        # residual mass of max(p_k - q_k, 0): one pass, only at a rejection. The loop
                        # nests the rejections' loop (not software-pipelined): the next tile's loads
                        # are issued by hand before the current tile is reduced.
                        z = tl.zeros([], CT)
                        lt = tl.load(t_cur + offs0, mask=offs0 < V, other=float("-inf"))
                        ld = tl.load(d_cur + offs0, mask=offs0 < V, other=float("-inf"))
                        for v0 in range(0, V, BLOCK_V):
                            offs = v0 + offs0
                            nxt = offs + BLOCK_V
                            lt_n = tl.load(t_cur + nxt, mask=nxt < V, other=float("-inf"))
                            ld_n = tl.load(d_cur + nxt, mask=nxt < V, other=float("-inf"))
                            pv, qv = _probs_of(lt, ld, temp, m_t, s_t, m_d, s_d, CT)
                            pv, qv = _rejected(pv, qv, offs, n_rej, rej_tok, rej_z, rej_d, idx_t)
                            z += tl.sum(tl.maximum(pv - qv, 0.0), 0)
                            lt = lt_n
                            ld = ld_n
                        passes += 1
                        rej_tok = tl.where(idx_t == n_rej, x.to(tl.int32), rej_tok)
                        rej_z = tl.where(idx_t == n_rej, z, rej_z)
                        rej_d = tl.where(idx_t == n_rej, 1.0 - qx, rej_d)
                        n_rej += 1
            last = cur
        else:
            # ---------------- kseq: level by level over groups of equal-context nodes ----------------
            valid_v = idx_t < nn
            group = idx_t == 0
            rep = 0
            cur = 0
            m_t = tl.full([], float("-inf"), CT)
            s_t = tl.zeros([], CT)
            m_d = tl.full([], float("-inf"), CT)
            s_d = tl.zeros([], CT)
            active = True
            while active:
                cand = _in_group(group, par_v, idx_t, BLOCK_T) & valid_v
                k = tl.sum(cand.to(tl.int32), 0)
                t_cur = t_base + rep * V
                d_cur = d_base + rep * V
                m_t, s_t, m_d, s_d = _node_stats(stat_ptr, row64, T, NB, t_cur, d_cur, V, temp, rep, PRE, CT,
                                                 BLOCK_V, NBP)
                if not PRE:
                    passes += 1
                rho = tl.full([], 1.0, CT)
                if k > 1:
                    rho, n = _solve_rho(t_cur, d_cur, V, temp, m_t, s_t, m_d, s_d, k, RHO_TOL, MAX_PASSES, CT,
                                        BLOCK_V)
                    passes += n
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
                    leaf = (k == 0).to(tl.int32)
                    cur = rep
                    active = False
                else:
                    x_acc = tl.load(tok_row + acc_node)
                    group = cand & (tok_v == x_acc)
                    rep = tl.min(tl.where(group, idx_t, BLOCK_T), 0)
                    last = acc_node
        # the final draw's state: node, rejections (rrs) / rho and leaf (kseq), statistics
        ibase = sti_ptr + row64 * (4 + BLOCK_T)
        tl.store(ibase, cur)
        tl.store(ibase + 1, n_rej)
        tl.store(ibase + 2, leaf)
        tl.store(ibase + 4 + idx_t, rej_tok)
        tl.store(stf_ptr + b * 8, m_t)
        tl.store(stf_ptr + b * 8 + 1, s_t)
        tl.store(stf_ptr + b * 8 + 2, m_d)
        tl.store(stf_ptr + b * 8 + 3, s_d)
        tl.store(stf_ptr + b * 8 + 4, rho)
        rbase = rej_ptr + row64 * 2 * BLOCK_T
        tl.store(rbase + idx_t, rej_z)
        tl.store(rbase + BLOCK_T + idx_t, rej_d)
    tl.store(passes_ptr + b, passes)
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


@triton.jit(do_not_specialize=["T", "seed", "offset"])
def _residual_sample_kernel(tl_ptr, dl_ptr, g_ptr, temp_ptr, temp_val, stf_ptr, sti_ptr, rej_ptr, part_ptr, parg_ptr,
                            T, V, NB, seed, offset,
                            MODE: tl.constexpr, GEN: tl.constexpr, CT: tl.constexpr, BLOCK_T: tl.constexpr,
                            NQ: tl.constexpr):
    """Program (row b, block): the block's ``argmax log(r) + gumbel`` over the final residual ``r``
    (kseq: also over p and the block's residual mass, for the reference's zero-mass fallback)."""
    b = tl.program_id(0)
    blk = tl.program_id(1)
    row64 = b.to(tl.int64)
    if CT == tl.float64:
        temp = tl.load(temp_ptr).to(CT)
    else:
        temp = temp_val + tl.zeros([], CT)
    ibase = sti_ptr + row64 * (4 + BLOCK_T)
    node = tl.load(ibase)
    m_t = tl.load(stf_ptr + b * 8)
    s_t = tl.load(stf_ptr + b * 8 + 1)
    m_d = tl.load(stf_ptr + b * 8 + 2)
    s_d = tl.load(stf_ptr + b * 8 + 3)
    t_cur = tl_ptr + (row64 * T + node) * V
    d_cur = dl_ptr + (row64 * T + node) * V
    quad = blk * NQ + tl.arange(0, NQ)[:, None]
    lane = tl.arange(0, 4)[None, :]
    offs = 4 * quad + lane
    inb = offs < V
    pv, qv = _probs_at(t_cur, d_cur, offs, inb, temp, m_t, s_t, m_d, s_d, CT)
    if GEN:
        g = gumbel(token_uniforms(seed, offset, b, STREAM_RESIDUAL, quad, lane)).to(CT)
    else:
        g = tl.load(g_ptr + row64 * V + offs, mask=inb, other=0.0).to(CT)
    out = (row64 * NB + blk) * 3
    if MODE == 0:
        idx_t = tl.arange(0, BLOCK_T)
        rbase = rej_ptr + row64 * 2 * BLOCK_T
        rej_tok = tl.load(ibase + 4 + idx_t)
        rej_z = tl.load(rbase + idx_t)
        rej_d = tl.load(rbase + BLOCK_T + idx_t)
        pv, qv = _rejected(pv, qv, offs, tl.load(ibase + 1), rej_tok, rej_z, rej_d, idx_t)
        sc = tl.where((pv > 0) & inb, tl.log(pv) + g, float("-inf"))
        cm = tl.max(tl.max(sc, 1), 0)
        tl.store(part_ptr + out, cm)
        tl.store(parg_ptr + (row64 * NB + blk) * 2, tl.min(tl.min(tl.where(sc == cm, offs, 2147483647), 1), 0))
    else:
        rho = tl.load(stf_ptr + b * 8 + 4)
        leaf = tl.load(ibase + 2) != 0
        rv = tl.where(leaf, pv, tl.maximum(pv - rho * qv, 0.0))
        sc = tl.where((rv > 0) & inb, tl.log(rv) + g, float("-inf"))
        sp = tl.where((pv > 0) & inb, tl.log(pv) + g, float("-inf"))
        cm = tl.max(tl.max(sc, 1), 0)
        cp = tl.max(tl.max(sp, 1), 0)
        tl.store(part_ptr + out, cm)
        tl.store(part_ptr + out + 1, cp)
        tl.store(part_ptr + out + 2, tl.sum(tl.sum(rv, 1), 0))
        tl.store(parg_ptr + (row64 * NB + blk) * 2, tl.min(tl.min(tl.where(sc == cm, offs, 2147483647), 1), 0))
        tl.store(parg_ptr + (row64 * NB + blk) * 2 + 1, tl.min(tl.min(tl.where(sp == cp, offs, 2147483647), 1), 0))


@triton.jit
def _residual_merge_kernel(part_ptr, parg_ptr, next_ptr, NB, MODE: tl.constexpr, NBP: tl.constexpr):
    """The row's next token: the best block (lowest token on ties); kseq: over p if the residual mass is 0."""
    b = tl.program_id(0)
    row64 = b.to(tl.int64)
    k = tl.arange(0, NBP)
    ok = k < NB
    p = row64 * NB + k
    br = tl.load(part_ptr + p * 3, mask=ok, other=float("-inf"))
    ar = tl.load(parg_ptr + p * 2, mask=ok, other=2147483647)
    arg = tl.min(tl.where(br == tl.max(br, 0), ar, 2147483647), 0)
    if MODE == 1:
        mass = tl.sum(tl.load(part_ptr + p * 3 + 2, mask=ok, other=0.0), 0)
        bp = tl.load(part_ptr + p * 3 + 1, mask=ok, other=float("-inf"))
        ap = tl.load(parg_ptr + p * 2 + 1, mask=ok, other=2147483647)
        arg_p = tl.min(tl.where(bp == tl.max(bp, 0), ap, 2147483647), 0)
        arg = tl.where(mass > 0, arg, arg_p)
    tl.store(next_ptr + b, arg.to(tl.int64))


def _next_pow2(n: int, lo: int = 1) -> int:
    return max(lo, triton.next_power_of_2(max(int(n), 1)))




def _blocks_to_fill(rows: int, V: int, sms: int, lo: int, hi: int) -> int:
    """The largest power-of-two block in [lo, hi] that still gives ``rows * cdiv(V, block) >= 2 * sms``
    programs (else ``lo``), capped at ``next_pow2(V)`` (at least 16)."""
    block = hi
    while block > lo and rows * triton.cdiv(V, block) < 2 * sms:
        block //= 2
    return min(block, _next_pow2(V, 16))


def launch_plan(B: int, T: int, V: int, mode: str, elem_bytes: int, sms: int = backends.H200_SMS, *, block_v=None,
                precompute=None) -> dict:
    """Which launches ``verify`` makes and their grids (see the module docstring).

    ``precompute`` (launch 1) defaults to: every node's rows read (target and draft; greedy:
    target) total at most :data:`PRE_MAX_BYTES`. ``block_v`` overrides every vocabulary tile.
    """
    rows_bytes = B * T * V * elem_bytes * (1 if mode == "greedy" else 2)
    pre = rows_bytes <= PRE_MAX_BYTES if precompute is None else bool(precompute)
    stat_block = block_v or _blocks_to_fill(B * T, V, sms, 1024, 8192)
    sample_block = block_v or _blocks_to_fill(B, V, sms, 1024, 2048)
    walk_block = block_v or min(WALK_BLOCK_V, _next_pow2(V, 16))
    nb_stat = triton.cdiv(V, stat_block) if pre else 1
    nb_sample = triton.cdiv(V, sample_block)
    return {
        "pre": pre, "stat_block": stat_block, "nb_stat": nb_stat, "walk_block": walk_block,
        "sample_block": sample_block, "nb_sample": nb_sample,
        "programs": {"node_stats": B * T * nb_stat if pre else 0, "walk": B,
                     "residual_sample": 0 if mode == "greedy" else B * nb_sample,
                     "residual_merge": 0 if mode == "greedy" else B},
    }



def _launch_prologue(target_logits, max_depth, block_v, gen, seed, offset):
    """What every verify launcher checks and allocates first: the tree size, ``block_v``, the seed
    when the kernel draws its own noise (``gen``); returns ``(compute torch dtype, its tl dtype,
    (path, num_accepted, next_token, passes))``, the outputs empty."""
    B, T, _ = target_logits.shape
    dev = target_logits.device
    if T > MAX_TREE_NODES:
        raise ValueError(f"the Triton verify kernel supports at most {MAX_TREE_NODES} tree nodes, got T={T}")
    if block_v is not None and (block_v < 16 or block_v & (block_v - 1)):
        raise ValueError(f"block_v must be a power of two >= 16, got {block_v}")
    ct = torch.float64 if target_logits.dtype == torch.float64 else torch.float32
    ctl = tl.float64 if ct == torch.float64 else tl.float32
    if gen:
        if seed is None:
            raise ValueError("verify needs uniform/gumbel noise or a seed")
        _noise.check_seed(seed, offset)
        if T - 1 > _noise.MAX_NODE:
            raise ValueError(f"at most {_noise.MAX_NODE + 1} nodes per tree, got {T}")
    P = int(max_depth) + 1
    outs = (torch.empty(B, P, dtype=torch.int64, device=dev), torch.empty(B, dtype=torch.int64, device=dev),
            torch.empty(B, dtype=torch.int64, device=dev), torch.empty(B, dtype=torch.int32, device=dev))
    return ct, ctl, outs

def verify(target_logits, draft_logits, tokens, parents, num_nodes, mode, temperature, max_depth,
           uniform=None, gumbel=None, seed=None, offset=0, *, block_v=None, precompute=None, return_passes=False):
    """Triton ``verify_tree`` backend; arguments and results as :func:`..reference.verify`.

    ``block_v`` (a power of two) overrides the vocabulary tiles and ``precompute`` launch 1 (see
    :func:`launch_plan`); ``return_passes`` also returns the walk's vocabulary passes per row
    (``[B]`` int32: on-demand statistics, residual masses, rho* passes, argmaxes).
    """
    if mode not in MODE_IDS:
        raise ValueError(f"mode must be one of {tuple(MODE_IDS)}, got {mode!r}")
    greedy = mode == "greedy"
    gen = (not greedy) and uniform is None
    B, T, V = target_logits.shape
    dev = target_logits.device
    ct, ctl, (path, nacc, nxt, passes) = _launch_prologue(target_logits, max_depth, block_v, gen, seed, offset)
    P = path.shape[1]
    if B == 0:
        return (path, nacc, nxt, passes) if return_passes else (path, nacc, nxt)
    plan = launch_plan(B, T, V, mode, target_logits.element_size(), backends.device_sms(dev), block_v=block_v,
                       precompute=precompute)
    dummy = torch.zeros(1, dtype=torch.float32, device=dev)
    u = dummy if uniform is None else uniform
    g = dummy if gumbel is None else gumbel
    dl = target_logits if draft_logits is None else draft_logits
    # no host-to-device copy unless fp64 (keeps the launches capturable in a CUDA graph)
    temp = torch.tensor([temperature], dtype=ct, device=dev) if ct == torch.float64 else dummy
    block_t = _next_pow2(T, 16)
    nb = plan["nb_stat"]
    if plan["pre"]:
        stat = torch.empty(B * T * nb * 4, dtype=ct, device=dev)
        arg = torch.empty(B * T * nb if greedy else 1, dtype=torch.int32, device=dev)
        _node_stats_kernel[(B * T, nb)](target_logits, dl, num_nodes, temp, float(temperature), stat, arg, T, V, nb,
                                        GREEDY=greedy, CT=ctl, BLOCK=plan["stat_block"],
                                        num_warps=4 if plan["stat_block"] <= 2048 else 8)
    else:
        stat, arg = dummy.to(ct), torch.zeros(1, dtype=torch.int32, device=dev)
    stf = torch.empty(B, 8, dtype=ct, device=dev)
    sti = torch.empty(B, 4 + block_t, dtype=torch.int32, device=dev)
    rej = torch.empty(B, 2, block_t, dtype=ct, device=dev)
    wb = plan["walk_block"]
    _verify_walk_kernel[(B,)](
        target_logits, dl, tokens, parents, num_nodes, u, temp, float(temperature), stat, arg,
        path, nacc, nxt, stf, sti, rej, passes, T, V, P, nb, 0 if seed is None else int(seed), int(offset),
        RHO_REL_TOL[ct], MAX_RHO_PASSES,
        MODE=MODE_IDS[mode], GEN=gen, CT=ctl, PRE=plan["pre"], BLOCK_T=block_t, BLOCK_V=wb,
        BLOCK_P=_next_pow2(P, 16), NBP=_next_pow2(nb, 2), num_warps=min(16, max(4, wb * ct.itemsize // 1024)),
    )
    if not greedy:
        nbs = plan["nb_sample"]
        part = torch.empty(B * nbs * 3, dtype=ct, device=dev)
        parg = torch.empty(B * nbs * 2, dtype=torch.int32, device=dev)
        _residual_sample_kernel[(B, nbs)](
            target_logits, dl, g, temp, float(temperature), stf, sti, rej, part, parg, T, V, nbs,
            0 if seed is None else int(seed), int(offset), MODE=MODE_IDS[mode], GEN=gen, CT=ctl, BLOCK_T=block_t,
            NQ=plan["sample_block"] // 4, num_warps=4 if plan["sample_block"] <= 1024 else 8,
        )
        _residual_merge_kernel[(B,)](part, parg, nxt, nbs, MODE=MODE_IDS[mode], NBP=_next_pow2(nbs, 2), num_warps=1)
    return (path, nacc, nxt, passes) if return_passes else (path, nacc, nxt)
