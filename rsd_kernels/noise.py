"""The one definition of randomness shared by every backend.

Every random number is Philox4x32-10 (the generator Triton's ``tl.philox`` implements)
keyed by ``seed`` (64 bit) at the counter ``(offset, row, stream | node, slot)``; only
output lane 0 is used. A result therefore depends on (seed, offset, row, node, slot) and
not on launch shape or on the other rows' contents. ``row`` is the row's **index** in the
batch: at a fixed index a row's result is independent of its neighbours, but the same row
at another index draws other noise (each draw is exact either way). The streams:

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

import numpy as np
import torch

STREAM_ACCEPT = 1 << 24
STREAM_RESIDUAL = 2 << 24
STREAM_GUMBEL = 3 << 24
MAX_NODE = (1 << 24) - 1

_M32 = 0xFFFFFFFF
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57


def philox4x32(seed: int, c0, c1, c2, c3, rounds: int = 10, *, numpy: bool = False):
    """Philox4x32 on (broadcast) integer counters holding uint32 values.

    Returns the four output lanes as int64 tensors (values in ``[0, 2**32)``). Computed with
    numpy's uint64 arithmetic: a product of two 32-bit words is exact in 64 bits. The same numbers
    come from C++ when :mod:`rsd_kernels.cpu_philox` could be built (``numpy=True``: NumPy always).
    """
    if rounds == 10 and not numpy:
        from . import cpu_philox

        fast = cpu_philox.philox4x32(seed, [torch.as_tensor(c, dtype=torch.int64).cpu() for c in (c0, c1, c2, c3)])
        if fast is not None:
            return fast
    seed = int(seed)
    k0, k1 = np.uint64(seed & _M32), np.uint64((seed >> 32) & _M32)
    m32, s32 = np.uint64(_M32), np.uint64(32)
    ra, rb = np.uint64(_ROUND_A), np.uint64(_ROUND_B)
    ka, kb = np.uint64(_KEY_A), np.uint64(_KEY_B)
    cs = [torch.as_tensor(c, dtype=torch.int64).cpu().numpy().astype(np.uint64) & m32 for c in (c0, c1, c2, c3)]
    c0, c1, c2, c3 = np.broadcast_arrays(*cs)
    for _ in range(rounds):
        pb, pa = rb * c2, ra * c0
        c0, c1, c2, c3 = (pb >> s32) ^ c1 ^ k0, pb & m32, (pa >> s32) ^ c3 ^ k1, pa & m32
        k0, k1 = (k0 + ka) & m32, (k1 + kb) & m32
    return tuple(torch.from_numpy(np.asarray(c, dtype=np.int64)) for c in (c0, c1, c2, c3))


def check_seed(seed, offset):
    """TypeError unless seed is an int in [0, 2**63) and offset an int in [0, 2**32)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise TypeError(f"seed must be an int in [0, 2**63), got {seed!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < 2**32:
        raise TypeError(f"offset must be an int in [0, 2**32), got {offset!r}")


def uniform(seed: int, offset: int, row, stream_node, slot) -> torch.Tensor:
    """Float32 uniforms in (0, 1) at the given counters (broadcast int64 tensors)."""
    check_seed(seed, offset)
    x, _, _, _ = philox4x32(seed, offset, row, stream_node, slot)
    return ((x >> 9) * 2 + 1).to(torch.float32) * (2.0**-24)


def generator_uniform(shape, generator=None, device=None) -> torch.Tensor:
    """Float32 uniforms from a ``torch.Generator`` (or the global RNG), clamped into
    ``[2**-24, 1 - 2**-24]`` like the Philox streams: the ``generator=`` path of every op."""
    lo = 2.0**-24
    return torch.rand(*shape, generator=generator, device=device).clamp_(lo, 1 - lo)


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log(u))`` in float32."""
    u = u.to(torch.float32)
    return -torch.log(-torch.log(u))


def gumbel_noise(seed: int, offset: int, rows: int, vocab: int, *, row_start: int = 0, device=None,
                 where: torch.Tensor | None = None) -> torch.Tensor:
    """The ``GUMBEL`` stream as a ``[rows, vocab]`` float32 tensor (sampling, beam step).

    ``where`` (bool ``[rows, vocab]``): draw only those entries (the same values as without it)
    and leave the others 0 -- for logits that are ``-inf`` outside a restricted vocabulary,
    whose noise is never read.
    """
    if where is not None and not bool(where.all()):
        r, x = where.reshape(rows, vocab).cpu().nonzero(as_tuple=True)  # drawn on the CPU, like the full stream
        out = torch.zeros(rows, vocab, dtype=torch.float32)
        out[r, x] = gumbel_at(seed, offset, r + row_start, x)
        return out.to(device)
    r = torch.arange(row_start, row_start + rows, dtype=torch.int64)[:, None]
    x = torch.arange(vocab, dtype=torch.int64)[None, :]
    return gumbel_from_uniform(uniform(seed, offset, r, STREAM_GUMBEL, x)).to(device)


def gumbel_at(seed: int, offset: int, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The ``GUMBEL`` stream at the entries ``(rows[i], tokens[i])`` (1-D int64, row-major order when
    they come from a mask): the values :func:`gumbel_noise` puts there, without the dense tensor."""
    return gumbel_from_uniform(uniform(seed, offset, rows, STREAM_GUMBEL, tokens))


def verify_noise(seed: int, offset: int, batch: int, nodes: int, vocab: int, *, device=None):
    """The verifier's streams: ``uniform [batch, nodes]`` and ``gumbel [batch, vocab]``."""
    if nodes - 1 > MAX_NODE:
        raise ValueError(f"at most {MAX_NODE + 1} nodes per tree, got {nodes}")
    r = torch.arange(batch, dtype=torch.int64)[:, None]
    u = uniform(seed, offset, r, STREAM_ACCEPT | torch.arange(nodes, dtype=torch.int64)[None, :], 0)
    g = gumbel_from_uniform(uniform(seed, offset, r, STREAM_RESIDUAL, torch.arange(vocab, dtype=torch.int64)[None, :]))
    return u.to(device), g.to(device)
