"""The one definition of randomness shared by every backend (the noise contract).

Every random number is Philox4x32-10 (the generator Triton's ``tl.philox`` implements) keyed by
``seed`` (64 bit: key words ``(seed & 0xFFFFFFFF, seed >> 32)``) at a 128-bit counter
``(c0, c1, c2, c3)``; each call gives four 32-bit output lanes ``x0..x3``. A result therefore
depends on (seed, offset, row, node or token) and not on launch shape or on the other rows'
contents. ``row`` is the row's **index** in the batch: at a fixed index a row's result is
independent of its neighbours, but the same row at another index draws other noise (each draw
is exact either way). The streams:

==============  ========================================  ======  ============================
stream          counter (c0, c1, c2, c3)                  lane    used by
==============  ========================================  ======  ============================
``ACCEPT``      (offset, row, 1<<24 | node, 0)            0       verify: u of draft ``node``
``RESIDUAL``    (offset, row, 2<<24, token >> 2)          token&3 verify: Gumbel of ``token``
                                                                  for the correction/bonus token
``GUMBEL``      (offset, row, 3<<24, token >> 2)          token&3 sampling / beam step: Gumbel
                                                                  of ``token``
==============  ========================================  ======  ============================

So one Philox call serves four consecutive tokens ``4c .. 4c+3`` of the token streams (all four
lanes used); the ACCEPT stream draws one uniform per node (lane 0).

**Uniform.** A 32-bit draw ``x`` becomes ``u = (2 * (x >> 9) + 1) * 2**-24`` in float32: exact,
strictly inside (0, 1) (``u`` takes the 2**23 values ``(2k + 1) * 2**-24``).

**Gumbel.** ``g = -log32(-log32(u))`` where ``log32`` is the float32 logarithm below, defined
operation by operation so that every backend computes the **same bits** (not the platform's
``logf``: torch's CPU log, NumPy's, libdevice's ``__nv_logf`` and CUDA's ``logf`` are each within
about 1 ulp of ``log`` but round differently). Every step is one IEEE-754 binary32 operation,
round to nearest even; ``fma`` is the *fused* multiply-add (one rounding: ``tl.fma``,
``__fmaf_rn``); no other multiply may be contracted into an add (none feeds one); no value is
subnormal::

    bits = bitcast<int32>(x)                   # x > 0 normal (here x in [2**-24, 17])
    e    = (bits - 0x3F2AAAAB) >> 23           # arithmetic shift; 0x3F2AAAAB = float32(2/3)
    m    = bitcast<float32>(bits - (e << 23))  # m in [2/3, 4/3), x = m * 2**e exactly
    i    = float32(e)                          # exact
    f    = m - 1.0                             # exact (Sterbenz)
    s    = f * f
    r    = fma(C10, f, C9); r = fma(r, f, C8); ... ; r = fma(r, f, C2)
    r    = fma(r, s, f)                        # log1p(f) = f + f**2 * P(f)
    log32(x) = fma(i, LN2, r)

with the float32 constants (:data:`LOG_COEFFS` = C2..C10, :data:`LN2`)::

    C2  = -0x1.000000p-1   C3 =  0x1.555502p-2   C4 = -0x1.fffe84p-3   C5 =  0x1.99d1f2p-3
    C6  = -0x1.55a754p-3   C7 =  0x1.1ebe68p-3   C8 = -0x1.f25de0p-4   C9 =  0x1.1ed146p-3
    C10 = -0x1.0931d6p-3   LN2 = 0x1.62e430p-1

(a minimax fit of ``(log1p(f) - f) / f**2`` on [-1/3, 1/3]; over all 2**23 uniforms ``log32``
is within 0.90 ulp of ``log``, and within 0.95 ulp over all the inner logs it is then applied to).

**What "bit-identical" guarantees.** The uniforms and the Gumbel noise are the same bits on
every backend (this torch reference, Triton compiled and interpreted, CUDA and its CPU emulation):
the tests compare the noise tensors bit for bit. The results that use them (tokens, paths, node
choices) then agree token for token with the reference under the same ``(seed, offset)``, except
where two candidates' scores (``logit / T + g``, ``log p + g``, ``u * q < p``) tie within the float
rounding of the *logit arithmetic* (softmax statistics, ``log``), which backends do not share
bit for bit: a measure-zero event in theory, about 1e-7 per draw in float32. The tests compare
tokens/paths exactly (on continuous random inputs) and probabilities within float tolerance.
A CUDA implementation writes each ``fma`` as ``__fmaf_rn`` and the product ``s`` as ``__fmul_rn``
(so neither ``-fmad`` nor ``--use_fast_math`` can change them) and takes no ``logf``.

This reference evaluates each ``fma`` as ``float32(a * b + c)`` with ``a * b + c`` in float64: the
product of two float32 is exact in float64, and ``tests/test_noise.py`` checks exhaustively
that the one float64 rounding never makes the float32 result differ from the fused one
(over every ``f`` the polynomial can see, and for ``|e| <= 24`` the last fma is exact in float64).

The explicit-noise inputs of every op (``uniform``, ``gumbel``) are exactly these streams
materialised, so passing ``seed=`` or the tensors from :func:`verify_noise` /
:func:`gumbel_noise` gives the same answer.
"""
from __future__ import annotations

