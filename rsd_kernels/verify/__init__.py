"""``verify_tree``: validate, warp, draw noise if asked, dispatch to a backend."""
from __future__ import annotations

from typing import NamedTuple

import torch

from .. import backends, checks, noise
from ..tree import DraftTree
from ..warp import needs_warp, warp_logits
from .expected_length import AcceptanceLaw, acceptance_law, expected_accepted_length
from .traversal_reference import check_siblings_distinct

MODES = ("rrs", "kseq", "greedy", "traversal")


class VerifyResult(NamedTuple):
    path: torch.Tensor  # [B, max_depth + 1] int64 node indices from the root, -1 padded
    num_accepted: torch.Tensor  # [B] int64 accepted draft tokens (path length - 1)
    next_token: torch.Tensor  # [B] int64 correction or bonus token


def verify_tree(target_logits, draft_logits, tokens, parents=None, *, mode="rrs", temperature=1.0,
                top_k=None, top_p=None, num_nodes=None, uniform=None, gumbel=None, seed=None, offset=0,
                generator=None, validate=True, backend="auto") -> VerifyResult:
    """Verify a draft tree against the target and return the accepted path and next token.

    Args:
        target_logits: ``[B, T, V]`` target logits at every node (the distribution of the
            node's children), fp16/bf16/fp32/fp64.
        draft_logits: ``[B, T, V]`` draft logits at every node (same warps); ``None`` allowed
            only for ``mode="greedy"``.
        tokens, parents: the tree (``[B, T]`` int64 / int32), or a :class:`DraftTree` as
            ``tokens`` with ``parents=None``. ``num_nodes [B]`` int32 for ragged rows.
        mode: ``"rrs"`` (SD, RSD-C, RSD-S), ``"kseq"`` (SpecTr), ``"traversal"`` (Traversal
            Verification: exact for siblings drawn without replacement -- SD, RSD-C, RSD-S and
            merged SpecTr trees -- and never accepting less than ``rrs`` in expectation on a
            chain; see :mod:`rsd_kernels.verify.traversal_reference`) or ``"greedy"``. Greedy: a
            node matches when its token is the target's argmax at its parent (lowest index on
            ties); the accepted path is the longest root path of matching nodes, among equally
            long ones the first in sampling order (so a deeper match under a later sibling
            holding the same token is kept); the next token is the argmax at its last node.
        temperature: ``> 0`` for rrs/kseq (temperature 0 is ``mode="greedy"``).
        top_k, top_p: optional warps, applied to target and draft logits alike.
        uniform, gumbel: explicit noise, ``[B, T]`` and ``[B, V]`` (see
            :func:`rsd_kernels.noise.verify_noise`); or ``seed``/``offset`` for the Philox
            streams (keyed by the row's index in the batch: a row's result does not depend on
            the other rows, but does on its position); or ``generator``; or none of them
            (torch's global generator).
        validate: also run the data-dependent checks (NaN/inf logits, tree order, token
            range). Shape, dtype and device checks always run.
        backend: ``"auto"``, ``"torch"``, ``"triton"`` or ``"cuda"``. The Triton kernel takes
            trees of at most 256 nodes.
    """
    checks.tensor("target_logits", target_logits, ndim=3, dtypes=checks.FLOAT_DTYPES)
    B, T, V = target_logits.shape
    dev = target_logits.device
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(tokens, DraftTree):
        if parents is not None or num_nodes is not None:
            raise ValueError("pass either a DraftTree as tokens, or tokens + parents (+ num_nodes)")
        tree = tokens
        if validate:
            DraftTree(tree.tokens, tree.parents, tree.num_nodes, vocab_size=V)
    else:
        if parents is None:
            raise TypeError("parents is required when tokens is a tensor")
        checks.tensor("tokens", tokens, ndim=2, dtypes=(torch.int64,), device=dev, shape=(B, T))
        tree = DraftTree(tokens, parents, num_nodes, vocab_size=V if validate else None)
    checks.tensor("tokens", tree.tokens, device=dev, shape=(B, T))
    greedy = mode == "greedy"
    if greedy:
        if draft_logits is not None:
            checks.tensor("draft_logits", draft_logits, ndim=3, dtypes=checks.FLOAT_DTYPES, device=dev, shape=(B, T, V))
        checks.temperature(temperature)
    else:
        if draft_logits is None:
            raise TypeError(f"draft_logits is required for mode={mode!r}")
        checks.tensor("draft_logits", draft_logits, ndim=3, dtypes=checks.FLOAT_DTYPES, device=dev, shape=(B, T, V))
        temperature = checks.temperature(temperature)
        if temperature == 0:
            raise ValueError(f"temperature=0 means greedy decoding: use mode='greedy', not mode={mode!r}")
    if validate:
        if mode == "traversal":
            check_siblings_distinct(tree)
        checks.finite_logits("target_logits", target_logits, rows_mask=tree.valid)
        if not greedy:
            checks.finite_logits("draft_logits", draft_logits, rows_mask=tree.valid)
    if not greedy and needs_warp(top_k, top_p):
        target_logits = warp_logits(target_logits, temperature, top_k, top_p)
        draft_logits = warp_logits(draft_logits, temperature, top_k, top_p)
        temperature = 1.0
    checks.noise_source(explicit={"uniform": uniform, "gumbel": gumbel}, seed=seed, generator=generator)
    if not greedy:
        if uniform is not None:
            checks.tensor("uniform", uniform, ndim=2, dtypes=(torch.float32, torch.float64), device=dev, shape=(B, T))
            checks.tensor("gumbel", gumbel, ndim=2, dtypes=(torch.float32, torch.float64), device=dev, shape=(B, V))
            if validate and (((uniform <= 0) | (uniform >= 1)).any() or not torch.isfinite(gumbel).all()):
                raise ValueError("uniform must lie in the open interval (0, 1) and gumbel must be finite")
        elif seed is None:
            uniform = noise.generator_uniform((B, T), generator, dev)
            gumbel = noise.gumbel_from_uniform(noise.generator_uniform((B, V), generator, dev))
        if uniform is not None:
            uniform, gumbel = uniform.float().contiguous(), gumbel.float().contiguous()
    _, impl = backends.resolve("verify_tree", backend, dev)
    path, nacc, nxt = impl(
        target_logits.contiguous(), None if draft_logits is None else draft_logits.contiguous(),
        tree.tokens.contiguous(), tree.parents.contiguous(), tree.num_nodes.contiguous(), mode,
        float(temperature), tree.max_depth, uniform=uniform, gumbel=gumbel,
        seed=None if uniform is not None else seed, offset=offset,
    )
    return VerifyResult(path, nacc, nxt)
