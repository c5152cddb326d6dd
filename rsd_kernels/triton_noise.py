"""Triton device functions reproducing :mod:`rsd_kernels.noise` bit for bit.

``philox_uniform(seed, c0, c1, c2, c3)`` is lane 0 of ``tl.philox`` (Philox4x32-10, the
64-bit ``seed`` split into key words exactly as :func:`rsd_kernels.noise.philox4x32` does),
mapped to ``(2 * (x >> 9) + 1) * 2**-24`` in float32. The counters may be scalars or blocks;
they broadcast to the shape of ``c3``.
"""
import triton
import triton.language as tl


@triton.jit
def philox_uniform(seed, c0, c1, c2, c3):
    """Float32 uniform in (0, 1) of the stream counter ``(c0, c1, c2, c3)``; shape of ``c3``."""
    c3 = tl.cast(c3, tl.uint32)
    zero = c3 * 0
    x, _, _, _ = tl.philox(seed, (zero + c0).to(tl.uint32), (zero + c1).to(tl.uint32), (zero + c2).to(tl.uint32), c3)
    return ((x >> 9) * 2 + 1).to(tl.float32) * (2.0**-24)


@triton.jit
def gumbel_from_uniform(u):
    """``-log(-log(u))`` in float32, as :func:`rsd_kernels.noise.gumbel_from_uniform`."""
    return -tl.log(-tl.log(u))
