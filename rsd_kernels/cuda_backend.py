"""The ``"cuda"`` backend: the kernels of ``csrc/`` behind the reference launcher signatures.

Importing this module loads the compiled extension, in this order:

1. the prebuilt ``rsd_kernels._C`` (``pip install .`` on a machine with CUDA and a CUDA
   build of torch compiles it; ``RSD_KERNELS_BUILD_CUDA=0`` skips that);
2. otherwise a JIT build of the ``csrc/`` sources with ``torch.utils.cpp_extension.load``
   (ninja), cached in torch's extensions directory (``TORCH_EXTENSIONS_DIR``), so only the
   first use compiles. ``TORCH_CUDA_ARCH_LIST`` is honoured; unset, torch builds for the
   visible GPUs. ``RSD_KERNELS_VERBOSE_BUILD=1`` shows the compiler output.

``RSD_KERNELS_DISABLE_CUDA=<reason>`` makes the import fail with that reason (no load, no build).
Where neither can work (CPU-only torch, no CUDA device, no CUDA toolkit, no sources) the
import raises ``ImportError`` with the reason, which :mod:`rsd_kernels.backends` reports
when ``backend="cuda"`` is asked for. Then the four ops are registered with exactly the
signatures of the PyTorch reference launchers (``rsd_kernels/*/reference.py``).

Kernel notes (see the ``csrc/*.cu`` headers): ``verify_tree`` splits each row's vocabulary over
blocks that stay resident together (a cooperative launch) and exchange their partial sums, maxima
and argmaxes through a small workspace: every vocabulary-wide pass (node statistics, residual
masses, SpecTr's rho* with 31 bisection midpoints per pass, the final Gumbel argmax) is spread over
the row's blocks, while each block repeats the scalar walk (``mode="traversal"``:
``verify_traversal.cu``, one block per row); ``sample_without_replacement`` splits the vocabulary
across blocks (a (vocabulary block, row) kernel with all four Philox lanes per call and float32 noise, then a per-row merge)
and supports ``k <= 64`` (register top-k);
``stochastic_beam_step`` is the per-beam Gumbel-top-``min(width, V)`` kernel followed by a
torch merge of the ``N * min(width, V)`` candidates (exact: the global top-``width`` lies in
the union of the per-beam top-``width``, and the truncated Gumbel is increasing in the
perturbed score); ``tree_attention`` reads q/k/v in place (any batch/head/row strides, last
dimension contiguous: the KV cache's own views), streams K/V through a cp.async pipeline, uses
tensor cores (mma.sync) for fp16/bf16 with ``D in {64, 128}`` on sm_80+ and a CUDA-core kernel
for fp32/fp64 and other head sizes (``D <= 256``).
"""
from __future__ import annotations

import glob
import os
from pathlib import Path

import torch

from . import backends
from . import noise as _noise
from .sampling.beam_merge import merge_beam_candidates

__all__ = ["extension", "csrc_dir", "verify", "sample_topk", "beam_step", "tree_attention"]

_MODES = {"rrs": 0, "kseq": 1, "greedy": 2, "traversal": 3}
JIT_NAME = "rsd_kernels_cuda"


def csrc_dir() -> Path | None:
    """The CUDA sources: ``rsd_kernels/csrc`` (a wheel that ships them) or ``<repo>/csrc``."""
    here = Path(__file__).resolve().parent
    for cand in (here / "csrc", here.parent / "csrc"):
        if (cand / "bindings.cpp").is_file():
            return cand
    return None


def _jit_build(src: Path):
    from torch.utils.cpp_extension import CUDA_HOME, load

    if CUDA_HOME is None:
        raise ImportError("no prebuilt rsd_kernels._C and no CUDA toolkit to JIT-build it: set CUDA_HOME or put nvcc on PATH")
    sources = sorted(glob.glob(str(src / "*.cu"))) + [str(src / "bindings.cpp")]
    return load(
        name=JIT_NAME,
        sources=sources,
        extra_include_paths=[str(src)],
        extra_cflags=["-O3", "-std=c++17"],
        extra_cuda_cflags=["-O3", "-std=c++17"],
        verbose=os.environ.get("RSD_KERNELS_VERBOSE_BUILD") == "1",
    )


