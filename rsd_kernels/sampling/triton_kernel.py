"""Triton kernels for Gumbel-top-k sampling and the RSD-S stochastic beam step.

Both read each logit row once (one program per row, a loop over vocabulary tiles): the
softmax statistics (running max and sum of exponentials), the perturbed scores
``logit / temperature + gumbel`` (noise from ``gumbel`` or generated in-kernel from the
``GUMBEL`` Philox stream of :mod:`rsd_kernels.noise`) and a running top-k
kept sorted in registers. A tile is merged into the top-k only when its best score beats the
current k-th (after the first tiles, almost never). Ties go to the lower token index.

* :func:`sample_topk` -- tokens in sampling order, their log-probabilities, ``min(k, support)``.
* :func:`beam_step` -- per beam, the top-W candidates by perturbed score, their ``phi`` and
  truncated Gumbel ``G_c`` (SPEC section 4; truncated Gumbel is increasing in the candidate's
  Gumbel, so a beam's top-W by score is its top-W by ``G_c``); the global top-W merge over the
  ``N * W`` survivors of a row is a small ``torch.topk``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import noise as _noise
from .. import triton_compat  # noqa: F401  (interpreter fixes, see module)
from ..triton_noise import STREAM_GUMBEL, gumbel, token_uniforms

MAX_K = 1024  # top-k kept in registers


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
def _merge_topk(top_v, top_i, sc, offs, KMAX, KB: tl.constexpr):
    """The sorted top-``KMAX`` of (running ``top_v/top_i``) and (tile scores ``sc`` at ``offs``)."""
    pos = tl.arange(0, KB)
    new_v = tl.full([KB], float("-inf"), top_v.dtype)
    new_i = tl.full([KB], 2147483647, tl.int32)
    for i in range(KMAX):
        cm = tl.max(sc, 0)
        ci = tl.min(tl.where(sc == cm, offs, 2147483647), 0)
        tm = tl.max(top_v, 0)
        ti = tl.min(tl.where(top_v == tm, top_i, 2147483647), 0)
        take_tile = (cm > tm) | ((cm == tm) & (ci < ti))
        v = tl.where(take_tile, cm, tm)
        idx = tl.where(take_tile, ci, ti)
        new_v = tl.where(pos == i, v, new_v)
        new_i = tl.where(pos == i, idx, new_i)
        tile_hit = offs == tl.where(take_tile, ci, -1)
        sc = tl.where(tile_hit, float("-inf"), sc)
        offs = tl.where(tile_hit, 2147483647, offs)  # taken: never again
        top_hit = (top_i == tl.where(take_tile, -1, ti)) & (top_v == tm)
        top_v = tl.where(top_hit, float("-inf"), top_v)
        top_i = tl.where(top_hit, 2147483647, top_i)
    return new_v, new_i


@triton.jit
def _scan_row(row_ptr, g_row, V, temp, seed, offset, row, KMAX,
              NOISE: tl.constexpr, GEN: tl.constexpr, CT: tl.constexpr, KB: tl.constexpr, BLOCK_V: tl.constexpr):
    """One pass over a row: (max, sum exp, support, sorted top-KMAX scores, their tokens)."""
    offs0 = tl.arange(0, BLOCK_V)
    pos = tl.arange(0, KB)
    m = tl.full([], float("-inf"), CT)
    s = tl.zeros([], CT)
    support = tl.zeros([], tl.int32)
    top_v = tl.full([KB], float("-inf"), CT)
    top_i = tl.full([KB], 2147483647, tl.int32)
    for v0 in range(0, V, BLOCK_V):
        offs = v0 + offs0
        inb = offs < V
        x = tl.load(row_ptr + offs, mask=inb, other=float("-inf")).to(CT) / temp
        fin = x > float("-inf")
        m_new = tl.maximum(m, tl.max(x, 0))
        alpha = tl.where(m == float("-inf"), 0.0, tl.exp(m - m_new))
        s = s * alpha + tl.sum(tl.where(fin, tl.exp(x - m_new), 0.0), 0)
        m = m_new
        support += tl.sum(fin.to(tl.int32), 0)
        if NOISE:
            if GEN:
                g = gumbel(token_uniforms(seed, offset, row, STREAM_GUMBEL, offs >> 2, offs & 3)).to(CT)
            else:
                g = tl.load(g_row + offs, mask=inb, other=0.0).to(CT)
            sc = tl.where(fin, x + g, float("-inf"))
        else:
            sc = x
        sc = tl.where(inb, sc, float("-inf"))
        kth = tl.max(tl.where(pos == KMAX - 1, top_v, float("-inf")), 0)  # -inf until KMAX scores are in
        if (tl.max(sc, 0) > kth) | (kth == float("-inf")):
            top_v, top_i = _merge_topk(top_v, top_i, sc, tl.where(inb, offs, 2147483647), KMAX, KB)
    return m, s, support, top_v, top_i


@triton.jit
def _sample_topk_kernel(logits_ptr, k_ptr, g_ptr, temp_ptr, temp_val, tok_ptr, lp_ptr, num_ptr, V, KMAX, seed, offset,
                        NOISE: tl.constexpr, GEN: tl.constexpr, CT: tl.constexpr, KB: tl.constexpr,
                        BLOCK_V: tl.constexpr):
    r = tl.program_id(0)
    r64 = r.to(tl.int64)
    row_ptr = logits_ptr + r64 * V
    temp = _temperature(temp_ptr, temp_val, CT)
    m, s, support, top_v, top_i = _scan_row(row_ptr, g_ptr + r64 * V, V, temp, seed, offset, r, KMAX,
                                            NOISE, GEN, CT, KB, BLOCK_V)
    pos = tl.arange(0, KB)
    num = tl.minimum(tl.load(k_ptr + r), support)
    keep = pos < num
    x = tl.load(row_ptr + top_i, mask=keep, other=0.0).to(CT) / temp
    lp = (x - m) - tl.log(s)
    tl.store(tok_ptr + r64 * KMAX + pos, tl.where(keep, top_i, -1).to(tl.int64), mask=pos < KMAX)
    tl.store(lp_ptr + r64 * KMAX + pos, tl.where(keep, lp, float("-inf")).to(tl.float32), mask=pos < KMAX)
    tl.store(num_ptr + r, num)


@triton.jit
def _beam_candidates_kernel(logits_ptr, phi_ptr, G_ptr, g_ptr, temp_ptr, temp_val, tok_ptr, phic_ptr, Gc_ptr, V, W,
                            seed, offset, GEN: tl.constexpr, CT: tl.constexpr, KB: tl.constexpr, BLOCK_V: tl.constexpr):
    """Row r = b * N + n: this beam's top-W candidates (token, phi_c, G_c), G_c descending."""
    r = tl.program_id(0)
    r64 = r.to(tl.int64)
    row_ptr = logits_ptr + r64 * V
    g_row = g_ptr + r64 * V
    temp = _temperature(temp_ptr, temp_val, CT)
    phi = tl.load(phi_ptr + r).to(CT)
    G = tl.load(G_ptr + r).to(CT)
    m, s, support, top_v, top_i = _scan_row(row_ptr, g_row, V, temp, seed, offset, r, W, True, GEN, CT, KB, BLOCK_V)
    pos = tl.arange(0, KB)
    ok = (pos < W) & (top_v > float("-inf")) & ((phi + tl.zeros([KB], CT)) > float("-inf"))
    x = tl.load(row_ptr + top_i, mask=ok, other=0.0).to(CT) / temp
    if GEN:
        gum = gumbel(token_uniforms(seed, offset, r, STREAM_GUMBEL, top_i >> 2, top_i & 3)).to(CT)
    else:
        gum = tl.load(g_row + top_i, mask=ok, other=0.0).to(CT)
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


