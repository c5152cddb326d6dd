"""Triton kernels for Gumbel-top-k sampling and the RSD-S stochastic beam step, vocabulary-parallel.

Two launches per op, the vocabulary split across programs:

1. :func:`_topk_partial_kernel`, grid ``(rows, vocabulary blocks)``: each program reads one block
   of ``BLOCK_V`` logits of one row once and writes that block's softmax statistics (max, sum of
   exponentials, support) and its top-``KMAX`` perturbed scores ``logit / temperature + gumbel``
   with their tokens (sorted; ties to the lower token). The noise comes from ``gumbel`` or is
   generated in-kernel from the ``GUMBEL`` stream of :mod:`rsd_kernels.noise`, the block as a
   ``[BLOCK_V / 4, 4]`` tile: one Philox call per 4 tokens, every output lane used, float32 logs.
2. A small per-row merge: the row's statistics from the blocks' (``m = max m_b``,
   ``s = sum s_b exp(m_b - m)``) and its top-k from the blocks' candidates (the global top-k lies
   in the union of the blocks' top-k, and max/argmax are exact, so the tokens equal the
   reference's token for token). :func:`_sample_merge_kernel` writes tokens, log-probabilities
   and ``min(k, support)``; :func:`_beam_merge_kernel` writes each beam's top-W candidates with
   ``phi_c`` and truncated Gumbel ``G_c`` (SPEC section 4: ``G_c`` is increasing in the
   candidate's perturbed score, so a beam's top-W by score is its top-W by ``G_c``); the global
   top-W over a row's ``N * W`` survivors is a small ``torch.topk``.

:func:`launch_plan` sizes the blocks so that the partial grid fills the device (at least two
programs per SM when the shape allows it). ``seed``, ``offset`` and ``k`` are not specialised
(``do_not_specialize``): a new step, seed or k reuses the compiled kernels.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import noise as _noise
from .. import triton_compat  # noqa: F401  (interpreter fixes, see module)
from ..triton_noise import STREAM_GUMBEL, gumbel, token_uniforms

MAX_K = 1024  # top-k kept in registers
H200_SMS = 132  # the plan's SM count when no CUDA device is present (CPU tests, bench/roofline.py)
MIN_BLOCK_V, MAX_BLOCK_V = 1024, 4096
BIG_TOKEN = 2147483647


@triton.jit
def _log1p(x):
    """``log(1 + x)`` accurate for small ``x`` (the classic correction; exact at 0, -inf at -1)."""
    u = 1.0 + x
    return tl.where(u == 1.0, x, tl.log(u) * (x / (u - 1.0)))


@triton.jit
def _temperature(temp_ptr, temp_val, CT: tl.constexpr):
    """A float64 temperature comes in a tensor (scalar kernel arguments are fp32)."""
    if CT == tl.float64:
        t = tl.load(temp_ptr).to(CT)
    else:
        t = temp_val + tl.zeros([], CT)  # (a literal 1.0 arrives as a Python float)
    return t


@triton.jit
def _max2(x):
    return tl.max(tl.max(x, 1), 0)


@triton.jit
def _sum2(x):
    return tl.sum(tl.sum(x, 1), 0)


@triton.jit
def _extract_topk(sc, tok, KMAX, KB: tl.constexpr):
    """The ``KMAX`` largest of the 2-D ``sc`` with their ``tok`` (descending, ties to the lower
    token), as ``[KB]`` vectors padded with ``-inf``."""
    pos = tl.arange(0, KB)
    top_v = tl.full([KB], float("-inf"), sc.dtype)
    top_i = tl.full([KB], 2147483647, tl.int32)
    for i in range(KMAX):
        cm = tl.max(tl.max(sc, 1), 0)
        ci = tl.min(tl.min(tl.where(sc == cm, tok, 2147483647), 1), 0)
        top_v = tl.where(pos == i, cm, top_v)
        top_i = tl.where(pos == i, ci, top_i)
        sc = tl.where(tok == ci, float("-inf"), sc)
    return top_v, top_i


@triton.jit(do_not_specialize=["KMAX", "seed", "offset"])
def _topk_partial_kernel(logits_ptr, g_ptr, temp_ptr, temp_val, pm_ptr, ps_ptr, psup_ptr, pv_ptr, pi_ptr,
                         V, NB, KMAX, seed, offset,
                         NOISE: tl.constexpr, GEN: tl.constexpr, CT: tl.constexpr, KB: tl.constexpr,
                         NQ: tl.constexpr):
    """Program (row r, block blk): tokens ``blk * 4 NQ ..`` of row r, as a ``[NQ, 4]`` tile."""
    r = tl.program_id(0)
    blk = tl.program_id(1)
    r64 = r.to(tl.int64)
    quad = blk * NQ + tl.arange(0, NQ)[:, None]
    lane = tl.arange(0, 4)[None, :]
    tok = 4 * quad + lane
    inb = tok < V
    temp = _temperature(temp_ptr, temp_val, CT)
    x = tl.load(logits_ptr + r64 * V + tok, mask=inb, other=float("-inf")).to(CT) / temp
    fin = x > float("-inf")
    m = _max2(x)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    s = _sum2(tl.where(fin, tl.exp(x - m_safe), 0.0))
    support = _sum2(fin.to(tl.int32))
    if NOISE:
        if GEN:
            g = gumbel(token_uniforms(seed, offset, r, STREAM_GUMBEL, quad, lane)).to(CT)
        else:
            g = tl.load(g_ptr + r64 * V + tok, mask=inb, other=0.0).to(CT)
        sc = tl.where(fin, x + g, float("-inf"))
    else:
        sc = x
    top_v, top_i = _extract_topk(sc, tok, KMAX, KB)
    p = r64 * NB + blk
    tl.store(pm_ptr + p, m)
    tl.store(ps_ptr + p, s)
    tl.store(psup_ptr + p, support)
    pos = tl.arange(0, KB)
    tl.store(pv_ptr + p * KB + pos, top_v)
    tl.store(pi_ptr + p * KB + pos, top_i)


@triton.jit
def _merge_row(pm_ptr, ps_ptr, psup_ptr, pv_ptr, pi_ptr, r64, NB, KMAX, KB: tl.constexpr, NBP: tl.constexpr):
    """A row's ``(max, sum exp, support)`` and its top-``KMAX`` ``(scores, tokens)`` from its blocks'."""
    b = tl.arange(0, NBP)
    okb = b < NB
    p = r64 * NB + b
    mb = tl.load(pm_ptr + p, mask=okb, other=float("-inf"))
    sb = tl.load(ps_ptr + p, mask=okb, other=0.0)
    support = tl.sum(tl.load(psup_ptr + p, mask=okb, other=0), 0)
    m = tl.max(mb, 0)
    s = tl.sum(tl.where(mb > float("-inf"), sb * tl.exp(mb - tl.where(m == float("-inf"), 0.0, m)), 0.0), 0)
    pos = tl.arange(0, KB)
    cv = tl.load(pv_ptr + p[:, None] * KB + pos[None, :], mask=okb[:, None], other=float("-inf"))
    ci = tl.load(pi_ptr + p[:, None] * KB + pos[None, :], mask=okb[:, None], other=2147483647)
    if NB == 1:  # one block: its list is the row's
        top_v = tl.load(pv_ptr + r64 * KB + pos)
        top_i = tl.load(pi_ptr + r64 * KB + pos)
    else:
        # a block's list repeats a token only among its -inf padding: entries are taken by position
        slot = b[:, None] * KB + pos[None, :]
        top_v = tl.full([KB], float("-inf"), cv.dtype)
        top_i = tl.full([KB], 2147483647, tl.int32)
        for i in range(KMAX):
            cm = tl.max(tl.max(cv, 1), 0)
            cidx = tl.min(tl.min(tl.where(cv == cm, ci, 2147483647), 1), 0)
            taken = tl.min(tl.min(tl.where((cv == cm) & (ci == cidx), slot, 2147483647), 1), 0)
            top_v = tl.where(pos == i, cm, top_v)
            top_i = tl.where(pos == i, cidx, top_i)
            cv = tl.where(slot == taken, float("-inf"), cv)
            ci = tl.where(slot == taken, 2147483647, ci)
    return m, s, support, top_v, top_i


@triton.jit(do_not_specialize=["KMAX"])
def _sample_merge_kernel(logits_ptr, k_ptr, temp_ptr, temp_val, pm_ptr, ps_ptr, psup_ptr, pv_ptr, pi_ptr,
                         tok_ptr, lp_ptr, num_ptr, V, NB, KMAX,
                         CT: tl.constexpr, KB: tl.constexpr, NBP: tl.constexpr):
    r = tl.program_id(0)
    r64 = r.to(tl.int64)
    m, s, support, top_v, top_i = _merge_row(pm_ptr, ps_ptr, psup_ptr, pv_ptr, pi_ptr, r64, NB, KMAX, KB, NBP)
    pos = tl.arange(0, KB)
    num = tl.minimum(tl.load(k_ptr + r), support)
    keep = pos < num
    temp = _temperature(temp_ptr, temp_val, CT)
    x = tl.load(logits_ptr + r64 * V + top_i, mask=keep, other=0.0).to(CT) / temp
    lp = (x - m) - tl.log(s)
    tl.store(tok_ptr + r64 * KMAX + pos, tl.where(keep, top_i, -1).to(tl.int64), mask=pos < KMAX)
    tl.store(lp_ptr + r64 * KMAX + pos, tl.where(keep, lp, float("-inf")).to(tl.float32), mask=pos < KMAX)
    tl.store(num_ptr + r, num)


@triton.jit(do_not_specialize=["W", "seed", "offset"])
def _beam_merge_kernel(logits_ptr, phi_ptr, G_ptr, g_ptr, temp_ptr, temp_val, pm_ptr, ps_ptr, psup_ptr, pv_ptr,
                       pi_ptr, tok_ptr, phic_ptr, Gc_ptr, V, NB, W, seed, offset,
                       GEN: tl.constexpr, CT: tl.constexpr, KB: tl.constexpr, NBP: tl.constexpr):
    """Row r = b * N + n: this beam's top-W candidates (token, phi_c, G_c), G_c descending."""
    r = tl.program_id(0)
    r64 = r.to(tl.int64)
    m, s, support, top_v, top_i = _merge_row(pm_ptr, ps_ptr, psup_ptr, pv_ptr, pi_ptr, r64, NB, W, KB, NBP)
    pos = tl.arange(0, KB)
    temp = _temperature(temp_ptr, temp_val, CT)
    phi = tl.load(phi_ptr + r).to(CT)
    G = tl.load(G_ptr + r).to(CT)
    ok = (pos < W) & (top_v > float("-inf")) & ((phi + tl.zeros([KB], CT)) > float("-inf"))
    x = tl.load(logits_ptr + r64 * V + top_i, mask=ok, other=0.0).to(CT) / temp
    if GEN:
        gum = gumbel(token_uniforms(seed, offset, r, STREAM_GUMBEL, top_i >> 2, top_i & 3)).to(CT)
    else:
        gum = tl.load(g_ptr + r64 * V + top_i, mask=ok, other=0.0).to(CT)
    phi_c = phi + ((x - m) - tl.log(s))
    g = phi_c + gum
    Z = tl.max(tl.where(ok, g, float("-inf")), 0)
    w = G - g + _log1p(-tl.exp(g - Z))
    Gc = G - tl.maximum(w, 0.0) - _log1p(tl.exp(-tl.abs(w)))
    out = r64 * W + pos
    tl.store(tok_ptr + out, tl.where(ok, top_i, -1).to(tl.int64), mask=pos < W)
    tl.store(phic_ptr + out, tl.where(ok, phi_c, float("-inf")), mask=pos < W)
    tl.store(Gc_ptr + out, tl.where(ok, Gc, float("-inf")), mask=pos < W)


