"""A model behind a batched in-place KV cache: :class:`BatchModel` (a :class:`ModelAdapter`'s model
driven with a :class:`~rsd.engine.kvcache.BatchKVBuffer`) and :func:`batch_mask`, the ragged batch's
attention mask. Used by the batched loop (:mod:`rsd.engine.batched`) and the cost profile
(:mod:`rsd.engine.profile`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .kvcache import BatchKVBuffer

if TYPE_CHECKING:
    from .adapter import ModelAdapter


class BatchModel:
    """A :class:`ModelAdapter`'s model driven with a :class:`BatchKVBuffer` (batched forwards)."""

    def __init__(self, adapter: ModelAdapter, batch: int, capacity: int):
        self.ad = adapter
        self.device, self.dtype = adapter.device, adapter.dtype
        self.vocab_size = adapter.vocab_size
        self.max_positions = adapter.max_positions
        self.cache = BatchKVBuffer(adapter.num_layers, batch, capacity)

    @property
    def lengths(self) -> list[int]:
        return self.cache.lengths

    def _lens(self):
        return torch.tensor(self.cache.lengths, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def run(self, tokens, positions, write_slots, allowed, counts, logits_to_keep=0, **extra):
        """Feed ``tokens [B, n]`` at ``positions`` into ``write_slots``; ``allowed [B, n, S]`` bool
        (``S = max(write_slots) + 1``) or None (the "rsd" tree-attention path). Returns fp32 logits."""
        if self.max_positions is not None:
            positions = positions.clamp(max=self.max_positions - 1)
        S = int(write_slots.max()) + 1
        self.cache.reserve(S)
        self.cache.write_slots = write_slots.to(self.device, torch.long)
        mask = None if allowed is None else self.ad._mask(allowed)
        # with feature capture on (EAGLE), self.ad.features = [B, n, W] afterwards
        logits = self.ad._call(tokens, positions.to(self.device), mask, self.cache, logits_to_keep, **extra)
        self.cache.advance(counts)
        self.cache.write_slots = None
        return logits


def batch_mask(P, start, local, qreal, S):
    """``allowed [B, n, S]``: real queries see keys ``< P[b]``; every query sees the region keys
    ``start[b] + j`` where ``local[b, i, j]``."""
    B, n, m = local.shape
    dev = local.device
    k = torch.arange(S, device=dev)
    pre = (k[None, None, :] < P[:, None, None]) & qreal[:, :, None]
    rel = k[None, :] - start[:, None]
    valid = (rel >= 0) & (rel < m)
    loc = local.gather(2, rel.clamp(0, m - 1)[:, None, :].expand(B, n, S)) & valid[:, None, :]
    return pre | loc
