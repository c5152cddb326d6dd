"""The CUDA traversal kernel (csrc/verify_traversal.cu), executed on the CPU under the emulation of
tests/emulation (each CUDA thread a std::thread), against the PyTorch reference.

* explicit noise: token for token with the reference, every dtype, ragged rows, several block
  sizes (reductions across warps), trees with rejections at every level;
* the in-kernel Philox streams: on a root with one child traversal is RRS (the same tests on
  the same uniforms, the same residual), so the kernel's seed path must equal ``verify.cu``'s
  ``rrs`` on such trees; and on any tree it must equal the reference's seed path (csrc/philox.cuh
  follows the contract of :mod:`rsd_kernels.noise` bit for bit).
"""
import pytest
import torch

from rsd_kernels import noise
from rsd_kernels.verify import reference as vref
from rsd_kernels.verify import traversal_reference as tref
from test_cuda_emulated import emu_verify, lib  # noqa: F401  (the module-scoped emulation library fixture)
from test_kernel_traversal import random_logits, random_swor_tree

CASES = [(1, 1, 37, 32), (3, 7, 61, 64), (2, 17, 129, 96), pytest.param((3, 12, 500, 128), marks=pytest.mark.slow)]


def _depth(parents, nn):
    B, T = parents.shape
    d = torch.zeros(B, T, dtype=torch.long)
    for i in range(1, T):
        d[:, i] = d.gather(1, parents[:, i:i + 1].long().clamp(min=0))[:, 0] + 1
    return int((d * (torch.arange(T)[None] < nn[:, None])).max())


def _same(got, want, what):
    for a, b, name in zip(got, want, ("path", "num_accepted", "next_token")):
        assert torch.equal(a, b), f"{what}: {name}\n{a}\n{b}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)) if isinstance(c, tuple) else None)
def test_traversal_kernel_matches_reference(lib, case):  # noqa: F811
    B, T, V, threads = case
    gen = torch.Generator().manual_seed(T * 131 + V)
    for trial, dtype in enumerate((torch.float32, torch.float16, torch.bfloat16, torch.float64)):
        tl, dl = random_logits(B, T, V, gen, dtype, closeness=[1.0, 2.0, 0.5, 1.5][trial])
        tokens, parents, nn = random_swor_tree(B, T, V, gen, dl, width=2 + trial % 3)
        max_depth = _depth(parents, nn)
        temp = [1.0, 0.7, 1.3, 0.9][trial]
        u, g = noise.verify_noise(100 + trial, trial, B, T, V)
        want = tref.verify(tl, dl, tokens, parents, nn, "traversal", temp, max_depth, uniform=u, gumbel=g)
        got = emu_verify(lib, tl, dl, tokens, parents, nn, "traversal", temp, max_depth, uniform=u, gumbel=g,
                         threads=threads)
        _same(got, want, f"{dtype} explicit noise")


def test_traversal_kernel_seed_path(lib):  # noqa: F811
    gen = torch.Generator().manual_seed(5)
    B, V = 6, 50
    tl, dl = random_logits(B, 2, V, gen, torch.float32, closeness=1.5)
    tokens = torch.stack([torch.zeros(B, dtype=torch.long), dl[:, 0].argmax(-1)], 1)  # the draft's favourite: rejections
    parents = torch.tensor([[-1, 0]], dtype=torch.int32).expand(B, 2).contiguous()
    nn = torch.full((B,), 2, dtype=torch.int32)
    for seed, offset in [(3, 0), (2**40 + 17, 5)]:
        trav = emu_verify(lib, tl, dl, tokens, parents, nn, "traversal", 0.9, 1, seed=seed, offset=offset, threads=64)
        rrs = emu_verify(lib, tl, dl, tokens, parents, nn, "rrs", 0.9, 1, seed=seed, offset=offset, threads=64)
        _same(trav, rrs, "traversal vs rrs on one child, Philox streams")
    assert 0 < int(trav[1].sum()) < B  # both outcomes occurred
    # against the reference's seed path (csrc/philox.cuh follows rsd_kernels.noise bit for bit)
    T = 9
    tl, dl = random_logits(B, T, V, gen, torch.float32, closeness=1.0)
    tokens, parents, nn = random_swor_tree(B, T, V, gen, dl)
    md = _depth(parents, nn)
    want = tref.verify(tl, dl, tokens, parents, nn, "traversal", 1.0, md, seed=7, offset=3)
    got = emu_verify(lib, tl, dl, tokens, parents, nn, "traversal", 1.0, md, seed=7, offset=3, threads=64)
    _same(got, want, "seed path against the reference")
