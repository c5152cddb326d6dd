"""The CUDA kernels, executed on the CPU, against the PyTorch reference.

The very sources in csrc/ (verify.cu, sampling.cu, tree_attention.cu) are compiled as C++ with
tests/emulation/host_shim.h: each CUDA thread is a std::thread, barriers and warp shuffles are
emulated, blocks run one after another (tests/emulation/build.sh). This checks the kernels'
logic -- the walk, the residual updates, the rho* bisection, block reductions across warps,
the register top-k and its merge, the Philox streams, the attention's tiling, masking, online
softmax, split-KV combine, and the WMMA call pattern (nvcuda::wmma is emulated per warp) --
where no GPU is at hand. It does not check what is specific to the hardware (timing, the real
tensor-core fragment layouts, shuffle unit, memory model); that is tests/test_cuda_backend.py
on a GPU.
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from rsd_kernels import DraftTree, noise
from rsd_kernels.attention import reference as aref
from rsd_kernels.sampling import reference as sref
from rsd_kernels.verify import reference as vref

ROOT = Path(__file__).resolve().parents[1]
EMU = ROOT / "tests" / "emulation"
CUDA_INCLUDE = Path("/usr/local/cuda/include")
DTYPE_CODE = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2, torch.float64: 3}
MODE_CODE = {"rrs": 0, "kseq": 1, "greedy": 2, "traversal": 3}

pytestmark = pytest.mark.skipif(shutil.which("g++") is None or not (CUDA_INCLUDE / "cuda_fp16.h").exists(),
                                reason="needs g++ and the CUDA headers (cuda_fp16.h) to build the CPU emulation")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    csrc = ROOT / "csrc"
    srcs = sorted(csrc.glob("*.cu")) + sorted(csrc.glob("*.cuh")) + [csrc / "rsd_kernels.h"]
    srcs += [EMU / n for n in ("host_shim.h", "harness.cc", "build.sh")]
    key = hashlib.sha256(b"".join(p.read_bytes() for p in srcs)).hexdigest()[:16]
    so = Path(tempfile.gettempdir()) / "rsd-kernels-emu" / f"libemu-{key}.so"  # cached by source hash
    if not so.exists():
        out = tmp_path_factory.mktemp("emu")
        proc = subprocess.run([str(EMU / "build.sh"), str(out)], capture_output=True, text=True, timeout=600,
                              env={"PATH": "/usr/bin:/bin:/usr/local/bin", "CUDA_INCLUDE": str(CUDA_INCLUDE)})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        so.parent.mkdir(parents=True, exist_ok=True)
        tmp = so.with_suffix(f".{os.getpid()}.tmp")
        shutil.copy(out / "libemu.so", tmp)
        os.replace(tmp, so)  # atomic: concurrent sessions never load a half-written file
    return ctypes.CDLL(str(so))


def _p(t):
    return ctypes.c_void_p(t.data_ptr()) if t is not None else ctypes.c_void_p(0)


def emu_verify(lib, tl, dl, tokens, parents, num_nodes, mode, temperature, max_depth, uniform=None, gumbel=None,
               seed=None, offset=0, threads=64, blocks=0):
    """blocks: blocks per row splitting the vocabulary (0: the launcher's plan for a 2-SM device);
    more than one runs the row's blocks concurrently, as the cooperative launch does."""
    B, T, V = tl.shape
    path = torch.empty(B, max_depth + 1, dtype=torch.int64)
    nacc, nxt = torch.empty(B, dtype=torch.int64), torch.empty(B, dtype=torch.int64)
    lib.emu_set_block_threads(ctypes.c_uint(threads))
    rc = lib.emu_verify_tree(_p(tl), _p(dl if mode != "greedy" else None), _p(tokens), _p(parents), _p(num_nodes),
                             _p(uniform), _p(gumbel), ctypes.c_uint64(seed or 0), ctypes.c_uint32(offset), B, T, V,
                             max_depth, MODE_CODE[mode], ctypes.c_double(temperature), _p(path), _p(nacc), _p(nxt),
                             DTYPE_CODE[tl.dtype], blocks)
    assert rc == 0
    return path, nacc, nxt


def emu_sample(lib, logits, k, kmax, temperature, gumbel=None, seed=None, offset=0, threads=64, block_tokens=0):
    """block_tokens: tokens per vocabulary block (0: the launcher's plan for a 4-SM device)."""
    R, V = logits.shape
    cdt = torch.float64 if logits.dtype == torch.float64 else torch.float32
    tokens = torch.empty(R, kmax, dtype=torch.int64)
    lp, nz, num = torch.empty(R, kmax, dtype=cdt), torch.empty(R, kmax), torch.empty(R, dtype=torch.int32)
    lib.emu_set_block_threads(ctypes.c_uint(threads))
    rc = lib.emu_sample_topk(_p(logits), _p(k), _p(gumbel), ctypes.c_uint64(seed or 0), ctypes.c_uint32(offset), R, V,
                             kmax, ctypes.c_double(temperature), _p(tokens), _p(lp), _p(nz), _p(num),
                             DTYPE_CODE[logits.dtype], block_tokens)
    assert rc == 0
    return tokens, lp, nz, num


def _tree(B, T, V, gen, width, pool):
    parents = torch.full((B, T), -1, dtype=torch.int32)
    for i in range(1, T):
        parents[:, i] = torch.randint(max(0, i - width), i, (B,), generator=gen).to(torch.int32)
    tokens = torch.randint(0, pool or V, (B, T), generator=gen)
    num_nodes = torch.randint(1, T + 1, (B,), generator=gen).to(torch.int32)
    num_nodes[0] = T
    depth = torch.zeros(B, T, dtype=torch.long)
    for i in range(1, T):
        depth[:, i] = depth.gather(1, parents[:, i:i + 1].long())[:, 0] + 1
    valid = torch.arange(T)[None] < num_nodes[:, None]
    return tokens, parents, num_nodes, int((depth * valid).max())


VERIFY_CASES = [  # B, T, V, threads per block, blocks per row (the vocabulary split; > 1: blocks run concurrently)
    (1, 1, 37, 32, 1), (3, 7, 61, 64, 3), (2, 33, 129, 96, 2),
    pytest.param((4, 16, 300, 64, 4), marks=pytest.mark.slow), pytest.param((2, 12, 1000, 128, 3), marks=pytest.mark.slow)]


@pytest.mark.parametrize("mode", ["rrs", "kseq", "greedy"])
@pytest.mark.parametrize("case", VERIFY_CASES, ids=lambda c: "x".join(map(str, c)) if isinstance(c, tuple) else None)
def test_verify_kernel_matches_reference(lib, mode, case):
    B, T, V, threads, blocks = case
    gen = torch.Generator().manual_seed(T * 7919 + V + MODE_CODE[mode])
    for trial, dtype in enumerate((torch.float32, torch.float16, torch.bfloat16, torch.float64)):
        tokens, parents, nn, max_depth = _tree(B, T, V, gen, 2 + trial % 3, 3 if mode == "kseq" else None)
        tl = torch.randn(B, T, V, generator=gen, dtype=torch.float64) * 1.5
        dl = tl + [0.3, 1.0, 0.1, 0.5][trial] * torch.randn(B, T, V, generator=gen, dtype=torch.float64)
        tl, dl = tl.to(dtype), dl.to(dtype)
        temp = [1.0, 0.7, 1.3, 0.9][trial]
        u, g = noise.verify_noise(100 + trial, trial, B, T, V)
        want = vref.verify(tl, dl, tokens, parents, nn, mode, temp, max_depth, uniform=u, gumbel=g)
        got = emu_verify(lib, tl, dl, tokens, parents, nn, mode, temp, max_depth, uniform=u, gumbel=g, threads=threads,
                         blocks=blocks)
        for a, b, name in zip(got, want, ("path", "num_accepted", "next_token")):
            assert torch.equal(a, b), f"{dtype} explicit noise: {name}\n{a}\n{b}"
        # in-kernel Philox streams against the reference's seed path
        want = vref.verify(tl, dl, tokens, parents, nn, mode, temp, max_depth, seed=7 + trial, offset=3)
        got = emu_verify(lib, tl, dl, tokens, parents, nn, mode, temp, max_depth, seed=7 + trial, offset=3,
                         threads=threads, blocks=blocks)
        for a, b, name in zip(got, want, ("path", "num_accepted", "next_token")):
            assert torch.equal(a, b), f"{dtype} seed: {name}\n{a}\n{b}"


def test_verify_kernel_negative_control(lib, monkeypatch):
    """Dropping the residual from the reference must make the comparison fail (the test can fail)."""
    B, T, V = 8, 9, 20
    gen = torch.Generator().manual_seed(0)
    parents = torch.zeros(B, T, dtype=torch.int32)  # eight siblings under the root
    parents[:, 0] = -1
    tokens, nn, max_depth = torch.randint(0, V, (B, T), generator=gen), torch.full((B,), T, dtype=torch.int32), 1
    tl = torch.randn(B, T, V, generator=gen)
    dl = 2 * torch.randn(B, T, V, generator=gen)
    tokens[:, 1:] = dl[:, 0].argmax(-1, keepdim=True)  # the draft's favourite: mostly rejected, then the residual
    monkeypatch.setattr(vref, "_residual", lambda p, q: p)
    differs = 0
    for s in range(4):
        want = vref.verify(tl, dl, tokens, parents, nn, "rrs", 1.0, max_depth, seed=s)
        got = emu_verify(lib, tl, dl, tokens, parents, nn, "rrs", 1.0, max_depth, seed=s, threads=32)
        differs += not all(torch.equal(a, b) for a, b in zip(got, want))
    assert differs > 0


@pytest.mark.parametrize("threads", [32, 96])
def test_verify_greedy_longest_matching_path(lib, threads):
    """Greedy: a later sibling holding the same token with the deeper match wins; equally long
    paths go to the first in sampling order; random trees with many matches (issue 13)."""
    from test_greedy_longest import later_sibling_case, one_hot_logits, random_matching_tree

    tl, tokens, parents = later_sibling_case()
    nn = torch.tensor([tokens.shape[1]], dtype=torch.int32)
    path, nacc, nxt = emu_verify(lib, tl, None, tokens, parents, nn, "greedy", 1.0, 3, threads=threads)
    assert path[0].tolist() == [0, 2, 3, 4] and nacc.tolist() == [3] and nxt.tolist() == [11]
    tokens = torch.tensor([[0, 5, 5, 6, 6, 8]])
    parents = torch.tensor([[-1, 0, 0, 2, 1, 2]], dtype=torch.int32)
    path, nacc, nxt = emu_verify(lib, one_hot_logits([5, 6, 6, 1, 2, 0], 10), None, tokens, parents,
                                 torch.tensor([6], dtype=torch.int32), "greedy", 1.0, 2, threads=threads)
    assert path[0].tolist() == [0, 1, 4] and nxt.tolist() == [2]
    gen = torch.Generator().manual_seed(threads)
    for B, T, V in [(4, 9, 40), (3, 23, 300)]:
        tl, tokens, parents, nn = random_matching_tree(B, T, V, gen)
        for dtype in (torch.float32, torch.bfloat16, torch.float64):
            x = tl.to(dtype)
            md = int(DraftTree(tokens, parents, nn).max_depth)
            want = vref.verify(x, None, tokens, parents, nn, "greedy", 1.0, md)
            got = emu_verify(lib, x, None, tokens, parents, nn, "greedy", 1.0, md, threads=threads)
            for a, b, name in zip(got, want, ("path", "num_accepted", "next_token")):
                assert torch.equal(a, b), f"{dtype}: {name}\n{a}\n{b}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("V,kmax,threads,block_tokens", [(64, 1, 32, 0), (1000, 8, 64, 128), (1003, 30, 96, 500),
                                                        pytest.param(2048, 64, 64, 0, marks=pytest.mark.slow)])
