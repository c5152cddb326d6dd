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
    srcs = sorted((ROOT / "csrc").glob("*.cu")) + [ROOT / "csrc" / n for n in ("common.cuh", "philox.cuh", "rsd_kernels.h")]
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
               seed=None, offset=0, threads=64):
    B, T, V = tl.shape
    cdt = torch.float64 if tl.dtype == torch.float64 else torch.float32
    depths = max_depth + 1 if mode == "traversal" else 1  # traversal: one law per depth of the path
    work_p, work_q = torch.empty(B, depths, V, dtype=cdt), torch.empty(B, depths, V, dtype=cdt)
    path = torch.empty(B, max_depth + 1, dtype=torch.int64)
    nacc, nxt = torch.empty(B, dtype=torch.int64), torch.empty(B, dtype=torch.int64)
    lib.emu_set_block_threads(ctypes.c_uint(threads))
    lib.emu_verify_tree(_p(tl), _p(dl if mode != "greedy" else None), _p(tokens), _p(parents), _p(num_nodes),
                        _p(uniform), _p(gumbel), ctypes.c_uint64(seed or 0), ctypes.c_uint32(offset), B, T, V, max_depth,
                        MODE_CODE[mode], ctypes.c_double(temperature), _p(work_p), _p(work_q), _p(path), _p(nacc),
                        _p(nxt), DTYPE_CODE[tl.dtype])
    return path, nacc, nxt


def emu_sample(lib, logits, k, kmax, temperature, gumbel=None, seed=None, offset=0, threads=64):
    R, V = logits.shape
    cdt = torch.float64 if logits.dtype == torch.float64 else torch.float32
    tokens = torch.empty(R, kmax, dtype=torch.int64)
    lp, nz, num = torch.empty(R, kmax, dtype=cdt), torch.empty(R, kmax), torch.empty(R, dtype=torch.int32)
    lib.emu_set_block_threads(ctypes.c_uint(threads))
    lib.emu_sample_topk(_p(logits), _p(k), _p(gumbel), ctypes.c_uint64(seed or 0), ctypes.c_uint32(offset), R, V, kmax,
                        ctypes.c_double(temperature), _p(tokens), _p(lp), _p(nz), _p(num), DTYPE_CODE[logits.dtype])
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


VERIFY_CASES = [(1, 1, 37, 32), (3, 7, 61, 64), (2, 33, 129, 96),
                pytest.param((4, 16, 300, 64), marks=pytest.mark.slow), pytest.param((2, 12, 1000, 128), marks=pytest.mark.slow)]


@pytest.mark.parametrize("mode", ["rrs", "kseq", "greedy"])
@pytest.mark.parametrize("case", VERIFY_CASES, ids=lambda c: "x".join(map(str, c)) if isinstance(c, tuple) else None)
def test_verify_kernel_matches_reference(lib, mode, case):
    B, T, V, threads = case
    gen = torch.Generator().manual_seed(T * 7919 + V + MODE_CODE[mode])
    for trial, dtype in enumerate((torch.float32, torch.float16, torch.bfloat16, torch.float64)):
        tokens, parents, nn, max_depth = _tree(B, T, V, gen, 2 + trial % 3, 3 if mode == "kseq" else None)
        tl = torch.randn(B, T, V, generator=gen, dtype=torch.float64) * 1.5
        dl = tl + [0.3, 1.0, 0.1, 0.5][trial] * torch.randn(B, T, V, generator=gen, dtype=torch.float64)
        tl, dl = tl.to(dtype), dl.to(dtype)
        temp = [1.0, 0.7, 1.3, 0.9][trial]
        u, g = noise.verify_noise(100 + trial, trial, B, T, V)
        want = vref.verify(tl, dl, tokens, parents, nn, mode, temp, max_depth, uniform=u, gumbel=g)
        got = emu_verify(lib, tl, dl, tokens, parents, nn, mode, temp, max_depth, uniform=u, gumbel=g, threads=threads)
        for a, b, name in zip(got, want, ("path", "num_accepted", "next_token")):
            assert torch.equal(a, b), f"{dtype} explicit noise: {name}\n{a}\n{b}"
        # in-kernel Philox streams against the reference's seed path
        want = vref.verify(tl, dl, tokens, parents, nn, mode, temp, max_depth, seed=7 + trial, offset=3)
        got = emu_verify(lib, tl, dl, tokens, parents, nn, mode, temp, max_depth, seed=7 + trial, offset=3,
                         threads=threads)
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
@pytest.mark.parametrize("V,kmax,threads", [(64, 1, 32), (1000, 8, 64), (1003, 30, 96),
                                           pytest.param(2048, 64, 64, marks=pytest.mark.slow)])
