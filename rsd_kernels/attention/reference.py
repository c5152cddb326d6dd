"""PyTorch reference for tree attention (SPEC section 7).

``q [B, Hq, T, D]`` are the tree nodes' queries; ``k, v [B, Hkv, S, D]`` the cache in which the
T tree keys sit at ``prefix_lens[b] .. prefix_lens[b] + T - 1``. Node i attends to every prefix
key and to the tree keys of its ancestors-or-self (``mask_bits``, the packed bitmask of
:class:`~rsd_kernels.DraftTree`). Keys past ``prefix_lens[b] + T`` are ignored. GQA: query head h
reads KV head ``h // (Hq // Hkv)``. Accumulates in float32 (float64 for float64 inputs).
"""
from __future__ import annotations

import torch

from ..tree import tree_key_mask


def unpack_bitmask(mask_bits: torch.Tensor, T: int) -> torch.Tensor:
    """``[B, T, W]`` int32 words -> ``[B, T, T]`` bool."""
    j = torch.arange(T, device=mask_bits.device)
    words = mask_bits.long().gather(2, (j // 32).expand(*mask_bits.shape[:2], T))
    return ((words >> (j % 32)) & 1).bool()


def tree_attention(q, k, v, mask_bits, prefix_lens, scale: float):
    B, Hq, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    allowed = tree_key_mask(unpack_bitmask(mask_bits, T), prefix_lens, S)  # [B, T, S]
    group = Hq // Hkv
    kk = k.to(dt).repeat_interleave(group, dim=1)
    vv = v.to(dt).repeat_interleave(group, dim=1)
    scores = torch.matmul(q.to(dt), kk.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, vv).to(q.dtype)


tree_attention.accepts_strided_kv = True  # reads K/V views as they are
