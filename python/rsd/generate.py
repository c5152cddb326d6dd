"""``generate``: target-only decoding (``ar``) and speculative decoding (SD, SpecTr, RSD-C, RSD-S).

One **block** of a speculative method:

1. the draft grows the method's tree from the root (the last committed token) with one draft
   forward per level (:func:`rsd_kernels.build_tree`);
2. the target runs one verification forward over root + tree nodes (tree attention);
3. :func:`rsd_kernels.verify_tree` walks the tree: the accepted path and a next token;
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
``seed`` (drawn from torch's global generator when ``seed=None``); block b samples level l of
its tree at offset ``b * L + l`` (stream GUMBEL) and verifies at offset ``b`` (streams
ACCEPT/RESIDUAL), so a run is reproducible from its seed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

import rsd_kernels
from rsd_kernels import checks, noise
from rsd_kernels.methods import METHODS, TreeConfig, default_config, parse_config

from .adapter import ModelAdapter

ALL_METHODS = ("ar",) + METHODS


@dataclass
class BlockStats:
    """One block (for ``ar``: one target step)."""

    accepted: int  # draft tokens accepted (0 for ar)
    emitted: int  # tokens committed by this block (accepted + the next token, cut at EOS / max_new_tokens)
    draft_calls: int
    target_calls: int
    draft_s: float  # tree building: draft forwards, sampling, masks
    target_s: float  # the target forward (verification forward; ar: the step)
    verify_s: float  # verification alone (ar: choosing the next token); the cache work is cache_s
    cache_s: float = 0.0  # KV-cache compaction of both models (moving the accepted path)
    other_s: float = 0.0  # everything else of the block (bookkeeping)

    @property
    def total_s(self) -> float:
        return self.draft_s + self.target_s + self.verify_s + self.cache_s + self.other_s


class _Timed:
    """Wall-time views of a result with ``blocks`` (:class:`BlockStats`), ``prefill_s`` and ``num_tokens``."""

    @property
    def decode_s(self) -> float:
        """Wall time of the blocks (prefill excluded)."""
        return sum(b.total_s for b in self.blocks)

    @property
    def wall_s(self) -> float:
        return self.prefill_s + self.decode_s

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of decoding (prefill excluded)."""
        return self.num_tokens / self.decode_s if self.decode_s > 0 else 0.0


@dataclass
class GenerationResult(_Timed):
    tokens: list[int]  # the new tokens (prompt excluded)
    method: str
    config: TreeConfig | None  # None for ar
    blocks: list[BlockStats] = field(default_factory=list)
    prefill_s: float = 0.0
    stop_reason: str = "max_new_tokens"  # or "eos", "context"
    seed: int = 0

    @property
    def target_calls(self) -> int:
        """Target forwards after the prefill (the denominator of block efficiency)."""
        return sum(b.target_calls for b in self.blocks)

    @property
    def draft_calls(self) -> int:
        return sum(b.draft_calls for b in self.blocks)

    @property
    def accepted_lengths(self) -> list[int]:
        return [b.accepted for b in self.blocks]

    @property
    def block_efficiency(self) -> float:
        """Generated tokens per target verification call (prefill excluded)."""
        return len(self.tokens) / self.target_calls if self.target_calls else 0.0

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def time_split(self) -> dict:
        """Wall seconds per part; the parts sum to :attr:`wall_s`."""
        out = {"prefill_s": self.prefill_s}
        for k in ("draft_s", "target_s", "verify_s", "cache_s", "other_s"):
            out[k] = sum(getattr(b, k) for b in self.blocks)
        return out

    def to_dict(self) -> dict:
        return {
            "method": self.method, "config": None if self.config is None else str(self.config),
            "budget": None if self.config is None else self.config.budget, "seed": self.seed,
            "tokens": list(self.tokens), "num_tokens": len(self.tokens), "stop_reason": self.stop_reason,
            "block_efficiency": self.block_efficiency, "tokens_per_s": self.tokens_per_s,
            "target_calls": self.target_calls, "draft_calls": self.draft_calls,
            "accepted_lengths": self.accepted_lengths, **self.time_split(),
        }