def test_sampling_kernel_matches_reference(lib, dtype, V, kmax, threads):
    R = 5
    gen = torch.Generator().manual_seed(V * 64 + kmax)
    logits = (torch.randn(R, V, generator=gen, dtype=torch.float64) * 3).to(dtype)
    logits[1, 5:] = float("-inf")  # support 5
    k = torch.randint(1, kmax + 1, (R,), generator=gen).to(torch.int32)
    k[0] = kmax
    for temp in (1.0, 0.6):
        gum = noise.gumbel_noise(11, 2, R, V)
        for kw in ({"gumbel": gum}, {"seed": 11, "offset": 2}):
            wt, wl, wn = sref.sample_topk(logits, k, kmax, temp, **kw)
            gt, gl, gz, gn = emu_sample(lib, logits, k, kmax, temp, threads=threads, **kw)
            assert torch.equal(gn, wn) and torch.equal(gt, wt), f"{kw.keys()}\n{gt}\n{wt}"
            torch.testing.assert_close(gl.float(), wl, atol=2e-6, rtol=2e-6)
            ok = gt >= 0
            # the noise of each chosen token: exact when explicit; in-kernel Philox Gumbel to rounding
            # (its logs are rounded from double, torch's float logs may differ in the last bit)
            tol = 0 if "gumbel" in kw else 1e-6
            torch.testing.assert_close(gz[ok], gum.gather(1, gt.clamp(min=0))[ok], atol=tol, rtol=tol)
    if dtype in (torch.float32, torch.float64):  # temperature 0: the k largest logits (ties unlikely)
        wt, wl, wn = sref.sample_topk(logits, k, kmax, 0.0)
        gt, gl, _, gn = emu_sample(lib, logits, k, kmax, 0.0, threads=threads)
        assert torch.equal(gn, wn) and torch.equal(gt, wt)
        torch.testing.assert_close(gl.float(), wl, atol=2e-6, rtol=2e-6)


def emu_attention(lib, q, k, v, mask_bits, prefix_lens, scale, splits):
    B, Hq, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    out = torch.empty_like(q)
    po, pml = torch.empty(splits, B, Hq, T, D), torch.empty(splits, B, Hq, T, 2)
    lib.emu_set_block_threads(ctypes.c_uint(0))
    lib.emu_tree_attention(_p(q), _p(k), _p(v), _p(mask_bits), _p(prefix_lens), _p(out), _p(po), _p(pml), B, Hq, Hkv,
                           T, S, D, splits, ctypes.c_double(scale), DTYPE_CODE[q.dtype])
    return out


ATTN_CASES = [  # B, Hq, Hkv, T, prefix_lens, S, splits
    (2, 4, 2, 13, [5, 100], 120, 1),
    (1, 4, 1, 20, [150], 170, 3),  # GQA group 4 (M = 80 rows: two M tiles), three KV splits
    (2, 2, 2, 33, [0, 40], 80, 2),  # T > 32: two bitmask words; an empty prefix; a split with no keys
]


ATTN_PARAMS = [  # the tensor-core path on every case; the CUDA-core path (fp32, fp64, odd D) on small ones
    pytest.param(case, dtype, D, id=f"{name}-{str(dtype)[6:]}-D{D}",
                 marks=[pytest.mark.slow] if slow else [])
    for name, case, dtype, D, slow in [
        ("ragged", ATTN_CASES[0], torch.float16, 64, False),
        ("gqa-split", ATTN_CASES[1], torch.float16, 64, False),
        ("two-words", ATTN_CASES[2], torch.bfloat16, 128, False),
        ("ragged", ATTN_CASES[0], torch.bfloat16, 128, True),
        ("gqa-split", ATTN_CASES[1], torch.bfloat16, 128, True),
        ("two-words", ATTN_CASES[2], torch.float16, 64, True),
        ("two-words", ATTN_CASES[2], torch.float32, 64, False),
        ("two-words", ATTN_CASES[2], torch.float16, 80, True),
        ("two-words", ATTN_CASES[2], torch.float64, 32, True),
    ]
]


@pytest.mark.parametrize("case,dtype,D", ATTN_PARAMS)
def test_attention_kernel_matches_reference(lib, case, dtype, D):
    B, Hq, Hkv, T, prefix, S, splits = case
    tensor_cores = bool(lib.emu_tree_attention_uses_tensor_cores(D, DTYPE_CODE[dtype]))
    if not tensor_cores:
        splits = 1  # the CUDA-core path does not split
    gen = torch.Generator().manual_seed(T * 31 + D)
    parents = torch.full((B, T), -1, dtype=torch.int32)
    for i in range(1, T):
        parents[:, i] = torch.randint(max(0, i - 3), i, (B,), generator=gen).to(torch.int32)
    bits = DraftTree(torch.zeros(B, T, dtype=torch.int64), parents).ancestor_bitmask.contiguous()
    q = torch.randn(B, Hq, T, D, generator=gen).to(dtype)
    k = torch.randn(B, Hkv, S, D, generator=gen).to(dtype)
    v = torch.randn(B, Hkv, S, D, generator=gen).to(dtype)
    pl = torch.tensor(prefix, dtype=torch.int64)
    scale = D ** -0.5
    got = emu_attention(lib, q, k, v, bits, pl, scale, splits)
    want = aref.tree_attention(q, k, v, bits, pl, scale)
    tol = {torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(got.double(), want.double(), atol=tol, rtol=tol)
    if D != 64 or dtype != torch.float16:
        return
    # and the masked keys matter: attending to everything gives something else
    no_mask = torch.full_like(bits, -1)
    assert not torch.allclose(emu_attention(lib, q, k, v, no_mask, pl, scale, splits).double(), want.double(),
                              atol=tol, rtol=tol)


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
                                    0.8, threads=32, **kw)
        got = merge_beam_candidates(tok.view(B, N, kk), lq.view(B, N, kk), gz.view(B, N, kk), phi, G, W)
        ref_kw = {"gumbel": gum.view(B, N, V)} if "gumbel" in kw else kw
        want = sref.beam_step(logits, phi, G, W, 0.8, **ref_kw)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (got, want)
        torch.testing.assert_close(got[2], want[2], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(got[3], want[3], atol=1e-6, rtol=1e-6)
