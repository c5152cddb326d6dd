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


def test_cache_views_go_in_without_copies(monkeypatch):
    """``tree_attention`` on the KV cache's ``[:, :, :S]`` views (rsd.engine.kvcache.KVBuffer), through the
    adapter's attention function as the decoding loop calls it: the Triton kernel receives the cache's own
    storage with the views' strides, no K/V-sized tensor is allocated on the way (torch profiler, CPU
    memory), and no value check runs (validate=False: no host sync)."""
    from rsd.engine.adapter import _rsd_tree_attention
    from rsd.engine.kvcache import KVBuffer
    from rsd_kernels.attention import triton_kernel

    Hq, Hkv, D, L, T = 8, 2, 64, 700, 5
    cache = KVBuffer(num_layers=2, capacity=2048)
    g = torch.Generator().manual_seed(0)
    cache.update(torch.randn(1, Hkv, L, D, generator=g), torch.randn(1, Hkv, L, D, generator=g), 0)
    cache.length = L
    k, v = cache.update(torch.randn(1, Hkv, T, D, generator=g), torch.randn(1, Hkv, T, D, generator=g), 0)
    assert not k.is_contiguous() and k.data_ptr() == cache.kv.data_ptr()
    q = torch.randn(1, T, Hq, D, generator=g).transpose(1, 2)  # transformers' transposed view
    tree = DraftTree.from_lists([[0] * T], [[-1, 0, 0, 1, 1]])
    seen = []
    monkeypatch.setattr(triton_kernel, "_tree_attention_kernel", _Recorder(seen))
    monkeypatch.setattr(triton_kernel, "_combine_kernel", _Recorder([]))
    plens = torch.tensor([L], dtype=torch.int64)
    kv_bytes = k.numel() * k.element_size()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _rsd_tree_attention(None, q, k, v, None, scaling=D**-0.5, rsd_tree_bits=tree.ancestor_bitmask,
                            rsd_prefix_lens=plens, rsd_backend="triton")
    kk, vv = seen[0][1], seen[0][2]
    assert kk.data_ptr() == k.data_ptr() and kk.stride() == k.stride() and kk.shape == k.shape
    assert vv.data_ptr() == v.data_ptr() and vv.stride() == v.stride()
    allocs = [e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0]
    assert allocs and max(allocs) < kv_bytes / 4, (max(allocs), kv_bytes)  # q, out, partials: far below K/V
    # and the results are right on those views (real kernel, the reference on copies)
    monkeypatch.undo()
    got = tree_attention(q, k, v, tree, plens, backend="triton", validate=False)
    want = tree_attention(q.contiguous(), k.contiguous(), v.contiguous(), tree, plens, backend="torch")
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)


class _Recorder:
    """Stands in for a Triton kernel: records what it is launched with."""

    def __init__(self, seen):
        self.seen = seen

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.seen.append(args)


def test_validate_checks_prefix_lengths_only_when_asked(monkeypatch):
    """validate=True (the default) rejects prefix lengths that overrun the cache; validate=False runs no
    data-dependent check: the op up to the kernel launch reads no tensor value on the host (no sync)."""
    from rsd_kernels.attention import triton_kernel

    q = torch.zeros(1, 2, 3, 64)
    k = torch.zeros(1, 2, 10, 64)
    tree = DraftTree.from_lists([[0, 0, 0]], [[-1, 0, 0]])
    bits = tree.ancestor_bitmask
    with pytest.raises(ValueError, match="prefix_lens \\+ T must be within"):
        tree_attention(q, k, k, bits, torch.tensor([8]), backend="torch")
    tree_attention(q, k, k, bits, torch.tensor([7]), backend="torch")  # 7 + 3 == 10: fits
    seen, reads = [], []
    monkeypatch.setattr(triton_kernel, "_tree_attention_kernel", _Recorder(seen))
    for name in ("__bool__", "item", "tolist", "any", "all"):
        orig = getattr(torch.Tensor, name)

        def spy(self, *a, _orig=orig, _name=name, **kw):
            reads.append(_name)
            return _orig(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, spy)
    tree_attention(q, k, k, bits, torch.tensor([7]), backend="triton", validate=False)
    assert seen and not reads, reads
    tree_attention(q, k, k, bits, torch.tensor([7]), backend="triton")
    assert reads
