"""Triton tree attention for the verification forward (SPEC section 7), with split-KV.

One program per ``(batch row, KV head, query block, KV split)``. Its M dimension is the
``Hq / Hkv`` query heads of the KV head times the T tree nodes (contiguous in ``q``), so every
K/V tile is loaded once for the whole GQA group. Each program runs an online softmax (fp32
statistics and accumulator, ``exp2``) over its share of the prefix keys (no mask beyond the
ragged ``prefix_lens[b]``) and -- the last split only -- over the T tree keys at
``prefix_lens[b] + j``, masked by the packed ancestor-or-self bitmask. With one split it
writes the output; with several (flash-decoding, for small ``B * Hkv`` and long prefixes) it
writes ``(out, log-sum-exp)`` partials that :func:`_combine_kernel` merges.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .. import triton_compat  # noqa: F401  (interpreter fixes, see module)

HEAD_DIMS = (16, 32, 64, 128, 256)
LOG2E = 1.4426950408889634


@triton.jit
def _attend_tile(acc, m_i, l_i, q, k_blk, v_blk, key_ok, qk_scale, DOT_DT: tl.constexpr, PREC: tl.constexpr):
    """One K/V tile of the online softmax. ``k_blk``/``v_blk`` are block pointers (rows past S
    read as 0); ``key_ok [BLOCK_M, BLOCK_N]`` says which scores count."""
    k = tl.load(k_blk, boundary_check=(0,), padding_option="zero").to(DOT_DT)
    v = tl.load(v_blk, boundary_check=(0,), padding_option="zero").to(DOT_DT)
    s = tl.dot(q, tl.trans(k), input_precision=PREC, out_dtype=acc.dtype) * qk_scale
    s = tl.where(key_ok, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(s - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(DOT_DT), v, input_precision=PREC, out_dtype=acc.dtype)
    return acc, m_new, l_i


@triton.jit
def _tree_attention_kernel(
    q_ptr, k_ptr, v_ptr, bits_ptr, plen_ptr, out_ptr, part_ptr, lse_ptr,
    Hq, Hkv, T, S, W, split_len, qk_scale,
    GROUP: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    NUM_SPLITS: tl.constexpr, ACC_DT: tl.constexpr, PREC: tl.constexpr, DOT_FP32: tl.constexpr,
):
    bh = tl.program_id(0)
    mb = tl.program_id(1)
    split = tl.program_id(2)
    b = bh // Hkv
    hk = bh % Hkv
    L = tl.load(plen_ptr + b).to(tl.int32)
    rows = mb * BLOCK_M + tl.arange(0, BLOCK_M)  # index into (group head, node)
    row_ok = rows < GROUP * T
    t_of_row = rows % T
    d = tl.arange(0, D)
    # q rows of this KV head's group are contiguous: (b * Hq + hk * GROUP) * T + rows
    q_row0 = (b.to(tl.int64) * Hq + hk * GROUP) * T
    q = tl.load(q_ptr + (q_row0 + rows)[:, None] * D + d[None, :], mask=row_ok[:, None], other=0.0)
    kv_base = (b.to(tl.int64) * Hkv + hk) * S * D
    if DOT_FP32:  # interpreter only: its bf16 tl.dot is wrong (see tree_attention_splits)
        q = q.to(tl.float32)
    DOT_DT = q.dtype
    acc = tl.zeros([BLOCK_M, D], ACC_DT)
    m_i = tl.full([BLOCK_M], float("-inf"), ACC_DT)
    l_i = tl.zeros([BLOCK_M], ACC_DT)
    n0 = tl.arange(0, BLOCK_N)
    k_base = k_ptr + kv_base
    v_base = v_ptr + kv_base
    # ---- prefix keys of this split: [start, min(start + split_len, L)), no mask ----
    start = split * split_len
    end = tl.minimum(start + split_len, L)
    for s0 in range(start, end, BLOCK_N):
        keys = s0 + n0
        k_blk = tl.make_block_ptr(k_base, (S, D), (D, 1), (s0, 0), (BLOCK_N, D), (1, 0))
        v_blk = tl.make_block_ptr(v_base, (S, D), (D, 1), (s0, 0), (BLOCK_N, D), (1, 0))
        acc, m_i, l_i = _attend_tile(acc, m_i, l_i, q, k_blk, v_blk, row_ok[:, None] & (keys < end)[None, :],
                                     qk_scale, DOT_DT, PREC)
    # ---- tree keys (last split): node j at L + j, visible iff bit j of row t's mask ----
    if split == NUM_SPLITS - 1:
        for j0 in range(0, T, BLOCK_N):
            j = j0 + n0
            words = tl.load(bits_ptr + (b * T + t_of_row)[:, None] * W + (j // 32)[None, :],
                            mask=row_ok[:, None] & (j < T)[None, :], other=0)
            key_ok = ((words >> (j % 32)[None, :]) & 1) != 0
            k_blk = tl.make_block_ptr(k_base, (S, D), (D, 1), (L + j0, 0), (BLOCK_N, D), (1, 0))
            v_blk = tl.make_block_ptr(v_base, (S, D), (D, 1), (L + j0, 0), (BLOCK_N, D), (1, 0))
            acc, m_i, l_i = _attend_tile(acc, m_i, l_i, q, k_blk, v_blk, key_ok, qk_scale, DOT_DT, PREC)
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    o = acc / l_safe[:, None]
    if NUM_SPLITS == 1:
        tl.store(out_ptr + (q_row0 + rows)[:, None] * D + d[None, :], o.to(out_ptr.dtype.element_ty),
                 mask=row_ok[:, None])
    else:
        prow = (q_row0 + rows) * NUM_SPLITS + split
        tl.store(part_ptr + prow[:, None] * D + d[None, :], o, mask=row_ok[:, None])
        lse = tl.where(l_i > 0, m_i + tl.log2(l_safe), float("-inf"))  # base 2
        tl.store(lse_ptr + prow, lse, mask=row_ok)


@triton.jit
def _combine_kernel(part_ptr, lse_ptr, out_ptr, n_rows, NUM_SPLITS: tl.constexpr, SPLITS_P2: tl.constexpr,
                    D: tl.constexpr, BLOCK_R: tl.constexpr):
    """out[row] = sum_s w_s o_s / sum_s w_s with w_s = 2^(lse_s - max lse)."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    sp = tl.arange(0, SPLITS_P2)
    d = tl.arange(0, D)
    ok = (rows < n_rows)[:, None] & (sp < NUM_SPLITS)[None, :]
    lse = tl.load(lse_ptr + rows.to(tl.int64)[:, None] * NUM_SPLITS + sp[None, :], mask=ok, other=float("-inf"))
    mx = tl.max(lse, 1)
    w = tl.where(lse == float("-inf"), 0.0, tl.exp2(lse - mx[:, None]))
    wsum = tl.sum(w, 1)
    acc = tl.zeros([BLOCK_R, D], lse.dtype)
    for s in range(NUM_SPLITS):
        ws = tl.sum(tl.where(sp[None, :] == s, w, 0.0), 1)
        o = tl.load(part_ptr + ((rows.to(tl.int64) * NUM_SPLITS + s)[:, None] * D + d[None, :]),
                    mask=(rows < n_rows)[:, None], other=0.0)
        acc += ws[:, None] * o
    out = acc / tl.where(wsum > 0, wsum, 1.0)[:, None]
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * D + d[None, :], out.to(out_ptr.dtype.element_ty),
             mask=(rows < n_rows)[:, None])