import numpy as np
import torch

STREAM_ACCEPT = 1 << 24
STREAM_RESIDUAL = 2 << 24
STREAM_GUMBEL = 3 << 24
TOKEN_STREAMS = (STREAM_RESIDUAL, STREAM_GUMBEL)
MAX_NODE = (1 << 24) - 1
LANES = 4  # Philox outputs per call: consecutive tokens 4c .. 4c+3 share counter c

LOG_COEFFS = tuple(float.fromhex(h) for h in (  # C2 .. C10 of log32, exact float32 values
    "-0x1.000000p-1", "0x1.555502p-2", "-0x1.fffe84p-3", "0x1.99d1f2p-3", "-0x1.55a754p-3",
    "0x1.1ebe68p-3", "-0x1.f25de0p-4", "0x1.1ed146p-3", "-0x1.0931d6p-3"))
LN2 = float.fromhex("0x1.62e430p-1")  # float32(log 2)
_TWO_THIRDS_BITS = 0x3F2AAAAB
_CHUNK = 1 << 15  # elements per step of the CPU reference (cache-resident)

_M32 = 0xFFFFFFFF
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57


def philox4x32(seed: int, c0, c1, c2, c3, rounds: int = 10, *, numpy: bool = False):
    """Philox4x32 on (broadcast) integer counters holding uint32 values.

    Returns the four output lanes as int64 tensors (values in ``[0, 2**32)``). Computed with
    numpy's uint64 arithmetic (a product of two 32-bit words is exact in 64 bits), in chunks
    that stay in the CPU's cache. The same numbers come from C++ when :mod:`rsd_kernels.cpu_philox`
    could be built (``numpy=True``: NumPy always).
    """
    if rounds == 10 and not numpy:
        from . import cpu_philox

        fast = cpu_philox.philox4x32(seed, [torch.as_tensor(c, dtype=torch.int64).cpu() for c in (c0, c1, c2, c3)])
        if fast is not None:
            return fast
    seed = int(seed)
    m32 = np.uint64(_M32)
    cs = [torch.as_tensor(c, dtype=torch.int64).cpu().numpy().astype(np.uint64) & m32 for c in (c0, c1, c2, c3)]
    cs = np.broadcast_arrays(*cs)
    shape = cs[0].shape
    flat = [np.ascontiguousarray(c).reshape(-1) for c in cs]
    out = [np.empty(flat[0].size, dtype=np.int64) for _ in range(4)]
    for i in range(0, flat[0].size, _CHUNK):
        lanes = _philox_rounds(seed, [c[i:i + _CHUNK] for c in flat], rounds)
        for o, x in zip(out, lanes):
            o[i:i + _CHUNK] = x
    return tuple(torch.from_numpy(o.reshape(shape)) for o in out)


