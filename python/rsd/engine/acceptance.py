"""Online acceptance statistics and the predicted block efficiency of every tree.

**Positional acceptance** (Sequoia): the chance that a draft node is accepted depends on its
depth d and its rank k among its siblings (sampling order). Every verification gives, along
the accepted path, one observation per tried child: at the path node of depth d-1 with children
``c_1..c_m``, children ``1..k-1`` were rejected and child k accepted (or all m rejected where
the path ends). :class:`AcceptanceStats` keeps, per verifier kind (``rrs``: children drawn
without replacement -- SD, RSD-C, RSD-S; ``kseq``: SpecTr's i.i.d. children) and per (depth,
rank), decayed counts of trials and acceptances, and estimates the conditional acceptance

    r_d(k) = P(child k accepted | children 1..k-1 rejected)

with a Beta prior whose mean borrows from the shallower depth and the previous rank
(``r_d(1) ~ r_{d-1}(1)``, ``r_d(k) ~ r_d(k-1) * RANK_RATIO``), so a cell never seen is predicted
from the cells next to it and the first blocks start from :data:`PRIOR_FIRST` (the first child
at depth 1). Counts decay by :attr:`decay` per verification (half-life ~ 35 blocks at 0.98):
the estimates follow the text.

From ``A_d(b) = 1 - prod_{k<=b} (1 - r_d(k))`` (at least one of b children accepted), the
predicted tokens per block (accepted + the bonus/correction token) are

* SD (chain of L) and RSD-C (branching b_1..b_L): ``1 + sum_l prod_{j<=l} A_j(b_j)``
  (SD: b_j = 1) -- the closed form;
* RSD-S (W, L): the beam gives the root W children and a deeper path node a random number m of
  them; the stats keep, per (W, depth), the decayed histogram of m at the path nodes, so
  ``A_j = sum_m h_{W,j}(m) A_j(m)`` (prior: m = ceil(W / 2));
* SpecTr (K, L): the k-sequential verifier's own table (``kseq``), with the number of candidates
  at depth j the K chains at the root and, deeper, the decayed mean size of the group of chains
  that share the accepted prefix (prior: 1 + (K - 1) / 2).

Every method's expected tokens come from arrays: :meth:`AcceptanceStats.tables` once per block,
then vectorised over the candidates (:mod:`rsd.engine.selector`).
"""
from __future__ import annotations

import numpy as np

MAX_DEPTH = 8  # depth buckets (deeper levels share the last one)
MAX_RANK = 64  # sibling ranks tracked (wider nodes share the last one)
PRIOR_FIRST = 0.6  # prior acceptance of the first child at depth 1
DEPTH_RATIO = 0.95  # prior: the first child one level deeper
RANK_RATIO = 0.5  # prior: the next sibling's conditional acceptance
PRIOR_STRENGTH = 3.0  # pseudo-trials of the prior
DECAY = 0.98


def children_lists(parents, n: int) -> list[list[int]]:
    """Children of every node (sampling order = index order) of a tree with parents ``parents[:n]``."""
    ch = [[] for _ in range(n)]
    for i in range(1, n):
        p = parents[i]
        if p >= 0:
            ch[p].append(i)
    return ch


def _first_order(c: np.ndarray, e: np.ndarray) -> np.ndarray:
    """``r_0 = c_0``, ``r_k = c_k + e_k r_{k-1}`` (``0 < e_k <= 1/2``) without a Python loop:
    ``r_k = P_k sum_{i<=k} c_i / P_i`` with ``P_k = prod_{0<j<=k} e_j`` (e clamped to 1e-4: every
    product stays a normal double; the error is far below the counts' noise)."""
    P = np.cumprod(np.concatenate([[1.0], np.maximum(e[1:], 1e-4)]))
    return P * np.cumsum(c / P)


