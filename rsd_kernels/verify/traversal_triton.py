"""Triton kernels for ``verify_tree(mode="traversal")``.

The launches of :mod:`.triton_kernel`, with a walk of its own:

1. (when :func:`.triton_kernel.launch_plan` says so) :func:`.triton_kernel._node_stats_kernel`:
   every node's softmax statistics, vocabulary-parallel;
2. :func:`_traversal_walk_kernel`, one program per batch row: the depth-first walk of
   :mod:`.traversal_reference` step for step, without vectors in memory. Each node on the current
   root path keeps its ratio ``p`` and softmax statistics in registers, and its rejections so far as
   records ``(token x, p before, residual mass A, draft denominator 1 - s(x))`` on a stack shared by
   the path (a node's records sit above its ancestors'; popping a rejected node drops its records).
   A node's current laws ``b(y)``, ``s(y)`` are recomputed elementwise from its target and draft
   rows by replaying its records with the reference's operations in the reference's order.
   Vocabulary passes: a node's statistics when its first child is tested, unless launch 1 made
   them (leaves are never read unless accepted), one pass per rejection (the residual mass).
   It writes the path and the accepted node's final state (statistics, records);
3. :func:`_traversal_sample_kernel`, grid ``(B, vocabulary blocks)``: each block's
   ``argmax log(b) + gumbel`` over the accepted node's final law ``b`` (the RESIDUAL stream, four
   Philox lanes per call), then :func:`.triton_kernel._residual_merge_kernel` per row.

``T <= MAX_TREE_NODES``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import noise as _noise
from .. import triton_compat  # noqa: F401  (interpreter fix, see module)
from ..backends import device_sms
from ..triton_noise import STREAM_RESIDUAL, accept_uniform, gumbel, token_uniforms
from .triton_kernel import (MAX_TREE_NODES, NUM_STAGES, _launch_prologue, _next_pow2, _node_stats,  # noqa: F401
                            _node_stats_kernel, _probs_at, _residual_merge_kernel, launch_plan)

WALK_WARPS = 4  # the walk's warps: with 8, ptxas spills registers at some launched variants (sm_90)


@triton.jit
def _pick(vec, idx, i):
    """``vec[i]`` of a register vector (a masked reduction)."""
    return tl.sum(tl.where(idx == i, vec, 0), 0)


@triton.jit
def _laws_at(t_row, d_row, y, mask, temp, m_t, s_t, m_d, s_d, lo, hi, ev_tok, ev_p, ev_a, ev_d, idx_t,
             CT: tl.constexpr):
    """A node's current target and draft laws ``b(y), s(y)``: its softmax at ``y`` with its
    rejection records ``lo .. hi - 1`` replayed (``reject_child`` of the reference, elementwise)."""
    b, s = _probs_at(t_row, d_row, y, mask, temp, m_t, s_t, m_d, s_d, CT)
    for e in range(lo, hi):
        xe = _pick(ev_tok, idx_t, e)
        pe = _pick(ev_p, idx_t, e)
        ae = _pick(ev_a, idx_t, e)
        de = _pick(ev_d, idx_t, e)
        r = tl.maximum(pe * b - s, 0.0)
        b = tl.where(ae > 0, r / ae, b)
        s = tl.where(y == xe, 0.0, s)
        s = tl.where(de > 0, s / de, 0.0)
    return b, s


@triton.jit
def _child_ratio(p, b_x, s_x):
    num = p * b_x
    return tl.where(num <= 0, 0.0, tl.where(num >= s_x, 1.0, num / tl.where(s_x > 0, s_x, 1.0)))


@triton.jit
def _traversal_walk_kernel(
    tl_ptr, dl_ptr, tok_ptr, par_ptr, nn_ptr, u_ptr, temp_ptr, temp_val, stat_ptr,
    path_ptr, nacc_ptr, stf_ptr, sti_ptr, rec_ptr, passes_ptr,
    T, V, P, NB, seed, offset,
    GEN: tl.constexpr, CT: tl.constexpr, PRE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_P: tl.constexpr, NBP: tl.constexpr,
):
    b = tl.program_id(0)
    row64 = b.to(tl.int64)
    t_base = tl_ptr + row64 * T * V
    d_base = dl_ptr + row64 * T * V
    nn = tl.load(nn_ptr + b)
    if CT == tl.float64:  # a float64 temperature needs a tensor (scalar kernel arguments are fp32)
        temp = tl.load(temp_ptr).to(CT)
    else:
        temp = temp_val + tl.zeros([], CT)
    idx_t = tl.arange(0, BLOCK_T)
    offs0 = tl.arange(0, BLOCK_V)
    if GEN:
        u_all = accept_uniform(seed, offset, b, idx_t).to(CT)
    else:
        u_all = tl.load(u_ptr + row64 * T + idx_t, mask=idx_t < T, other=0.5).to(CT)
    par_v = tl.load(par_ptr + row64 * T + idx_t, mask=idx_t < T, other=-1)
    tok_v = tl.load(tok_ptr + row64 * T + idx_t, mask=idx_t < T, other=-1).to(tl.int32)
    real = (idx_t > 0) & (idx_t < nn)  # non-root, non-padding nodes
    passes = 0

    # per node: ratio p, first rejection record, softmax statistics (of the nodes whose laws were read)
    node_p = tl.where(idx_t == 0, 1.0, 0.0).to(CT)
    node_lo = tl.zeros([BLOCK_T], tl.int32)
    st_mt = tl.zeros([BLOCK_T], CT)
    st_st = tl.zeros([BLOCK_T], CT)
    st_md = tl.zeros([BLOCK_T], CT)
    st_sd = tl.zeros([BLOCK_T], CT)
    # the rejection records of the nodes on the current path, a stack
    ev_tok = tl.zeros([BLOCK_T], tl.int32)
    ev_p = tl.zeros([BLOCK_T], CT)
    ev_a = tl.zeros([BLOCK_T], CT)
    ev_d = tl.zeros([BLOCK_T], CT)
    n_ev = 0

    m_t, s_t, m_d, s_d = _node_stats(stat_ptr, row64, T, NB, t_base, d_base, V, temp, 0, PRE, CT, BLOCK_V, NBP)
    if not PRE:
        passes += 1
    st_mt = tl.where(idx_t == 0, m_t, st_mt)
    st_st = tl.where(idx_t == 0, s_t, st_st)
    st_md = tl.where(idx_t == 0, m_d, st_md)
    st_sd = tl.where(idx_t == 0, s_d, st_sd)
    cur = 0
    p_cur = tl.full([], 1.0, CT)
    lo_cur = 0
    c = tl.min(tl.where(real & (par_v == 0), idx_t, BLOCK_T), 0)  # the next child of cur to visit
    done = False
    while not done:
        if c < BLOCK_T:
            # descend into child c: its ratio from cur's current laws at its token
            x = _pick(tok_v, idx_t, c)
            bx, sx = _laws_at(t_base + cur * V, d_base + cur * V, x, True, temp, m_t, s_t, m_d, s_d, lo_cur, n_ev,
                              ev_tok, ev_p, ev_a, ev_d, idx_t, CT)
            p_cur = _child_ratio(p_cur, bx, sx)
            cur = c
            lo_cur = n_ev
            node_p = tl.where(idx_t == cur, p_cur, node_p)
            node_lo = tl.where(idx_t == cur, lo_cur, node_lo)
            c = tl.min(tl.where(real & (par_v == cur), idx_t, BLOCK_T), 0)
            if c < BLOCK_T:  # cur has children: its laws will be read
                m_t, s_t, m_d, s_d = _node_stats(stat_ptr, row64, T, NB, t_base + cur * V, d_base + cur * V, V, temp,
                                                 cur, PRE, CT, BLOCK_V, NBP)
                if not PRE:
                    passes += 1
                st_mt = tl.where(idx_t == cur, m_t, st_mt)
                st_st = tl.where(idx_t == cur, s_t, st_st)
                st_md = tl.where(idx_t == cur, m_d, st_md)
                st_sd = tl.where(idx_t == cur, s_d, st_sd)
        else:
            # every child of cur rejected (or none): test cur
            u = _pick(u_all, idx_t, cur)
            if (cur == 0) | (u < p_cur):
                done = True
            else:
                # cur rejected: drop its records, update its parent v
                x = _pick(tok_v, idx_t, cur)
                v = _pick(par_v, idx_t, cur)
                n_ev = lo_cur
                p_v = _pick(node_p, idx_t, v)
                lo_v = _pick(node_lo, idx_t, v)
                m_t = _pick(st_mt, idx_t, v)
                s_t = _pick(st_st, idx_t, v)
                m_d = _pick(st_md, idx_t, v)
                s_d = _pick(st_sd, idx_t, v)
                t_v = t_base + v * V
                d_v = d_base + v * V
                mass = tl.zeros([], CT)
                for v0 in tl.range(0, V, BLOCK_V, num_stages=NUM_STAGES):
                    offs = v0 + offs0
                    bv, sv = _laws_at(t_v, d_v, offs, offs < V, temp, m_t, s_t, m_d, s_d, lo_v, n_ev,
                                      ev_tok, ev_p, ev_a, ev_d, idx_t, CT)
                    mass += tl.sum(tl.where(offs < V, tl.maximum(p_v * bv - sv, 0.0), 0.0), 0)
                passes += 1
                _, sx = _laws_at(t_v, d_v, x, True, temp, m_t, s_t, m_d, s_d, lo_v, n_ev, ev_tok, ev_p, ev_a, ev_d,
                                 idx_t, CT)
                ev_tok = tl.where(idx_t == n_ev, x, ev_tok)
                ev_p = tl.where(idx_t == n_ev, p_v, ev_p)
                ev_a = tl.where(idx_t == n_ev, mass, ev_a)
                ev_d = tl.where(idx_t == n_ev, 1.0 - sx, ev_d)
                n_ev += 1
                den = mass + (1.0 - p_v)
                p_cur = tl.where(den > 0, mass / tl.where(den > 0, den, 1.0), p_v)
                node_p = tl.where(idx_t == v, p_cur, node_p)
                c = tl.min(tl.where(real & (par_v == v) & (idx_t > cur), idx_t, BLOCK_T), 0)  # next sibling
                cur = v
                lo_cur = lo_v
    # the accepted node's final state for the next-token draw: statistics, its records (from 0)
    has_kids = tl.sum(tl.where(real & (par_v == cur), 1, 0), 0) > 0
    if (cur != 0) & (not has_kids):  # an accepted leaf: its statistics were not needed so far
        m_t, s_t, m_d, s_d = _node_stats(stat_ptr, row64, T, NB, t_base + cur * V, d_base + cur * V, V, temp, cur, PRE,
                                         CT, BLOCK_V, NBP)
        if not PRE:
            passes += 1
    else:
        m_t = _pick(st_mt, idx_t, cur)
        s_t = _pick(st_st, idx_t, cur)
        m_d = _pick(st_md, idx_t, cur)
        s_d = _pick(st_sd, idx_t, cur)
    tl.store(stf_ptr + b * 4, m_t)
    tl.store(stf_ptr + b * 4 + 1, s_t)
    tl.store(stf_ptr + b * 4 + 2, m_d)
    tl.store(stf_ptr + b * 4 + 3, s_d)
    ibase = sti_ptr + row64 * (2 + BLOCK_T)
    tl.store(ibase, cur)
    tl.store(ibase + 1, n_ev - lo_cur)
    mine = (idx_t >= lo_cur) & (idx_t < n_ev)  # cur's records, stored from index 0
    tl.store(ibase + 2 + idx_t - lo_cur, ev_tok, mask=mine)
    rbase = rec_ptr + row64 * 3 * BLOCK_T
    tl.store(rbase + idx_t - lo_cur, ev_p, mask=mine)
    tl.store(rbase + BLOCK_T + idx_t - lo_cur, ev_a, mask=mine)
    tl.store(rbase + 2 * BLOCK_T + idx_t - lo_cur, ev_d, mask=mine)
    tl.store(passes_ptr + b, passes)
    # the path root .. cur, -1 padded: cur's ancestors from the parent vector
    idx_p = tl.arange(0, BLOCK_P)
    path = tl.full([BLOCK_P], -1, tl.int64)
    depth = 0
    n = cur
    while n > 0:
        n = _pick(par_v, idx_t, n)
        depth += 1
    n = cur
    for i in range(0, depth + 1):
        path = tl.where(idx_p == depth - i, n, path)
        n = _pick(par_v, idx_t, n)
    tl.store(path_ptr + row64 * P + idx_p, path, mask=idx_p < P)
    tl.store(nacc_ptr + b, depth)


@triton.jit
def _traversal_sample_kernel(tl_ptr, dl_ptr, g_ptr, temp_ptr, temp_val, stf_ptr, sti_ptr, rec_ptr, part_ptr,
                             parg_ptr, T, V, NB, seed, offset,
                             GEN: tl.constexpr, CT: tl.constexpr, BLOCK_T: tl.constexpr, NQ: tl.constexpr):
    """Program (row b, block): the block's ``argmax log(b) + gumbel`` over the accepted node's law
    (the layout :func:`.triton_kernel._residual_merge_kernel` merges, ``MODE=0``)."""
    b = tl.program_id(0)
    blk = tl.program_id(1)
    row64 = b.to(tl.int64)
    if CT == tl.float64:
        temp = tl.load(temp_ptr).to(CT)
    else:
        temp = temp_val + tl.zeros([], CT)
    ibase = sti_ptr + row64 * (2 + BLOCK_T)
    node = tl.load(ibase)
    n_rec = tl.load(ibase + 1)
    idx_t = tl.arange(0, BLOCK_T)
    rec_tok = tl.load(ibase + 2 + idx_t)
    rbase = rec_ptr + row64 * 3 * BLOCK_T
    rec_p = tl.load(rbase + idx_t)
    rec_a = tl.load(rbase + BLOCK_T + idx_t)
    rec_d = tl.load(rbase + 2 * BLOCK_T + idx_t)
    quad = blk * NQ + tl.arange(0, NQ)[:, None]
    lane = tl.arange(0, 4)[None, :]
    offs = 4 * quad + lane
    inb = offs < V
    bv, _ = _laws_at(tl_ptr + (row64 * T + node) * V, dl_ptr + (row64 * T + node) * V, offs, inb, temp,
                     tl.load(stf_ptr + b * 4), tl.load(stf_ptr + b * 4 + 1), tl.load(stf_ptr + b * 4 + 2),
                     tl.load(stf_ptr + b * 4 + 3), 0, n_rec, rec_tok, rec_p, rec_a, rec_d, idx_t, CT)
    if GEN:
        g = gumbel(token_uniforms(seed, offset, b, STREAM_RESIDUAL, quad, lane)).to(CT)
    else:
        g = tl.load(g_ptr + row64 * V + offs, mask=inb, other=0.0).to(CT)
    sc = tl.where((bv > 0) & inb, tl.log(bv) + g, float("-inf"))
    cm = tl.max(tl.max(sc, 1), 0)
    tl.store(part_ptr + (row64 * NB + blk) * 3, cm)
    tl.store(parg_ptr + (row64 * NB + blk) * 2, tl.min(tl.min(tl.where(sc == cm, offs, 2147483647), 1), 0))


def verify(target_logits, draft_logits, tokens, parents, num_nodes, mode, temperature, max_depth,
           uniform=None, gumbel=None, seed=None, offset=0, *, block_v=None, precompute=None, return_passes=False):
    """Triton ``verify_tree(mode="traversal")`` backend; arguments and results as
    :func:`.traversal_reference.verify`. ``block_v``, ``precompute`` and ``return_passes`` (the
    walk's vocabulary passes per row) as in :func:`.triton_kernel.verify`."""
    if mode != "traversal":
        raise ValueError(f"the traversal kernel verifies mode='traversal' only, got {mode!r}")
    B, T, V = target_logits.shape
    dev = target_logits.device
    gen = uniform is None
    ct, ctl, (path, nacc, nxt, passes) = _launch_prologue(target_logits, max_depth, block_v, gen, seed, offset)
    P = path.shape[1]
    if B == 0:
        return (path, nacc, nxt, passes) if return_passes else (path, nacc, nxt)
    plan = launch_plan(B, T, V, mode, target_logits.element_size(), device_sms(dev), block_v=block_v,
                       precompute=precompute)
    dummy = torch.zeros(1, dtype=torch.float32, device=dev)
    temp = torch.tensor([temperature], dtype=ct, device=dev) if ct == torch.float64 else dummy
    seed_arg = 0 if seed is None else int(seed)
    block_t = _next_pow2(T, 16)
    nb = plan["nb_stat"]
    if plan["pre"]:
        stat = torch.empty(B * T * nb * 4, dtype=ct, device=dev)
        _node_stats_kernel[(B * T, nb)](target_logits, draft_logits, num_nodes, temp, float(temperature), stat, dummy,
                                        T, V, nb, GREEDY=False, CT=ctl, BLOCK=plan["stat_block"],
                                        num_warps=4 if plan["stat_block"] <= 2048 else 8)
    else:
        stat = dummy.to(ct)
    stf = torch.empty(B, 4, dtype=ct, device=dev)
    sti = torch.empty(B, 2 + block_t, dtype=torch.int32, device=dev)
    rec = torch.empty(B, 3, block_t, dtype=ct, device=dev)
    wb = plan["walk_block"]
    _traversal_walk_kernel[(B,)](
        target_logits, draft_logits, tokens, parents, num_nodes, dummy if uniform is None else uniform, temp,
        float(temperature), stat, path, nacc, stf, sti, rec, passes, T, V, P, nb, seed_arg, int(offset),
        GEN=gen, CT=ctl, PRE=plan["pre"], BLOCK_T=block_t, BLOCK_V=wb, BLOCK_P=_next_pow2(P, 16),
        NBP=_next_pow2(nb, 2), num_warps=WALK_WARPS,
    )
    nbs = plan["nb_sample"]
    part = torch.empty(B * nbs * 3, dtype=ct, device=dev)
    parg = torch.empty(B * nbs * 2, dtype=torch.int32, device=dev)
    _traversal_sample_kernel[(B, nbs)](
        target_logits, draft_logits, dummy if gumbel is None else gumbel, temp, float(temperature), stf, sti, rec, part,
        parg, T, V, nbs, seed_arg, int(offset), GEN=gen, CT=ctl, BLOCK_T=block_t, NQ=plan["sample_block"] // 4,
        num_warps=4 if plan["sample_block"] <= 1024 else 8,
    )
    _residual_merge_kernel[(B,)](part, parg, nxt, nbs, MODE=0, NBP=_next_pow2(nbs, 2), num_warps=1)
    return (path, nacc, nxt, passes) if return_passes else (path, nacc, nxt)