def _philox_rounds(seed, counters, rounds):
    k0, k1 = np.uint64(seed & _M32), np.uint64((seed >> 32) & _M32)
    m32, s32 = np.uint64(_M32), np.uint64(32)
    ra, rb = np.uint64(_ROUND_A), np.uint64(_ROUND_B)
    ka, kb = np.uint64(_KEY_A), np.uint64(_KEY_B)
    c0, c1, c2, c3 = counters
    for _ in range(rounds):
        pb, pa = rb * c2, ra * c0
        c0, c1, c2, c3 = (pb >> s32) ^ c1 ^ k0, pb & m32, (pa >> s32) ^ c3 ^ k1, pa & m32
        k0, k1 = (k0 + ka) & m32, (k1 + kb) & m32
    return c0, c1, c2, c3


def check_seed(seed, offset):
    """TypeError unless seed is an int in [0, 2**63) and offset an int in [0, 2**32)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise TypeError(f"seed must be an int in [0, 2**63), got {seed!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < 2**32:
        raise TypeError(f"offset must be an int in [0, 2**32), got {offset!r}")


def uniform_from_bits(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit draw (int64 holding a uint32) as the float32 uniform ``(2 * (x >> 9) + 1) * 2**-24``."""
    return ((x >> 9) * 2 + 1).to(torch.float32) * (2.0**-24)


def uniform(seed: int, offset: int, row, stream: int, index) -> torch.Tensor:
    """Float32 uniforms in (0, 1) of draw ``index`` of ``stream`` (broadcast int64 tensors).

    ``stream`` is :data:`STREAM_ACCEPT` (``index`` = node: lane 0 of ``(offset, row, ACCEPT | node,
    0)``) or a token stream, :data:`STREAM_RESIDUAL` / :data:`STREAM_GUMBEL` (``index`` = token:
    lane ``token & 3`` of ``(offset, row, stream, token >> 2)``).
    """
    check_seed(seed, offset)
    index = torch.as_tensor(index, dtype=torch.int64)
    if stream == STREAM_ACCEPT:
        x, _, _, _ = philox4x32(seed, offset, row, STREAM_ACCEPT | index, 0)
        return uniform_from_bits(x)
    if stream not in TOKEN_STREAMS:
        raise ValueError(f"unknown stream {stream!r}")
    lanes = torch.stack(philox4x32(seed, offset, row, stream, index >> 2), -1)
    return uniform_from_bits(lanes.gather(-1, (index & 3).expand(lanes.shape[:-1])[..., None])[..., 0])


