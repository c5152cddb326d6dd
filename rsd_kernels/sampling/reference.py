"""PyTorch reference for Gumbel-top-k sampling and the RSD-S stochastic beam step (SPEC 2, 4).

These functions take already-validated arguments (see ``rsd_kernels.sampling``) and are the
ground truth for the Triton and CUDA kernels. Noise arrives either explicitly or as
``(seed, offset)`` for the shared Philox streams of :mod:`rsd_kernels.noise`.
"""
from __future__ import annotations

import torch

from .. import noise as _noise


def _compute_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def sample_topk(logits, k, kmax: int, temperature: float, gumbel=None, seed=None, offset=0):
    """Gumbel-top-k without replacement per row.

    Args:
        logits: ``[R, V]`` (already top-k/top-p warped if wanted; ``-inf`` = probability 0).
        k: ``[R]`` int32, samples per row (``1 <= k <= kmax``).
        temperature: ``> 0`` samples; ``0`` takes the k largest logits (no noise).
        gumbel: ``[R, V]`` float32 explicit noise, or ``None`` with ``seed``.

    Returns ``(tokens [R, kmax] int64, logprobs [R, kmax] float32, num [R] int32)``: tokens in
    sampling order (descending perturbed logit), ``-1`` past ``num = min(k, support)``;
    ``logprobs`` are the log-probabilities of the temperature-warped distribution (of the
    raw logits when ``temperature == 0``), ``-inf`` on padding.
    """
    R, V = logits.shape
    dt = _compute_dtype(logits)
    scaled = logits.to(dt) / (temperature if temperature > 0 else 1.0)
    logp = torch.log_softmax(scaled, dim=-1)
    finite = torch.isfinite(scaled)
    if temperature > 0:
        if gumbel is None:  # drawn only where it is read (finite logits)
            gumbel = _noise.gumbel_noise(seed, offset, R, V, device=logits.device, where=finite)
        score = scaled + gumbel.to(dt)
    else:
        score = scaled
    score = torch.where(finite, score, float("-inf"))
    top = torch.topk(score, kmax, dim=-1, sorted=True)  # ties (measure zero) by index
    support = finite.sum(-1)
    num = torch.minimum(k.long(), support)
    keep = torch.arange(kmax, device=logits.device)[None, :] < num[:, None]
    tokens = torch.where(keep, top.indices, -1)
    lp = torch.where(keep, logp.gather(1, top.indices), float("-inf")).to(torch.float32)
    return tokens, lp, num.to(torch.int32)


def truncated_gumbel(G_parent, g, Z):
    """``-log(exp(-G) - exp(-Z) + exp(-g))`` in the stable form of SPEC section 4.

    Broadcasts; entries with ``g = -inf`` give ``-inf``. The child attaining ``Z`` gets ``G``.
    """
    w = G_parent - g + torch.log1p(-torch.exp(g - Z))
    out = G_parent - torch.clamp(w, min=0) - torch.log1p(torch.exp(-torch.abs(w)))
    return torch.where(torch.isfinite(g), out, float("-inf"))


def beam_candidates(logits, phi, G, temperature: float, gumbel=None, seed=None, offset=0):
    """Per-beam candidate scores of one stochastic-beam-search level.

    ``logits [B, N, V]``, ``phi [B, N]`` (``-inf`` marks an inactive beam), ``G [B, N]``.
    Returns ``(phi_c, G_c)``, both ``[B, N, V]``; impossible candidates are ``-inf``.
    Noise: the GUMBEL stream at row ``b * N + n``.
    """
    B, N, V = logits.shape
    dt = _compute_dtype(logits)
    lq = torch.log_softmax(logits.to(dt) / temperature, dim=-1)
    phi = phi.to(dt)
    active = torch.isfinite(phi)[..., None]
    phi_c = torch.where(active, phi[..., None] + lq, float("-inf"))
    possible = torch.isfinite(phi_c)
    if gumbel is None:  # drawn only where it is read (possible candidates)
        gumbel = _noise.gumbel_noise(seed, offset, B * N, V, device=logits.device,
                                     where=possible.reshape(B * N, V)).view(B, N, V)
    g = torch.where(possible, phi_c + gumbel.to(dt), float("-inf"))
    Z = g.max(dim=-1, keepdim=True).values
    Gc = truncated_gumbel(G.to(dt)[..., None], g, torch.where(active, Z, 0.0))
    return phi_c, Gc


def beam_step(logits, phi, G, width: int, temperature: float, gumbel=None, seed=None, offset=0):
    """One level of RSD-S: the global top-``width`` candidates by truncated Gumbel.

    Returns ``(parent [B, W] int64, token [B, W] int64, phi [B, W], G [B, W])`` sorted by G
    descending; slots beyond the number of possible candidates hold ``-1`` / ``-inf``.
    """
    B, N, V = logits.shape
    phi_c, Gc = beam_candidates(logits, phi, G, temperature, gumbel, seed, offset)
    top = torch.topk(Gc.reshape(B, N * V), width, dim=-1, sorted=True)
    ok = torch.isfinite(top.values)
    parent = torch.where(ok, top.indices // V, -1)
    token = torch.where(ok, top.indices % V, -1)
    phi_sel = torch.where(ok, phi_c.reshape(B, N * V).gather(1, top.indices), float("-inf"))
    return parent, token, phi_sel, top.values
