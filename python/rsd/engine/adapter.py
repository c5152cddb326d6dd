"""Model adapter: a ``transformers`` causal LM with its own preallocated KV cache, fed chains and trees.

The adapter owns one :class:`~rsd.engine.kvcache.KVBuffer` and keeps a single invariant the decoding
loop relies on: the cache holds keys/values for a sequence of ``length`` tokens (the committed
prefix), and every forward writes the keys of the tokens it feeds in place right after them.
After verification :meth:`ModelAdapter.keep_path` moves only the accepted path's keys/values
down behind the prefix (the prefix is never copied or recomputed).

Attention (``attention=``):

* ``"sdpa"`` (default) -- the adapter registers its own attention function with transformers'
  ``AttentionInterface`` (``"rsd_tree"``): PyTorch SDPA with grouped-query attention kept
  (``enable_gqa``, no ``repeat_kv``) on the CPU, with **no mask** where causal order suffices
  (prefill from an empty cache, single-token steps) and a bool mask only where one is needed
  (a draft tree level, the target's verification forward, a chain of several tokens after a
  prefix). The mask function is transformers' ``sdpa_mask``, so a model driven by Hugging Face
  code (``generate``) after an adapter touched it still gets correct masks.
* ``"rsd"`` -- the same, but the target's verification forward calls
  :func:`rsd_kernels.tree_attention` (Triton / CUDA / reference backend) with the tree's
  ancestor bitmask instead of SDPA with a mask.
* ``"eager"`` -- transformers' eager kernels with an explicit additive 4D mask on every forward
  (the slow reference path).

Output rows: ``logits_to_keep`` runs the output head only on the last rows that are used
(prefill and single-token steps: one row; draft levels: the fed rows that are sampled from).
"""
from __future__ import annotations

import inspect

import torch

import rsd_kernels
from rsd_kernels.tree import tree_key_mask

from .kvcache import KVBuffer

ATTENTIONS = ("sdpa", "eager", "rsd")
RSD_ATTENTION_NAME = "rsd_tree"


def _rsd_tree_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """``AttentionInterface`` function of the adapter's forwards (see the module docstring).

    ``query [1, Hq, n, D]``, ``key/value [1, Hkv, S, D]``; ``attention_mask`` None or a bool /
    additive 4D mask. With ``rsd_tree_bits`` in the kwargs: :func:`rsd_kernels.tree_attention`.
    """
    bits = kwargs.get("rsd_tree_bits")
    if bits is not None:
        # K/V: the cache's [:, :, :S] views as they are (no copy); prefix lengths right by construction,
        # so no value check (no host sync in a verification forward)
        out = rsd_kernels.tree_attention(query, key, value, bits, kwargs["rsd_prefix_lens"], scale=scaling,
                                         validate=False, backend=kwargs.get("rsd_backend", "auto"))
        return out.transpose(1, 2).contiguous(), None
    q_len, kv_len = query.shape[2], key.shape[2]
    groups = query.shape[1] // key.shape[1]
    is_causal = attention_mask is None and q_len > 1
    if is_causal and kv_len > q_len:
        # transformers only skips the mask here for a prefill into an empty static cache
        key, value = key[:, :, :q_len], value[:, :, :q_len]
    gqa = {}
    if groups > 1:
        if attention_mask is None or query.device.type == "cpu":
            gqa = {"enable_gqa": True}
        else:  # GPU kernels with a mask do not take GQA: expand like transformers does
            key = key.repeat_interleave(groups, dim=1)
            value = value.repeat_interleave(groups, dim=1)
    if attention_mask is not None and attention_mask.dtype != torch.bool and attention_mask.dtype != query.dtype:
        attention_mask = attention_mask.to(query.dtype)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           dropout_p=dropout, scale=scaling, is_causal=is_causal,
                                                           **gqa)
    return out.transpose(1, 2).contiguous(), None