def test_sampling_kernel_matches_reference(lib, dtype, V, kmax, threads, block_tokens):
    """Tokens and counts exactly, log-probabilities to rounding, and the noise of every chosen
    token bit for bit (the contract's log32), over vocabulary blocks of 128 / 500 tokens (a
    merge across blocks, a last block cut short, an odd V) and the launcher's own plan."""
    R = 5
    gen = torch.Generator().manual_seed(V * 64 + kmax)
    logits = (torch.randn(R, V, generator=gen, dtype=torch.float64) * 3).to(dtype)
    logits[1, 5:] = float("-inf")  # support 5
    logits[2, ::3] = float("-inf")  # a quad with some tokens out of the support
    k = torch.randint(1, kmax + 1, (R,), generator=gen).to(torch.int32)
    k[0] = kmax
    for temp in (1.0, 0.6):
        gum = noise.gumbel_noise(11, 2, R, V)
        for kw in ({"gumbel": gum}, {"seed": 11, "offset": 2}):
            wt, wl, wn = sref.sample_topk(logits, k, kmax, temp, **kw)
            gt, gl, gz, gn = emu_sample(lib, logits, k, kmax, temp, threads=threads, block_tokens=block_tokens, **kw)
            assert torch.equal(gn, wn) and torch.equal(gt, wt), f"{kw.keys()}\n{gt}\n{wt}"
            torch.testing.assert_close(gl.float(), wl, atol=2e-6, rtol=2e-6)
            ok = gt >= 0
            assert torch.equal(gz[ok], gum.gather(1, gt.clamp(min=0))[ok])  # the same noise bits
    if dtype in (torch.float32, torch.float64):  # temperature 0: the k largest logits (ties unlikely)
        wt, wl, wn = sref.sample_topk(logits, k, kmax, 0.0)
        gt, gl, _, gn = emu_sample(lib, logits, k, kmax, 0.0, threads=threads, block_tokens=block_tokens)
        assert torch.equal(gn, wn) and torch.equal(gt, wt)
        torch.testing.assert_close(gl.float(), wl, atol=2e-6, rtol=2e-6)


