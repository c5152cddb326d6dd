"""CUDA-backend specifics against the PyTorch reference (the shared backend-parametrised tests
in tests/test_kernel_*.py cover the common contract): the tensor-core attention paths
(fp16/bf16, D 64/128, GQA, split-KV over long ragged prefixes), the CUDA-core attention path,
register top-k up to k = 64 with 16-byte and scalar loads, the beam step's per-beam merge, and
float64 verification. Skipped, with the reason, where the CUDA backend cannot run."""
import pytest
import torch

from conftest import DEVICE, _skip_reason
from rsd_kernels import DraftTree, sample_without_replacement, stochastic_beam_step, tree_attention, verify_tree

why = _skip_reason("cuda", "tree_attention")
pytestmark = pytest.mark.skipif(why is not None, reason=str(why))


def _random_tree(B, T, gen):
    parents = torch.full((B, T), -1, dtype=torch.int32)
    for i in range(1, T):
        parents[:, i] = torch.randint(max(0, i - 3), i, (B,), generator=gen).to(torch.int32)
    return parents


ATTN_CASES = [  # B, Hq, Hkv, T, prefix_lens, S
    (2, 8, 2, 13, [5, 300], 320),
    (1, 32, 8, 30, [4000], 4096),  # long prefix, few CTAs: split-KV
    (3, 4, 4, 64, [0, 77, 1000], 1100),
]


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 5e-3), (torch.bfloat16, 3e-2), (torch.float32, 1e-4)],
                         ids=["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("D", [64, 128, 80])
@pytest.mark.parametrize("case", ATTN_CASES, ids=["ragged", "long", "mha"])
def test_tree_attention_matches_reference(case, D, dtype, tol):
    B, Hq, Hkv, T, prefix, S = case
    gen = torch.Generator().manual_seed(B * 1000 + T + D)
    tree = DraftTree(torch.zeros(B, T, dtype=torch.int64, device=DEVICE), _random_tree(B, T, gen).to(DEVICE))
    q = torch.randn(B, Hq, T, D, generator=gen).to(DEVICE, dtype)
    k = torch.randn(B, Hkv, S, D, generator=gen).to(DEVICE, dtype)
    v = torch.randn(B, Hkv, S, D, generator=gen).to(DEVICE, dtype)
    pl = torch.tensor(prefix, dtype=torch.int64, device=DEVICE)
    got = tree_attention(q, k, v, tree, pl, backend="cuda")
    want = tree_attention(q, k, v, tree, pl, backend="torch")
    assert got.dtype == dtype and got.shape == q.shape
    torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)
    if case[1] == 32 and D in (64, 128) and dtype != torch.float32:
        from rsd_kernels import cuda_backend

        assert cuda_backend.extension().attention_splits(B, Hq, Hkv, T, S, D, q) > 1


@pytest.mark.parametrize("dtype,D", [(torch.bfloat16, 128), (torch.float16, 64), (torch.float32, 64)])
def test_tree_attention_reads_cache_views_in_place(dtype, D):
    """K/V as the KV cache hands them over (the [:, :, :S] view of a longer buffer, and a
    token-major buffer seen through transpose): the result equals the contiguous one, and the
    call allocates nothing of K/V's size (no copy)."""
    from rsd_kernels import cuda_backend

    B, Hq, Hkv, T, S = 2, 8, 2, 16, 1500
    gen = torch.Generator().manual_seed(D)
    bits = DraftTree(torch.zeros(B, T, dtype=torch.int64), _random_tree(B, T, gen)).ancestor_bitmask.to(DEVICE)
    pl = torch.tensor([S - T, 700], dtype=torch.int64, device=DEVICE)
    q = torch.randn(B, Hq, T, D, generator=gen).to(DEVICE, dtype)
    buf_k = torch.randn(B, Hkv, S + 512, D, generator=gen).to(DEVICE, dtype)
    buf_v = torch.randn(B, S + 512, Hkv, D, generator=gen).to(DEVICE, dtype)
    k, v = buf_k[:, :, :S], buf_v[:, :S].transpose(1, 2)
    want = cuda_backend.tree_attention(q, k.contiguous(), v.contiguous(), bits, pl, D ** -0.5)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    got = cuda_backend.tree_attention(q, k, v, bits, pl, D ** -0.5)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - base < k.numel() * k.element_size()
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("V", [32000, 50257])  # 16-byte loads; scalar loads (odd V)
@pytest.mark.parametrize("k", [1, 5, 33, 64])
def test_sampling_matches_reference(k, V, dtype):
    R = 6
    gen = torch.Generator().manual_seed(k * V)
    logits = (torch.randn(R, V, generator=gen) * 3).to(dtype)
    logits[0, 10:] = float("-inf")  # support 10 < k for the larger k
    logits = logits.to(DEVICE)
    # temperature 0 only where ties among the k largest logits are unlikely (torch.topk's tie
    # order is unspecified; the kernel takes the lower index)
    greedy = [{"temperature": 0.0}] if dtype in (torch.float32, torch.float64) else []
    for kw in [{"seed": 1234 + k, "offset": 7}] + greedy:
        got = sample_without_replacement(logits, k, backend="cuda", **kw)
        want = sample_without_replacement(logits, k, backend="torch", **kw)
        assert torch.equal(got.num_sampled, want.num_sampled)
        assert torch.equal(got.tokens, want.tokens), (got.tokens, want.tokens)
        torch.testing.assert_close(got.logprobs, want.logprobs, atol=1e-5, rtol=1e-5)


