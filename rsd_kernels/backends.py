"""Backend registry and dispatch: ``"torch"`` (reference), ``"triton"``, ``"cuda"``, ``"auto"``.

Each backend module registers its implementations with :func:`register` when imported.
``"auto"`` picks, on a CUDA device, the first backend of :data:`AUTO_ORDER` that can run the op
(CUDA, then Triton; Triton first for ``tree_attention``) and the PyTorch reference on the CPU.
Asking explicitly for a backend that cannot run raises ``ValueError`` with the reason:
there is no silent fallback.
"""
from __future__ import annotations

import importlib
import os

import torch

BACKENDS = ("torch", "triton", "cuda")
_IMPLS: dict[str, dict[str, object]] = {b: {} for b in BACKENDS}
_MODULES = {
    "torch": ("rsd_kernels.attention.reference_op", "rsd_kernels.sampling.reference_op", "rsd_kernels.verify.reference_op"),
    "triton": ("rsd_kernels.attention.triton_op", "rsd_kernels.sampling.triton_op", "rsd_kernels.verify.triton_op"),
    "cuda": ("rsd_kernels.cuda_backend",),
}
_load_errors: dict[str, str] = {}

# What ``"auto"`` tries on a CUDA device, in order. ``tree_attention`` prefers Triton: neither
# attention kernel has been timed on a GPU yet, and the Triton kernel is the one whose launch
# plan and sm_90 compile were reviewed end to end; the streaming CUDA kernel (cp.async
# pipeline, one-wave split plan) takes over only once a device run shows it at least as fast
# (bench/bench_attention.py, both backends side by side).
AUTO_ORDER = {"tree_attention": ("triton", "cuda", "torch")}
_AUTO_DEFAULT = ("cuda", "triton", "torch")


def auto_order(op: str, device) -> tuple[str, ...]:
    """The backends ``backend="auto"`` tries for ``op`` on ``device``, in order."""
    return AUTO_ORDER.get(op, _AUTO_DEFAULT) if torch.device(device).type == "cuda" else ("torch",)


def register(op: str, backend: str):
    """Decorator: ``@register("verify_tree", "triton")``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}")

    def deco(fn):
        _IMPLS[backend][op] = fn
        return fn

    return deco


def _load(backend: str):
    for mod in _MODULES[backend]:
        key = f"{backend}:{mod}"
        if key in _load_errors:
            continue
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name == mod:  # that backend has no module for this op (yet)
                _load_errors[key] = f"{mod} does not exist"
            else:
                _load_errors[key] = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # an import that fails must say why, not disappear
            _load_errors[key] = f"{type(exc).__name__}: {exc}"


H200_SMS = 132  # the launch plans' SM count without a CUDA device (CPU tests, bench/roofline.py)


def device_sms(device) -> int:
    """Streaming multiprocessors of ``device`` (a CUDA device), else :data:`H200_SMS`: the launch
    plans (grids sized to the device) are the H200's wherever no GPU says otherwise."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return H200_SMS


def triton_runs_on(device: torch.device) -> bool:
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def _why_not(op: str, backend: str, device: torch.device):
    """None if ``backend`` can run ``op`` on ``device``, else the reason."""
    _load(backend)
    if op not in _IMPLS[backend]:
        errors = "; ".join(v for k, v in _load_errors.items() if k.startswith(backend + ":"))
        return f"backend {backend!r} has no implementation of {op}" + (f" ({errors})" if errors else "")
    if backend == "triton" and not triton_runs_on(device):
        return "Triton kernels need a CUDA device (or TRITON_INTERPRET=1 set before import for CPU tensors)"
    if backend == "cuda" and device.type != "cuda":
        return f"the CUDA backend needs CUDA tensors, got device {device}"
    return None


def resolve(op: str, backend: str, device) -> tuple[str, object]:
    """Return ``(backend_name, implementation)`` of ``op`` for tensors on ``device``."""
    device = torch.device(device)
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend == "auto":
        for b in auto_order(op, device):
            if _why_not(op, b, device) is None:
                return b, _IMPLS[b][op]
        raise ValueError(f"no backend can run {op} on {device}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {('auto',) + BACKENDS}, got {backend!r}")
    why = _why_not(op, backend, device)
    if why is not None:
        raise ValueError(f"backend={backend!r} cannot run here: {why}")
    return backend, _IMPLS[backend][op]


def available(op: str, device) -> list[str]:
    """The backends that can run ``op`` on ``device`` now."""
    return [b for b in BACKENDS if _why_not(op, b, torch.device(device)) is None]