def _compute_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _tl_dtype(dt):
    return tl.float64 if dt == torch.float64 else tl.float32


def device_sms(device) -> int:
    """SMs of ``device`` (a CUDA device), else :data:`H200_SMS` (the plan of the H200)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return H200_SMS


def launch_plan(rows: int, V: int, k: int, sms: int = H200_SMS, block_v: int | None = None) -> dict:
    """The partial grid: ``BLOCK_V`` the largest power of two in [1024, 4096] (or ``block_v``) that
    still gives ``rows * blocks >= 2 * sms`` programs (else 1024), blocks = ``cdiv(V, BLOCK_V)``;
    ``KB`` = candidate slots per block (``next_pow2(k)``), ``NBP`` = next_pow2(blocks) for the merge."""
    if block_v is None:
        block_v = MAX_BLOCK_V
        while block_v > MIN_BLOCK_V and rows * triton.cdiv(V, block_v) < 2 * sms:
            block_v //= 2
        block_v = min(block_v, max(16, triton.next_power_of_2(max(V, 1))))  # small vocabularies: one block
    if block_v < 4 or block_v & (block_v - 1):
        raise ValueError(f"block_v must be a power of two >= 4, got {block_v}")
    nb = triton.cdiv(max(V, 1), block_v)
    return {"BLOCK_V": block_v, "NB": nb, "KB": max(2, triton.next_power_of_2(k)),
            "NBP": max(2, triton.next_power_of_2(nb)), "programs": rows * nb,
            "num_warps": 4 if block_v <= 1024 else 8}


def _temperature_tensor(t, ct, placeholder):
    """fp64 only: the temperature as a device tensor; otherwise it travels as a scalar
    argument and no host-to-device copy happens (the launch stays CUDA-graph capturable)."""
    return torch.tensor([t], dtype=ct, device=placeholder.device) if ct == torch.float64 else placeholder


def _check_noise(gumbel, seed, offset):
    if gumbel is None:
        if seed is None:
            raise ValueError("sampling needs gumbel noise or a seed")
        _noise.check_seed(seed, offset)


def _partials(logits2d, g, temp, t, kmax, ct, plan, noisy, gen, seed, offset):
    """Launch the partial kernel over ``logits2d [rows, V]``; returns the partial tensors."""
    R, V = logits2d.shape
    dev = logits2d.device
    nb, kb = plan["NB"], plan["KB"]
    pm = torch.empty(R, nb, dtype=ct, device=dev)
    ps = torch.empty(R, nb, dtype=ct, device=dev)
    psup = torch.empty(R, nb, dtype=torch.int32, device=dev)
    pv = torch.empty(R, nb, kb, dtype=ct, device=dev)
    pi = torch.empty(R, nb, kb, dtype=torch.int32, device=dev)
    _topk_partial_kernel[(R, nb)](logits2d, g, temp, float(t), pm, ps, psup, pv, pi, V, nb, kmax,
                                  0 if seed is None else int(seed), int(offset), NOISE=noisy, GEN=gen,
                                  CT=_tl_dtype(ct), KB=kb, NQ=plan["BLOCK_V"] // 4, num_warps=plan["num_warps"])
    return pm, ps, psup, pv, pi


def sample_topk(logits, k, kmax: int, temperature: float, gumbel=None, seed=None, offset=0, *, block_v=None):
    """Triton Gumbel-top-k; arguments and results as :func:`.reference.sample_topk`."""
    R, V = logits.shape
    dev = logits.device
    if kmax > MAX_K:
        raise ValueError(f"the Triton sampling kernel supports k <= {MAX_K}, got k={kmax}")
    noisy = temperature > 0
    if noisy:
        _check_noise(gumbel, seed, offset)
    ct = _compute_dtype(logits)
    tokens = torch.empty(R, kmax, dtype=torch.int64, device=dev)
    lp = torch.empty(R, kmax, dtype=torch.float32, device=dev)
    num = torch.empty(R, dtype=torch.int32, device=dev)
    if R == 0:
        return tokens, lp, num
    t = temperature if noisy else 1.0
    g = gumbel if gumbel is not None else torch.zeros(1, dtype=torch.float32, device=dev)
    temp = _temperature_tensor(t, ct, g)
    plan = launch_plan(R, V, kmax, device_sms(dev), block_v)
    parts = _partials(logits, g, temp, t, kmax, ct, plan, noisy, noisy and gumbel is None, seed, offset)
    _sample_merge_kernel[(R,)](logits, k, temp, float(t), *parts, tokens, lp, num, V, plan["NB"], kmax,
                               CT=_tl_dtype(ct), KB=plan["KB"], NBP=plan["NBP"], num_warps=4)
    return tokens, lp, num


def beam_step(logits, phi, G, width: int, temperature: float, gumbel=None, seed=None, offset=0, *, block_v=None):
    """Triton RSD-S beam step; arguments and results as :func:`.reference.beam_step`.

    Per beam, the kernels keep the top-``min(width, V)`` candidates; a ``torch.topk`` over
    the row's ``N * min(width, V)`` survivors picks the global top-``width``.
    """
    B, N, V = logits.shape
    dev = logits.device
    _check_noise(gumbel, seed, offset)
    Wb = min(width, V)
    if Wb > MAX_K:
        raise ValueError(f"the Triton beam step supports width <= {MAX_K}, got width={width}")
    ct = _compute_dtype(logits)
    tok = torch.empty(B, N, Wb, dtype=torch.int64, device=dev)
    phi_c = torch.empty(B, N, Wb, dtype=ct, device=dev)
    Gc = torch.empty(B, N, Wb, dtype=ct, device=dev)
    g = gumbel if gumbel is not None else torch.zeros(1, dtype=torch.float32, device=dev)
    temp = _temperature_tensor(temperature, ct, g)
    if B * N:
        plan = launch_plan(B * N, V, Wb, device_sms(dev), block_v)
        parts = _partials(logits.view(B * N, V), g, temp, temperature, Wb, ct, plan, True, gumbel is None, seed,
                          offset)
        _beam_merge_kernel[(B * N,)](logits, phi, G, g, temp, float(temperature), *parts, tok, phi_c, Gc, V,
                                     plan["NB"], Wb, 0 if seed is None else int(seed), int(offset),
                                     GEN=gumbel is None, CT=_tl_dtype(ct), KB=plan["KB"], NBP=plan["NBP"],
                                     num_warps=4)
    # global merge of the row's N * Wb survivors (small), ordered like the reference
    top = torch.topk(Gc.reshape(B, N * Wb), width, dim=-1, sorted=True)
    ok = torch.isfinite(top.values)
    parent = torch.where(ok, top.indices // Wb, -1)
    token = torch.where(ok, tok.reshape(B, N * Wb).gather(1, top.indices), -1)
    phi_sel = torch.where(ok, phi_c.reshape(B, N * Wb).gather(1, top.indices), float("-inf"))
    return parent, token, phi_sel, top.values
