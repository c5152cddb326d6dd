"""Model adapter: a ``transformers`` causal LM with its own KV cache, fed chains and trees.

The adapter owns one ``DynamicCache`` and keeps a single invariant the decoding loop relies on:
the cache holds keys/values for a sequence of ``length`` tokens (the committed prefix), and every
forward appends the keys of the tokens it feeds. After verification :meth:`ModelAdapter.keep`
compacts the cache to the positions to keep (prefix + accepted path), so the prefix is never
recomputed.

Attention paths (``attention=``):

* ``"sdpa"`` / ``"eager"`` -- transformers' own kernels with an explicit additive 4D mask
  ``[1, 1, n, S + n]`` (the tree mask of :meth:`~rsd_kernels.DraftTree.attention_mask_4d` for a
  verification forward);
* ``"rsd"`` -- a verification forward calls :func:`rsd_kernels.tree_attention` through
  transformers' ``AttentionInterface`` (registered as ``"rsd_tree"``); every other forward of
  that model (prefill, chains, draft levels) takes the SDPA path with the 4D mask.
"""
from __future__ import annotations

import torch

import rsd_kernels
from rsd_kernels.tree import tree_key_mask

ATTENTIONS = ("sdpa", "eager", "rsd")
RSD_ATTENTION_NAME = "rsd_tree"


def _rsd_tree_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """``AttentionInterface`` function: tree attention when the forward carries a tree, else SDPA."""
    bits = kwargs.get("rsd_tree_bits")
    if bits is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    out = rsd_kernels.tree_attention(query, key, value, bits, kwargs["rsd_prefix_lens"], scale=scaling,
                                     backend=kwargs.get("rsd_backend", "auto"))
    return out.transpose(1, 2).contiguous(), None


def register_rsd_attention() -> str:
    """Register :func:`rsd_kernels.tree_attention` with transformers as ``"rsd_tree"`` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(RSD_ATTENTION_NAME, _rsd_tree_attention)
    AttentionMaskInterface.register(RSD_ATTENTION_NAME, sdpa_mask)
    return RSD_ATTENTION_NAME


class ModelAdapter:
    """One model + its KV cache (batch size 1).

    Args:
        model: a ``transformers`` causal LM (Llama family tested) or any module with the same
            call signature (``input_ids, attention_mask, position_ids, past_key_values,
            use_cache`` -> ``.logits``).
        attention: ``"sdpa"``, ``"eager"`` or ``"rsd"`` (see the module docstring).
        kernel_backend: the ``rsd_kernels`` backend of the ``"rsd"`` path.
    """

    def __init__(self, model, attention: str = "sdpa", kernel_backend: str = "auto"):
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        self.model = model
        self.attention = attention
        self.kernel_backend = kernel_backend
        impl = {"sdpa": "sdpa", "eager": "eager", "rsd": register_rsd_attention()}[attention]
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(impl)
        elif attention != "sdpa":
            raise ValueError(f"attention={attention!r} needs a transformers model (set_attn_implementation)")
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.vocab_size = int(model.config.vocab_size)
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self.reset()

    # ---- cache ------------------------------------------------------------------------
    def reset(self):
        """Empty the cache."""
        from transformers import DynamicCache

        self.cache = DynamicCache()
        self.length = 0

    def _layers(self):
        layers = getattr(self.cache, "layers", None)
        if layers is None:
            raise TypeError("the KV cache has no .layers: transformers >= 5 DynamicCache is required")
        for i, layer in enumerate(layers):
            if getattr(layer, "is_sliding", False) or not hasattr(layer, "keys"):
                raise TypeError(f"cache layer {i} ({type(layer).__name__}) cannot be compacted: only full-attention "
                                "DynamicLayer caches are supported")
        return layers

    def keep(self, positions: torch.Tensor):
        """Compact the cache to ``positions`` (``[k]`` int64, increasing): e.g. prefix + accepted path."""
        positions = positions.to(self.device, torch.long)
        for layer in self._layers():
            if layer.keys is not None and layer.keys.numel():
                layer.keys = layer.keys.index_select(-2, positions)
                layer.values = layer.values.index_select(-2, positions)
        self.length = int(positions.numel())

    def crop(self, length: int):
        """Keep the first ``length`` positions."""
        self.keep(torch.arange(length, device=self.device))

    def snapshot(self):
        """A copy of the cache state (for tests and repeated single-block runs)."""
        return [(l.keys.clone(), l.values.clone()) for l in self._layers()], self.length

    def restore(self, snap):
        layers, length = snap
        if len(self.cache.layers) != len(layers):
            raise ValueError("snapshot does not match this cache")
        for layer, (k, v) in zip(self.cache.layers, layers):
            layer.keys, layer.values = k.clone(), v.clone()
        self.length = length

    # ---- forwards ---------------------------------------------------------------------
    def _check_room(self, n_new: int, max_pos: int):
        if self.max_positions is not None and max_pos >= self.max_positions:
            raise ValueError(f"sequence position {max_pos} exceeds the model's context "
                             f"(max_position_embeddings={self.max_positions})")

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, position_ids: torch.Tensor, allowed: torch.Tensor | None = None,
                **extra) -> torch.Tensor:
        """Append ``tokens [1, n]`` at ``position_ids [1, n]`` and return logits ``[1, n, V]`` (fp32).

        ``allowed [1, n, length + n]`` bool says which cache keys each new token sees (None:
        all earlier keys plus causal among the new ones).
        """
        n = tokens.shape[1]
        if n == 0:
            raise ValueError("forward needs at least one token")
        S = self.length + n
        self._check_room(n, int(position_ids.max()))
        if allowed is None:
            allowed = torch.ones(1, n, S, dtype=torch.bool, device=self.device)
            allowed[0, :, self.length:] = torch.ones(n, n, dtype=torch.bool, device=self.device).tril()
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        out = self.model(input_ids=tokens.to(self.device), attention_mask=mask[:, None],
                         position_ids=position_ids.to(self.device), past_key_values=self.cache, use_cache=True,
                         **extra)
        self.length = S
        return out.logits.float()

    def forward_chain(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append a causal chain ``tokens [1, n]`` right after the cached prefix."""
        pos = torch.arange(self.length, self.length + tokens.shape[1], device=self.device)[None]
        return self.forward(tokens, pos)

    def forward_tree(self, tree: rsd_kernels.DraftTree) -> torch.Tensor:
        """Verification forward over root + tree nodes: logits ``[1, T, V]``.

        The tree's keys are appended at ``length .. length + T - 1``; positions are
        ``length + depth``; node i sees the prefix and its ancestors-or-self.
        """
        if tree.batch_size != 1:
            raise ValueError(f"the adapter runs batch size 1, got a tree with {tree.batch_size} rows")
        prefix = self.length
        pos = tree.position_ids(prefix)
        if self.attention == "rsd":
            self._check_room(tree.max_nodes, int(pos.max()))
            plens = torch.tensor([prefix], dtype=torch.int64, device=self.device)
            out = self.model(input_ids=tree.tokens.to(self.device), attention_mask=None, position_ids=pos,
                             past_key_values=self.cache, use_cache=True, rsd_tree_bits=tree.ancestor_bitmask,
                             rsd_prefix_lens=plens, rsd_backend=self.kernel_backend)
            self.length = prefix + tree.max_nodes
            return out.logits.float()
        allowed = tree_key_mask(tree.dense_mask, prefix, prefix + tree.max_nodes)
        return self.forward(tree.tokens, pos, allowed)
