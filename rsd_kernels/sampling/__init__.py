"""Public sampling ops: Gumbel-top-k without replacement and the RSD-S beam step."""
from __future__ import annotations

from typing import NamedTuple

import torch

from .. import backends, checks
from .. import noise as _noise_streams
from ..warp import needs_warp, warp_logits


class SampleResult(NamedTuple):
    tokens: torch.Tensor  # [R, kmax] int64 in sampling order, -1 past num_sampled
    logprobs: torch.Tensor  # [R, kmax] float32 log-probability of each token under the warped q
    num_sampled: torch.Tensor  # [R] int32 = min(k, support)


class BeamStepResult(NamedTuple):
    parent: torch.Tensor  # [B, W] int64 beam each selected candidate extends, -1 if none
    tokens: torch.Tensor  # [B, W] int64 its token, -1 if none
    phi: torch.Tensor  # [B, W] log-probability of the extended sequence
    G: torch.Tensor  # [B, W] its truncated Gumbel (descending), -inf if none


def _noise(name, gumbel, seed, generator, shape, device, validate):
    checks.noise_source(explicit={name: gumbel}, seed=seed, generator=generator)
    if gumbel is not None:
        checks.tensor(name, gumbel, ndim=len(shape), dtypes=(torch.float32, torch.float64), device=device, shape=shape)
        if validate and not torch.isfinite(gumbel).all():
            raise ValueError(f"{name} must be finite")
        return gumbel.float().contiguous()
    if seed is None:
        return _noise_streams.gumbel_from_uniform(_noise_streams.generator_uniform(shape, generator, device))
    return None


def sample_without_replacement(logits, k, *, temperature=1.0, top_k=None, top_p=None, gumbel=None, seed=None,
                               offset=0, generator=None, validate=True, backend="auto") -> SampleResult:
    """Draw ``k`` distinct tokens per row from ``softmax(warp(logits))`` in sampling order.

    Args:
        logits: ``[R, V]`` float logits (``-inf`` = probability 0).
        k: an int, or an ``[R]`` integer tensor (per-row k), each in ``[1, V]``.
        temperature: ``> 0`` samples; ``0`` returns the k largest logits in order.
        top_k, top_p: optional warps (applied before sampling).
        gumbel: explicit ``[R, V]`` Gumbel noise; or ``seed``/``offset`` (the Philox GUMBEL
            stream, row r uses counter row r); or ``generator``; or none (global RNG).
    Rows whose support is smaller than k return fewer tokens: ``num_sampled`` says how many.
    """
    checks.tensor("logits", logits, ndim=2, dtypes=checks.FLOAT_DTYPES)
    R, V = logits.shape
    dev = logits.device
    if isinstance(k, torch.Tensor):
        checks.tensor("k", k, ndim=1, dtypes=(torch.int32, torch.int64), device=dev, shape=(R,))
        kmin, kmax = (int(k.min()), int(k.max())) if R else (1, 1)
        kt = k.to(torch.int32)
    else:
        kmin = kmax = checks.positive_int("k", k)
        kt = torch.full((R,), k, dtype=torch.int32, device=dev)
    if kmin < 1:
        raise ValueError(f"k must be >= 1, got min(k)={kmin}")
    if kmax > V:
        raise ValueError(f"k={kmax} is larger than the vocabulary ({V} tokens)")
    temperature = checks.temperature(temperature)
    if validate:
        checks.finite_logits("logits", logits)
    if temperature > 0 and needs_warp(top_k, top_p):
        logits, temperature = warp_logits(logits, temperature, top_k, top_p), 1.0
    noise = _noise("gumbel", gumbel, seed, generator, (R, V), dev, validate) if temperature > 0 else None
    _, impl = backends.resolve("sample_without_replacement", backend, dev)
    return SampleResult(*impl(logits.contiguous(), kt, kmax, float(temperature), gumbel=noise,
                              seed=seed if noise is None else None, offset=offset))


def stochastic_beam_step(logits, phi, G, width, *, temperature=1.0, top_k=None, top_p=None, gumbel=None, seed=None,
                         offset=0, generator=None, validate=True, backend="auto") -> BeamStepResult:
    """One level of stochastic beam search (Kool et al. 2019), as RSD-S builds its tree.

    Args:
        logits: ``[B, N, V]`` draft logits of the N current beams of each row.
        phi: ``[B, N]`` log-probabilities of the beams' sequences (``-inf`` = no beam).
        G: ``[B, N]`` the beams' truncated Gumbels (0 at the root).
        width: W, the number of candidates kept per row (the next level's beams).
        gumbel: explicit ``[B, N, V]`` noise, or ``seed``/``offset`` (GUMBEL stream at row
            ``b * N + n``), or ``generator``, or none.
    Returns the global top-W candidates by ``G_c`` (descending), see :class:`BeamStepResult`.
    """
    checks.tensor("logits", logits, ndim=3, dtypes=checks.FLOAT_DTYPES)
    B, N, V = logits.shape
    dev = logits.device
    checks.tensor("phi", phi, ndim=2, dtypes=checks.FLOAT_DTYPES, device=dev, shape=(B, N))
    checks.tensor("G", G, ndim=2, dtypes=checks.FLOAT_DTYPES, device=dev, shape=(B, N))
    checks.positive_int("width", width)
    if width > N * V:
        raise ValueError(f"width={width} exceeds the {N * V} candidates (beams x vocabulary)")
    temperature = checks.temperature(temperature, allow_zero=False)
    active = torch.isfinite(phi)
    if validate:
        if torch.isnan(phi).any() or torch.isposinf(phi).any():
            raise ValueError("phi must be finite for active beams and -inf for inactive ones")
        if not torch.isfinite(G[active]).all():
            raise ValueError("G must be finite for active beams")
        if not active.any(1).all():
            raise ValueError("every row needs at least one active beam (finite phi)")
        checks.finite_logits("logits", logits, rows_mask=active)
    if needs_warp(top_k, top_p):
        logits, temperature = warp_logits(logits, temperature, top_k, top_p), 1.0
    noise = _noise("gumbel", gumbel, seed, generator, (B, N, V), dev, validate)
    _, impl = backends.resolve("stochastic_beam_step", backend, dev)
    return BeamStepResult(*impl(logits.contiguous(), phi.contiguous(), G.contiguous(), width, float(temperature),
                                gumbel=noise, seed=seed if noise is None else None, offset=offset))
