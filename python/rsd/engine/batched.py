"""Batched decoding: several prompts of different lengths in one loop (``ar``, SD, SpecTr, RSD-C, RSD-S).

The same engine as single-prompt decoding (:mod:`rsd.engine.loop`): the same tree building
(:func:`rsd_kernels.build_tree`, batched), verification (:func:`rsd_kernels.verify_tree`,
batched; greedy: one batched argmax compare), cache invariant and randomness, with a
:class:`~rsd.engine.kvcache.BatchKVBuffer` per model instead of a :class:`~rsd.engine.kvcache.KVBuffer`.

Per block: **one** batched draft forward per tree level (every row's nodes of that level),
**one** batched verification forward (every row's tree), then ragged acceptance per row: each
row keeps its own prefix length, positions (row length + depth), pending draft tokens and cache
compaction (:meth:`~rsd.engine.kvcache.BatchKVBuffer.move_tails`: only the accepted paths move, all
rows and layers in one gather). Rows that finish (EOS, ``max_new_tokens``, context) leave the
batch: both caches drop their rows (:meth:`~rsd.engine.kvcache.BatchKVBuffer.select_rows`).

Forwards: row b's n new tokens are written at their own slots (``length_b + j``, or a
right-aligned chain), the attention runs over ``[:max slot + 1]`` with a bool mask (row b sees
its own prefix ``< length_b`` and its causal/tree keys; padded tokens see only themselves,
their keys lie beyond the row's length and are overwritten later). The cache is zero-filled so
unwritten slots are finite.

Randomness: the Philox streams of :mod:`rsd_kernels.noise`, keyed by ``seed`` and the row's
**index in the current batch** (the ops key noise by row): block k verifies at offset ``k`` and
draws its levels at the next offsets of a running counter (``k * L + l`` for a fixed tree of
depth L), exactly as single-prompt decoding. So a batch of one
prompt reproduces single-prompt decoding with the same seed, row 0 of any batch uses row 0's
streams while it is row 0, and rows of one batch draw from disjoint counters (independent
rows); after a row leaves, the rows behind it move up one index (fresh counters: every
block uses a new offset). Each row's output is distributed exactly as the target's; greedy
decoding returns each row's greedy tokens.

``method="auto"``: one :class:`~rsd.engine.selector.Selector` chooses the tree (one for all rows)
or a target-only step before every block, from the cost profile of the current batch size
(profiles are measured at powers of two: a batch of 5 uses the profile of 8) and the acceptance
of every row; a target-only step keeps each row's draft cache invariant as in
:mod:`rsd.engine.loop`.
"""
from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field

import torch

import rsd_kernels

from .adapter import ModelAdapter, pad_tree
from .configs import resolve_verifier
from .loop import Decoder, TimedDraftFn, _prompt_tensor, split_draft_path, tree_slots
from .results import BlockStats, GenerationResult, Timed, block_choices, check_max_new_tokens, cut_new_tokens, eos_set
from .batch_model import BatchModel, batch_mask


@dataclass
class BatchGenerationResult(Timed):
    """The result of :func:`generate_batch`: one :class:`GenerationResult` per prompt (input order).

    A row's ``blocks`` carry the wall times of the batched blocks it took part in, so a row's
    ``tokens_per_s`` is its tokens per second of batch wall time while it was in the batch;
    :attr:`tokens_per_s` is the total (all rows' tokens over the batch's decoding wall time).
    """

    rows: list[GenerationResult]
    method: str
    blocks: list[BlockStats] = field(default_factory=list)  # the batched blocks (accepted/emitted: sums)
    prefill_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)  # rows in the batch at each block

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def __iter__(self):
        return iter(self.rows)

    @property
    def tokens(self) -> list[list[int]]:
        return [r.tokens for r in self.rows]

    @property
    def num_tokens(self) -> int:
        return sum(len(r.tokens) for r in self.rows)

    def to_dict(self) -> dict:
        out = {"method": self.method, "batch": len(self.rows), "num_tokens": self.num_tokens,
               "tokens_per_s": self.tokens_per_s, "prefill_s": self.prefill_s, "decode_s": self.decode_s,
               "blocks": len(self.blocks), "rows": [r.to_dict() for r in self.rows]}
        if any(b.choice is not None for b in self.blocks):
            out["choices"] = block_choices(self.blocks)
        return out


