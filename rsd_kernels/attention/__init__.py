"""Public op ``tree_attention``: validate and dispatch (SPEC section 7)."""
from __future__ import annotations

import math

import torch

from .. import backends, checks
from ..tree import DraftTree

ATTN_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def tree_attention(q, k, v, tree, prefix_lens, *, scale=None, validate=True, backend="auto") -> torch.Tensor:
    """Attention of the T tree nodes' queries over the KV cache with the tree mask.

    Args:
        q: ``[B, Hq, T, D]`` queries of the tree nodes (root first).
        k, v: ``[B, Hkv, S, D]`` the cache; the tree's keys sit at
            ``prefix_lens[b] .. prefix_lens[b] + T - 1``; Hq must be a multiple of Hkv.
        tree: a :class:`DraftTree` with T nodes, or its packed ancestor bitmask
            ``[B, T, ceil(T/32)]`` int32.
        prefix_lens: ``[B]`` int32/int64 tokens before the root (ragged allowed), or an int.
        scale: softmax scale (a finite real number), default ``1/sqrt(D)``.
        validate: also check the values of ``prefix_lens`` (``0 <= prefix_lens[b]`` and
            ``prefix_lens[b] + T <= S``): a device-to-host sync. The decoding loop passes
            ``False`` (its prefix lengths are right by construction), which keeps a verification
            forward free of host syncs (CUDA-graph capturable). Shape, dtype and device checks
            always run.
    K and V may be strided views (e.g. the KV cache's ``[:, :, :S]`` slices of a preallocated
    buffer): the Triton and torch backends read them in place, no K/V-sized copy is made.
    Returns ``[B, Hq, T, D]`` in q's dtype: node i sees every prefix key and its ancestors-or-self.
    Padding nodes of a ragged :class:`DraftTree` (``>= num_nodes[b]``) get a row too: they have
    no ancestors, so they attend to the prefix and their own key; the values mean nothing. A
    node with no key at all (a hand-made bitmask without its own bit, ``prefix_lens[b] == 0``)
    is undefined (NaN in the reference, 0 in the Triton kernel).

    The Triton backend supports float16/bfloat16/float32 (not float64) and head dimensions
    16, 32, 64, 128, 256; beyond that it raises, and ``backend="torch"`` serves any case.
    """
    checks.tensor("q", q, ndim=4, dtypes=ATTN_DTYPES)
    B, Hq, T, D = q.shape
    dev = q.device
    for what, n in (("query heads Hq", Hq), ("tree nodes T", T), ("head dimension D", D)):
        if n == 0:
            raise ValueError(f"q must have at least one of its {what}, got shape {tuple(q.shape)} [B, Hq, T, D]")
    checks.tensor("k", k, ndim=4, dtypes=(q.dtype,), device=dev)
    Hkv, S = k.shape[1], k.shape[2]
    checks.tensor("k", k, shape=(B, None, None, D))
    checks.tensor("v", v, ndim=4, dtypes=(q.dtype,), device=dev, shape=(B, Hkv, S, D))
    if Hkv == 0 or Hq % Hkv:
        raise ValueError(f"the number of query heads ({Hq}) must be a multiple of the KV heads ({Hkv})")
    W = (T + 31) // 32
    if isinstance(tree, DraftTree):
        if tree.batch_size != B or tree.max_nodes != T:
            raise ValueError(f"tree has shape [{tree.batch_size}, {tree.max_nodes}] but q has B={B}, T={T}")
        mask_bits = tree.ancestor_bitmask
    else:
        mask_bits = checks.tensor("tree", tree, ndim=3, dtypes=(torch.int32,), device=dev, shape=(B, T, W))
    if isinstance(prefix_lens, int):
        prefix_lens = torch.full((B,), prefix_lens, dtype=torch.int64, device=dev)
    checks.tensor("prefix_lens", prefix_lens, ndim=1, dtypes=(torch.int32, torch.int64), device=dev, shape=(B,))
    if validate and bool(((prefix_lens < 0) | (prefix_lens + T > S)).any()):
        raise ValueError(f"prefix_lens + T must be within the cache length S={S}; got prefix_lens={prefix_lens.tolist()}, T={T}")
    scale = 1.0 / math.sqrt(D) if scale is None else checks.real_number("scale", scale)
    _, impl = backends.resolve("tree_attention", backend, dev)
    if not getattr(impl, "accepts_strided_kv", False):  # a backend that indexes dense K/V only
        k, v = k.contiguous(), v.contiguous()
    return impl(q.contiguous(), k, v, mask_bits.contiguous(), prefix_lens.to(torch.int64).contiguous(), float(scale))
