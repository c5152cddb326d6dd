"""Tree attention: reference, Triton, CUDA, SDPA with a dense boolean mask, FlexAttention.

Floor: K and V read once plus q read and out written,
``(2 * B * Hkv * S + 2 * B * Hq * T) * D * bytes``.
"""
import math

import pytest
import torch

from benchutil import DEVICE, ON_GPU, backend_params, run
from rsd_kernels import DraftTree, tree_attention
from rsd_kernels.tree import tree_key_mask

try:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # pragma: no cover
    flex_attention = None

# (B, Hq, Hkv, T, D, S), S = prefix + T. First the goal shapes of issue 21 (a 31-node tree = budget
# 30, D 128): B=1 GQA 32/8 at prefix 16384, B=8 GQA and MHA at prefix 4096; then the Llama-2-7B
# and -13B verification forwards (MHA, prefix 4096), GQA / long ones.
GPU_SHAPES = [(1, 32, 8, 31, 128, 16415), (8, 32, 8, 31, 128, 4127), (8, 32, 32, 31, 128, 4127),
              (1, 32, 32, 31, 128, 4127), (1, 40, 40, 31, 128, 4127), (1, 32, 8, 64, 128, 4160),
              (1, 32, 8, 16, 128, 32784)]
CPU_SHAPES = [(1, 8, 2, 16, 64, 512), (2, 4, 4, 7, 128, 256)]
SHAPES = GPU_SHAPES if ON_GPU else CPU_SHAPES
EXTRA = [("sdpa", None), ("flex", None if (ON_GPU and flex_attention is not None) else "FlexAttention needs a GPU")]


def _inputs(B, Hq, Hkv, T, D, S, dtype=torch.bfloat16):
    gen = torch.Generator().manual_seed(0)
    parents = torch.full((B, T), -1, dtype=torch.int32)
    for i in range(1, T):
        parents[:, i] = torch.randint(max(0, i - 4), i, (B,), generator=gen).to(torch.int32)
    tree = DraftTree(torch.zeros(B, T, dtype=torch.int64, device=DEVICE), parents.to(DEVICE))
    dt = dtype if ON_GPU else torch.float32
    q = torch.randn(B, Hq, T, D, device=DEVICE, dtype=dt)
    k = torch.randn(B, Hkv, S, D, device=DEVICE, dtype=dt)
    v = torch.randn(B, Hkv, S, D, device=DEVICE, dtype=dt)
    prefix = torch.full((B,), S - T, dtype=torch.int64, device=DEVICE)
    return q, k, v, tree, prefix


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}_Hq{}_Hkv{}_T{}_D{}_S{}".format(*s))
@pytest.mark.parametrize("backend", backend_params("tree_attention", EXTRA))
def test_tree_attention(benchmark, backend, shape):
    B, Hq, Hkv, T, D, S = shape
    q, k, v, tree, prefix = _inputs(*shape)
    nbytes = (2 * B * Hkv * S + 2 * B * Hq * T) * D * q.element_size()
    scale = 1 / math.sqrt(D)
    if backend == "sdpa":
        allowed = tree_key_mask(tree.dense_mask, prefix, S)[:, None]  # [B, 1, T, S] bool
        g = Hq // Hkv
        kk, vv = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)  # counted: SDPA has no GQA here
        sdpa = torch.nn.functional.scaled_dot_product_attention
        fn = lambda: sdpa(q, kk, vv, attn_mask=allowed, scale=scale)  # noqa: E731
    elif backend == "flex":
        allowed = tree_key_mask(tree.dense_mask, prefix, S)

        def mask_mod(b, h, q_idx, kv_idx):
            return allowed[b, q_idx, kv_idx]

        block_mask = create_block_mask(mask_mod, B, None, T, S, device=DEVICE)
        flex = torch.compile(flex_attention)
        fn = lambda: flex(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=True)  # noqa: E731
    else:
        fn = lambda: tree_attention(q, k, v, tree, prefix, scale=scale, backend=backend)  # noqa: E731
    run(benchmark, fn, nbytes, rows=B, op="tree_attention", backend=backend, shape=str(shape), prefix=S)