class AcceptanceStats:
    """Decayed positional acceptance counts (see the module docstring)."""

    def __init__(self, decay: float = DECAY, prior_first: float = PRIOR_FIRST, strength: float = PRIOR_STRENGTH):
        if not 0 < decay <= 1:
            raise ValueError(f"decay must lie in (0, 1], got {decay!r}")
        if not 0 < prior_first < 1:
            raise ValueError(f"prior_first must lie in (0, 1), got {prior_first!r}")
        self.decay, self.prior_first, self.strength = float(decay), float(prior_first), float(strength)
        self.trials = {k: np.zeros((MAX_DEPTH, MAX_RANK)) for k in ("rrs", "kseq")}
        self.accepts = {k: np.zeros((MAX_DEPTH, MAX_RANK)) for k in ("rrs", "kseq")}
        self.children_hist: dict[int, np.ndarray] = {}  # RSD-S width W -> [MAX_DEPTH, W + 1]
        self.group_sum: dict[int, np.ndarray] = {}  # SpecTr K -> [MAX_DEPTH] decayed sum of group sizes
        self.group_cnt: dict[int, np.ndarray] = {}
        self.blocks = 0
        self.version = 0  # changes with every update (the selector caches what it derives from the counts)
        self._tables = None

    # ---- updates ----------------------------------------------------------------------
    def _decay(self):
        g = self.decay
        if g < 1:
            for d in (self.trials, self.accepts):
                for a in d.values():
                    a *= g
            for d in (self.children_hist, self.group_sum, self.group_cnt):
                for a in d.values():
                    a *= g

    def _tried(self, kind, depth, m, accepted_rank):
        """At a node whose children sit at ``depth`` (1-based): ranks 0..m-1 were tried up to the
        accepted one (``accepted_rank``, 0-based; None: all m rejected)."""
        d = min(depth, MAX_DEPTH) - 1
        last = m if accepted_rank is None else accepted_rank + 1
        ranks = np.minimum(np.arange(last), MAX_RANK - 1)
        np.add.at(self.trials[kind][d], ranks, 1.0)
        if accepted_rank is not None:
            self.accepts[kind][d, min(accepted_rank, MAX_RANK - 1)] += 1.0

    def update(self, method: str, shape, rows) -> None:
        """One verification: ``rows`` = ``(tokens, parents, num_nodes, path)`` per batch row (lists;
        ``path`` the accepted node indices from the root) of trees of configuration ``method``
        / ``shape``. The counts decay once per call."""
        self._decay()
        self._tables = None
        self.blocks += 1
        self.version += 1
        for tokens, parents, num_nodes, path in rows:
            self._update_row(method, shape, tokens, parents, num_nodes, path)

    def _update_row(self, method, shape, tokens, parents, num_nodes, path):
        ch = children_lists(parents, num_nodes)
        if method == "spectr":
            self._update_kseq(int(shape[0]), tokens, ch, path)
            return
        W = int(shape[0]) if method == "rsd-s" else None
        L = int(shape[-1]) if method == "rsd-s" else None
        for d, v in enumerate(path):
            kids = ch[v]
            if not kids:
                break
            nxt = path[d + 1] if d + 1 < len(path) else None
            self._tried("rrs", d + 1, len(kids), None if nxt is None else kids.index(nxt))
            if W is not None and 1 <= d < L:  # children of a path node below the root (the beam's share)
                h = self.children_hist.setdefault(W, np.zeros((MAX_DEPTH, W + 1)))
                h[min(d + 1, MAX_DEPTH) - 1, min(len(kids), W)] += 1.0
            if nxt is None:
                break

    def _update_kseq(self, K, tokens, ch, path):
        group = [0]  # nodes sharing the accepted prefix (SpecTr's walk continues from all of them)
        for d in range(len(path)):
            cand = sorted(c for v in group for c in ch[v])
            if not cand:
                break
            nxt = path[d + 1] if d + 1 < len(path) else None
            self._tried("kseq", d + 1, len(cand), None if nxt is None else cand.index(nxt))
            if d >= 1:
                j = min(d + 1, MAX_DEPTH) - 1
                self.group_sum.setdefault(K, np.zeros(MAX_DEPTH))[j] += len(cand)
                self.group_cnt.setdefault(K, np.zeros(MAX_DEPTH))[j] += 1.0
            if nxt is None:
                break
            group = [c for c in cand if tokens[c] == tokens[nxt]]

    # ---- estimates --------------------------------------------------------------------
    def rates(self, kind: str = "rrs", optimism: float = 0.0) -> np.ndarray:
        """``r [MAX_DEPTH, MAX_RANK]``: conditional acceptance by depth and rank. ``optimism`` adds
        ``optimism / sqrt(trials + strength)``: > 0 an upper confidence bound (exploration), < 0 a
        lower one (a choice that must not lose where the counts are thin)."""
        t, a = self.trials[kind], self.accepts[kind]
        s = self.strength
        den = t + s
        r = np.empty((MAX_DEPTH, MAX_RANK))
        for d in range(MAX_DEPTH):  # each row is a first-order linear recurrence over the ranks
            c = np.empty(MAX_RANK)
            e = np.zeros(MAX_RANK)
            if d == 0:
                c[0] = (a[0, 0] + s * self.prior_first) / den[0, 0]
                c[1:] = a[0, 1:] / den[0, 1:]
                e[1:] = s * RANK_RATIO / den[0, 1:]
            else:
                c[0] = (a[d, 0] + s * r[d - 1, 0] * DEPTH_RATIO) / den[d, 0]
                c[1:] = (a[d, 1:] + s * 0.5 * r[d - 1, 1:]) / den[d, 1:]
                e[1:] = s * 0.5 * RANK_RATIO / den[d, 1:]
            r[d] = _first_order(c, e)
        if optimism:
            r = np.clip(r + optimism / np.sqrt(t + s), 0.0, 0.999)
        return r

    @staticmethod
    def any_accepted(r: np.ndarray) -> np.ndarray:
        """``A [MAX_DEPTH, MAX_RANK + 1]``: ``A[d, b]`` = P(one of the first b children is accepted)."""
        A = np.zeros((r.shape[0], r.shape[1] + 1))
        A[:, 1:] = 1.0 - np.cumprod(1.0 - r, axis=1)
        return A

    def beam_shares(self, Ws: np.ndarray, A: np.ndarray) -> np.ndarray:
        """``[len(Ws), MAX_DEPTH]``: RSD-S (width W) acceptance at each child depth: ``A_1(W)`` at the
        root, deeper the mean of ``A_j(m)`` over the path node's number of children m (decayed
        histogram, prior m = ceil(W / 2))."""
        Ws = np.asarray(Ws, dtype=int)
        out = np.empty((len(Ws), MAX_DEPTH))
        out[:, 0] = A[0, np.minimum(Ws, MAX_RANK)]
        m0 = np.minimum(np.maximum(1, (Ws + 1) // 2), MAX_RANK)
        out[:, 1:] = A[1:, m0].T  # the prior alone
        for i, W in enumerate(Ws.tolist()):
            h = self.children_hist.get(W)
            if h is None:
                continue
            w = h[1:].copy()  # [MAX_DEPTH - 1, W + 1]
            w[:, max(1, (W + 1) // 2)] += self.strength
            ms = np.minimum(np.arange(W + 1), MAX_RANK)
            out[i, 1:] = (w * A[1:, ms]).sum(1) / w.sum(1)
        return out

    def spectr_shares(self, Ks: np.ndarray, A: np.ndarray) -> np.ndarray:
        """``[len(Ks), MAX_DEPTH]``: SpecTr (K chains) acceptance at each child depth (kseq table
        ``A``), with the decayed mean group size (prior 1 + (K - 1) / 2) deeper than the root."""
        Ks = np.asarray(Ks, dtype=int)
        out = np.empty((len(Ks), MAX_DEPTH))
        out[:, 0] = A[0, np.minimum(Ks, MAX_RANK)]
        g = np.repeat((1.0 + (Ks - 1) / 2.0)[:, None], MAX_DEPTH - 1, 1)
        for i, K in enumerate(Ks.tolist()):
            gs, gc = self.group_sum.get(K), self.group_cnt.get(K)
            if gs is not None:
                g[i] = (self.strength * g[i] + gs[1:]) / (self.strength + gc[1:])
        g = np.clip(g, 1.0, MAX_RANK - 1)
        lo = np.floor(g).astype(int)
        frac = g - lo
        j = np.arange(1, MAX_DEPTH)[None, :]
        out[:, 1:] = (1 - frac) * A[j, lo] + frac * A[j, lo + 1]
        return out

    def beam_share(self, W: int, A: np.ndarray) -> np.ndarray:
        """:meth:`beam_shares` of one width."""
        return self.beam_shares([W], A)[0]

    def spectr_share(self, K: int, A: np.ndarray) -> np.ndarray:
        """:meth:`spectr_shares` of one K."""
        return self.spectr_shares([K], A)[0]

    def tables(self, optimism: float = 0.0):
        """``(A_rrs, A_kseq)`` of :meth:`any_accepted` (cached per ``optimism`` until the next update)."""
        if self._tables is None:
            self._tables = {}
        if optimism not in self._tables:
            self._tables[optimism] = (self.any_accepted(self.rates("rrs", optimism)),
                                      self.any_accepted(self.rates("kseq", optimism)))
        return self._tables[optimism]

    def expected_tokens(self, config, optimism: float = 0.0) -> float:
        """Predicted tokens per block of ``config`` (a :class:`rsd_kernels.TreeConfig`)."""
        A, K = self.tables(optimism)
        return float(expected_tokens_from(config, A, K, self))


def expected_tokens_from(config, A_rrs, A_kseq, stats: AcceptanceStats) -> float:
    """See :meth:`AcceptanceStats.expected_tokens` (one configuration, tables given)."""
    m, shape = config.method, config.shape
    L = config.depth
    if m == "sd":
        acc = A_rrs[np.minimum(np.arange(L), MAX_DEPTH - 1), 1]
    elif m == "rsd-c":
        acc = np.array([A_rrs[min(j, MAX_DEPTH - 1), min(b, MAX_RANK)] for j, b in enumerate(shape)])
    elif m == "rsd-s":
        share = stats.beam_share(shape[0], A_rrs)
        acc = share[np.minimum(np.arange(L), MAX_DEPTH - 1)]
    else:
        share = stats.spectr_share(shape[0], A_kseq)
        acc = share[np.minimum(np.arange(L), MAX_DEPTH - 1)]
    return 1.0 + float(np.cumprod(acc).sum())