def is_batch(prompts) -> bool:
    """Whether ``prompts`` is a batch: a list/tuple of token sequences, or a 2-D tensor with > 1 rows."""
    if isinstance(prompts, torch.Tensor):
        return prompts.dim() == 2 and prompts.shape[0] > 1
    if isinstance(prompts, (list, tuple)) and prompts:
        first = prompts[0]
        if isinstance(first, torch.Tensor):
            return first.dim() > 0
        return not isinstance(first, numbers.Integral)
    return False


class _BatchDraftLevels(TimedDraftFn):
    """The batched ``draft_fn`` of :func:`rsd_kernels.build_tree` (see ``_DraftLevels`` in
    :mod:`rsd.engine.loop`): level 0 feeds each row's ``pending + [root]`` as a right-aligned chain
    (the root is the last column of every row: logits of one row each); level l > 0 feeds every
    row's nodes to expand, packed to the left, in one forward."""

    def __init__(self, drf: BatchModel, pending, max_nodes):
        self.drf, self.pending = drf, pending
        B, dev = len(pending), drf.device
        self.B, self.T = B, max_nodes
        self.anc = torch.zeros(B, max_nodes, max_nodes, dtype=torch.bool, device=dev)
        self.anc[:, 0, 0] = True
        self.depth = torch.zeros(B, max_nodes, dtype=torch.long, device=dev)
        self.slots = torch.full((B, max_nodes), -1, dtype=torch.long, device=dev)  # build node -> cache slot
        self.slot_node = torch.full((B, max_nodes), -1, dtype=torch.long, device=dev)  # tree slot -> node
        self.root_slot = None  # [B]
        self.seen_ok = None

    def _call(self, level, nodes, tokens, parents):
        drf, dev, B = self.drf, self.drf.device, self.B
        lens = drf._lens()
        if level == 0:
            c = torch.tensor([len(p) + 1 for p in self.pending], dtype=torch.long, device=dev)
            n = int(c.max())
            col = torch.arange(n, device=dev)[None, :]
            pad = n - c[:, None]
            real = col >= pad
            rel = torch.where(real, col - pad, c[:, None] + col)
            toks = torch.zeros(B, n, dtype=torch.long, device=dev)
            for b, p in enumerate(self.pending):
                if p:
                    toks[b, n - len(p) - 1: n - 1] = torch.tensor(p, dtype=torch.long, device=dev)
            toks[:, -1] = tokens[:, 0].to(dev)
            local = ((torch.arange(n, device=dev)[None, None, :] <= rel[:, :, None]) & real[:, :, None]) | (
                torch.arange(n, device=dev)[None, None, :] == rel[:, :, None])
            ws = lens[:, None] + rel
            allowed = batch_mask(lens, lens, local, real, int(ws.max()) + 1)
            logits = self._feed_chain(toks, ws, allowed, c.tolist())
            self.root_slot = lens + c - 1
            self.slots[:, 0] = self.root_slot
            return logits
        nd = nodes.to(dev)
        ok = nd >= 0
        par_all = parents.to(dev).long()
        self.seen_ok = par_all >= 0
        self.seen_ok[:, 0] = True
        n = nd.shape[1]
        k = ok.sum(1)
        if int(k.max()) == 0:
            return torch.zeros(B, n, drf.vocab_size, device=dev)
        order = torch.argsort((~ok).long(), dim=1, stable=True)
        nds = nd.gather(1, order)  # real nodes first
        oks = ok.gather(1, order)
        rows = torch.arange(B, device=dev)[:, None].expand(B, n)
        rb, q = rows[oks], nds[oks]
        par = par_all[rb, q]
        self.anc[rb, q] = self.anc[rb, par]
        self.anc[rb, q, q] = True
        self.depth[rb, q] = self.depth[rb, par] + 1
        base = lens - self.root_slot - 1  # tree slots already used per row
        j = torch.arange(n, device=dev)[None, :]
        rel = base[:, None] + j  # [B, n] tree slot of each column
        self.slots[rb, q] = (lens[:, None] + j)[oks]
        self.slot_node[rb, rel[oks]] = q
        m = int(base.max()) + n
        sn = self.slot_node[:, :m]
        qn = nds.clamp(min=0)
        snc = sn.clamp(min=0)
        local = self.anc[torch.arange(B, device=dev)[:, None, None], qn[:, :, None], snc[:, None, :]]
        local = local & (sn >= 0)[:, None, :] & oks[:, :, None]
        local = local | (torch.arange(m, device=dev)[None, None, :] == rel[:, :, None])
        start = self.root_slot + 1
        ws = lens[:, None] + j
        allowed = batch_mask(start, start, local, oks, int(ws.max()) + 1)
        pos = self.root_slot[:, None] + self.depth.gather(1, qn)
        pos = torch.where(oks, pos, lens[:, None] + j)
        toks = tokens.to(dev).gather(1, qn)
        logits = self._feed_level(toks, pos, ws, allowed, k.tolist(), par_all.gather(1, qn), oks, rb, q)
        # back to the columns build_tree asked for
        out = logits.new_zeros(B, n, logits.shape[-1])
        out.scatter_(1, order[..., None].expand(B, n, logits.shape[-1]), logits)
        return torch.where(ok[..., None], out, 0.0)

    def _feed_chain(self, toks, ws, allowed, counts):
        """Level 0: every row's right-aligned ``pending + [root]`` ``toks [B, n]`` into slots ``ws``;
        the roots' logits ``[B, 1, V]``."""
        return self.drf.run(toks, ws, ws, allowed, counts, logits_to_keep=1)

    def _feed_level(self, toks, pos, ws, allowed, counts, parents, ok, rb, q):
        """Level > 0: the packed nodes ``toks [B, n]`` (real where ``ok``; their parents' node ids
        ``parents``; ``rb, q`` = row and node id of each real column); their logits ``[B, n, V]``."""
        return self.drf.run(toks, pos, ws, allowed, counts)