def _load_extension():
    if os.environ.get("RSD_KERNELS_DISABLE_CUDA"):  # e.g. bench/gpu_check.sh after a failed build: no retry
        raise ImportError(f"the CUDA backend is disabled (RSD_KERNELS_DISABLE_CUDA): {os.environ['RSD_KERNELS_DISABLE_CUDA']}")
    if torch.version.cuda is None:
        raise ImportError(f"the CUDA backend needs a CUDA build of torch; torch {torch.__version__} is CPU-only")
    if not torch.cuda.is_available():
        raise ImportError("the CUDA backend needs a CUDA device; torch.cuda.is_available() is False")
    try:
        from . import _C  # prebuilt by setup.py

        return _C
    except ImportError as exc:
        prebuilt = f"{type(exc).__name__}: {exc}"
    src = csrc_dir()
    if src is None:
        raise ImportError(f"no usable prebuilt rsd_kernels._C ({prebuilt}) and no csrc/ sources to JIT-build it from")
    try:
        return _jit_build(src)
    except ImportError:
        raise
    except Exception as exc:  # compiler errors, missing ninja: say so, do not hide it
        raise ImportError(f"JIT build of the CUDA extension from {src} failed: {type(exc).__name__}: {exc}") from exc


_ext = _load_extension()


def extension():
    """The loaded extension module (prebuilt ``rsd_kernels._C`` or the JIT build)."""
    return _ext


def _seed(seed, offset):
    if seed is not None:
        _noise.check_seed(seed, offset)
    return seed


@backends.register("verify_tree", "cuda")
def verify(target_logits, draft_logits, tokens, parents, num_nodes, mode, temperature, max_depth,
           uniform=None, gumbel=None, seed=None, offset=0):
    """CUDA ``verify_tree``: same contract as :func:`rsd_kernels.verify.reference.verify`."""
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {tuple(_MODES)}, got {mode!r}")
    B, T, _ = target_logits.shape
    if num_nodes is None:
        num_nodes = torch.full((B,), T, dtype=torch.int32, device=target_logits.device)
    greedy = mode == "greedy"
    if greedy:
        uniform = gumbel = None
        seed = None
    elif uniform is not None:
        uniform, gumbel = uniform.float().contiguous(), gumbel.float().contiguous()
        seed = None
    else:
        if seed is None:
            raise TypeError("verify needs explicit uniform/gumbel noise or a seed")
        _seed(seed, offset)
    return _ext.verify_tree(
        target_logits.contiguous(), None if greedy else draft_logits.contiguous(), tokens.contiguous(),
        parents.to(torch.int32).contiguous(), num_nodes.to(torch.int32).contiguous(), _MODES[mode],
        float(temperature), int(max_depth), uniform, gumbel, seed, int(offset),
    )


def _sample_rows(logits, k, kmax, temperature, gumbel, seed, offset):
    if kmax > _ext.max_sample_k:
        raise ValueError(f"the CUDA backend samples at most {_ext.max_sample_k} tokens per row, got k={kmax}")
    if temperature > 0 and gumbel is None:
        if seed is None:
            raise TypeError("sampling needs explicit gumbel noise or a seed")
        _seed(seed, offset)
    if gumbel is not None:
        gumbel, seed = gumbel.float().contiguous(), None
    return _ext.sample_topk(logits.contiguous(), k.to(torch.int32).contiguous(), int(kmax), float(temperature),
                            gumbel, seed, int(offset))


@backends.register("sample_without_replacement", "cuda")
def sample_topk(logits, k, kmax: int, temperature: float, gumbel=None, seed=None, offset=0):
    """CUDA Gumbel-top-k: same contract as :func:`rsd_kernels.sampling.reference.sample_topk`."""
    tokens, logprobs, _, num = _sample_rows(logits, k, kmax, temperature, gumbel, seed, offset)
    return tokens, logprobs.to(torch.float32), num


@backends.register("stochastic_beam_step", "cuda")
def beam_step(logits, phi, G, width: int, temperature: float, gumbel=None, seed=None, offset=0):
    """CUDA beam step: per-beam Gumbel-top-k kernel, then the truncated-Gumbel merge in torch
    (:func:`rsd_kernels.sampling.beam_merge.merge_beam_candidates`).

    Same contract as :func:`rsd_kernels.sampling.reference.beam_step`. Noise rows are
    ``b * N + n`` (the GUMBEL stream of the reference).
    """
    B, N, V = logits.shape
    kk = min(int(width), V)
    rows = logits.reshape(B * N, V)
    k = torch.full((B * N,), kk, dtype=torch.int32, device=logits.device)
    g_rows = None if gumbel is None else gumbel.reshape(B * N, V)
    tok, lq, g_sel, _ = _sample_rows(rows, k, kk, temperature, g_rows, seed, offset)
    return merge_beam_candidates(tok.view(B, N, kk), lq.view(B, N, kk), g_sel.view(B, N, kk), phi, G, width)


@backends.register("tree_attention", "cuda")
def tree_attention(q, k, v, mask_bits, prefix_lens, scale: float):
    """CUDA tree attention: same contract as :func:`rsd_kernels.attention.reference.tree_attention`."""
    # q, k, v as they lie: the kernels take batch/head/row strides (a KV cache's views, no copy)
    return _ext.tree_attention(q, k, v, mask_bits.to(torch.int32).contiguous(), prefix_lens.to(torch.int64).contiguous(),
                               float(scale))