_DOT_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


def default_num_splits(B, Hkv, m_blocks, max_prefix, device, min_keys_per_split=256):
    """Splits so that ``B * Hkv * m_blocks * splits`` covers about two waves of the GPU's SMs,
    each split keeping at least ``min_keys_per_split`` prefix keys."""
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    want = triton.cdiv(2 * sms, max(1, B * Hkv * m_blocks))
    return int(max(1, min(want, triton.cdiv(max_prefix, min_keys_per_split), 64)))


def launch_config(D: int, M: int):
    """``(BLOCK_M, BLOCK_N, num_warps)`` for head dim D and M = (Hq / Hkv) * T query rows.

    Chosen so that ptxas reports no register spills for sm_90 (see
    tests/test_triton_compile_sm90.py, which compiles these configurations).
    """
    block_m = min(max(16, triton.next_power_of_2(M)), 64)
    block_n = 64 if D <= 64 else 32
    return block_m, block_n, 8 if block_m >= 32 else 4


def tree_attention(q, k, v, mask_bits, prefix_lens, scale: float):
    """Triton tree attention; arguments and result as :func:`.reference.tree_attention`."""
    return tree_attention_splits(q, k, v, mask_bits, prefix_lens, scale)


def tree_attention_splits(q, k, v, mask_bits, prefix_lens, scale: float, *, num_splits=None, block_m=None,
                          block_n=None):
    """:func:`tree_attention` with the split-KV count and tile sizes exposed (tests, benchmarks)."""
    B, Hq, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    if q.dtype not in _DOT_DTYPES:
        raise TypeError(f"the Triton tree attention supports float16, bfloat16 and float32 q/k/v, got {q.dtype}")
    if D not in HEAD_DIMS:
        raise ValueError(f"the Triton tree attention supports head dims {HEAD_DIMS}, got D={D}")
    group = Hq // Hkv
    out = torch.empty_like(q)
    if B == 0 or Hq == 0:
        return out
    M = group * T
    cfg_m, cfg_n, num_warps = launch_config(D, M)
    block_m = block_m or cfg_m
    block_n = block_n or cfg_n
    m_blocks = triton.cdiv(M, block_m)
    max_prefix = S - T  # an upper bound of prefix_lens known without a device sync
    if num_splits is None:
        num_splits = default_num_splits(B, Hkv, m_blocks, max_prefix, q.device)
    num_splits = max(1, int(num_splits))
    split_len = triton.cdiv(triton.cdiv(max(max_prefix, 1), num_splits), block_n) * block_n
    W = mask_bits.shape[-1]
    qk_scale = float(scale) * LOG2E
    prec = "tf32x3" if q.dtype == torch.float32 else "tf32"  # fp32: 3xTF32, about fp32 accuracy
    # The Triton 3.6 interpreter multiplies the raw bits of bfloat16 operands in tl.dot; under
    # TRITON_INTERPRET=1 bf16 tiles are therefore multiplied in fp32 (compiled code: bf16 MMA).
    dot_fp32 = q.dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1"
    if num_splits > 1:
        part = torch.empty(B * Hq * T * num_splits, D, dtype=torch.float32, device=q.device)
        lse = torch.empty(B * Hq * T * num_splits, dtype=torch.float32, device=q.device)
    else:
        part = lse = out  # unused
    _tree_attention_kernel[(B * Hkv, m_blocks, num_splits)](
        q, k, v, mask_bits, prefix_lens, out, part, lse, Hq, Hkv, T, S, W, split_len, qk_scale,
        GROUP=group, D=D, BLOCK_M=block_m, BLOCK_N=block_n, NUM_SPLITS=num_splits, ACC_DT=tl.float32, PREC=prec,
        DOT_FP32=dot_fp32,
        num_warps=num_warps, num_stages=2,
    )
    if num_splits > 1:
        n_rows = B * Hq * T
        block_r = 16
        _combine_kernel[(triton.cdiv(n_rows, block_r),)](
            part, lse, out, n_rows, NUM_SPLITS=num_splits, SPLITS_P2=max(2, triton.next_power_of_2(num_splits)), D=D,
            BLOCK_R=block_r, num_warps=4,
        )
    return out