def test_sampling_noise_is_the_contract_bit_for_bit(lib):
    """The in-kernel GUMBEL stream equals noise.gumbel_noise bit for bit on every token: with
    k = V every token is chosen and its noise reported (all four Philox lanes, log32)."""
    R, V = 3, 61
    logits = torch.zeros(R, V)
    k = torch.full((R,), V, dtype=torch.int32)
    _, _, gz, _ = emu_sample(lib, logits, k, V, 1.0, seed=2**40 + 5, offset=9, threads=32, block_tokens=16)
    tok, _, _, _ = emu_sample(lib, logits, k, V, 1.0, seed=2**40 + 5, offset=9, threads=32, block_tokens=16)
    want = noise.gumbel_noise(2**40 + 5, 9, R, V)
    assert torch.equal(gz, want.gather(1, tok)), (gz - want.gather(1, tok)).abs().max()


def test_sample_plan_spreads_rows_over_the_device(lib):
    """sample_plan: about four 256-thread blocks per SM over all rows, whole 1024-token sweeps
    per block, blocks x block_tokens covering V."""
    for R, V, sms, want_blocks in [(64, 32000, 132, 8), (1, 32000, 132, 32), (64, 128256, 132, 9), (300, 50, 132, 1)]:
        blocks, per = ctypes.c_int(), ctypes.c_int()
        lib.emu_sample_plan(R, V, sms, ctypes.byref(blocks), ctypes.byref(per))
        assert blocks.value == want_blocks and per.value % 1024 == 0 and blocks.value * per.value >= V
        assert (blocks.value - 1) * per.value < V


