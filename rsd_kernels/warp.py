"""Sampling warps: temperature, top-k, top-p. Draft and target must be warped identically.

Warped logits keep ``-inf`` for tokens the warps remove, so every op downstream gives them
probability exactly 0. Kernels only implement the temperature; top-k/top-p are applied here
(once, in torch) before a kernel runs.
"""
from __future__ import annotations

import torch

from . import checks


def warp_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    """Return ``logits / temperature`` with tokens outside top-k / top-p set to ``-inf``.

    ``top_k`` keeps the k largest logits per row (ties at the boundary are all kept);
    ``top_p`` keeps the smallest set of most likely tokens whose probability reaches
    ``top_p`` (always at least one). Computed in float32, or float64 for float64 input.
    """
    checks.tensor("logits", logits, dtypes=checks.FLOAT_DTYPES)
    t = checks.temperature(temperature, allow_zero=False)
    dt = torch.float64 if logits.dtype == torch.float64 else torch.float32
    out = logits.to(dt) / t
    V = out.shape[-1]
    if top_k is not None:
        checks.positive_int("top_k", top_k)
        if top_k < V:
            kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
            out = out.masked_fill(out < kth, float("-inf"))
    if top_p is not None:
        checks.top_p(top_p)
        if top_p < 1:
            sorted_l, order = torch.sort(out, dim=-1, descending=True)
            probs = torch.softmax(sorted_l, dim=-1)
            before = torch.cumsum(probs, dim=-1) - probs  # mass strictly before each token
            drop_sorted = before >= top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            out = out.masked_fill(drop, float("-inf"))
    return out


def needs_warp(top_k, top_p) -> bool:
    return top_k is not None or (top_p is not None and top_p != 1)
