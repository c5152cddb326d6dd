"""The one definition of randomness shared by every backend.

Every random number is Philox4x32-10 (the generator Triton's ``tl.philox`` implements)
keyed by ``seed`` (64 bit) at the counter ``(offset, row, stream | node, slot)``; only
output lane 0 is used. A result therefore depends on (seed, offset, row, node, slot) and
not on batch composition or launch shape. The streams:

=====================  ==========================================  ==========================
stream                 counter (c0, c1, c2, c3)                    used by
=====================  ==========================================  ==========================
``ACCEPT``             (offset, row, 1<<24 | node, 0)               verify: u of draft node
``RESIDUAL``           (offset, row, 2<<24, token)                  verify: Gumbel for the
                                                                    correction/bonus token
``GUMBEL``             (offset, row, 3<<24, token)                  sampling / beam step
=====================  ==========================================  ==========================

A 32-bit draw ``x`` becomes ``u = (2 * (x >> 9) + 1) * 2**-24`` in float32: exact,
strictly inside (0, 1). Gumbel noise is ``-log(-log(u))`` computed in float32.

The explicit-noise inputs of every op (``uniform``, ``gumbel``) are exactly these
streams materialised, so passing ``seed=`` or the tensors from :func:`verify_noise` /
:func:`gumbel_noise` gives the same answer.
"""
from __future__ import annotations

import torch

STREAM_ACCEPT = 1 << 24
STREAM_RESIDUAL = 2 << 24
STREAM_GUMBEL = 3 << 24
MAX_NODE = (1 << 24) - 1

_M32 = 0xFFFFFFFF
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57


def _mul32(a: int, b: torch.Tensor):
    """(hi, lo) 32-bit halves of a * b for a < 2**32 and int64 tensors b < 2**32."""
    ah, al = a >> 16, a & 0xFFFF
    bh, bl = b >> 16, b & 0xFFFF
    low = (ah * bl + al * bh) * 65536 + al * bl  # < 2**50, exact in int64
    return ah * bh + (low >> 32), low & _M32


def philox4x32(seed: int, c0, c1, c2, c3, rounds: int = 10):
    """Philox4x32 on int64 tensors holding uint32 values; returns the four output lanes."""
    seed = int(seed)
    k0, k1 = seed & _M32, (seed >> 32) & _M32
    c0, c1, c2, c3 = torch.broadcast_tensors(*(torch.as_tensor(c, dtype=torch.int64) & _M32 for c in (c0, c1, c2, c3)))
    for _ in range(rounds):
        hi_b, lo_b = _mul32(_ROUND_B, c2)
        hi_a, lo_a = _mul32(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & _M32, (k1 + _KEY_B) & _M32
    return c0, c1, c2, c3


def _check_seed(seed, offset):
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise TypeError(f"seed must be an int in [0, 2**63), got {seed!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < 2**32:
        raise TypeError(f"offset must be an int in [0, 2**32), got {offset!r}")


def uniform(seed: int, offset: int, row, stream_node, slot) -> torch.Tensor:
    """Float32 uniforms in (0, 1) at the given counters (broadcast int64 tensors)."""
    _check_seed(seed, offset)
    x, _, _, _ = philox4x32(seed, offset, row, stream_node, slot)
    return ((x >> 9) * 2 + 1).to(torch.float32) * (2.0**-24)


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log(u))`` in float32."""
    u = u.to(torch.float32)
    return -torch.log(-torch.log(u))


def gumbel_noise(seed: int, offset: int, rows: int, vocab: int, *, row_start: int = 0, device=None) -> torch.Tensor:
    """The ``GUMBEL`` stream as a ``[rows, vocab]`` float32 tensor (sampling, beam step)."""
    r = torch.arange(row_start, row_start + rows, dtype=torch.int64)[:, None]
    x = torch.arange(vocab, dtype=torch.int64)[None, :]
    return gumbel_from_uniform(uniform(seed, offset, r, STREAM_GUMBEL, x)).to(device)


def verify_noise(seed: int, offset: int, batch: int, nodes: int, vocab: int, *, device=None):
    """The verifier's streams: ``uniform [batch, nodes]`` and ``gumbel [batch, vocab]``."""
    if nodes - 1 > MAX_NODE:
        raise ValueError(f"at most {MAX_NODE + 1} nodes per tree, got {nodes}")
    r = torch.arange(batch, dtype=torch.int64)[:, None]
    u = uniform(seed, offset, r, STREAM_ACCEPT | torch.arange(nodes, dtype=torch.int64)[None, :], 0)
    g = gumbel_from_uniform(uniform(seed, offset, r, STREAM_RESIDUAL, torch.arange(vocab, dtype=torch.int64)[None, :]))
    return u.to(device), g.to(device)
