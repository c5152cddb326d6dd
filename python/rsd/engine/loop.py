"""The single-prompt loop (:class:`Decoder`): target-only decoding (``ar``) and speculative
decoding (SD, SpecTr, RSD-C, RSD-S).

One **block** of a speculative method:

1. the draft grows the method's tree from the root (the last committed token) with one draft
   forward per level (:func:`rsd_kernels.build_tree`);
2. the target runs one verification forward over root + tree nodes (tree attention);
3. :func:`rsd_kernels.verify_tree` walks the tree: the accepted path and a next token (the
   verifier: ``rrs`` / SpecTr's ``kseq``, or ``traversal``, for which SpecTr's chains are merged
   into a prefix tree first: :func:`rsd.engine.configs.resolve_verifier`);
4. both KV caches are compacted to prefix + accepted path (:meth:`ModelAdapter.keep_path`:
   only the path's keys/values move; the prefix stays in place).

Only model forwards grow with the context: the caches are preallocated and written in place,
chains and single tokens run without a mask, the tree mask is built with tensor ops from the
tree's ancestor rows (``DraftTree.dense_mask``), greedy verification is ``verify_tree``'s
vectorised greedy mode (the longest matching path), and the output head runs only on the rows
that are used. :class:`BlockStats` splits each block's wall time into draft (tree building),
target (verification forward), verify, cache and other.

Cache invariant between blocks: the target cache holds every committed token except the
last one (the next root). The draft cache holds a prefix of that; accepted tokens it never
processed (the leaves of the last level) are fed, with the root, in the next block's first
draft forward, so the number of draft calls per block stays the tree depth L.

Randomness: every draw comes from the Philox streams of :mod:`rsd_kernels.noise` keyed by
``seed`` (drawn from torch's global generator when ``seed=None``). Block b verifies at offset
``b`` (streams ACCEPT/RESIDUAL); its tree levels sample the GUMBEL stream at the offsets of a
running counter of sampled levels (``noise_offset``: each tree level, and each target-only step,
takes the next one). With a fixed tree of depth L that is offset ``b * L + l`` for level l (and
``b`` for the steps of ``ar``); when the tree changes between blocks (``method="auto"``) no
offset is ever used twice. A run is reproducible from its seed.

``method="auto"`` (:mod:`rsd.engine.selector`): before every block a :class:`Selector` chooses
target-only decoding or a tree (with the verification's padded row count) from the measured
cost profile and the acceptance seen so far; after the block it learns from it. A target-only
step keeps the draft's cache invariant: the committed token joins ``pending`` (and, for an EAGLE
draft, the target's feature at it joins ``feats``), so the next speculative block feeds the
draft what it missed in its level-0 chain.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

import rsd_kernels
from rsd_kernels import checks, noise

from .adapter import ModelAdapter, is_eagle
from .configs import AUTO, resolve_config, resolve_verifier
from .results import BlockStats


def _as_adapter(m, attention, backend):
    if m is None or isinstance(m, ModelAdapter):
        return m
    return ModelAdapter(m, attention=attention, kernel_backend=backend)


def _prompt_tensor(prompt_ids, device):
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.dim() == 2 and prompt_ids.shape[0] == 1:
            prompt_ids = prompt_ids[0]
        if prompt_ids.dim() != 1:
            raise ValueError(f"prompt_ids must be 1-D (or [1, n]), got shape {tuple(prompt_ids.shape)}")
        ids = prompt_ids.to(torch.long)
    else:
        ids = torch.tensor(list(prompt_ids), dtype=torch.long)
    if ids.numel() == 0:
        raise ValueError("prompt_ids is empty: at least one token is needed")
    return ids.to(device)


class Decoder:
    """The decoding state of one prompt: both adapters' KV caches and the loop state.

    :func:`rsd.engine.generate.generate` drives it (``prefill`` once, then ``step`` per block); tests use
    :meth:`snapshot`/:meth:`restore` to run many single blocks from one prefill. Arguments
    as in :func:`rsd.engine.generate.generate`.
    """

    def __init__(self, target, draft, method="rsd-s", config=None, budget=None, *, temperature=0.0, top_k=None,
                 top_p=None, seed=None, attention="sdpa", backend="auto", verifier=None, selector=None,
                 profile=None, batch: int = 1):
        self.auto = method == AUTO
        self.config = resolve_config(method, config, budget)
        self.verifier, self.mode, self.merge = resolve_verifier(self.config, verifier)
        self.method = method
        self.temperature = checks.sampling(temperature, top_k, top_p)  # the warps too, even when greedy
        self.samp = dict(temperature=self.temperature, top_k=top_k, top_p=top_p)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)))
        noise.check_seed(seed, 0)
        self.seed, self.backend = seed, backend
        self.target = _as_adapter(target, attention, backend)
        self.draft = None
        if method != "ar":
            if draft is None:
                raise ValueError(f"method {method!r} needs a draft model")
            # draft forwards are never tree-layout forwards: they take the 4D-mask path. (A draft that is
            # the target module itself keeps the target's implementation: "rsd_tree" is SDPA for them.)
            same = draft is target or draft is self.target.model
            self.draft = _as_adapter(draft, attention if same else "eager" if attention == "eager" else "sdpa",
                                     backend)
            if self.draft.vocab_size != self.target.vocab_size:
                raise ValueError(f"draft vocabulary ({self.draft.vocab_size}) differs from the target's "
                                 f"({self.target.vocab_size})")
        self.eagle = self.draft is not None and is_eagle(self.draft.model)
        if self.eagle:  # the target's verification forward (and prefill) also leaves its last hidden states
            ht, hd = self.target.model.config.hidden_size, self.draft.model.config.hidden_size
            if ht != hd:
                raise ValueError(f"EAGLE draft width ({hd}) differs from the target's hidden size ({ht})")
            self.target.enable_features(getattr(self.draft.model, "feature_layers", ()))
            self.draft.enable_features()
        self.state = None
        self.block = 0
        self.noise_offset = 0  # running GUMBEL offset (see the module docstring)
        self.selector = None
        if self.auto:
            from .selector import make_selector

            if self.draft is None:
                raise ValueError("method 'auto' needs a draft model")
            self.selector = selector if selector is not None else make_selector(
                self.target, self.draft, temperature=self.temperature, batch=batch, profile=profile,
                node_cap=budget, seed=seed)

    @property
    def depth(self) -> int:
        return 1 if self.config is None else self.config.depth

    def max_tree_depth(self) -> int:
        """The deepest tree the target's context still fits after the current prefix."""
        ctx = self.target.max_positions
        return 10**9 if ctx is None else ctx - self.target.length - 1

    def prefill(self, prompt_ids) -> float:
        """Reset both caches and process the prompt (all but its last token, the first root)."""
        tgt = self.target
        ids = _prompt_tensor(prompt_ids, tgt.device)
        if int(ids.max()) >= tgt.vocab_size or int(ids.min()) < 0:
            raise ValueError(f"prompt_ids must lie in [0, {tgt.vocab_size}), got range "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        ctx = tgt.max_positions
        if ctx is not None and ids.numel() + self.depth > ctx:
            raise ValueError(f"the prompt has {ids.numel()} tokens but the target's context is {ctx} tokens "
                             f"(max_position_embeddings): no {self.method} block fits after it")
        t0 = time.perf_counter()
        room = ids.numel() + 256 + (0 if self.config is None else self.config.budget + 1) + (80 if self.auto else 0)
        if self.eagle:
            self.state = _eagle_prefill(tgt, self.draft, ids, room)
            self.block = self.noise_offset = 0
            return time.perf_counter() - t0
        for m in (tgt, self.draft):
            if m is not None:
                m.reset(room)
                if ids.numel() > 1:
                    m.forward_chain(ids[None, :-1], logits_to_keep=1)
        self.state = _LoopState(root=int(ids[-1]), pending=[])
        self.block = self.noise_offset = 0
        return time.perf_counter() - t0

    def fits(self) -> bool:
        """Whether one more block fits the target's context."""
        ctx = self.target.max_positions
        return ctx is None or self.target.length + self.depth + 1 <= ctx

    def step(self):
        """One block (``ar``: one target step): returns (committed tokens, :class:`BlockStats`)."""
        if self.state is None:
            raise RuntimeError("call prefill(prompt_ids) before step()")
        cfg, rows, choice = self.config, None, None
        t0 = time.perf_counter()
        if self.auto:
            ctx, pending = self.target.length, len(self.state.pending)
            choice = self.selector.choose(ctx, pending, self.max_tree_depth())
            cfg, rows = choice.config, choice.rows
        t_choose = time.perf_counter() - t0
        if cfg is None:
            tokens, stats = _ar_step(self.target, self.state, self.samp, self.seed, self.noise_offset,
                                     self.draft if self.auto else None)
            self.noise_offset += 1
            verified, fwd = None, 0.0
        else:
            _, mode, merge = resolve_verifier(cfg, self.verifier)  # "auto": the verifier of this block's tree
            tokens, stats, (tree, path, fwd) = _sd_block(
                self.target, self.draft, cfg, self.state, self.samp, self.seed, self.noise_offset, self.block,
                self.backend, mode, merge, rows)
            self.noise_offset += cfg.depth
            verified = [(tree.tokens[0].tolist(), tree.parents[0].tolist(), int(tree.num_nodes[0]), path)
                        ] if self.auto else None
        self.block += 1
        if self.auto:
            t1 = time.perf_counter()
            self.selector.record(choice, stats, ctx=ctx, pending=pending, draft_forward_s=fwd, verified=verified)
            stats.other_s += t_choose + time.perf_counter() - t1
            stats.choice = choice
        return tokens, stats

    def propose(self):
        """Steps 1-2 of the next block, committing nothing: ``(drafted, target_logits)``, the tree
        the block would verify (SpecTr's merged when the verifier needs it) with its draft logits,
        and the target's logits ``[1, T, V]`` at its nodes. Both caches are cut back to their
        lengths before, so :meth:`step` then runs the same block (same noise)."""
        if self.state is None or self.config is None:
            raise RuntimeError("propose() needs a fixed speculative method (not ar or auto) and a prefill(prompt_ids) first")
        lengths = self.target.length, self.draft.length
        drafted, _ = _draft_tree(self.draft, self.config, self.state, self.samp, self.seed, self.noise_offset,
                                 self.backend, self.merge, self.target.device)
        try:
            target_logits = self.target.forward_tree(drafted.tree)
        finally:
            self.target.crop(lengths[0])
            self.draft.crop(lengths[1])
        return drafted, target_logits

    def snapshot(self):
        return (self.target.snapshot(), None if self.draft is None else self.draft.snapshot(),
                _LoopState(self.state.root, list(self.state.pending), self.state.feats), self.block,
                self.noise_offset)

    def restore(self, snap, *, seed=None):
        """Go back to ``snap``; optionally with a new ``seed`` (repeated runs of one block)."""
        t, d, st, block, offset = snap
        self.target.restore(t)
        if d is not None:
            self.draft.restore(d)
        self.state, self.block = _LoopState(st.root, list(st.pending), st.feats), block
        self.noise_offset = offset
        if seed is not None:
            noise.check_seed(seed, 0)
            self.seed = seed


def split_draft_path(path, slots) -> tuple[list[int], list[int]]:
    """The accepted path's nodes (``path[1:]``) split into the draft cache slots to keep (the
    leading nodes the draft has fed, ``slots[i] >= 0``) and the nodes it must be fed next block."""
    keep, pending = [], []
    for i in path[1:]:
        if slots[i] >= 0 and not pending:
            keep.append(slots[i])
        else:
            pending.append(i)
    return keep, pending


def final_slots(slots: torch.Tensor, seen_ok: torch.Tensor | None, T: int) -> list[int]:
    """Draft cache slot of each node of the built (possibly packed) tree, -1 if never fed:
    ``slots`` by build-time node, ``seen_ok`` which build-time nodes were real (None: all)."""
    if seen_ok is None or bool(seen_ok.all()):
        out = slots[:T].tolist()
        return out + [-1] * (T - len(out))
    out = [-1] * T
    for j, s in enumerate(slots[seen_ok.nonzero()[:, 0]].tolist()[:T]):
        out[j] = s
    return out


@dataclass
class _LoopState:
    root: int  # the last committed token: in no cache yet
    pending: list[int]  # committed tokens before the root that the draft cache lacks
    # EAGLE draft only: [len(pending) + 1, H] the target feature of each token's predecessor, for pending + [root]
    feats: torch.Tensor | None = None


def _ar_step(tgt, state, samp, seed, offset, drf=None):
    """One target-only step (sampling at GUMBEL ``offset``). With a draft (``method="auto"``) the
    committed root joins ``state.pending`` (and its target feature ``state.feats``, EAGLE), so the
    draft catches up in the next speculative block."""
    t0 = time.perf_counter()
    logits = tgt.forward_chain(torch.tensor([[state.root]], device=tgt.device), logits_to_keep=1)[:, -1]
    t1 = time.perf_counter()
    if samp["temperature"] == 0:
        nxt = int(logits[0].argmax())
    else:
        s = rsd_kernels.sample_without_replacement(logits, 1, **samp, seed=seed, offset=offset, validate=False)
        nxt = int(s.tokens[0, 0])
    t2 = time.perf_counter()
    if drf is not None:
        if state.feats is not None:
            state.feats = torch.cat([state.feats, tgt.features[0, -1:].to(state.feats.dtype)], 0)
        state.pending.append(state.root)
    state.root = nxt
    t3 = time.perf_counter()
    return [nxt], BlockStats(0, 1, 0, 1, 0.0, t1 - t0, t2 - t1, 0.0, t3 - t2)


def _verify(target_logits, drafted, mode, samp, seed, offset, backend):
    """The accepted path (tree node indices from the root) and the next token."""
    greedy = samp["temperature"] == 0
    res = rsd_kernels.verify_tree(target_logits, drafted.draft_logits, drafted.tree,
                                  mode="greedy" if greedy else mode, **samp, seed=seed, offset=offset,
                                  backend=backend, validate=False)
    return [int(i) for i in res.path[0].tolist() if i >= 0], int(res.next_token[0])


def _draft_tree(drf, cfg, state, samp, seed, level_offset, backend, merge, device):
    """Step 1 of a block: ``(drafted, levels)``, the tree (merged when ``merge``; level l sampled at
    GUMBEL offset ``level_offset + l``) and its draft_fn."""
    eagle = state.feats is not None
    levels = (_EagleLevels(drf, state.pending, state.feats, cfg.budget + 1) if eagle
              else _DraftLevels(drf, state.pending, cfg.budget + 1))
    root = torch.tensor([state.root], dtype=torch.long, device=device)
    drafted = rsd_kernels.build_tree(cfg, root, levels, **samp, seed=seed, offset=level_offset, backend=backend,
                                     draft_logits=samp["temperature"] > 0, validate=False, merge=merge)
    return drafted, levels


def tree_slots(levels_slots, seen_ok, drafted, row=0) -> list[int]:
    """Draft cache slot of each node of the verified tree (:func:`final_slots`), a merged tree's
    nodes through ``drafted.source`` (a merged node's slot is its first occurrence's: the same
    token at the same position after the same tokens, so the same keys and values)."""
    T = drafted.tree.max_nodes
    if drafted.source is None:
        return final_slots(levels_slots, seen_ok, T)
    built = final_slots(levels_slots, seen_ok, int(levels_slots.shape[-1]))
    return [built[s] if s >= 0 else -1 for s in drafted.source[row].tolist()]


def _sd_block(tgt, drf, cfg, state, samp, seed, level_offset, verify_offset, backend, mode, merge, rows=None):
    """One block; updates both caches and ``state``. Returns the committed tokens, the
    :class:`BlockStats` and ``(tree, accepted path, seconds of the draft forwards)``. Tree level l
    samples at GUMBEL offset ``level_offset + l``, verification (``verify_tree`` ``mode``; SpecTr's
    chains merged when ``merge``) uses ``verify_offset``; ``rows`` pads the verification forward
    (:meth:`ModelAdapter.forward_tree`). An EAGLE draft (``state.feats`` set) reads features; see
    the comment above :func:`_eagle_prefill`."""
    t0 = time.perf_counter()
    eagle = state.feats is not None
    drafted, levels = _draft_tree(drf, cfg, state, samp, seed, level_offset, backend, merge, tgt.device)
    tree = drafted.tree
    t1 = time.perf_counter()
    prefix = tgt.length
    target_logits = tgt.forward_tree(tree, rows=rows)
    t2 = time.perf_counter()
    path, nxt = _verify(target_logits, drafted, mode, samp, seed, verify_offset, backend)
    t3 = time.perf_counter()
    # compaction: the target keeps prefix + path (the root included); the draft what it has of the path
    tgt.keep_path(prefix, path)
    if eagle:  # entries computed from predicted features are dropped: the path is fed again next block
        drf.crop(levels.root_slot + 1)
        pending = path[1:]
        state.feats = tgt.features[0][torch.tensor(path, device=tgt.device)].to(drf.dtype)
    else:
        keep_d, pending = split_draft_path(path, tree_slots(levels.slots, levels.seen_ok, drafted))
        drf.cache.move_tail(levels.root_slot + 1, keep_d)
    t4 = time.perf_counter()
    toks = tree.tokens[0].tolist()
    accepted = [toks[i] for i in path[1:]]
    state.pending, state.root = [toks[i] for i in pending], nxt
    t5 = time.perf_counter()
    return accepted + [nxt], BlockStats(len(accepted), 0, drafted.draft_calls, 1, t1 - t0, t2 - t1, t3 - t2,
                                        t4 - t3, t5 - t4), (tree, path, levels.forward_s)


class TimedDraftFn:
    """A ``draft_fn`` that adds the seconds of its calls (the draft's forwards) to ``forward_s``, the
    selector's draft cost; subclasses implement ``_call``."""

    forward_s = 0.0

    def __call__(self, level, nodes, tokens, parents):
        t0 = time.perf_counter()
        out = self._call(level, nodes, tokens, parents)
        self.forward_s += time.perf_counter() - t0
        return out


class _DraftLevels(TimedDraftFn):
    """The ``draft_fn`` of :func:`rsd_kernels.build_tree` over the draft adapter's cache.

    Level 0 feeds ``pending + [root]`` as a causal chain (no mask; logits of the root only).
    Level l > 0 feeds the nodes to expand (the previous level's new nodes) in one forward; each
    sees the committed prefix (root included), its tree ancestors already in the cache, and
    itself. The mask, positions and cache slots come from tensors kept per node (ancestor-or-self
    rows, depths), updated with a few tensor ops per level: no per-node Python loop.
    """

    def __init__(self, drf, pending, max_nodes):
        self.drf, self.pending = drf, list(pending)
        dev = drf.device
        self.anc = torch.zeros(max_nodes, max_nodes, dtype=torch.bool, device=dev)
        self.anc[0, 0] = True
        self.depth = torch.zeros(max_nodes, dtype=torch.long, device=dev)
        self.slots = torch.full((max_nodes,), -1, dtype=torch.long, device=dev)
        self.fed: list[torch.Tensor] = []  # node indices in cache-slot order after the root
        self.root_slot = -1
        self.seen_ok = None  # which build-time nodes were real at the last call (ragged trees)

    def _call(self, level, nodes, tokens, parents):
        drf = self.drf
        if level == 0:
            if self.pending:
                chain = torch.tensor([self.pending + [int(tokens[0, 0])]], dtype=torch.long, device=drf.device)
            else:
                chain = tokens[:, :1].to(drf.device)
            logits = self._feed_chain(chain)
            self.root_slot = drf.length - 1
            self.slots[0] = self.root_slot
            return logits
        nd = nodes[0].to(drf.device)
        ok = nd >= 0
        full = bool(ok.all())
        idx = nd if full else nd[ok]
        k = idx.numel()
        par_all = parents[0].to(drf.device).long()
        self.seen_ok = par_all >= 0
        self.seen_ok[0] = True
        if k == 0:
            return torch.zeros(1, nd.shape[0], drf.vocab_size, device=drf.device)
        par = par_all[idx]
        self.anc[idx] = self.anc[par]
        self.anc[idx, idx] = True
        self.depth[idx] = self.depth[par] + 1
        base = drf.length
        self.slots[idx] = torch.arange(base, base + k, device=drf.device)
        self.fed.append(idx)
        order = torch.cat(self.fed) if len(self.fed) > 1 else idx
        allowed = torch.ones(1, k, base + k, dtype=torch.bool, device=drf.device)
        allowed[0, :, self.root_slot + 1:] = self.anc[idx][:, order]
        pos = (self.root_slot + self.depth[idx])[None]
        logits = self._feed_level(tokens[:, idx.to(tokens.device)], pos, allowed, idx, par)
        if full:
            return logits
        out = logits.new_zeros(1, nd.shape[0], logits.shape[-1])
        out[0, ok] = logits[0]
        return out

    def _feed_chain(self, chain):
        """Level 0: ``pending + [root]`` as a causal chain; the root's logits ``[1, 1, V]``."""
        return self.drf.forward_chain(chain, logits_to_keep=1)

    def _feed_level(self, toks, pos, allowed, idx, par):
        """Level > 0: the nodes ``idx`` (parents ``par``) in one forward; their logits ``[1, k, V]``."""
        return self.drf.forward(toks, pos, allowed)


# ------------------------------------------------------------------------- EAGLE feature-level draft
# Feature flow (rsd.engine.drafts.eagle's loop API). F(t) = the target's last hidden state (after its final
# norm) at position t, read from the target's own forwards (ModelAdapter.enable_features: a hook on
# the final norm). The draft's input at position t is (x_t, F(t-1)).
#
# Invariant between blocks: the draft cache holds x_0 .. x_{m-1} fed with target features only
# (F(t-1); zeros for t = 0); ``state.pending + [state.root]`` are the committed tokens it lacks and
# ``state.feats`` their predecessors' target features. A block:
#   level 0   feeds pending + [root] with state.feats (one causal chain): q at the root, f^(root);
#   level l   feeds the level's nodes, each with its parent's predicted feature f^(parent);
#   verify    the target's tree forward also gives F at the root and at every node;
#   after     the draft cache is cropped to the root (dropping every entry computed from a
#             predicted feature); the accepted path a_1..a_k and the next token y become
#             pending + root, with features [F(root), F(a_1), .., F(a_k)].
# The q handed to build_tree at each node is the distribution its children are drawn from and the
# one verification reads, so every method stays exact whatever the features are.

def _eagle_prefill(tgt, drf, ids, room):
    """Both caches over the prompt but its last token; the loop state with the root's feature."""
    for m in (tgt, drf):
        m.reset(room)
    H = drf.model.feature_width  # a target feature (with the extra layers' outputs, if any)
    n = ids.numel()
    if n == 1:
        return _LoopState(root=int(ids[0]), pending=[], feats=torch.zeros(1, H, device=drf.device))
    tgt.forward_chain(ids[None, :-1], logits_to_keep=1)
    F = tgt.features[0]  # [n - 1, H]: F(0) .. F(n - 2)
    prev = torch.cat([F.new_zeros(1, H), F], 0)  # predecessor features of x_0 .. x_{n-1}
    drf.forward_chain(ids[None, :-1], logits_to_keep=1, features=prev[None, :-1])
    return _LoopState(root=int(ids[-1]), pending=[], feats=prev[-1:].clone())


class _EagleLevels(_DraftLevels):
    """:class:`_DraftLevels` for an EAGLE draft: level 0 feeds pending + root with their target
    features, a node of level l > 0 its parent's predicted feature (``pred``, indexed by node)."""

    def __init__(self, drf, pending, feats, max_nodes):
        super().__init__(drf, pending, max_nodes)
        self.feats = feats
        self.pred = None

    def _feed_chain(self, chain):
        drf = self.drf
        logits = drf.forward_chain(chain, logits_to_keep=1, features=self.feats[None])
        f = drf.features[0]
        self.pred = f.new_zeros(self.anc.shape[0], f.shape[-1])
        self.pred[0] = f[-1]
        return logits

    def _feed_level(self, toks, pos, allowed, idx, par):
        drf = self.drf
        logits = drf.forward(toks, pos, allowed, features=self.pred[par][None])
        self.pred[idx] = drf.features[0]
        return logits