def resolve_config(method: str, config=None, budget=None) -> TreeConfig | None:
    """The tree configuration of ``method``: ``config`` (a :class:`TreeConfig` or text such as
    ``"3x2"`` / ``"2,2,1"``), else :func:`rsd_kernels.default_config` for ``budget``.

    Raises ``ValueError`` for an unknown method, a missing budget, or a config whose budget
    differs from the one given.
    """
    if method not in ALL_METHODS:
        raise ValueError(f"method must be one of {ALL_METHODS}, got {method!r}")
    if method == "ar":
        if config is not None:
            raise ValueError("method 'ar' (target only) takes no tree config")
        return None
    if config is None:
        if budget is None:
            raise ValueError(f"method {method!r} needs a budget or an explicit config")
        return default_config(method, budget)
    if isinstance(config, str):
        config = parse_config(method, config)
    if not isinstance(config, TreeConfig):
        raise TypeError(f"config must be a TreeConfig or a string, got {type(config).__name__}")
    if config.method != method:
        raise ValueError(f"config {config} is for method {config.method!r}, not {method!r}")
    if budget is not None and config.budget != budget:
        raise ValueError(f"config {config} has budget {config.budget}, not the requested budget {budget}")
    return config


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

    :func:`generate` drives it (``prefill`` once, then ``step`` per block); tests use
    :meth:`snapshot`/:meth:`restore` to run many single blocks from one prefill. Arguments
    as in :func:`generate`.
    """

    def __init__(self, target, draft, method="rsd-s", config=None, budget=None, *, temperature=0.0, top_k=None,
                 top_p=None, seed=None, attention="sdpa", backend="auto"):
        self.config = resolve_config(method, config, budget)
        self.method = method
        self.temperature = checks.temperature(temperature)
        if self.temperature > 0:  # validate the warps once, up front
            rsd_kernels.warp_logits(torch.zeros(1, 2), self.temperature, top_k, top_p)
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

    @property
    def depth(self) -> int:
        return 1 if self.config is None else self.config.depth

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
        room = ids.numel() + 256 + (0 if self.config is None else self.config.budget + 1)
        if self.eagle:
            self.state = _eagle_prefill(tgt, self.draft, ids, room)
            self.block = 0
            return time.perf_counter() - t0
        for m in (tgt, self.draft):
            if m is not None:
                m.reset(room)
                if ids.numel() > 1:
                    m.forward_chain(ids[None, :-1], logits_to_keep=1)
        self.state = _LoopState(root=int(ids[-1]), pending=[])
        self.block = 0
        return time.perf_counter() - t0

    def fits(self) -> bool:
        """Whether one more block fits the target's context."""
        ctx = self.target.max_positions
        return ctx is None or self.target.length + self.depth + 1 <= ctx

    def step(self):
        """One block (``ar``: one target step): returns (committed tokens, :class:`BlockStats`)."""
        if self.state is None:
            raise RuntimeError("call prefill(prompt_ids) before step()")
        if self.config is None:
            out = _ar_step(self.target, self.state, self.samp, self.seed, self.block)
        else:
            out = _sd_block(self.target, self.draft, self.config, self.state, self.samp, self.seed, self.block,
                            self.backend)
        self.block += 1
        return out

    def snapshot(self):
        return (self.target.snapshot(), None if self.draft is None else self.draft.snapshot(),
                _LoopState(self.state.root, list(self.state.pending), self.state.feats), self.block)

    def restore(self, snap, *, seed=None):
        """Go back to ``snap``; optionally with a new ``seed`` (repeated runs of one block)."""
        t, d, st, block = snap
        self.target.restore(t)
        if d is not None:
            self.draft.restore(d)
        self.state, self.block = _LoopState(st.root, list(st.pending), st.feats), block
        if seed is not None:
            noise.check_seed(seed, 0)
            self.seed = seed


