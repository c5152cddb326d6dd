"""Triton device functions reproducing :mod:`rsd_kernels.noise` (the noise contract) bit for bit.

* :func:`accept_uniform` -- the ACCEPT stream: lane 0 of ``(offset, row, 1<<24 | node, 0)``.
* :func:`token_uniforms` -- a token stream (RESIDUAL / GUMBEL): the uniform of token
  ``4 * quad + lane`` is lane ``lane`` of the Philox call at ``(offset, row, stream, quad)``.
  Called with ``quad [N, 1]`` and ``lane = tl.arange(0, 4)[None, :]`` it returns the ``[N, 4]``
  uniforms of ``4N`` consecutive tokens from ``N`` Philox calls (every lane used: the way the
  kernels draw a vocabulary tile); with ``quad = tok >> 2, lane = tok & 3`` (same shape) the
  uniforms of scattered tokens, one call each.
* :func:`gumbel` -- ``-log32(-log32(u))`` with :func:`log32`, the contract's float32 logarithm
  (explicit ``tl.fma``, so no FP contraction can change its bits).

Philox4x32-10 is ``tl.philox`` (the 64-bit ``seed`` split into key words exactly as
:func:`rsd_kernels.noise.philox4x32` does). Under the interpreter ``tl.fma`` is made a true
fused multiply-add by :mod:`rsd_kernels.triton_compat`.
"""
import triton
import triton.language as tl

from . import noise as _noise

STREAM_ACCEPT = tl.constexpr(_noise.STREAM_ACCEPT)
STREAM_RESIDUAL = tl.constexpr(_noise.STREAM_RESIDUAL)
STREAM_GUMBEL = tl.constexpr(_noise.STREAM_GUMBEL)
_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10 = (tl.constexpr(c) for c in _noise.LOG_COEFFS)
_LN2 = tl.constexpr(_noise.LN2)


@triton.jit
def uniform_from_bits(x):
    """A uint32 Philox output as the float32 uniform ``(2 * (x >> 9) + 1) * 2**-24``."""
    return ((x >> 9) * 2 + 1).to(tl.float32) * (2.0**-24)


@triton.jit
def _philox(seed, c0, c1, c2, c3):
    c3 = tl.cast(c3, tl.uint32)
    zero = c3 * 0
    return tl.philox(seed, (zero + c0).to(tl.uint32), (zero + c1).to(tl.uint32), (zero + c2).to(tl.uint32), c3)


@triton.jit
def accept_uniform(seed, offset, row, node):
    """ACCEPT-stream uniform of each draft node in ``node`` (any shape)."""
    x, _, _, _ = _philox(seed, offset, row, STREAM_ACCEPT | node, node * 0)
    return uniform_from_bits(x)


@triton.jit
def token_uniforms(seed, offset, row, stream, quad, lane):
    """Uniforms of tokens ``4 * quad + lane`` of ``stream`` (``quad`` and ``lane`` broadcast;
    one Philox call per element of ``quad``)."""
    x0, x1, x2, x3 = _philox(seed, offset, row, stream, quad)
    x = tl.where(lane == 0, x0, tl.where(lane == 1, x1, tl.where(lane == 2, x2, x3)))
    return uniform_from_bits(x)


@triton.jit
def log32(x):
    """The contract's float32 log of ``x`` (positive, normal): :mod:`rsd_kernels.noise`."""
    bits = x.to(tl.int32, bitcast=True)
    e = (bits - 0x3F2AAAAB) >> 23
    m = (bits - (e << 23)).to(tl.float32, bitcast=True)
    i = e.to(tl.float32)
    f = m - 1.0
    s = f * f
    r = tl.fma(f, _C10, _C9)
    r = tl.fma(r, f, _C8)
    r = tl.fma(r, f, _C7)
    r = tl.fma(r, f, _C6)
    r = tl.fma(r, f, _C5)
    r = tl.fma(r, f, _C4)
    r = tl.fma(r, f, _C3)
    r = tl.fma(r, f, _C2)
    r = tl.fma(r, s, f)
    return tl.fma(i, _LN2, r)


@triton.jit
def gumbel(u):
    """Standard Gumbel noise ``-log32(-log32(u))`` in float32 (the contract's transform)."""
    return -log32(-log32(u))
