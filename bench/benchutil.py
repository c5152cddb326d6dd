"""Shared pieces of the microbenchmarks: device, backend parametrisation, timing, GB/s.

Every benchmark records in ``benchmark.extra_info``: ``bytes`` (the bytes that must move,
the floor's numerator), ``gbps`` (bytes / median time), ``peak_gbps`` (the device's memory
bandwidth: ``RSD_PEAK_GBPS`` if set, else a table of known GPUs, else none) and
``floor_fraction`` = (bytes / peak bandwidth) / median time, i.e. how close the op runs to
the time that moving its bytes once takes. ``bench/report.py`` prints them as a table.

Kernel backends run only on a CUDA device (interpreter timings say nothing); on the CPU the
references run and the kernel rows skip with the reason.
"""
from __future__ import annotations

import os

import pytest
import torch

from rsd_kernels import backends

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"

# HBM bandwidth in GB/s of GPUs we may meet (vendor figures).
_PEAK_GBPS = {"H100 SXM": 3350.0, "H100 80GB HBM3": 3350.0, "H100 PCIe": 2000.0, "H100 NVL": 3900.0,
              "H200": 4800.0, "A100-SXM4-80GB": 2039.0, "A100-SXM4-40GB": 1555.0, "A100-PCIE": 1555.0}


def peak_gbps():
    if "RSD_PEAK_GBPS" in os.environ:
        return float(os.environ["RSD_PEAK_GBPS"])
    if not ON_GPU:
        return None
    name = torch.cuda.get_device_name(DEVICE)
    for key, bw in _PEAK_GBPS.items():
        if key in name:
            return bw
    if "H100" in name:
        return 3350.0
    return None


def backend_params(op, extra=()):
    """pytest params: "torch" plus each kernel backend (skipped unless it can run on a GPU here),
    plus ``extra`` baselines (names handled by the benchmark itself)."""
    out = [pytest.param("torch", id="torch")]
    for b in ("triton", "cuda"):
        why = None
        if not ON_GPU:
            why = f"{b} benchmarks need a CUDA device"
        elif b not in backends.available(op, DEVICE):
            try:
                backends.resolve(op, b, DEVICE)
            except ValueError as exc:
                why = str(exc)
        out.append(pytest.param(b, id=b, marks=[pytest.mark.skip(reason=why)] if why else []))
    for name, why in extra:
        out.append(pytest.param(name, id=name, marks=[pytest.mark.skip(reason=why)] if why else []))
    return out


def run(benchmark, fn, nbytes: float, **info):
    """Benchmark ``fn`` (synchronising a GPU), record bytes / GB/s / floor fraction."""
    if ON_GPU:
        def call():
            out = fn()
            torch.cuda.synchronize()
            return out
    else:
        call = fn
    for _ in range(3):  # warm-up: compilation, autotuning, caches
        call()
    result = benchmark.pedantic(call, rounds=20 if ON_GPU else 3, iterations=1, warmup_rounds=1)
    median = benchmark.stats.stats.median
    peak = peak_gbps()
    benchmark.extra_info.update(info)
    benchmark.extra_info.update({
        "device": torch.cuda.get_device_name(DEVICE) if ON_GPU else "cpu",
        "bytes": float(nbytes),
        "gbps": nbytes / median / 1e9,
        "peak_gbps": peak,
        "floor_fraction": None if peak is None else (nbytes / (peak * 1e9)) / median,
    })
    return result
