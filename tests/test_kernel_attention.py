"""Kernel backends of ``tree_attention`` against the PyTorch reference.

Fresh random q/k/v and random trees: T = 1 and odd T, ragged prefix lengths (including 0),
GQA ratios 1, 2, 3 and 8, head dims 64 and 128, fp16/bf16/fp32, one split and the split-KV
path (with empty splits for short rows), checked within dtype tolerances. Plus the defining
property: a node's output equals ordinary causal attention along its root-to-node path.
"""
import math

import pytest
import torch

from conftest import kernel_backend_params
from rsd_kernels import DraftTree, tree_attention

BACKENDS = kernel_backend_params("tree_attention")
TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def random_tree(B, T, gen):
    parents = torch.full((B, T), -1, dtype=torch.int32)
    for i in range(1, T):
        parents[:, i] = torch.randint(max(0, i - 3), i, (B,), generator=gen).to(torch.int32)
    return DraftTree(torch.zeros(B, T, dtype=torch.int64), parents)


def random_inputs(B, Hq, Hkv, T, D, S, dtype, gen, device):
    q = torch.randn(B, Hq, T, D, generator=gen).to(dtype).to(device)
    k = torch.randn(B, Hkv, S, D, generator=gen).to(dtype).to(device)
    v = torch.randn(B, Hkv, S, D, generator=gen).to(dtype).to(device)
    prefix = torch.randint(0, S - T + 1, (B,), generator=gen)
    prefix[0] = S - T  # one row uses the whole cache
    if B > 2:
        prefix[1] = 0  # and one has no prefix at all
    tree = random_tree(B, T, gen)
    tree = DraftTree(tree.tokens.to(device), tree.parents.to(device))
    return q, k, v, tree, prefix.to(device)


# (B, Hq, Hkv, T, D, S)
SHAPES = [(1, 1, 1, 1, 64, 1), (2, 4, 4, 5, 64, 40), (3, 6, 2, 7, 128, 90), (2, 3, 1, 1, 64, 130),
          (2, 8, 1, 13, 64, 77), (1, 9, 3, 33, 128, 100)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_matches_reference(backend, shape, dtype, device):
    B, Hq, Hkv, T, D, S = shape
    gen = torch.Generator().manual_seed(sum(shape) * 7 + int(dtype.itemsize))
    q, k, v, tree, prefix = random_inputs(B, Hq, Hkv, T, D, S, dtype, gen, device)
    want = tree_attention(q, k, v, tree, prefix, backend="torch")
    got = tree_attention(q, k, v, tree, prefix, backend=backend)
    assert got.dtype == dtype and got.shape == q.shape
    torch.testing.assert_close(got.float(), want.float(), atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_splits", [2, 3, 7])
def test_split_kv_matches_reference(backend, num_splits, device):
    """The flash-decoding path: partial (out, lse) per split and the combine step; with
    ragged prefixes some splits of some rows are empty."""
    if backend != "triton":
        pytest.skip("num_splits is a knob of the Triton launcher")
    from rsd_kernels.attention import triton_kernel

    gen = torch.Generator().manual_seed(num_splits)
    for (B, Hq, Hkv, T, D, S), dtype in [((3, 6, 2, 5, 64, 300), torch.float16),
                                         ((2, 3, 3, 1, 128, 200), torch.float32),
                                         ((2, 4, 1, 9, 64, 150), torch.bfloat16)]:
        q, k, v, tree, prefix = random_inputs(B, Hq, Hkv, T, D, S, dtype, gen, device)
        prefix[-1] = 3  # shorter than one split: the row's later splits are empty
        want = tree_attention(q, k, v, tree, prefix, backend="torch")
        got = triton_kernel.tree_attention_splits(q, k, v, tree.ancestor_bitmask, prefix.long(), 1 / math.sqrt(D),
                                                  num_splits=num_splits, block_n=32)
        torch.testing.assert_close(got.float(), want.float(), atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_equals_causal_attention_along_each_path(backend, device):
    """Node i's output is causal attention over prefix + its root-to-node path (SPEC 7)."""
    gen = torch.Generator().manual_seed(11)
    B, Hq, Hkv, T, D, S = 2, 4, 2, 9, 64, 40
    q, k, v, tree, prefix = random_inputs(B, Hq, Hkv, T, D, S, torch.float32, gen, device)
    got = tree_attention(q, k, v, tree, prefix, backend=backend).cpu()
    q, k, v = q.cpu(), k.cpu(), v.cpu()
    for b in range(B):
        L = int(prefix[b])
        for i in range(T):
            keys = list(range(L)) + [L + j for j in tree.path_to(b, i)]
            for h in range(Hq):
                kk, vv = k[b, h // (Hq // Hkv), keys], v[b, h // (Hq // Hkv), keys]
                w = torch.softmax(q[b, h, i] @ kk.T / math.sqrt(D), -1)
                torch.testing.assert_close(got[b, h, i], w @ vv, atol=2e-5, rtol=2e-5)


def test_unsupported_inputs_are_clear_errors():
    from rsd_kernels.attention import triton_kernel

    q = torch.zeros(1, 1, 1, 48)
    bits = torch.ones(1, 1, 1, dtype=torch.int32)
    with pytest.raises(ValueError, match="head dims"):
        triton_kernel.tree_attention(q, q, q, bits, torch.zeros(1, dtype=torch.int64), 1.0)
    q = torch.zeros(1, 1, 1, 64, dtype=torch.float64)
    with pytest.raises(TypeError, match="float16, bfloat16 and float32"):
        triton_kernel.tree_attention(q, q, q, bits, torch.zeros(1, dtype=torch.int64), 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    """Views such as [B, T, H, D] transposed to [B, H, T, D] give the same result as copies."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(7)
    tree = DraftTree.from_lists([[0] * 6], [[-1, 0, 0, 1, 2, 2]], device=dev)
    q = torch.randn(1, 6, 4, 64, generator=g).to(dev).transpose(1, 2)
    k = torch.randn(1, 20, 2, 64, generator=g).to(dev).transpose(1, 2)
    v = torch.randn(1, 20, 2, 64, generator=g).to(dev).transpose(1, 2)
    assert not q.is_contiguous()
    got = tree_attention(q, k, v, tree, 9, backend=backend)
    want = tree_attention(q.contiguous(), k.contiguous(), v.contiguous(), tree, 9, backend="torch")
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