class _BatchEagleLevels(_BatchDraftLevels):
    """:class:`_BatchDraftLevels` for an EAGLE draft (see ``_EagleLevels`` in :mod:`rsd.engine.loop`):
    level 0 feeds each row's ``pending + [root]`` with ``feats[b]`` (their predecessors' target
    features), a node of level l > 0 its parent's predicted feature (``pred [B, T, H]``)."""

    def __init__(self, drf: BatchModel, pending, feats, max_nodes):
        super().__init__(drf, pending, max_nodes)
        self.feats = feats
        self.pred = None

    def _feed_chain(self, toks, ws, allowed, counts):
        drf, n = self.drf, toks.shape[1]
        fe = torch.zeros(self.B, n, self.feats[0].shape[-1], dtype=drf.dtype, device=drf.device)
        for b, f in enumerate(self.feats):  # right-aligned like the chain's tokens
            fe[b, n - f.shape[0]:] = f
        logits = drf.run(toks, ws, ws, allowed, counts, logits_to_keep=1, features=fe)
        f = drf.ad.features  # [B, n, H]: the root is the last column of every row
        self.pred = f.new_zeros(self.B, self.T, f.shape[-1])
        self.pred[:, 0] = f[:, -1]
        return logits

    def _feed_level(self, toks, pos, ws, allowed, counts, parents, ok, rb, q):
        drf = self.drf
        fe = self.pred.gather(1, parents.clamp(min=0)[..., None].expand(-1, -1, self.pred.shape[-1]))
        logits = drf.run(toks, pos, ws, allowed, counts, features=torch.where(ok[..., None], fe, 0.0))
        self.pred[rb, q] = drf.ad.features[ok]
        return logits