def kv_align(*tensors):
    """What the bindings pass as ``kv_align``: the largest power of two <= 16 dividing every
    pointer and byte stride (batch, head, row) of the given tensors."""
    align = 16
    for t in tensors:
        for x in [t.data_ptr()] + [s * t.element_size() for s in t.stride()[:3]]:
            while x % align:
                align //= 2
    return align


def emu_attention(lib, q, k, v, mask_bits, prefix_lens, scale, splits, eager=False):
    """The CUDA launcher on q/k/v as they lie (any batch/head/row strides, last dim contiguous)."""
    B, Hq, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    assert q.stride(3) == k.stride(3) == v.stride(3) == 1
    out = torch.empty(B, Hq, T, D, dtype=q.dtype)
    po, pml = torch.full((splits, B, Hq, T, D), float("nan")), torch.full((splits, B, Hq, T, 2), float("nan"))
    strides = [torch.tensor(t.stride()[:3], dtype=torch.int64) for t in (q, k, v)]
    lib.emu_set_block_threads(ctypes.c_uint(0))
    lib.emu_set_async_copy_eager(int(eager))
    try:
        rc = lib.emu_tree_attention(_p(q), _p(k), _p(v), *map(_p, strides), _p(mask_bits), _p(prefix_lens), _p(out),
                                    _p(po), _p(pml), B, Hq, Hkv, T, S, D, splits, ctypes.c_double(scale),
                                    DTYPE_CODE[q.dtype], kv_align(q, k, v))
    finally:
        lib.emu_set_async_copy_eager(0)
    assert rc == 0
    return out


