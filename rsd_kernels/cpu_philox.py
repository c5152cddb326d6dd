"""Philox4x32-10 in C++ for the CPU: the same numbers as :func:`rsd_kernels.noise.philox4x32`'s NumPy
definition, ~10x faster (the reference samplers draw their noise through it).

``csrc/cpu/philox_cpu.cpp`` is JIT-built on first use with ``torch.utils.cpp_extension.load`` (ninja and
a C++ compiler; cached in torch's extensions directory, ``TORCH_EXTENSIONS_DIR``), the project's JIT path
(:mod:`rsd_kernels.cuda_backend`). Where it cannot be built or loaded (no compiler, no ninja, no sources,
``RSD_KERNELS_DISABLE_CPU_EXT=<reason>``) :func:`extension` returns None, says why once
(:func:`unavailable_reason`), and :mod:`rsd_kernels.noise` keeps its NumPy path: same numbers, slower.
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

JIT_NAME = "rsd_kernels_cpu_philox"
ENV_DISABLE = "RSD_KERNELS_DISABLE_CPU_EXT"

_lock = threading.Lock()
_state: dict = {}


def source() -> Path | None:
    """``csrc/cpu/philox_cpu.cpp`` (beside the package in a wheel, or in the repository)."""
    here = Path(__file__).resolve().parent
    for cand in (here / "csrc" / "cpu", here.parent / "csrc" / "cpu"):
        if (cand / "philox_cpu.cpp").is_file():
            return cand / "philox_cpu.cpp"
    return None


def _build():
    if os.environ.get(ENV_DISABLE):
        raise ImportError(f"disabled ({ENV_DISABLE}={os.environ[ENV_DISABLE]})")
    src = source()
    if src is None:
        raise ImportError("csrc/cpu/philox_cpu.cpp not found")
    from torch.utils.cpp_extension import load

    return load(name=JIT_NAME, sources=[str(src)], extra_cflags=["-O3", "-std=c++17"],
                verbose=os.environ.get("RSD_KERNELS_VERBOSE_BUILD") == "1")


def extension():
    """The loaded extension (built on first call), or None when it cannot be (see the module docstring)."""
    if "ext" in _state:
        return _state["ext"]
    with _lock:
        if "ext" not in _state:
            try:
                _state["ext"] = _build()
            except Exception as exc:  # no compiler / ninja / sources, a failed build: fall back, say why once
                _state["ext"] = None
                _state["why"] = f"{type(exc).__name__}: {exc}"
                if not os.environ.get(ENV_DISABLE):
                    warnings.warn(f"rsd_kernels: the C++ Philox could not be built ({_state['why'][:300]}); "
                                  "the CPU noise uses NumPy (same numbers, slower)", RuntimeWarning, stacklevel=3)
    return _state["ext"]


def unavailable_reason() -> str | None:
    """Why :func:`extension` is None (None while it is available or not yet tried)."""
    return _state.get("why")


def philox4x32(seed: int, counters):
    """The four output lanes (int64 tensors of the broadcast shape) of Philox4x32-10 at ``counters``
    (four int64 tensors, broadcastable), or None when the extension is unavailable."""
    ext = extension()
    if ext is None:
        return None
    import torch

    shape = torch.broadcast_shapes(*(c.shape for c in counters))
    flat = [c.reshape(1) if c.numel() == 1 else c.expand(shape).contiguous().reshape(-1) for c in counters]
    seed = int(seed)
    lanes = ext.philox4x32(seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, *flat)
    return tuple(x.reshape(shape) for x in lanes)