class BatchDecoder:
    """The decoding state of a batch of prompts (arguments as in :class:`rsd.engine.loop.Decoder`)."""

    def __init__(self, target, draft, method="rsd-s", config=None, budget=None, **kw):
        self.dec = Decoder(target, draft, method, config, budget, **kw)
        self.selector = self.dec.selector
        self.noise_offset = 0
        self.last_choice = None
        self.eagle = self.dec.eagle
        self.method, self.config, self.seed = method, self.dec.config, self.dec.seed
        self.samp, self.backend = self.dec.samp, self.dec.backend
        self.target = self.draft = None
        self.roots: list[int] = []
        self.pending: list[list[int]] = []
        self.feats: list[torch.Tensor] | None = None  # EAGLE: per row [len(pending) + 1, W] target features
        self.block = 0

    @property
    def depth(self) -> int:
        return self.dec.depth

    @property
    def batch(self) -> int:
        return len(self.roots)

    def prefill(self, prompts) -> float:
        tgt_ad = self.dec.target
        ids = [_prompt_tensor(p, "cpu") for p in prompts]
        ctx = tgt_ad.max_positions
        for r, t in enumerate(ids):
            if int(t.max()) >= tgt_ad.vocab_size or int(t.min()) < 0:
                raise ValueError(f"prompt {r}: token ids must lie in [0, {tgt_ad.vocab_size})")
            if ctx is not None and t.numel() + self.depth > ctx:
                raise ValueError(f"prompt {r} has {t.numel()} tokens but the target's context is {ctx} tokens "
                                 f"(max_position_embeddings): no {self.method} block fits after it")
        t0 = time.perf_counter()
        B = len(ids)
        room = max(t.numel() for t in ids) + 256 + (0 if self.config is None else self.config.budget + 1) + (
            80 if self.dec.auto else 0)
        self.target = BatchModel(tgt_ad, B, room)
        self.draft = None if self.dec.draft is None else BatchModel(self.dec.draft, B, room)
        c = [t.numel() - 1 for t in ids]
        n = max(c)
        if n > 0:
            dev = tgt_ad.device
            toks = torch.zeros(B, n, dtype=torch.long)
            for b, t in enumerate(ids):
                toks[b, : c[b]] = t[:-1]
            cc = torch.tensor(c, device=dev)
            ar = torch.arange(n, device=dev)
            real = ar[None, :] < cc[:, None]
            local = ((ar[None, None, :] <= ar[None, :, None]) & real[:, :, None]) | (ar[None, None, :] == ar[None, :, None])
            zero = torch.zeros(B, dtype=torch.long, device=dev)
            allowed = batch_mask(zero, zero, local.expand(B, n, n), real, n)
            pos = ar[None, :].expand(B, n)
            self.target.run(toks, pos, pos, allowed, c, logits_to_keep=1)
            if self.draft is not None:
                extra = {}
                if self.eagle:  # x_t reads F(t-1): the target's features shifted right, zeros at t = 0
                    F = self.target.ad.features
                    prev = torch.cat([F.new_zeros(B, 1, F.shape[-1]), F], 1).to(self.draft.dtype)
                    extra["features"] = prev[:, :n]
                self.draft.run(toks, pos, pos, allowed.to(self.draft.device), c, logits_to_keep=1, **extra)
        if self.eagle:
            W = self.dec.draft.model.feature_width
            self.feats = [prev[b, c[b]:c[b] + 1].clone() if c[b] > 0
                          else torch.zeros(1, W, dtype=self.draft.dtype, device=self.draft.device)
                          for b in range(B)]
        self.roots = [int(t[-1]) for t in ids]
        self.pending = [[] for _ in ids]
        self.block = self.noise_offset = 0
        return time.perf_counter() - t0

    def fits(self) -> list[bool]:
        ctx = self.target.max_positions
        return [ctx is None or L + self.depth + 1 <= ctx for L in self.target.lengths]

    def drop_rows(self, keep: list[int]):
        """Keep only the batch rows ``keep`` (indices into the current batch)."""
        for m in (self.target, self.draft):
            if m is not None:
                m.cache.select_rows(keep)
        self.roots = [self.roots[i] for i in keep]
        self.pending = [self.pending[i] for i in keep]
        if self.feats is not None:
            self.feats = [self.feats[i] for i in keep]

    def snapshot(self):
        """A copy of the whole state (tests: many single blocks from one prefill)."""
        caches = [None if m is None else (None if m.cache.kv is None else m.cache.kv.clone(), list(m.cache.lengths))
                  for m in (self.target, self.draft)]
        return caches, list(self.roots), [list(p) for p in self.pending], self.block, self.feats, self.noise_offset

    def restore(self, snap, *, seed=None):
        """Go back to ``snap`` (the same rows); optionally with a new ``seed``."""
        caches, roots, pending, block, feats, self.noise_offset = snap
        self.feats = None if feats is None else list(feats)
        for m, c in zip((self.target, self.draft), caches):
            if m is not None:
                kv, lengths = c
                m.cache.kv = None if kv is None else kv.clone()
                if kv is not None:
                    m.cache.capacity = kv.shape[4]
                m.cache.batch = len(lengths)
                m.cache.set_lengths(lengths)
        self.roots, self.pending, self.block = list(roots), [list(p) for p in pending], block
        if seed is not None:
            from rsd_kernels import noise

            noise.check_seed(seed, 0)
            self.seed = seed

    def max_tree_depth(self) -> int:
        ctx = self.target.max_positions
        return 10**9 if ctx is None else ctx - max(self.target.lengths) - 1

    def step(self):
        """One batched block: ``(tokens per row, accepted per row, draft calls, (draft_s, target_s,
        verify_s, cache_s, other_s))``; ``method="auto"``: :attr:`last_choice` is the block's choice."""
        cfg, rows, choice = self.config, None, None
        t0 = time.perf_counter()
        if self.dec.auto:
            ctx, pending = max(self.target.lengths), max(len(p) for p in self.pending)
            choice = self.selector.choose(ctx, pending, self.max_tree_depth())
            cfg, rows = choice.config, choice.rows
        t_choose = time.perf_counter() - t0
        if cfg is None:
            out = self._ar_step()
            self.noise_offset += 1
            verified, fwd = None, 0.0
        else:
            out, (tree, paths, fwd) = self._sd_block(cfg, rows)
            self.noise_offset += cfg.depth
            verified = None
            if self.dec.auto:
                tt, pp, nn = tree.tokens.tolist(), tree.parents.tolist(), tree.num_nodes.tolist()
                verified = [(tt[b], pp[b], nn[b], paths[b]) for b in range(len(paths))]
        self.block += 1
        self.last_choice = choice
        if self.dec.auto:
            t1 = time.perf_counter()
            new, acc, dcalls, times = out
            stats = BlockStats(sum(acc), sum(len(t) for t in new), dcalls, 1, *times)
            self.selector.record(choice, stats, ctx=ctx, pending=pending, draft_forward_s=fwd, verified=verified,
                                 tokens=stats.emitted)
            times = times[:4] + (times[4] + t_choose + time.perf_counter() - t1,)
            out = (new, acc, dcalls, times)
        return out

    def _ar_step(self):
        tgt = self.target
        dev = tgt.device
        t0 = time.perf_counter()
        lens = tgt._lens()
        B = lens.shape[0]
        ws = lens[:, None]
        allowed = batch_mask(lens + 1, lens, torch.ones(B, 1, 1, dtype=torch.bool, device=dev),
                        torch.ones(B, 1, dtype=torch.bool, device=dev), int(lens.max()) + 1)
        toks = torch.tensor(self.roots, dtype=torch.long)[:, None]
        logits = tgt.run(toks, ws, ws, allowed, [1] * B, logits_to_keep=1)[:, -1]
        t1 = time.perf_counter()
        if self.samp["temperature"] == 0:
            nxt = logits.argmax(-1).tolist()
        else:
            s = rsd_kernels.sample_without_replacement(logits, 1, **self.samp, seed=self.seed,
                                                       offset=self.noise_offset, validate=False)
            nxt = s.tokens[:, 0].tolist()
        t2 = time.perf_counter()
        if self.dec.auto:  # the draft catches up in the next speculative block (see rsd.engine.loop)
            if self.feats is not None:
                F = tgt.ad.features[:, -1]
                self.feats = [torch.cat([f, F[b:b + 1].to(f.dtype)], 0) for b, f in enumerate(self.feats)]
            for b in range(B):
                self.pending[b].append(self.roots[b])
        self.roots = [int(t) for t in nxt]
        t3 = time.perf_counter()
        return [[t] for t in self.roots], [0] * B, 0, (0.0, t1 - t0, t2 - t1, 0.0, t3 - t2)

    def _sd_block(self, cfg, rows=None):
        """One batched block of tree ``cfg`` (verification padded to ``rows`` per row); returns the
        :meth:`step` tuple and ``(tree, paths, seconds of the draft forwards)``."""
        tgt, drf, samp = self.target, self.draft, self.samp
        dev = tgt.device
        B = self.batch
        _, mode, merge = resolve_verifier(cfg, self.dec.verifier)  # "auto": the verifier of this block's tree
        t0 = time.perf_counter()
        levels = (_BatchEagleLevels(drf, self.pending, self.feats, cfg.budget + 1) if self.eagle
                  else _BatchDraftLevels(drf, self.pending, cfg.budget + 1))
        root = torch.tensor(self.roots, dtype=torch.long, device=dev)
        drafted = rsd_kernels.build_tree(cfg, root, levels, **samp, seed=self.seed, offset=self.noise_offset,
                                         backend=self.backend, draft_logits=samp["temperature"] > 0,
                                         validate=False, merge=merge)
        tree = drafted.tree
        T = tree.max_nodes
        t1 = time.perf_counter()
        fwd_tree = pad_tree(tree, rows) if rows is not None and rows > T else tree  # padded rows: see pad_tree
        n = fwd_tree.max_nodes
        anc, depth = fwd_tree.dense_mask, fwd_tree.depth.long()
        prefix = tgt._lens()
        pos = prefix[:, None] + depth.to(dev)
        ws = prefix[:, None] + torch.arange(n, device=dev)[None, :]
        if tgt.ad.attention == "rsd":
            logits = tgt.run(fwd_tree.tokens, pos, ws, None, [n] * B, rsd_tree_bits=fwd_tree.ancestor_bitmask,
                             rsd_prefix_lens=prefix, rsd_backend=self.backend)
        else:
            allowed = batch_mask(prefix, prefix, anc.to(dev), torch.ones(B, n, dtype=torch.bool, device=dev),
                            int(ws.max()) + 1)
            logits = tgt.run(fwd_tree.tokens, pos, ws, allowed, [n] * B)
        if n > T:
            logits = logits[:, :T]
        t2 = time.perf_counter()
        greedy = samp["temperature"] == 0
        res = rsd_kernels.verify_tree(logits, drafted.draft_logits, tree, mode="greedy" if greedy else mode,
                                      **samp, seed=self.seed, offset=self.block, backend=self.backend, validate=False)
        if self.eagle and n > T:
            tgt.ad.features = tgt.ad.features[:, :T]
        paths = [[int(i) for i in row if i >= 0] for row in res.path.tolist()]
        nxt = res.next_token.tolist()
        t3 = time.perf_counter()
        pl = prefix.tolist()
        tgt.cache.move_tails(pl, [[pl[b] + i for i in paths[b]] for b in range(B)])
        if self.eagle:  # as the single-prompt loop: crop the draft to the root, feed the path next block
            F = tgt.ad.features  # [B, T, W] of the verification forward
            pendings = [p[1:] for p in paths]
            keeps = [[] for _ in range(B)]
            self.feats = [F[b, torch.tensor(paths[b], device=F.device)].to(drf.dtype) for b in range(B)]
        else:
            keeps, pendings = [], []
            for b in range(B):
                seen = None if levels.seen_ok is None else levels.seen_ok[b]
                keep_d, pend = split_draft_path(paths[b], tree_slots(levels.slots[b], seen, drafted, b))
                keeps.append(keep_d)
                pendings.append(pend)
        drf.cache.move_tails((levels.root_slot + 1).tolist(), keeps)
        t4 = time.perf_counter()
        toks = tree.tokens.tolist()
        out, acc = [], []
        for b in range(B):
            accepted = [toks[b][i] for i in paths[b][1:]]
            self.pending[b] = [toks[b][i] for i in pendings[b]]
            self.roots[b] = int(nxt[b])
            out.append(accepted + [int(nxt[b])])
            acc.append(len(accepted))
        t5 = time.perf_counter()
        return (out, acc, drafted.draft_calls, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)), (tree, paths,
                                                                                               levels.forward_s)


