"""Device-to-device copy: the bandwidth the other benchmarks' floors assume (H200: 4.3 TB/s).

``dst.copy_(src)`` of 1 GiB (CPU: 64 MiB) moves 2x its size; its ``of_floor`` column says how the
floor in ``benchutil._PEAK_GBPS`` compares with what this device copies today.
"""
import pytest
import torch

from benchutil import DEVICE, ON_GPU, run

NBYTES = (1 << 30) if ON_GPU else (64 << 20)


@pytest.mark.parametrize("backend", ["torch"])
def test_copy(benchmark, backend):
    src = torch.empty(NBYTES // 2, dtype=torch.bfloat16, device=DEVICE).fill_(1.0)
    dst = torch.empty_like(src)
    run(benchmark, lambda: dst.copy_(src), 2 * NBYTES, op="copy", backend=backend, shape=f"{NBYTES >> 20} MiB")
