"""Merge of per-beam Gumbel-top-k candidates into one stochastic-beam-search level.

A kernel backend may compute, for every beam, its ``K = min(width, V)`` best candidates by
perturbed score ``lq + gumbel`` (one Gumbel-top-k launch over the ``B * N`` beam rows) and
leave the global selection to :func:`merge_beam_candidates`. That is exact: ``G_c`` is
increasing in ``g_c = phi + lq(c) + gumbel(c)`` for a fixed beam, so a beam's top-``width``
by ``G_c`` are its top-``width`` by perturbed score, and the global top-``width`` lies in the
union of the per-beam ones. The arithmetic below is :func:`reference.beam_candidates` /
:func:`reference.beam_step` restricted to those candidates.
"""
from __future__ import annotations

import torch

from .reference import truncated_gumbel


def merge_beam_candidates(tokens, logprobs, noise, phi, G, width: int):
    """Global top-``width`` of the per-beam candidates by truncated Gumbel.

    Args:
        tokens: ``[B, N, K]`` int64 each beam's candidates in descending perturbed score
            (``-1`` where a beam has fewer than K tokens with positive probability).
        logprobs: ``[B, N, K]`` their ``log q`` (``-inf`` on padding), compute dtype.
        noise: ``[B, N, K]`` float32 their Gumbel noise.
        phi, G: ``[B, N]`` the beams' log-probabilities (``-inf``: inactive) and truncated Gumbels.
    Returns ``(parent, token, phi, G)`` as :func:`reference.beam_step`.
    """
    B, N, K = tokens.shape
    dt = logprobs.dtype
    phi_d = phi.to(dt)[..., None]
    active = torch.isfinite(phi_d)
    phi_c = torch.where(active, phi_d + logprobs, float("-inf"))
    g = torch.where(torch.isfinite(phi_c), phi_c + noise.to(dt), float("-inf"))
    Z = g.max(dim=-1, keepdim=True).values  # the beam's largest perturbed score is among its candidates
    Gc = truncated_gumbel(G.to(dt)[..., None], g, torch.where(active, Z, 0.0))
    top = torch.topk(Gc.reshape(B, N * K), int(width), dim=-1, sorted=True)
    ok = torch.isfinite(top.values)
    parent = torch.where(ok, top.indices // K, -1)
    token = torch.where(ok, tokens.reshape(B, N * K).gather(1, top.indices), -1)
    phi_sel = torch.where(ok, phi_c.reshape(B, N * K).gather(1, top.indices), float("-inf"))
    return parent, token, phi_sel, top.values