def generate(target, draft, prompt_ids, method: str = "rsd-s", config=None, budget: int | None = None, *,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             max_new_tokens: int = 64, seed: int | None = None, eos_token_id=None, attention: str = "sdpa",
             backend: str = "auto", progress=None) -> GenerationResult:
    """Generate up to ``max_new_tokens`` tokens after ``prompt_ids`` with ``method``.

    Args:
        target, draft: ``transformers`` causal LMs (or :class:`ModelAdapter` s) sharing one
            vocabulary; ``draft`` may be ``None`` for ``method="ar"``.
        prompt_ids: 1-D token ids (list or tensor).
        method: ``"ar"`` (target only), ``"sd"``, ``"spectr"``, ``"rsd-c"``, ``"rsd-s"``.
        config, budget: the tree (see :func:`resolve_config`).
        temperature, top_k, top_p: sampling warps, shared by draft and target; temperature 0
            is greedy decoding and returns exactly the target's greedy tokens.
        seed: Philox seed (``None``: drawn from torch's global generator).
        eos_token_id: an int or a collection of ints that end generation (the EOS is kept).
        attention: ``"sdpa"``, ``"eager"`` (4D mask) or ``"rsd"`` (rsd_kernels.tree_attention
            for the target's verification forward).
        backend: the ``rsd_kernels`` backend for every tree op.
        progress: optional callable ``progress(num_new_tokens)`` called after each block.

    Raises ``ValueError`` for an unknown method, a config that does not match the budget,
    target and draft vocabularies that differ, or a prompt that leaves no room in the context.

    A **batch** of prompts (a list of token lists of different lengths, or a 2-D tensor with
    more than one row) is decoded together by :func:`rsd.batched.generate_batch`, which returns
    a :class:`rsd.batched.BatchGenerationResult` (one :class:`GenerationResult` per prompt).
    """
    from .batched import generate_batch, is_batch

    if is_batch(prompt_ids):
        return generate_batch(target, draft, prompt_ids, method, config, budget, temperature=temperature,
                              top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                              eos_token_id=eos_token_id, attention=attention, backend=backend, progress=progress)
    dec = Decoder(target, draft, method, config, budget, temperature=temperature, top_k=top_k, top_p=top_p,
                  seed=seed, attention=attention, backend=backend)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    eos = _eos_set(eos_token_id)
    result = GenerationResult([], method, dec.config, seed=dec.seed)
    result.prefill_s = dec.prefill(prompt_ids)
    while len(result.tokens) < max_new_tokens:
        if not dec.fits():
            result.stop_reason = "context"
            break
        new, stats = dec.step()
        new, stop = cut_new_tokens(new, max_new_tokens - len(result.tokens), eos)
        stats.emitted = len(new)
        result.tokens.extend(new)
        result.blocks.append(stats)
        if progress is not None:
            progress(len(new))
        if stop:
            result.stop_reason = stop
            break
    return result


def cut_new_tokens(new: list[int], room: int, eos: set) -> tuple[list[int], str | None]:
    """A block's tokens cut to the ``room`` left under ``max_new_tokens`` and after the first EOS
    (kept); the stop reason ``"eos"`` if one was met, else ``None``."""
    new = new[:room]
    for j, t in enumerate(new):
        if t in eos:
            return new[: j + 1], "eos"
    return new, None


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


def _eos_set(eos_token_id):
    if eos_token_id is None:
        return set()
    if isinstance(eos_token_id, int):
        return {eos_token_id}
    return {int(t) for t in eos_token_id}


@dataclass
class _LoopState:
    root: int  # the last committed token: in no cache yet
    pending: list[int]  # committed tokens before the root that the draft cache lacks
    # EAGLE draft only: [len(pending) + 1, H] the target feature of each token's predecessor, for pending + [root]
    feats: torch.Tensor | None = None