def kv_layout(x, layout, gen):
    """``x [B, H, S, D]`` as the same values in another memory layout: ``contiguous``; ``view``,
    the ``[:, :, :S]`` slice of a longer cache buffer (the KV cache's own views); ``tokens``,
    a token-major ``[B, S, H, D]`` buffer seen through ``transpose(1, 2)``."""
    B, H, S, D = x.shape
    if layout == "view":
        buf = torch.randn(B, H, S + 24, D, generator=gen).to(x.dtype)
        buf[:, :, :S] = x
        return buf[:, :, :S]
    if layout == "tokens":
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    return x


ATTN_CASES = [  # B, Hq, Hkv, T, prefix_lens, S, splits
    (2, 4, 2, 13, [5, 100], 120, 1),
    (1, 4, 1, 20, [150], 170, 3),  # GQA group 4 (M = 80 rows: two M tiles), three KV splits
    (2, 2, 2, 33, [0, 40], 80, 2),  # T > 32: two bitmask words; an empty prefix; a split with no keys
    (1, 2, 1, 9, [300], 320, 2),  # six 64-key tiles: the pipeline wraps around its stages
]


ATTN_PARAMS = [  # the tensor-core path on every case; the CUDA-core path (fp32, fp64, odd D) on small ones
    pytest.param(case, dtype, D, layout, id=f"{name}-{str(dtype)[6:]}-D{D}-{layout}",
                 marks=[pytest.mark.slow] if slow else [])
    for name, case, dtype, D, layout, slow in [
        ("ragged", ATTN_CASES[0], torch.float16, 64, "view", False),
        ("gqa-split", ATTN_CASES[1], torch.float16, 64, "tokens", False),
        ("two-words", ATTN_CASES[2], torch.bfloat16, 128, "contiguous", False),
        ("long", ATTN_CASES[3], torch.bfloat16, 64, "view", False),
        ("ragged", ATTN_CASES[0], torch.bfloat16, 128, "tokens", True),
        ("gqa-split", ATTN_CASES[1], torch.bfloat16, 128, "view", True),
        ("two-words", ATTN_CASES[2], torch.float16, 64, "contiguous", True),
        ("two-words", ATTN_CASES[2], torch.float32, 64, "view", False),
        ("long", ATTN_CASES[3], torch.float32, 32, "tokens", False),
        ("two-words", ATTN_CASES[2], torch.float16, 80, "tokens", True),
        ("ragged", ATTN_CASES[0], torch.float16, 36, "contiguous", True),  # 72-byte rows: 8-byte copies
        ("two-words", ATTN_CASES[2], torch.float64, 32, "view", True),
    ]
]


def _attention_inputs(case, dtype, D, layout):
    B, Hq, Hkv, T, prefix, S, splits = case
    gen = torch.Generator().manual_seed(T * 31 + D)
    parents = torch.full((B, T), -1, dtype=torch.int32)
    for i in range(1, T):
        parents[:, i] = torch.randint(max(0, i - 3), i, (B,), generator=gen).to(torch.int32)
    bits = DraftTree(torch.zeros(B, T, dtype=torch.int64), parents).ancestor_bitmask.contiguous()
    q = kv_layout(torch.randn(B, Hq, T, D, generator=gen).to(dtype), layout, gen)
    k = kv_layout(torch.randn(B, Hkv, S, D, generator=gen).to(dtype), layout, gen)
    v = kv_layout(torch.randn(B, Hkv, S, D, generator=gen).to(dtype), layout, gen)
    return q, k, v, bits, torch.tensor(prefix, dtype=torch.int64)