def _block_v(V, block_v):
    if block_v is not None:
        return block_v
    return min(max(16, triton.next_power_of_2(V)), 4096)


def _temperature_tensor(t, ct, placeholder):
    """fp64 only: the temperature as a device tensor; otherwise it travels as a scalar
    argument and no host-to-device copy happens (the launch stays CUDA-graph capturable)."""
    return torch.tensor([t], dtype=ct, device=placeholder.device) if ct == torch.float64 else placeholder


def _check_noise(gumbel, seed, offset):
    if gumbel is None:
        if seed is None:
            raise ValueError("sampling needs gumbel noise or a seed")
        _noise.check_seed(seed, offset)


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
    bv = _block_v(V, block_v)
    _sample_topk_kernel[(R,)](logits, k, g, temp, float(t), tokens, lp, num, V, kmax, 0 if seed is None else int(seed),
                              int(offset), NOISE=noisy, GEN=noisy and gumbel is None, CT=_tl_dtype(ct),
                              KB=max(2, triton.next_power_of_2(kmax)), BLOCK_V=bv, num_warps=4 if bv <= 1024 else 8)
    return tokens, lp, num


def beam_step(logits, phi, G, width: int, temperature: float, gumbel=None, seed=None, offset=0, *, block_v=None):
    """Triton RSD-S beam step; arguments and results as :func:`.reference.beam_step`.

    Per beam, a kernel keeps the top-``min(width, V)`` candidates; a ``torch.topk`` over
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
    bv = _block_v(V, block_v)
    if B * N:
        _beam_candidates_kernel[(B * N,)](logits, phi, G, g, temp, float(temperature), tok, phi_c, Gc, V, Wb,
                                          0 if seed is None else int(seed), int(offset), GEN=gumbel is None,
                                          CT=_tl_dtype(ct), KB=max(2, triton.next_power_of_2(Wb)), BLOCK_V=bv,
                                          num_warps=4 if bv <= 1024 else 8)
    # global merge of the row's N * Wb survivors (small), ordered like the reference
    top = torch.topk(Gc.reshape(B, N * Wb), width, dim=-1, sorted=True)
    ok = torch.isfinite(top.values)
    parent = torch.where(ok, top.indices // Wb, -1)
    token = torch.where(ok, tok.reshape(B, N * Wb).gather(1, top.indices), -1)
    phi_sel = torch.where(ok, phi_c.reshape(B, N * Wb).gather(1, top.indices), float("-inf"))
    return parent, token, phi_sel, top.values
