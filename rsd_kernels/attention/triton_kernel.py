"""Triton tree attention for the verification forward (SPEC section 7), with split-KV.

One program per ``(batch row, KV head, query block, KV split)``. Its M dimension is the
``Hq / Hkv`` query heads of the KV head times the T tree nodes (contiguous in ``q``), so every
K/V tile is loaded once for the whole GQA group. Each program runs an online softmax (fp32
statistics and accumulator, ``exp2``) over its share of the prefix keys (no mask beyond the
ragged ``prefix_lens[b]``) and -- the last split only -- over the T tree keys at
``prefix_lens[b] + j``, masked by the packed ancestor-or-self bitmask. With one split it
writes the output; with several (flash-decoding, for small ``B * Hkv`` and long prefixes) it
writes ``(out, log-sum-exp)`` partials that :func:`_combine_kernel` merges.

Launch plan (:func:`launch_plan`): the split count fills **one wave** of the device (``CTAS_PER_SM``
resident programs per SM, 132 SMs on an H200; FlashInfer's rule), keeping at least
``max(256, 4 M)`` prefix keys per split so the fp32 partials stay small against K/V; it is a
runtime argument (with ``S`` and ``split_len``, not specialised), so a growing prefix never
recompiles the kernel; the K/V loop runs ``NUM_STAGES``-deep software pipelining; the combine
kernel loads every split's partial of a row at once (all loads in flight). K and V are read
through their strides: the KV cache's ``[:, :, :S]`` views go in as they are, no copy.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .. import triton_compat  # noqa: F401  (interpreter fixes, see module)

HEAD_DIMS = (16, 32, 64, 128, 256)
LOG2E = 1.4426950408889634
H200_SMS = 132  # the plan's SM count when no CUDA device is present (CPU tests, bench/roofline.py)
CTAS_PER_SM = 2  # resident programs per SM of the launch configurations (registers/smem: test_triton_compile_sm90)
NUM_STAGES = 3
MAX_SPLITS = 32  # the combine kernel's compile-time bound on the (runtime) split count
MIN_KEYS_PER_SPLIT = 256


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


@triton.jit(do_not_specialize=["S", "split_len", "num_splits"])
def _tree_attention_kernel(
    q_ptr, k_ptr, v_ptr, bits_ptr, plen_ptr, out_ptr, part_ptr, lse_ptr,
    Hq, Hkv, T, S, W, split_len, num_splits, qk_scale,
    stride_kb, stride_kh, stride_ks, stride_vb, stride_vh, stride_vs,
    GROUP: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_SPLIT: tl.constexpr, ACC_DT: tl.constexpr, PREC: tl.constexpr, DOT_FP32: tl.constexpr,
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
    if DOT_FP32:  # interpreter only: its bf16 tl.dot is wrong (see tree_attention_splits)
        q = q.to(tl.float32)
    DOT_DT = q.dtype
    acc = tl.zeros([BLOCK_M, D], ACC_DT)
    m_i = tl.full([BLOCK_M], float("-inf"), ACC_DT)
    l_i = tl.zeros([BLOCK_M], ACC_DT)
    n0 = tl.arange(0, BLOCK_N)
    k_base = k_ptr + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh
    v_base = v_ptr + b.to(tl.int64) * stride_vb + hk.to(tl.int64) * stride_vh
    # ---- prefix keys of this split: [start, min(start + split_len, L)), no mask ----
    start = split * split_len
    end = tl.minimum(start + split_len, L)
    for s0 in range(start, end, BLOCK_N):
        keys = s0 + n0
        k_blk = tl.make_block_ptr(k_base, (S, D), (stride_ks, 1), (s0, 0), (BLOCK_N, D), (1, 0))
        v_blk = tl.make_block_ptr(v_base, (S, D), (stride_vs, 1), (s0, 0), (BLOCK_N, D), (1, 0))
        acc, m_i, l_i = _attend_tile(acc, m_i, l_i, q, k_blk, v_blk, row_ok[:, None] & (keys < end)[None, :],
                                     qk_scale, DOT_DT, PREC)
    # ---- tree keys (last split): node j at L + j, visible iff bit j of row t's mask ----
    if split == num_splits - 1:
        for j0 in range(0, T, BLOCK_N):
            j = j0 + n0
            words = tl.load(bits_ptr + (b * T + t_of_row)[:, None] * W + (j // 32)[None, :],
                            mask=row_ok[:, None] & (j < T)[None, :], other=0)
            key_ok = ((words >> (j % 32)[None, :]) & 1) != 0
            k_blk = tl.make_block_ptr(k_base, (S, D), (stride_ks, 1), (L + j0, 0), (BLOCK_N, D), (1, 0))
            v_blk = tl.make_block_ptr(v_base, (S, D), (stride_vs, 1), (L + j0, 0), (BLOCK_N, D), (1, 0))
            acc, m_i, l_i = _attend_tile(acc, m_i, l_i, q, k_blk, v_blk, key_ok, qk_scale, DOT_DT, PREC)
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    o = acc / l_safe[:, None]
    if IS_SPLIT:
        prow = (q_row0 + rows) * num_splits + split
        tl.store(part_ptr + prow[:, None] * D + d[None, :], o, mask=row_ok[:, None])
        lse = tl.where(l_i > 0, m_i + tl.log2(l_safe), float("-inf"))  # base 2
        tl.store(lse_ptr + prow, lse, mask=row_ok)
    else:
        tl.store(out_ptr + (q_row0 + rows)[:, None] * D + d[None, :], o.to(out_ptr.dtype.element_ty),
                 mask=row_ok[:, None])


@triton.jit(do_not_specialize=["num_splits"])
def _combine_kernel(part_ptr, lse_ptr, out_ptr, num_splits, SPLITS_P2: tl.constexpr, D: tl.constexpr):
    """out[row] = sum_s w_s o_s / sum_s w_s with w_s = 2^(lse_s - max lse); one row per program,
    its ``num_splits`` partials loaded as one ``[SPLITS_P2, D]`` tile (every load in flight)."""
    row = tl.program_id(0).to(tl.int64)
    sp = tl.arange(0, SPLITS_P2)
    d = tl.arange(0, D)
    ok = sp < num_splits
    lse = tl.load(lse_ptr + row * num_splits + sp, mask=ok, other=float("-inf"))
    o = tl.load(part_ptr + (row * num_splits + sp)[:, None] * D + d[None, :], mask=ok[:, None], other=0.0)
    mx = tl.max(lse, 0)
    w = tl.where(lse == float("-inf"), 0.0, tl.exp2(lse - mx))
    wsum = tl.sum(w, 0)
    out = tl.sum(w[:, None] * o, 0) / tl.where(wsum > 0, wsum, 1.0)
    tl.store(out_ptr + row * D + d, out.to(out_ptr.dtype.element_ty))


_DOT_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


def device_sms(device) -> int:
    """SMs of ``device`` (a CUDA device), else :data:`H200_SMS` (the plan of the H200)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return H200_SMS