ATTN_TOL = {torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.mark.parametrize("case,dtype,D,layout", ATTN_PARAMS)
def test_attention_kernel_matches_reference(lib, case, dtype, D, layout):
    splits = case[-1]
    tensor_cores = bool(lib.emu_tree_attention_uses_tensor_cores(D, DTYPE_CODE[dtype]))
    if not tensor_cores:
        splits = 1  # the CUDA-core path does not split
    q, k, v, bits, pl = _attention_inputs(case, dtype, D, layout)
    scale = D ** -0.5
    want = aref.tree_attention(q.contiguous(), k.contiguous(), v.contiguous(), bits, pl, scale)
    tol = ATTN_TOL[dtype]
    # cp.async performed at wait, then at issue (host_shim.h); the CUDA-core path's second mode
    # only on its many-tile case (the emulation of its shuffles is slow)
    for eager in (False, True) if tensor_cores or case is ATTN_CASES[3] else (False,):
        got = emu_attention(lib, q, k, v, bits, pl, scale, splits, eager=eager)
        torch.testing.assert_close(got.double(), want.double(), atol=tol, rtol=tol)
    if D != 64 or dtype != torch.float16:
        return
    # and the masked keys matter: attending to everything gives something else
    no_mask = torch.full_like(bits, -1)
    assert not torch.allclose(emu_attention(lib, q, k, v, no_mask, pl, scale, splits).double(), want.double(),
                              atol=tol, rtol=tol)


def test_attention_prefix_out_of_range_reads_nothing_outside(lib):
    """prefix_lens beyond S - T (what validate=False lets through) must not read past the cache or
    the bitmask: the kernel clamps, the output stays finite, and (checked by the emulation's
    plain memory) nothing crashes."""
    q, k, v, bits, _ = _attention_inputs(ATTN_CASES[0], torch.float16, 64, "contiguous")
    for bad in ([-5, 1000], [120, 119]):
        out = emu_attention(lib, q, k, v, bits, torch.tensor(bad), 0.125, 2)
        assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("ctas,S,slots", [(16, 16384, 264), (16, 4096, 264), (64, 4096, 264), (2, 300, 264),
                                          (300, 8192, 264), (33, 100000, 264), (1, 10, 264)])
def test_attention_split_plan(lib, ctas, S, slots):
    """plan_kv_splits: as many splits as fill the resident CTA slots (never a partial second
    wave), at least 256 keys per split, 1 when one split already fills a wave."""
    splits = lib.emu_plan_kv_splits(ctypes.c_int64(ctas), ctypes.c_int64(S), ctypes.c_int64(slots))
    assert splits >= 1
    if ctas >= slots:
        assert splits == 1
    else:
        assert ctas * splits <= slots  # one wave
        assert splits == max(1, min(slots // ctas, -(-S // 256)))  # as many as fit, >= 256 keys each


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("N,W,V", [(1, 3, 200), (3, 5, 300), (2, 8, 6)])  # the last: width > V per beam
def test_beam_step_composition_matches_reference(lib, N, W, V, dtype):
    """What the CUDA backend's beam step runs: the sampling kernel per beam + merge_beam_candidates."""
    from rsd_kernels.sampling.beam_merge import merge_beam_candidates

    B = 3
    gen = torch.Generator().manual_seed(N * 1000 + W * 10 + V)
    logits = torch.randn(B, N, V, generator=gen, dtype=torch.float64).to(dtype)
    phi = -torch.rand(B, N, generator=gen, dtype=torch.float64).to(dtype) * 4
    G = torch.rand(B, N, generator=gen, dtype=torch.float64).to(dtype)
    if N > 1:
        phi[1, 0] = float("-inf")  # an inactive beam
    kk = min(W, V)
    gum = noise.gumbel_noise(5, 1, B * N, V)
    for kw in ({"gumbel": gum}, {"seed": 5, "offset": 1}):
        tok, lq, gz, _ = emu_sample(lib, logits.reshape(B * N, V), torch.full((B * N,), kk, dtype=torch.int32), kk,
                                    0.8, threads=32, block_tokens=64, **kw)
        got = merge_beam_candidates(tok.view(B, N, kk), lq.view(B, N, kk), gz.view(B, N, kk), phi, G, W)
        ref_kw = {"gumbel": gum.view(B, N, V)} if "gumbel" in kw else kw
        want = sref.beam_step(logits, phi, G, W, 0.8, **ref_kw)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (got, want)
        torch.testing.assert_close(got[2], want[2], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(got[3], want[3], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("B,V", [(1, 32000), (64, 128256), (3, 500), (300, 32000), (8, 128256)])
def test_verify_plan_keeps_a_rows_blocks_resident(lib, B, V):
    """verify_plan: blocks per row x rows <= resident blocks (the emulation reports 2 per SM), at
    least 1024 tokens per block, slices of whole quads covering V exactly once."""
    sms = 132
    blocks, sl = ctypes.c_int(), ctypes.c_int()
    lib.emu_verify_plan(B, V, 31, MODE_CODE["rrs"], DTYPE_CODE[torch.bfloat16], sms, ctypes.byref(blocks),
                        ctypes.byref(sl))
    blocks, sl = blocks.value, sl.value
    assert blocks >= 1 and sl % 4 == 0 and (blocks - 1) * sl < V <= blocks * sl
    assert blocks == 1 or (B * blocks <= 2 * sms and sl >= 1024)
    if B * 2 <= 2 * sms and V >= 2 * 1024:
        assert blocks > 1  # the vocabulary is split whenever there is room