def generate_batch(target, draft, prompts, method: str = "rsd-s", config=None, budget: int | None = None, *,
                   temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                   max_new_tokens: int = 64, seed: int | None = None, eos_token_id=None, attention: str = "sdpa",
                   backend: str = "auto", progress=None, verifier: str | None = None, profile=None,
                   selector=None) -> BatchGenerationResult:
    """:func:`rsd.generate` on a batch of prompts (a list of token lists, or a 2-D tensor): one tree
    per row per block, batched forwards, ragged acceptance; arguments as in :func:`rsd.generate`
    (``progress(num_new_tokens)`` gets the block's total over all rows)."""
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2:
            raise ValueError(f"a batch tensor of prompts must be 2-D, got shape {tuple(prompts.shape)}")
        prompts = list(prompts)
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: at least one prompt is needed")
    dec = BatchDecoder(target, draft, method, config, budget, temperature=temperature, top_k=top_k, top_p=top_p,
                       seed=seed, attention=attention, backend=backend, verifier=verifier, profile=profile,
                       selector=selector, batch=len(prompts))
    check_max_new_tokens(max_new_tokens)
    eos = eos_set(eos_token_id)
    rows = [GenerationResult([], method, dec.config, seed=dec.seed, verifier=dec.dec.verifier if dec.config else None)
            for _ in prompts]
    out = BatchGenerationResult(rows, method)
    out.prefill_s = dec.prefill(prompts)
    for r in rows:
        r.prefill_s = out.prefill_s
    active = list(range(len(prompts)))  # batch row -> prompt index
    while active:
        fits = dec.fits()
        if not all(fits):
            for i, f in zip(active, fits):
                if not f:
                    rows[i].stop_reason = "context"
            keep = [j for j, f in enumerate(fits) if f]
            active = [active[j] for j in keep]
            dec.drop_rows(keep)
            if not active:
                break
        out.batch_sizes.append(len(active))
        if dec.selector is not None and hasattr(dec.selector, "set_batch"):
            dec.selector.set_batch(len(active))  # (outside the block's timing: may load a profile)
        new, acc, dcalls, times = dec.step()
        keep, total = [], 0
        for j, i in enumerate(active):
            r = rows[i]
            toks, stop = cut_new_tokens(new[j], max_new_tokens - len(r.tokens), eos)
            r.tokens.extend(toks)
            r.blocks.append(BlockStats(acc[j], len(toks), dcalls, 1, *times))
            total += len(toks)
            if stop:
                r.stop_reason = stop
            elif len(r.tokens) < max_new_tokens:
                keep.append(j)
        out.blocks.append(BlockStats(sum(acc), total, dcalls, 1, *times, choice=dec.last_choice))
        if progress is not None:
            progress(total)
        if len(keep) < len(active):
            t0 = time.perf_counter()
            if keep:  # (nothing to compact when every row is done)
                dec.drop_rows(keep)
            active = [active[j] for j in keep]
            out.blocks[-1].cache_s += time.perf_counter() - t0
    return out