def test_sampling_k_above_register_limit_is_a_clear_error():
    logits = torch.randn(2, 1000, device=DEVICE)
    with pytest.raises(ValueError, match="at most 64"):
        sample_without_replacement(logits, 65, seed=0, backend="cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("N,W", [(1, 4), (4, 4), (3, 10)])
def test_beam_step_matches_reference(N, W, dtype):
    B, V = 3, 5000
    gen = torch.Generator().manual_seed(N * 100 + W)
    logits = torch.randn(B, N, V, generator=gen, dtype=dtype).to(DEVICE)
    phi = (-torch.rand(B, N, generator=gen, dtype=dtype) * 5).to(DEVICE)
    G = (torch.rand(B, N, generator=gen, dtype=dtype) * 2).to(DEVICE)
    if N > 1:
        phi[0, -1] = float("-inf")  # an inactive beam
    got = stochastic_beam_step(logits, phi, G, W, temperature=0.8, seed=99, offset=3, backend="cuda")
    want = stochastic_beam_step(logits, phi, G, W, temperature=0.8, seed=99, offset=3, backend="torch")
    assert torch.equal(got.parent, want.parent) and torch.equal(got.tokens, want.tokens)
    torch.testing.assert_close(got.phi, want.phi, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.G, want.G, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["rrs", "kseq", "greedy"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_verify_large_vocab_seeded(mode, dtype):
    B, T, V = 6, 24, 32000
    gen = torch.Generator().manual_seed(T + V)
    parents = _random_tree(B, T, gen)
    tokens = torch.randint(0, 4 if mode == "kseq" else V, (B, T), generator=gen)
    tl = torch.randn(B, T, V, generator=gen, dtype=torch.float64) * 2
    dl = tl + 0.5 * torch.randn(B, T, V, generator=gen, dtype=torch.float64)
    args = [x.to(DEVICE) for x in (tl.to(dtype), dl.to(dtype), tokens, parents)]
    temp = 0.0 if mode == "greedy" else 0.9
    got = verify_tree(*args, mode=mode, temperature=temp, seed=5, offset=11, backend="cuda")
    want = verify_tree(*args, mode=mode, temperature=temp, seed=5, offset=11, backend="torch")
    for a, b in zip(got, want):
        assert torch.equal(a, b), (got, want)


@pytest.mark.parametrize("mode", ["rrs", "kseq", "greedy"])
@pytest.mark.parametrize("B", [1, 3])
def test_verify_vocabulary_split_over_blocks(mode, B):
    """Few rows, a large vocabulary: each row's vocabulary spreads over many cooperating blocks
    (the cooperative launch, the row barrier, the merged statistics) and still gives the
    reference's path and token."""
    from rsd_kernels import cuda_backend  # noqa: F401  (the backend must load)

    T, V = 15, 128256
    gen = torch.Generator().manual_seed(B * 10 + len(mode))
    parents = _random_tree(B, T, gen)
    tokens = torch.randint(0, 4 if mode == "kseq" else V, (B, T), generator=gen)
    tl = torch.randn(B, T, V, generator=gen) * 2
    dl = tl + 0.7 * torch.randn(B, T, V, generator=gen)
    tokens[:, 1:] = torch.where(torch.rand(B, T - 1, generator=gen) < 0.5, tl[:, 0].argmax(-1, keepdim=True),
                                tokens[:, 1:])  # some matches / acceptances
    args = [x.to(DEVICE) for x in (tl.to(torch.bfloat16), dl.to(torch.bfloat16), tokens, parents)]
    temp = 0.0 if mode == "greedy" else 1.0
    got = verify_tree(*args, mode=mode, temperature=temp, seed=3, offset=1, backend="cuda")
    want = verify_tree(*args, mode=mode, temperature=temp, seed=3, offset=1, backend="torch")
    for a, b in zip(got, want):
        assert torch.equal(a, b), (got, want)


def test_kernels_capture_in_a_cuda_graph():
    """No host synchronisation inside the CUDA ops: verify (a cooperative launch), sampling and
    tree attention (on cache views) record into a CUDA graph and replay to the eager results."""
    from rsd_kernels import cuda_backend

    gen = torch.Generator().manual_seed(0)
    B, T, V = 2, 7, 4096
    parents = _random_tree(B, T, gen).to(DEVICE)
    tokens = torch.randint(0, V, (B, T), generator=gen).to(DEVICE)
    nn = torch.full((B,), T, dtype=torch.int32, device=DEVICE)
    tl = torch.randn(B, T, V, generator=gen).to(DEVICE)
    dl = torch.randn(B, T, V, generator=gen).to(DEVICE)
    q = torch.randn(B, 8, T, 64, generator=gen).to(DEVICE, torch.float16)
    kv = torch.randn(B, 2, 900, 64, generator=gen).to(DEVICE, torch.float16)
    bits = DraftTree(tokens.cpu(), parents.cpu()).ancestor_bitmask.to(DEVICE)
    pl = torch.tensor([800, 500], device=DEVICE)

    def run():
        v = cuda_backend.verify(tl, dl, tokens, parents, nn, "rrs", 1.0, T - 1, seed=1, offset=2)
        s = cuda_backend.sample_topk(tl[:, 0], torch.full((B,), 4, dtype=torch.int32, device=DEVICE), 4, 1.0, seed=1)
        a = cuda_backend.tree_attention(q, kv[:, :, :850], kv[:, :, :850], bits, pl, 0.125)
        return v + s + (a,)

    eager = run()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = run()
    graph.replay()
    torch.cuda.synchronize()
    for x, y in zip(captured, eager):
        assert torch.equal(x, y)