def launch_config(D: int, M: int):
    """``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` for head dim D and M = (Hq / Hkv) * T query rows.

    Chosen so that ptxas reports no register spills for sm_90 and :data:`CTAS_PER_SM` programs
    fit on an SM (tests/test_triton_compile_sm90.py compiles these configurations).
    """
    block_m = min(max(16, triton.next_power_of_2(M)), 64)
    block_n = 64 if D <= 64 else 32
    return block_m, block_n, 8 if block_m >= 32 else 4, NUM_STAGES


def num_splits_for(B, Hkv, m_blocks, max_prefix, M, sms=H200_SMS, ctas_per_sm=CTAS_PER_SM):
    """Split-KV count: as many splits as fit in **one wave** (``B * Hkv * m_blocks * splits <=
    sms * ctas_per_sm``), each keeping at least ``max(256, 4 M)`` prefix keys, at most :data:`MAX_SPLITS`."""
    base = max(1, B * Hkv * m_blocks)
    want = max(1, (sms * ctas_per_sm) // base)
    min_keys = max(MIN_KEYS_PER_SPLIT, 4 * M)
    return int(max(1, min(want, max_prefix // min_keys, MAX_SPLITS)))


def launch_plan(B, Hq, Hkv, T, D, S, sms=H200_SMS, *, num_splits=None, block_m=None, block_n=None) -> dict:
    """The launches of :func:`tree_attention_splits` for these shapes (``S`` the cache length)."""
    M = (Hq // Hkv) * T
    cfg_m, cfg_n, num_warps, num_stages = launch_config(D, M)
    block_m = block_m or cfg_m
    block_n = block_n or cfg_n
    m_blocks = triton.cdiv(M, block_m)
    max_prefix = S - T  # an upper bound of prefix_lens known without a device sync
    if num_splits is None:
        num_splits = num_splits_for(B, Hkv, m_blocks, max_prefix, M, sms)
    num_splits = max(1, min(int(num_splits), MAX_SPLITS))
    split_len = triton.cdiv(triton.cdiv(max(max_prefix, 1), num_splits), block_n) * block_n
    return {"block_m": block_m, "block_n": block_n, "num_warps": num_warps, "num_stages": num_stages,
            "m_blocks": m_blocks, "num_splits": num_splits, "split_len": split_len,
            "grid": (B * Hkv, m_blocks, num_splits), "programs": B * Hkv * m_blocks * num_splits,
            "slots": sms * CTAS_PER_SM, "combine_programs": B * Hq * T if num_splits > 1 else 0}


def tree_attention(q, k, v, mask_bits, prefix_lens, scale: float):
    """Triton tree attention; arguments and result as :func:`.reference.tree_attention`."""
    return tree_attention_splits(q, k, v, mask_bits, prefix_lens, scale)


tree_attention.accepts_strided_kv = True  # K/V views go in as they are (see rsd_kernels.tree_attention)


def tree_attention_splits(q, k, v, mask_bits, prefix_lens, scale: float, *, num_splits=None, block_m=None,
                          block_n=None):
    """:func:`tree_attention` with the split-KV count and tile sizes exposed (tests, benchmarks).

    ``k``/``v`` may be strided views (their last dimension contiguous, else they are copied).
    """
    B, Hq, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    if q.dtype not in _DOT_DTYPES:
        raise TypeError(f"the Triton tree attention supports float16, bfloat16 and float32 q/k/v, got {q.dtype}")
    if D not in HEAD_DIMS:
        raise ValueError(f"the Triton tree attention supports head dims {HEAD_DIMS}, got D={D}")
    q = q.contiguous()  # small; rows of a KV head's group must be adjacent
    k = k if k.stride(-1) == 1 else k.contiguous()
    v = v if v.stride(-1) == 1 else v.contiguous()
    out = torch.empty_like(q)
    if B == 0 or Hq == 0:
        return out
    plan = launch_plan(B, Hq, Hkv, T, D, S, device_sms(q.device), num_splits=num_splits, block_m=block_m,
                       block_n=block_n)
    splits = plan["num_splits"]
    W = mask_bits.shape[-1]
    qk_scale = float(scale) * LOG2E
    prec = "tf32x3" if q.dtype == torch.float32 else "tf32"  # fp32: 3xTF32, about fp32 accuracy
    # The Triton 3.6 interpreter multiplies the raw bits of bfloat16 operands in tl.dot; under
    # TRITON_INTERPRET=1 bf16 tiles are therefore multiplied in fp32 (compiled code: bf16 MMA).
    dot_fp32 = q.dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1"
    if splits > 1:
        part = torch.empty(B * Hq * T * splits, D, dtype=torch.float32, device=q.device)
        lse = torch.empty(B * Hq * T * splits, dtype=torch.float32, device=q.device)
    else:
        part = lse = out  # unused
    _tree_attention_kernel[plan["grid"]](
        q, k, v, mask_bits, prefix_lens, out, part, lse, Hq, Hkv, T, S, W, plan["split_len"], splits, qk_scale,
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        GROUP=Hq // Hkv, D=D, BLOCK_M=plan["block_m"], BLOCK_N=plan["block_n"], IS_SPLIT=splits > 1,
        ACC_DT=tl.float32, PREC=prec, DOT_FP32=dot_fp32, num_warps=plan["num_warps"], num_stages=plan["num_stages"],
    )
    if splits > 1:
        _combine_kernel[(B * Hq * T,)](part, lse, out, splits, SPLITS_P2=MAX_SPLITS, D=D, num_warps=4)
    return out
