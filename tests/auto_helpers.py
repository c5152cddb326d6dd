"""Helpers of the method="auto" tests: synthetic cost profiles and a selector that is told what to run."""
from __future__ import annotations

import itertools

from rsd.engine.profile import CostProfile
from rsd.engine.selector import Choice

NS = [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64]
WS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]


def synthetic_profile(target_ratio, *, t1=0.05, draft_ratio=0.05, draft_growth=0.0, ns=NS) -> CostProfile:
    """A profile whose target forward over n tokens costs ``t1 * target_ratio(n)`` (the same at
    every context) and whose draft level over w nodes ``t1 * draft_ratio * (1 + draft_growth * (w - 1))``."""
    ts = [t1 * target_ratio(n) for n in ns]
    ctx_n = [n for n in (1, 2, 4, 8, 16, 32, 64) if n in ns]
    return CostProfile(key={"synthetic": True}, target_n=list(ns), target_s=ts, contexts=[128, 512],
                       target_ctx_n=ctx_n, target_ctx_s=[t1 * target_ratio(n) for n in ctx_n], ar_s=[t1, t1],
                       draft_w=list(WS), draft_s=[t1 * draft_ratio * (1 + draft_growth * (w - 1)) for w in WS])


class ForcedSelector:
    """A stand-in for :class:`rsd.engine.selector.Selector` that runs the given configurations in
    turn (None: a target-only step), optionally with padded verification rows; it records what it
    was told by the loop."""

    def __init__(self, configs, pad: int = 0):
        self.cycle = itertools.cycle(configs)
        self.pad = pad
        self.records = []
        self.chosen = []

    def choose(self, ctx, pending=0, max_depth=None):
        cfg = next(self.cycle)
        if cfg is not None and max_depth is not None and cfg.depth > max_depth:
            cfg = None
        rows = 1 if cfg is None else cfg.budget + 1 + self.pad
        self.chosen.append(cfg)
        return Choice(cfg, rows, 0.0, 1.0, "forced")

    def record(self, choice, stats, **kw):
        self.records.append((choice, stats, kw))
