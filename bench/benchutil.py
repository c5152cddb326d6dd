"""Shared pieces of the microbenchmarks: device, backend parametrisation, timing, GB/s.

Every benchmark records in ``benchmark.extra_info``: ``bytes`` (the bytes that must move,
the floor's numerator), ``time_s`` (the time the table uses), ``gbps`` (bytes / time_s),
``peak_gbps`` (the device's copy bandwidth: ``RSD_PEAK_GBPS`` if set, else a table of known GPUs,
else none) and ``floor_fraction`` = (bytes / peak bandwidth) / time_s, i.e. how close the op runs
to the time that moving its bytes once takes; ``rows`` (batch rows, for microseconds per row).
``bench/report.py`` prints them as a table.

Timing on a GPU: ``time_s`` is the median *device* time of one call, from CUDA events around the
call, each round after a 256 MiB L2 flush and a ~1 ms ``torch.cuda._sleep`` so the GPU is still
busy while the host enqueues the call (host overhead that the GPU does not wait on is excluded,
an op that synchronises internally pays its waits). ``call_s`` is the host-inclusive median
(call + ``torch.cuda.synchronize``) that pytest-benchmark (or ``bench/run_bench.py``) measured.
On the CPU ``time_s`` = ``call_s``.

The H200 floor is its measured device-to-device copy bandwidth, 4.3 TB/s (vendor figure 4.8):
``bench_copy.py`` measures it again in every run.

Kernel backends run only on a CUDA device (interpreter timings say nothing); on the CPU the
references run and the kernel rows skip with the reason. ``RSD_BENCH_SKIP_CUDA=<reason>`` skips
the CUDA backend's rows (gpu_check.sh sets it when the build step failed, so no benchmark process
retries the build).
"""
from __future__ import annotations

import os
import time

import pytest
import torch

from rsd_kernels import backends

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"

# Memory bandwidth in GB/s of GPUs we may meet: vendor figures, except the H200's measured
# device-to-device copy bandwidth (4.3 TB/s; vendor 4.8), the floor issue 15 sets.
_PEAK_GBPS = {"H100 SXM": 3350.0, "H100 80GB HBM3": 3350.0, "H100 PCIe": 2000.0, "H100 NVL": 3900.0,
              "H200": 4300.0, "A100-SXM4-80GB": 2039.0, "A100-SXM4-40GB": 1555.0, "A100-PCIE": 1555.0}


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
        if b == "cuda" and os.environ.get("RSD_BENCH_SKIP_CUDA"):
            why = f"cuda: {os.environ['RSD_BENCH_SKIP_CUDA']}"
        elif not ON_GPU:
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


SLEEP_CYCLES = int(os.environ.get("RSD_BENCH_SLEEP_CYCLES", 2_000_000))  # ~1 ms at ~1.9 GHz
FLUSH_BYTES = 256 << 20


def device_times(fn, rounds: int = 20) -> list:
    """Seconds of device time of ``fn()``, one per round (see the module docstring)."""
    flush = torch.empty(FLUSH_BYTES, dtype=torch.int8, device=DEVICE)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(rounds)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(rounds)]
    for i in range(rounds):
        flush.zero_()
        try:
            torch.cuda._sleep(SLEEP_CYCLES)
        except (AttributeError, RuntimeError):  # pragma: no cover - then host overhead may be counted
            pass
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends)]


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def run(benchmark, fn, nbytes: float, rows: int | None = None, **info):
    """Benchmark ``fn`` (synchronising a GPU), record bytes / GB/s / floor fraction / device time."""
    if ON_GPU:
        def call():
            out = fn()
            torch.cuda.synchronize()
            return out
    else:
        call = fn
    for _ in range(2):  # warm-up: compilation, autotuning, caches
        call()
    t = time.perf_counter()
    call()
    slow = time.perf_counter() - t > 0.01  # a slow reference: fewer rounds (the budget is minutes)
    rounds = 3 if not ON_GPU else 5 if slow else 20
    result = benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=1)
    call_s = benchmark.stats.stats.median
    time_s = median(device_times(fn, rounds)) if ON_GPU else call_s
    peak = peak_gbps()
    benchmark.extra_info.update(info)
    benchmark.extra_info.update({
        "device": torch.cuda.get_device_name(DEVICE) if ON_GPU else "cpu",
        "bytes": float(nbytes),
        "rows": rows,
        "time_s": time_s,
        "call_s": call_s,
        "gbps": nbytes / time_s / 1e9,
        "peak_gbps": peak,
        "floor_fraction": None if peak is None else (nbytes / (peak * 1e9)) / time_s,
    })
    return result