def _token_uniforms_dense(seed: int, offset: int, row_start: int, rows: int, stream: int, vocab: int):
    """``[rows, vocab]`` uniforms of a token stream: one Philox call per 4 tokens."""
    check_seed(seed, offset)
    r = torch.arange(row_start, row_start + rows, dtype=torch.int64)[:, None]
    c = torch.arange((vocab + LANES - 1) // LANES, dtype=torch.int64)[None, :]
    lanes = torch.stack(philox4x32(seed, offset, r, stream, c), -1)  # [rows, ceil(V/4), 4]
    return uniform_from_bits(lanes.reshape(rows, lanes.shape[1] * LANES)[:, :vocab])


def generator_uniform(shape, generator=None, device=None) -> torch.Tensor:
    """Float32 uniforms from a ``torch.Generator`` (or the global RNG), clamped into
    ``[2**-24, 1 - 2**-24]`` like the Philox streams: the ``generator=`` path of every op."""
    lo = 2.0**-24
    return torch.rand(*shape, generator=generator, device=device).clamp_(lo, 1 - lo)


def log32(x: torch.Tensor) -> torch.Tensor:
    """The contract's float32 logarithm (module docstring) of float32 ``x`` in ``[2**-24, 2**24]``.

    Each fma runs as ``float32(a * b + c)`` in float64 (exact product, see the module docstring);
    on the CPU in chunks that stay in the cache.
    """
    flat = x.to(torch.float32).reshape(-1)
    if flat.numel() <= _CHUNK or flat.is_cuda:
        return _log32(flat).view(x.shape)
    return torch.cat([_log32(flat[i:i + _CHUNK]) for i in range(0, flat.numel(), _CHUNK)]).view(x.shape)


def _log32(x):
    bits = x.contiguous().view(torch.int32)
    e = (bits - _TWO_THIRDS_BITS) >> 23
    m = (bits - (e << 23)).view(torch.float32)
    f32 = m - 1.0
    f = f32.double()
    c = [torch.tensor(ck, dtype=torch.float64) for ck in LOG_COEFFS]
    r = torch.addcmul(c[-2], f, c[-1]).float()
    for ck in c[-3::-1]:
        r = torch.addcmul(ck, r.double(), f).float()
    r = torch.addcmul(f, r.double(), (f32 * f32).double()).float()
    return torch.addcmul(r.double(), e.double(), torch.tensor(LN2, dtype=torch.float64)).float()


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise ``-log32(-log32(u))`` in float32 (the contract's transform)."""
    return -log32(-log32(u.to(torch.float32)))


def gumbel_noise(seed: int, offset: int, rows: int, vocab: int, *, row_start: int = 0, device=None,
                 where: torch.Tensor | None = None) -> torch.Tensor:
    """The ``GUMBEL`` stream as a ``[rows, vocab]`` float32 tensor (sampling, beam step).

    ``where`` (bool ``[rows, vocab]``): draw only those entries (the same values as without it;
    one Philox call per group of 4 tokens holding a drawn one) and leave the others 0 -- for
    logits that are ``-inf`` outside a restricted vocabulary, whose noise is never read.
    """
    if where is not None and not bool(where.all()):
        check_seed(seed, offset)
        r, x = where.reshape(rows, vocab).cpu().nonzero(as_tuple=True)  # row-major: keys sorted
        out = torch.zeros(rows, vocab, dtype=torch.float32)
        if r.numel():
            nq = (vocab + LANES - 1) // LANES
            quad, inv = torch.unique_consecutive(r * nq + (x >> 2), return_inverse=True)
            lanes = torch.stack(philox4x32(seed, offset, quad // nq + row_start, STREAM_GUMBEL, quad % nq), -1)
            out[r, x] = gumbel_from_uniform(uniform_from_bits(lanes[inv, x & 3]))
        return out.to(device)
    return gumbel_from_uniform(_token_uniforms_dense(seed, offset, row_start, rows, STREAM_GUMBEL, vocab)).to(device)


def gumbel_at(seed: int, offset: int, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The ``GUMBEL`` stream at the entries ``(rows[i], tokens[i])`` (1-D int64, row-major order when
    they come from a mask): the values :func:`gumbel_noise` puts there, without the dense tensor."""
    return gumbel_from_uniform(uniform(seed, offset, rows, STREAM_GUMBEL, tokens))


def verify_noise(seed: int, offset: int, batch: int, nodes: int, vocab: int, *, device=None):
    """The verifier's streams: ``uniform [batch, nodes]`` (ACCEPT) and ``gumbel [batch, vocab]`` (RESIDUAL)."""
    if nodes - 1 > MAX_NODE:
        raise ValueError(f"at most {MAX_NODE + 1} nodes per tree, got {nodes}")
    r = torch.arange(batch, dtype=torch.int64)[:, None]
    u = uniform(seed, offset, r, STREAM_ACCEPT, torch.arange(nodes, dtype=torch.int64)[None, :])
    g = gumbel_from_uniform(_token_uniforms_dense(seed, offset, 0, batch, STREAM_RESIDUAL, vocab))
    return u.to(device), g.to(device)