def register_rsd_attention() -> str:
    """Register the adapter's attention function with transformers as ``"rsd_tree"`` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(RSD_ATTENTION_NAME, _rsd_tree_attention)
    AttentionMaskInterface.register(RSD_ATTENTION_NAME, sdpa_mask)
    return RSD_ATTENTION_NAME


def _transformers_model(model):
    """The outermost ``transformers`` model inside ``model`` (itself, a backbone, a wrapped model)."""
    for m in model.modules():
        if hasattr(m, "set_attn_implementation") and hasattr(m, "config"):
            return m
    return None


def _accepts(fn, name):
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


class ModelAdapter:
    """One model + its KV cache (batch size 1).

    Args:
        model: a ``transformers`` causal LM (Llama family tested), or a module wrapping one with
            the same call signature (``input_ids, attention_mask, position_ids, past_key_values,
            use_cache[, logits_to_keep]`` -> ``.logits``).
        attention: ``"sdpa"``, ``"eager"`` or ``"rsd"`` (see the module docstring).
        kernel_backend: the ``rsd_kernels`` backend of the ``"rsd"`` path.
    """

    def __init__(self, model, attention: str = "sdpa", kernel_backend: str = "auto"):
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        self.model = model
        self.attention = attention
        self.kernel_backend = kernel_backend
        impl = "eager" if attention == "eager" else register_rsd_attention()
        tm = _transformers_model(model)
        if tm is None:
            raise ValueError("ModelAdapter needs a transformers model (set_attn_implementation), got "
                             f"{type(model).__name__}")
        self._impl = impl
        self._tmodel = tm
        self._set_impl()
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.vocab_size = int(model.config.vocab_size)
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self.num_layers = int(getattr(tm.config, "num_hidden_layers", 0) or model.config.num_hidden_layers)
        self._rows_kw = _accepts(model.forward, "logits_to_keep")
        self.features = None  # [1, n, H] of the last forward when feature capture is on (see enable_features)
        self._hook = None
        self._capturing = False
        self.reset()

    def enable_features(self, layers=()):
        """Make every forward also leave the model's last hidden states (after its final norm: what
        the LM head reads, the feature an EAGLE draft consumes) in :attr:`features` ``[1, n, H]``.

        A forward hook on the final norm keeps a reference to its output (no copy, no second
        forward, no per-layer hidden states); for an EAGLE draft that output is its predicted
        feature. With ``layers`` (decoder layer indices, for a draft trained on several layers'
        features) hooks also keep those layers' outputs and :attr:`features` is
        ``[1, n, (len(layers) + 1) * H]``: those outputs, then the final feature. Idempotent for the
        same ``layers``.
        """
        layers = tuple(int(i) for i in layers)
        if self._hook is not None:
            if layers != self._feature_layers:
                raise ValueError(f"layers: features already enabled for layers {list(self._feature_layers)}")
            return self
        norm = None
        for owner in (self._tmodel, getattr(self._tmodel, "model", None)):
            if owner is not None and isinstance(getattr(owner, "norm", None), torch.nn.Module):
                norm = owner.norm
                break
        if norm is None:
            raise ValueError(f"{type(self.model).__name__}: no final norm (.model.norm) to read the last hidden "
                             "states from")

        self._feature_layers = layers
        tap = None
        if layers:
            from .drafts.eagle import LayerTap

            tap = LayerTap(self._tmodel, layers).attach()  # for the adapter's lifetime

        def hook(_module, _inputs, output):
            if self._capturing:
                self.features = tap.features(output) if tap is not None else output
        self._hook = norm.register_forward_hook(hook)
        return self

    def _set_impl(self):
        """(Re)apply this adapter's attention implementation (another adapter or user may share the module)."""
        if getattr(self._tmodel.config, "_attn_implementation", None) != self._impl:
            self._tmodel.set_attn_implementation(self._impl)

    # ---- cache ------------------------------------------------------------------------
    def reset(self, capacity: int = 0):
        """Empty the cache (keeping its buffer when there is one)."""
        old = getattr(self, "cache", None)
        if old is not None and old.kv is not None:
            old.truncate(0)
            old.reserve(capacity)
        else:
            self.cache = KVBuffer(self.num_layers, max(capacity, 256))

    @property
    def length(self) -> int:
        return self.cache.length

    def keep(self, positions: torch.Tensor):
        """Compact the cache to ``positions`` (``[k]`` int64, increasing): e.g. prefix + accepted path.

        Only the positions after the longest unchanged prefix move.
        """
        self.cache.keep(positions)

    def keep_path(self, prefix: int, nodes):
        """Keep ``[0, prefix)`` and the tree nodes ``nodes`` (increasing slots relative to ``prefix``)."""
        self.cache.move_tail(prefix, [prefix + int(i) for i in nodes])

    def crop(self, length: int):
        """Keep the first ``length`` positions."""
        self.cache.truncate(length)

    def snapshot(self):
        """A copy of the cache state (for tests and repeated single-block runs)."""
        return self.cache.snapshot()

    def restore(self, snap):
        self.cache.restore(snap)

    # ---- forwards ---------------------------------------------------------------------
    def _check_room(self, max_pos: int):
        if self.max_positions is not None and max_pos >= self.max_positions:
            raise ValueError(f"sequence position {max_pos} exceeds the model's context "
                             f"(max_position_embeddings={self.max_positions})")

    @torch.no_grad()
    def _call(self, tokens, position_ids, mask, cache, logits_to_keep=0, **extra):
        """One forward over ``cache`` on this adapter's attention path, leaving :attr:`features` when
        feature capture is on; fp32 logits (of the last ``logits_to_keep`` rows when asked). The
        caller advances ``cache`` (this adapter's, or a batched loop's)."""
        self._set_impl()
        if logits_to_keep and self._rows_kw:
            extra["logits_to_keep"] = logits_to_keep
        self._capturing = self._hook is not None
        try:
            out = self.model(input_ids=tokens.to(self.device), attention_mask=mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True, **extra)
        finally:
            self._capturing = False
        logits = out.logits
        if logits_to_keep and logits.shape[1] != logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return logits.float()

    def _run(self, tokens, position_ids, mask, logits_to_keep=0, **extra):
        logits = self._call(tokens, position_ids, mask, self.cache, logits_to_keep, **extra)
        self.cache.advance(tokens.shape[1])
        return logits

    def _mask(self, allowed):
        """``allowed [1, n, S]`` bool -> the 4D mask of this adapter's attention path."""
        if self.attention == "eager":
            mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
            return mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)[:, None]
        return allowed[:, None]

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, position_ids: torch.Tensor, allowed: torch.Tensor | None = None, *,
                logits_to_keep: int = 0, **extra) -> torch.Tensor:
        """Append ``tokens [1, n]`` at ``position_ids [1, n]``; return logits ``[1, n, V]`` (fp32),
        or of the last ``logits_to_keep`` rows.

        ``allowed [1, n, length + n]`` bool says which cache keys each new token sees (None:
        all earlier keys plus causal among the new ones: then no mask is built where causal
        order suffices).
        """
        n = tokens.shape[1]
        if n == 0:
            raise ValueError("forward needs at least one token")
        self._check_room(int(position_ids.max()))
        S = self.length + n
        self.cache.reserve(S)
        if allowed is None and self.attention == "eager":
            allowed = torch.ones(1, n, S, dtype=torch.bool, device=self.device)
            allowed[0, :, self.length:] = torch.ones(n, n, dtype=torch.bool, device=self.device).tril()
        mask = None if allowed is None else self._mask(allowed)
        return self._run(tokens, position_ids.to(self.device), mask, logits_to_keep, **extra)

    def forward_chain(self, tokens: torch.Tensor, logits_to_keep: int = 0, **extra) -> torch.Tensor:
        """Append a causal chain ``tokens [1, n]`` right after the cached prefix."""
        pos = torch.arange(self.length, self.length + tokens.shape[1], device=self.device)[None]
        return self.forward(tokens, pos, logits_to_keep=logits_to_keep, **extra)

    @torch.no_grad()
    def forward_tree(self, tree: rsd_kernels.DraftTree, rows: int | None = None) -> torch.Tensor:
        """Verification forward over root + tree nodes: logits ``[1, T, V]``.

        The tree's keys are written at ``length .. length + T - 1``; positions are
        ``length + depth``; node i sees the prefix and its ancestors-or-self
        (``tree.dense_mask``, or ``tree.ancestor_bitmask`` on the ``"rsd"`` path).

        ``rows`` > T **pads** the forward to that many rows (:func:`pad_tree`: a cheaper GEMM
        shape on some machines, see :mod:`rsd.engine.profile`): the extra rows see the prefix and
        themselves, no node sees them, their keys lie after the tree's (dropped by the next
        compaction) and their logits are not returned.
        """
        if tree.batch_size != 1:
            raise ValueError(f"the adapter runs batch size 1, got a tree with {tree.batch_size} rows")
        T = tree.max_nodes
        if rows is not None and rows > T:
            return self.forward_tree(pad_tree(tree, rows))[:, :T]
        prefix = self.length
        pos = tree.position_ids(prefix).to(self.device)
        if self.attention == "rsd":
            self._check_room(int(pos.max()))
            self.cache.reserve(prefix + T)
            plens = torch.tensor([prefix], dtype=torch.int64, device=self.device)
            return self._run(tree.tokens, pos, None, rsd_tree_bits=tree.ancestor_bitmask, rsd_prefix_lens=plens,
                             rsd_backend=self.kernel_backend)
        allowed = tree_key_mask(tree.dense_mask, prefix, prefix + T)
        return self.forward(tree.tokens, pos, allowed)


def pad_tree(tree: rsd_kernels.DraftTree, rows: int) -> rsd_kernels.DraftTree:
    """``tree`` with ``rows - T`` padding nodes appended to every row (``num_nodes`` unchanged):
    root tokens, no parent, depth 0; a padding node attends to the prefix and itself only and no
    node attends to it, so the real rows' outputs are those of the unpadded forward."""
    B, T = tree.tokens.shape
    extra = rows - T
    if extra <= 0:
        return tree
    tok = torch.cat([tree.tokens, tree.tokens[:, :1].expand(B, extra)], 1)
    par = torch.cat([tree.parents, torch.full((B, extra), -1, dtype=tree.parents.dtype, device=tree.device)], 1)
    return rsd_kernels.DraftTree(tok, par, tree.num_nodes)


def is_eagle(model) -> bool:
    """Whether ``model`` (or the model of an adapter) is an EAGLE feature-level draft."""
    from .drafts.eagle import EagleDraft

    return isinstance(getattr(model, "model", None) if isinstance(model, ModelAdapter) else model, EagleDraft)
