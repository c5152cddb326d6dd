"""The choice before each block: target-only decoding or which tree (``method="auto"``).

Before block b the :class:`Selector` predicts, for target-only decoding and every candidate
tree (:func:`candidate_configs`: SD chains, RSD-C branching vectors, RSD-S beams and SpecTr
chains up to the profile's node cap), the tokens per second

    rate(c) = E(c) / T(c)

where E(c) is the predicted tokens per block from the online positional acceptance statistics
(:mod:`rsd.engine.acceptance`) and T(c) the predicted block time from the measured cost profile
(:mod:`rsd.engine.profile`):

    T(c) = f_D * [t_D(pending + 1) + sum_levels t_D(width_l)] + f_T * t_T(pad(n_c), ctx) + o(c)

(draft level forwards; the verification forward over the padded row count; the work outside the
forwards ``o(c) = theta . (1, rows sampled x batch, levels)``). The factors f_D, f_T (and f_AR
for target-only steps) are decayed means of realised / profiled forward times: they follow a
machine whose load changes; theta is a decayed ridge regression on the realised outside work,
so sampling overhead is learnt from the blocks (its prior depends on the temperature).

Rule, per block:

* speculate with the best tree only if it beats target-only decoding by :attr:`margin`;
  keep the current tree unless another is better by :attr:`hysteresis`;
* bounded exploration: every :attr:`explore_every`-th block runs the best tree under an
  optimistic (upper-confidence) acceptance instead, when that differs -- statistics of wider
  and deeper trees keep being learnt; in target-only mode the same block runs the best tree
  as a probe, with exponential back-off while probes lose;
* calibration: while speculating, one target-only step after the first :attr:`calibrate_after`
  speculative blocks and then one every :attr:`calibrate_every` blocks measures the realised
  target-only rate (a profile taken on a loaded machine can be off; this step costs at most the
  difference of one block);
* guard: when the realised rate of the last :attr:`guard_window` speculative blocks falls below
  the realised target-only rate by :attr:`margin`, the next blocks run target-only (a cool-down
  that doubles while the guard keeps firing).

Exactness: the choice for block b is a function of blocks before b only (their tokens, timings
and statistics) and of nothing the block itself draws; each block is an exact verification of
the tree it was given; so by induction over blocks the output has exactly the target's
distribution (greedy: exactly the target's tokens), whatever the rule chooses. The loops keep
the Philox counters of every block distinct whatever the tree depth (a running counter of
sampled levels, :mod:`rsd.engine.loop`), so switching trees never reuses noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rsd_kernels.methods import METHODS, TreeConfig

from .acceptance import MAX_DEPTH, MAX_RANK, RANK_RATIO, AcceptanceStats

SD_MAX = 8  # longest SD chain considered
TREE_MAX_DEPTH = 6  # depth cap of the other methods (as rsd_kernels.methods.DEFAULT_MAX_DEPTH)


def candidate_configs(node_cap: int, *, max_depth: int = TREE_MAX_DEPTH, sd_max: int = SD_MAX,
                      methods=METHODS, temperature: float | None = None) -> list[TreeConfig]:
    """Every tree the selector weighs, at most ``node_cap`` draft nodes: SD chains up to
    ``sd_max``; RSD-C non-increasing branching vectors (not all ones: that is SD), RSD-S (W, L)
    and SpecTr (K, L) with depth up to ``max_depth``. At ``temperature`` 0 no SpecTr: its K greedy
    chains are one chain K times (SD with duplicated nodes)."""
    if isinstance(node_cap, bool) or not isinstance(node_cap, int) or node_cap < 1:
        raise ValueError(f"node_cap must be a positive int, got {node_cap!r}")
    if temperature == 0:
        methods = tuple(m for m in methods if m != "spectr")
    out = []
    if "sd" in methods:
        out += [TreeConfig("sd", (L,)) for L in range(1, min(sd_max, node_cap) + 1)]
    if "rsd-c" in methods:
        def rec(prefix, width, used):
            if prefix and max(prefix) > 1:
                out.append(TreeConfig("rsd-c", tuple(prefix)))
            if len(prefix) == max_depth:
                return
            for b in range(1, (prefix[-1] if prefix else node_cap) + 1):
                if used + width * b <= node_cap:
                    rec(prefix + [b], width * b, used + width * b)
        rec([], 1, 0)
    for m in ("rsd-s", "spectr"):
        if m in methods:
            out += [TreeConfig(m, (W, L)) for W in range(2, node_cap + 1) for L in range(1, max_depth + 1)
                    if W * L <= node_cap]
    return out


def _shape_numbers(c: TreeConfig):
    """(rows sampled per block, draft widths of levels 1..L-1) of a configuration."""
    L = c.depth
    if c.method == "sd":
        return L, [1] * (L - 1)
    if c.method == "rsd-c":
        nodes = [1]
        for b in c.shape:
            nodes.append(nodes[-1] * b)
        return sum(nodes[:L]), nodes[1:L]
    W = c.shape[0]
    if c.method == "rsd-s":
        return 1 + W * (L - 1), [W] * (L - 1)
    return W * L, [W] * (L - 1)  # spectr


@dataclass
class Choice:
    """What the selector chose for one block (``config`` None: target only)."""

    config: TreeConfig | None
    rows: int = 1  # verification rows (padded) or 1 for a target-only step
    predicted_s: float = 0.0
    predicted_tokens: float = 1.0
    reason: str = "best"
    index: int = -1  # candidate index

    def to_dict(self) -> dict:
        return {"config": None if self.config is None else str(self.config), "rows": self.rows,
                "predicted_s": self.predicted_s, "predicted_tokens": self.predicted_tokens, "reason": self.reason}


@dataclass
class _Ema:
    value: float
    n: int = 0

    def add(self, x: float, alpha: float):
        self.value = x if self.n == 0 else (1 - alpha) * self.value + alpha * x
        self.n += 1


@dataclass
class Selector:
    """Chooses the tree of every block (see the module docstring).

    Args:
        profile: the :class:`~rsd.engine.profile.CostProfile` of the run's setting (its batch size).
        temperature: the run's temperature (0 = greedy): the prior of the outside work.
        batch: rows decoded together (the batched loop).
        candidates: the trees to weigh (default :func:`candidate_configs` of the profile's node cap).
        stats: the :class:`AcceptanceStats` (default: new, with its prior).
    """

    profile: object
    temperature: float = 0.0
    batch: int = 1
    candidates: list | None = None
    stats: AcceptanceStats | None = None
    margin: float = 0.03
    hysteresis: float = 0.03
    explore_every: int = 16
    optimism: float = 0.5  # exploration: acceptance + optimism / sqrt(counts)
    caution: float = 0.3  # the choice: acceptance - caution / sqrt(counts) (thin counts do not win)
    guard_window: int = 12
    calibrate_after: int = 2
    calibrate_every: int = 32
    alpha: float = 0.2  # weight of a new observation in the timing factors
    theta_decay: float = 0.95
    profile_loader: object = None  # batch size -> CostProfile (the batched loop, when rows leave)

    def __post_init__(self):
        if self.stats is None:
            self.stats = AcceptanceStats()
        if self.candidates is None:
            self.candidates = candidate_configs(self.profile.node_cap, temperature=self.temperature)
        if not self.candidates:
            raise ValueError("candidates is empty")
        cs = self.candidates
        self.L = np.array([c.depth for c in cs])
        self.n = np.array([c.budget + 1 for c in cs])
        nums = [_shape_numbers(c) for c in cs]
        self.R = np.array([r for r, _ in nums], dtype=float)
        D = max(1, int(self.L.max()))
        self.widths = np.zeros((len(cs), D), dtype=int)  # draft widths of levels 1..L-1 (0: none)
        for i, (_, w) in enumerate(nums):
            self.widths[i, :len(w)] = w
        # SD / RSD-C: branching per depth (0 beyond the depth) for the closed form
        self.closed = np.array([c.method in ("sd", "rsd-c") for c in cs])
        self.branch = np.zeros((len(cs), D), dtype=int)
        for i, c in enumerate(cs):
            if c.method == "sd":
                self.branch[i, :c.depth] = 1
            elif c.method == "rsd-c":
                self.branch[i, :c.depth] = np.minimum(c.shape, MAX_RANK)
        self.depth_idx = np.minimum(np.arange(D), MAX_DEPTH - 1)
        self.depth_mask = np.arange(D)[None, :] < self.L[:, None]
        # RSD-S / SpecTr: the candidate's width among the distinct widths of its method
        self.groups = {}
        for m in ("rsd-s", "spectr"):
            idx = np.array([i for i, c in enumerate(cs) if c.method == m], dtype=int)
            if idx.size:
                widths = np.array([cs[i].shape[0] for i in idx])
                uniq, pos = np.unique(widths, return_inverse=True)
                self.groups[m] = (idx, uniq, pos)
        self.index_of = {c: i for i, c in enumerate(cs)}
        self._td = None  # draft level times by width (per profile)
        sampled = self.temperature > 0
        # prior of the outside work (seconds): per block, per sampled row (x batch), per level
        self.theta_prior = np.array([2e-3, 1.5e-3 if sampled else 0.2e-3, 0.5e-3])
        self._M = np.zeros((3, 3))
        self._v = np.zeros(3)
        self._theta = None
        self.f_T, self.f_AR, self.f_D = _Ema(1.0), _Ema(1.0), _Ema(1.0)
        self.o_AR = _Ema(1.0e-3 if sampled else 0.2e-3)
        self.ar_rate = _Ema(0.0)  # realised target-only tokens/s
        self.window: list[tuple[float, float]] = []  # realised (tokens, seconds) of recent speculative blocks
        self.cooldown = 0
        self.cooldown_len = 8
        self.probe_every = self.explore_every
        self.current: int | None = None
        self.blocks = 0
        self.since_ar = 0  # speculative blocks since the last target-only step
        self.seeds: set = set()  # Philox seeds of the runs this state has learnt from (make_selector)
        self._tt_cache: dict = {}
        self._e_cache = None

    def set_batch(self, batch: int) -> None:
        """The batch shrank or grew (rows left): use the profile of that batch size (the
        ``profile_loader``'s, at the next power of two) from now on."""
        if batch == self.batch:
            return
        self.batch = int(batch)
        if self.profile_loader is not None:
            prof = self.profile_loader(pow2(self.batch))
            if prof is not self.profile:
                self.profile = prof
                self._tt_cache.clear()

    # ---- timing model -----------------------------------------------------------------
    def theta(self) -> np.ndarray:
        """The outside-work coefficients (decayed ridge regression towards the prior)."""
        if self._theta is None:
            lam = np.array([4.0, 4.0, 4.0])
            self._theta = np.linalg.solve(self._M + np.diag(lam), self._v + lam * self.theta_prior)
        return self._theta

    def _target_table(self, ctx: int):
        """(padded rows, profiled seconds) for every candidate's row count at ``ctx`` (cached per 32 tokens)."""
        key = ctx // 32
        hit = self._tt_cache.get(key)
        if hit is None:
            p, c = self.profile, key * 32 + 16
            rows = {int(m): p.verify_rows(int(m), c) for m in np.unique(self.n)}
            times = {m: p.target_time(r, c) for m, r in rows.items()}
            hit = (np.array([rows[int(m)] for m in self.n]), np.array([times[int(m)] for m in self.n]))
            if len(self._tt_cache) > 64:
                self._tt_cache.clear()
            self._tt_cache[key] = hit
        return hit

    def expected(self, optimism: float = 0.0) -> np.ndarray:
        """Predicted tokens per block of every candidate (cached while the statistics do not change)."""
        st = self.stats
        key = (id(st), st.version, optimism)
        if self._e_cache is not None and self._e_cache[0] == key:
            return self._e_cache[1]
        A, K = st.tables(optimism)
        E = np.empty(len(self.candidates))
        if self.closed.any():
            acc = A[self.depth_idx[None, :], self.branch[self.closed]]
            E[self.closed] = 1.0 + np.cumprod(acc, 1).sum(1)
        for m, (idx, uniq, pos) in self.groups.items():
            share = st.beam_shares(uniq, A) if m == "rsd-s" else st.spectr_shares(uniq, K)
            cum = np.cumprod(share[:, self.depth_idx], 1)[pos]  # [candidates of m, D]
            E[idx] = 1.0 + (cum * self.depth_mask[idx]).sum(1)
        self._e_cache = (key, E)
        return E

    def predict(self, ctx: int, pending: int = 0, optimism: float = 0.0):
        """``(E, T, rows)`` arrays over the candidates: predicted tokens, seconds, padded rows."""
        E = self.expected(optimism)
        p = self.profile
        if self._td is None or self._td[0] is not p:
            wmax = max(int(self.widths.max()), 64)
            self._td = (p, np.array([0.0] + [p.draft_time(w) for w in range(1, wmax + 1)]))
        td = self._td[1]
        chain = td[pending + 1] if pending + 1 < len(td) else p.draft_time(pending + 1)
        t_draft = chain + td[self.widths].sum(1)
        rows, t_target = self._target_table(ctx)
        th = self.theta()
        T = self.f_D.value * t_draft + self.f_T.value * t_target + th[0] + th[1] * self.R * self.batch + th[2] * self.L
        return E, np.maximum(T, 1e-7), rows

    def ar_time(self, ctx: int) -> float:
        return self.f_AR.value * self.profile.ar_time(ctx) + self.o_AR.value

    # ---- the choice -------------------------------------------------------------------
    def choose(self, ctx: int, pending: int = 0, max_depth: int | None = None) -> Choice:
        """The choice for the next block: ``ctx`` cached target tokens, ``pending`` committed
        tokens the draft has not seen, ``max_depth`` the deepest tree the context still fits."""
        self.blocks += 1
        ar = Choice(None, 1, self.ar_time(ctx), 1.0, "best")
        E, T, rows = self.predict(ctx, pending)
        rate = self.expected(-self.caution) / T * self.batch  # decisions: a lower confidence bound
        if max_depth is not None:
            rate = np.where(self.L <= max_depth, rate, -1.0)
        best = int(np.argmax(rate))
        if rate[best] <= 0:
            return self._ar(ar, "context")
        ar_rate = self.batch / ar.predicted_s

        def spec(i, reason):
            self.current = i
            return Choice(self.candidates[i], int(rows[i]), float(T[i]), float(E[i]), reason, i)

        explore = self.explore_every > 0 and self.blocks % self.explore_every == 0
        if self.cooldown > 0:
            self.cooldown -= 1
            if explore and self.blocks % self.probe_every == 0:
                return spec(best, "probe")
            return self._ar(ar, "guard")
        if rate[best] < ar_rate * (1 + self.margin):
            if explore and self.blocks % self.probe_every == 0:
                return spec(best, "probe")
            return self._ar(ar, "best")
        if self.since_ar >= (self.calibrate_every if self.ar_rate.n else self.calibrate_after):
            cur = self.current
            out = self._ar(ar, "calibrate")
            self.current = cur
            return out
        if explore:
            Eo, To, _ = self.predict(ctx, pending, self.optimism)
            ro = np.where(rate > 0, Eo / To, -1.0)
            j = int(np.argmax(ro))
            if j != best:
                return spec(j, "explore")
        cur = self.current
        if (cur is not None and rate[cur] >= ar_rate * (1 + self.margin)
                and rate[cur] * (1 + self.hysteresis) >= rate[best]):
            return spec(cur, "keep")
        return spec(best, "best")

    def _ar(self, ar: Choice, reason: str) -> Choice:
        self.current = None
        ar.reason = reason
        return ar

    # ---- learning from the block ------------------------------------------------------
    def record(self, choice: Choice, stats, *, ctx: int, pending: int = 0, draft_forward_s: float = 0.0,
               verified=None, tokens: int | None = None) -> None:
        """Learn from the block just run: ``stats`` its :class:`~rsd.engine.results.BlockStats`,
        ``draft_forward_s`` the time of its draft forwards, ``verified`` the per-row
        ``(tokens, parents, num_nodes, path)`` of its verification, ``tokens`` the tokens it
        committed (all rows)."""
        total = stats.total_s
        p, a = self.profile, self.alpha
        if tokens is None:
            tokens = (stats.accepted + 1) if self.batch == 1 else self.batch
        if choice.config is None:
            self.since_ar = 0
            ratio = stats.target_s / p.ar_time(ctx)
            self.f_AR.add(ratio, a)
            if self.f_T.n == 0:
                self.f_T.value = self.f_AR.value
            self.o_AR.add(max(total - stats.target_s, 0.0), a)
            self.ar_rate.add(tokens / max(total, 1e-9), a)
            return
        self.since_ar += 1
        cfg = choice.config
        i = choice.index if choice.index >= 0 else self.index_of.get(cfg)
        if verified:
            self.stats.update(cfg.method, cfg.shape, verified)
        self.f_T.add(stats.target_s / p.target_time(choice.rows, ctx), a)
        if self.f_AR.n == 0:
            self.f_AR.value = self.f_T.value
        if i is not None and draft_forward_s > 0:
            w = self.widths[i]
            pred = p.draft_time(pending + 1) + sum(p.draft_time(int(x)) for x in w if x > 0)
            self.f_D.add(draft_forward_s / pred, a)
        outside = max(total - stats.target_s - draft_forward_s, 0.0)
        x = np.array([1.0, float(_shape_numbers(cfg)[0]) * self.batch, float(cfg.depth)])
        self._M = self.theta_decay * self._M + np.outer(x, x)
        self._v = self.theta_decay * self._v + x * outside
        self._theta = None
        self.window.append((float(tokens), total))
        if len(self.window) > self.guard_window:
            self.window.pop(0)
        realised = sum(t for t, _ in self.window) / max(sum(s for _, s in self.window), 1e-9)
        if not self.ar_rate.n:
            return
        ar_rate = self.ar_rate.value
        if choice.reason == "probe":  # a probe from target-only mode: back off while probes lose
            won = tokens / max(total, 1e-9) >= ar_rate
            self.probe_every = self.explore_every if won else min(self.probe_every * 2, 8 * self.explore_every)
            return
        if len(self.window) >= self.guard_window and realised < ar_rate * (1 - self.margin):
            self.cooldown = self.cooldown_len
            self.cooldown_len = min(self.cooldown_len * 2, 128)
            self.window.clear()
            self.current = None
        elif len(self.window) >= self.guard_window and realised > ar_rate:
            self.cooldown_len = 8


    # ---- warm start ---------------------------------------------------------------------
    def inherit(self, prev: "Selector", keep: float = 0.5) -> None:
        """Start from what ``prev`` (an earlier run on the same profile) learnt: its timing
        corrections, and its acceptance statistics and outside-work regression weighted by ``keep``
        (a prior that the new text soon outweighs). Nothing of the new run's own blocks is used."""
        st, ps = self.stats, prev.stats
        for kind in st.trials:
            st.trials[kind] = ps.trials[kind] * keep
            st.accepts[kind] = ps.accepts[kind] * keep
        st.children_hist = {w: h * keep for w, h in ps.children_hist.items()}
        st.group_sum = {k: g * keep for k, g in ps.group_sum.items()}
        st.group_cnt = {k: g * keep for k, g in ps.group_cnt.items()}
        st._tables = None
        st.version += 1
        for name in ("f_T", "f_AR", "f_D", "o_AR", "ar_rate"):
            old = getattr(prev, name)
            setattr(self, name, _Ema(old.value, min(old.n, 1)))
        self._M, self._v, self._theta = prev._M * keep, prev._v * keep, None


_WARM: dict = {}


def forget_warm_state() -> None:
    """Make the next :func:`make_selector` start from its priors (see :meth:`Selector.inherit`)."""
    _WARM.clear()


def pow2(n: int) -> int:
    """The smallest power of two >= n."""
    return 1 << max(0, int(n) - 1).bit_length()


def make_selector(target, draft, *, temperature: float, batch: int = 1, profile=None, node_cap: int | None = None,
                  seed: int | None = None, log=None, **kw) -> Selector:
    """A :class:`Selector` for these adapters: ``profile`` or the cached / newly measured one
    (:func:`rsd.engine.profile.load_or_measure`, for batches at the next power of two of the batch
    size); ``node_cap`` lowers the profile's node cap. Within a process, a new selector on the same
    profile (and kind of temperature, batch size) starts from the last one's state
    (:meth:`Selector.inherit`; :func:`forget_warm_state` resets that) -- unless that state has
    learnt from a run with the same Philox ``seed``: a tree choice must never depend on the noise its
    own block draws, and a run with the same seed drew the same noise."""
    loader = None
    if profile is None:
        from .profile import load_or_measure

        profiles = {}

        def loader(b):
            if b not in profiles:
                profiles[b] = load_or_measure(target, draft, batch=b, log=log)
            return profiles[b]

        profile = loader(pow2(batch))
    cap = profile.node_cap if node_cap is None else min(int(node_cap), profile.node_cap)
    sel = Selector(profile, temperature=temperature, batch=batch,
                   candidates=candidate_configs(cap, temperature=temperature), profile_loader=loader, **kw)
    # a later run on the same profile (same process) starts from what this one learns
    import json

    key = (json.dumps(profile.key, sort_keys=True), profile.created, temperature > 0, pow2(batch))
    prev = _WARM.get(key)
    sel.seeds = {seed}
    if prev is not None and seed is not None and seed not in prev.seeds:
        sel.inherit(prev)
        sel.seeds |= prev.seeds
    _WARM[key] = sel
    return sel


def scenario_choices(profile, *, temperature: float = 0.0, batch: int = 1, ctx: int = 256,
                     first_child=(0.2, 0.4, 0.6, 0.8, 0.9), next_sibling: float = 0.3) -> list[dict]:
    """What the selector would choose on ``profile`` if the draft's first child were accepted
    with each probability of ``first_child`` (at every depth) and a next sibling after a rejection
    with ``next_sibling``: the tree (None: target only), its padded rows, the predicted tokens per
    block and the predicted speed-up over target-only decoding. For ``rsd profile`` and the first
    run on a new machine (``bench/auto_profile.py``)."""
    from .acceptance import AcceptanceStats

    out = []
    for a in first_child:
        st = AcceptanceStats(decay=1.0)
        decay = next_sibling * RANK_RATIO ** np.arange(st.trials["rrs"].shape[1] - 1)
        for kind in ("rrs", "kseq"):  # r_d(1) = a at every depth, r_d(k) = next_sibling * RANK_RATIO**(k - 2)
            st.trials[kind][:] = 1e6
            st.accepts[kind][:, 0] = a * 1e6
            st.accepts[kind][:, 1:] = decay * 1e6
        sel = Selector(profile, temperature=temperature, batch=batch, stats=st, explore_every=0)
        E, T, rows = sel.predict(ctx)
        rate = E / T * batch
        ar_rate = batch / sel.ar_time(ctx)
        i = int(np.argmax(rate))
        c = sel.choose(ctx)
        out.append({"first_child": a, "config": None if c.config is None else str(c.config), "rows": c.rows,
                    "tokens_per_block": float(E[i]) if c.config is not None else 1.0,
                    "best_tree": str(sel.candidates[i]), "best_tree_speedup": float(rate[i] / ar_rate)})
    return out
