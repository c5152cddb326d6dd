"""PyTorch reference for Gumbel-top-k sampling and the RSD-S stochastic beam step (SPEC 2, 4).

These functions take already-validated arguments (see ``rsd_kernels.sampling``) and are the
ground truth for the Triton and CUDA kernels. Noise arrives either explicitly or as
``(seed, offset)`` for the shared Philox streams of :mod:`rsd_kernels.noise`.

**Sparse rows.** When most logits are ``-inf`` (a restricted-head draft: 8192 of 49152 tokens),
:func:`sample_topk` (sampling) and :func:`beam_step` do their per-candidate work on the finite
entries only (:data:`SPARSE_BELOW`): the same noise values (the stream drawn where it is read), the
same formulas on the same values, the same top-k -- only the entries that cannot be chosen are
skipped. Elementwise transcendental ops run on arrays padded to :data:`PAD` elements so every entry
takes torch's vectorised path, as it does in the dense layout. Tests check both paths token for token.
"""
from __future__ import annotations

import torch

from .. import noise as _noise


SPARSE_BELOW = 0.5  # finite fraction of the logits under which the sparse paths are taken
PAD = 64  # sparse elementwise arrays are padded to a multiple of this many entries


def _compute_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _sparse(finite: torch.Tensor) -> bool:
    return finite.numel() >= 4096 and int(finite.sum()) < SPARSE_BELOW * finite.numel()


def _pad(x: torch.Tensor, value: float) -> torch.Tensor:
    extra = -x.numel() % PAD
    return torch.cat([x, x.new_full((extra,), value)]) if extra else x


def _rowwise_topk(rows, values, cols, R, k):
    """Top-``k`` per row of the sparse entries ``(rows[i], cols[i], values[i])`` (row-major order):
    ``(values [R, k], cols [R, k])``, ``-inf`` / ``0`` where a row has fewer entries; ties (measure
    zero) as ``torch.topk`` on the dense row, whose column order the packing keeps."""
    if R == 1:  # one row: the packed entries are the row
        v = values if values.numel() >= k else torch.cat([values, values.new_full((k - values.numel(),), float("-inf"))])
        c = cols if cols.numel() >= k else torch.cat([cols, cols.new_zeros(k - cols.numel())])
        top = torch.topk(v, k, sorted=True)
        return top.values[None], c[top.indices][None]
    counts = torch.bincount(rows, minlength=R)
    M = max(int(counts.max()) if R else 0, k)
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(rows.numel(), device=rows.device) - start[rows]
    dense_v = values.new_full((R, M), float("-inf"))
    dense_v[rows, pos] = values
    dense_c = torch.zeros(R, M, dtype=torch.long, device=rows.device)
    dense_c[rows, pos] = cols
    top = torch.topk(dense_v, k, dim=-1, sorted=True)
    return top.values, dense_c.gather(1, top.indices)


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
    if temperature > 0 and _sparse(finite):
        return _sample_topk_sparse(scaled, logp, finite, k, kmax, gumbel, seed, offset)
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


def _sample_topk_sparse(scaled, logp, finite, k, kmax, gumbel, seed, offset):
    """:func:`sample_topk` (temperature > 0) on the finite entries only (see the module docstring)."""
    R, V = scaled.shape
    lin = finite.reshape(-1).nonzero()[:, 0]
    r, x = lin // V, lin % V
    if gumbel is None:  # the stream where it is read, as the dense path draws it
        noise = _noise.gumbel_at(seed, offset, r.cpu(), x.cpu()).to(scaled.device)
    else:
        noise = gumbel.reshape(-1)[lin]
    score = scaled.reshape(-1)[lin] + noise.to(scaled.dtype)
    values, cols = _rowwise_topk(r, score, x, R, kmax)
    num = torch.minimum(k.long(), finite.sum(-1))
    keep = torch.arange(kmax, device=scaled.device)[None, :] < num[:, None]
    tokens = torch.where(keep, cols, -1)
    lp = torch.where(keep, logp.gather(1, cols), float("-inf")).to(torch.float32)
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
    finite = torch.isfinite(logits)
    if _sparse(finite):
        return _beam_step_sparse(logits, phi, G, width, temperature, gumbel, seed, offset, finite)
    phi_c, Gc = beam_candidates(logits, phi, G, temperature, gumbel, seed, offset)
    top = torch.topk(Gc.reshape(B, N * V), width, dim=-1, sorted=True)
    ok = torch.isfinite(top.values)
    parent = torch.where(ok, top.indices // V, -1)
    token = torch.where(ok, top.indices % V, -1)
    phi_sel = torch.where(ok, phi_c.reshape(B, N * V).gather(1, top.indices), float("-inf"))
    return parent, token, phi_sel, top.values


def _beam_step_sparse(logits, phi, G, width, temperature, gumbel, seed, offset, finite):
    """:func:`beam_step` on the possible candidates only (see the module docstring): the same
    ``phi_c``, noise, ``g``, per-beam maximum ``Z`` and truncated Gumbel at every possible
    candidate as :func:`beam_candidates`, the same global top-``width``. ``finite`` = isfinite(logits)."""
    B, N, V = logits.shape
    dt = _compute_dtype(logits)
    lq = torch.log_softmax(logits.to(dt) / temperature, dim=-1)  # finite exactly where the logits are
    phi_d = phi.to(dt)
    possible = finite & torch.isfinite(phi_d)[..., None]  # = isfinite(phi_c) of the dense path
    lin = possible.reshape(-1).nonzero()[:, 0]  # (b, n, v) row-major
    row = lin // V
    if gumbel is None:  # the stream where it is read (GUMBEL row b * N + n, as gumbel_noise(where=possible))
        noise = _noise.gumbel_at(seed, offset, row.cpu(), (lin % V).cpu()).to(logits.device)
    else:
        noise = gumbel.reshape(-1)[lin]
    g = (phi_d.reshape(-1)[row] + lq.reshape(-1)[lin]) + noise.to(dt)
    Z = torch.full((B * N,), float("-inf"), dtype=dt, device=logits.device).scatter_reduce(
        0, row, g, "amax", include_self=True)
    m = g.numel()
    Gc = truncated_gumbel(_pad(G.to(dt).reshape(-1)[row], 0.0), _pad(g, -1.0), _pad(Z[row], 0.0))[:m]
    values, flat = _rowwise_topk(row // N, Gc, lin % (N * V), B, width)
    ok = torch.isfinite(values)
    parent = torch.where(ok, flat // V, -1)
    token = torch.where(ok, flat % V, -1)
    phi_c = phi_d.gather(1, parent.clamp(min=0)) + lq.reshape(B, N * V).gather(1, flat)
    phi_sel = torch.where(ok, phi_c, float("-inf"))
    return parent, token, phi_sel, values