def _ar_step(tgt, state, samp, seed, block):
    t0 = time.perf_counter()
    logits = tgt.forward_chain(torch.tensor([[state.root]], device=tgt.device), logits_to_keep=1)[:, -1]
    t1 = time.perf_counter()
    if samp["temperature"] == 0:
        nxt = int(logits[0].argmax())
    else:
        s = rsd_kernels.sample_without_replacement(logits, 1, **samp, seed=seed, offset=block, validate=False)
        nxt = int(s.tokens[0, 0])
    state.root = nxt
    t2 = time.perf_counter()
    return [nxt], BlockStats(0, 1, 0, 1, 0.0, t1 - t0, t2 - t1)


def _verify(target_logits, drafted, cfg, samp, seed, block, backend):
    """The accepted path (tree node indices from the root) and the next token."""
    greedy = samp["temperature"] == 0
    res = rsd_kernels.verify_tree(target_logits, drafted.draft_logits, drafted.tree,
                                  mode="greedy" if greedy else cfg.verify_mode, **samp, seed=seed, offset=block,
                                  backend=backend, validate=False)
    return [int(i) for i in res.path[0].tolist() if i >= 0], int(res.next_token[0])


def _sd_block(tgt, drf, cfg, state, samp, seed, block, backend):
    """One block; updates both caches and ``state``; returns the committed tokens. An EAGLE draft
    (``state.feats`` set) reads features; see the comment above :func:`_eagle_prefill`."""
    dev = tgt.device
    t0 = time.perf_counter()
    eagle = state.feats is not None
    levels = (_EagleLevels(drf, state.pending, state.feats, cfg.budget + 1) if eagle
              else _DraftLevels(drf, state.pending, cfg.budget + 1))
    root = torch.tensor([state.root], dtype=torch.long, device=dev)
    drafted = rsd_kernels.build_tree(cfg, root, levels, **samp, seed=seed, offset=block * cfg.depth, backend=backend,
                                     draft_logits=samp["temperature"] > 0, validate=False)
    tree = drafted.tree
    t1 = time.perf_counter()
    prefix = tgt.length
    target_logits = tgt.forward_tree(tree)
    t2 = time.perf_counter()
    path, nxt = _verify(target_logits, drafted, cfg, samp, seed, block, backend)
    t3 = time.perf_counter()
    # compaction: the target keeps prefix + path (the root included); the draft what it has of the path
    tgt.keep_path(prefix, path)
    if eagle:  # entries computed from predicted features are dropped: the path is fed again next block
        drf.crop(levels.root_slot + 1)
        pending = path[1:]
        state.feats = tgt.features[0][torch.tensor(path, device=tgt.device)].to(drf.dtype)
    else:
        keep_d, pending = split_draft_path(path, final_slots(levels.slots, levels.seen_ok, tree.max_nodes))
        drf.cache.move_tail(levels.root_slot + 1, keep_d)
    t4 = time.perf_counter()
    toks = tree.tokens[0].tolist()
    accepted = [toks[i] for i in path[1:]]
    state.pending, state.root = [toks[i] for i in pending], nxt
    t5 = time.perf_counter()
    return accepted + [nxt], BlockStats(len(accepted), 0, drafted.draft_calls, 1, t1 - t0, t2 - t1, t3 - t2,
                                        t4 - t3, t5 - t4)


def is_eagle(model) -> bool:
    """Whether ``model`` (or the model of an adapter) is an EAGLE feature-level draft."""
    from .draft.eagle import EagleDraft

    return isinstance(getattr(model, "model", None) if isinstance(model, ModelAdapter) else model, EagleDraft)


class _DraftLevels:
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

    def __call__(self, level, nodes, tokens, parents):
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
# Feature flow (rsd.draft.eagle's loop API). F(t) = the target's last hidden state (after its final
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
