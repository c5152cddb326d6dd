"""The embedded draft: a 2-layer Llama backbone with a restricted output head.

Architecture (see ``docs/draft-model-card.md`` for the measured numbers):

* ``self.model`` is a genuine ``transformers`` :class:`~transformers.LlamaModel` with the
  target's hidden size (576), attention layout (9 query heads, 3 KV heads, head dim 64),
  RoPE and RMSNorm, but only ``num_hidden_layers`` (2) decoder layers. Its token embedding
  is the target's (49152 x 576), frozen: it is not shipped but read from the target GGUF
  (or shared with an already loaded target) at load time. Because the backbone is a real
  ``LlamaModel``, it takes ``past_key_values`` (a ``DynamicCache``), ``position_ids``,
  ``cache_position`` and a 2D padding mask or a custom 4D attention mask exactly like the
  target does.
* ``self.head`` is a linear head over ``kept_ids``, the K (8192) most frequent tokens of
  the target's own samples (plus the special tokens). The draft gives every other token
  probability exactly 0: :meth:`RestrictedHeadDraft.forward` returns logits over the
  FULL 49152-token vocabulary with ``-inf`` outside ``kept_ids``. Recursive rejection
  sampling is exact for any draft distribution, including ones with zeros.
"""
from __future__ import annotations

import json

import torch
from torch import nn
from transformers import LlamaConfig, LlamaModel
from transformers.modeling_outputs import CausalLMOutputWithPast

# Fields of the target's LlamaConfig the draft keeps (everything else is default).
_CONFIG_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "rms_norm_eps",
    "rope_parameters", "bos_token_id", "eos_token_id", "pad_token_id",
)


def draft_config_from_target(target_config, num_hidden_layers: int = 2) -> LlamaConfig:
    """A ``LlamaConfig`` equal to the target's except for the number of layers."""
    d = target_config.to_dict()
    kw = {k: d[k] for k in _CONFIG_KEYS if k in d}
    kw["num_hidden_layers"] = num_hidden_layers
    kw["tie_word_embeddings"] = False
    return LlamaConfig(**kw)


class RestrictedHead:
    """What every draft with a restricted head shares (this module's draft and the EAGLE draft):
    ``config``, ``head`` (over ``kept_ids``) and ``model.embed_tokens`` (the target's, frozen)."""

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def device(self):
        return self.head.weight.device

    @property
    def dtype(self):
        return self.head.weight.dtype

    def trainable_state_dict(self) -> dict:
        """Everything except the (frozen, target-owned) token embedding."""
        return {k: v for k, v in self.state_dict().items() if k != "model.embed_tokens.weight"}

    def expand_logits(self, restricted: torch.Tensor) -> torch.Tensor:
        """Map restricted logits ``[..., K]`` to full-vocab logits with ``-inf`` elsewhere."""
        full = restricted.new_full((*restricted.shape[:-1], self.config.vocab_size), float("-inf"))
        full[..., self.kept_ids] = restricted
        return full


class RestrictedHeadDraft(RestrictedHead, nn.Module):
    """Draft model: ``LlamaModel`` backbone + head over ``kept_ids`` only.

    Call it like a ``LlamaForCausalLM``::

        out = draft(input_ids, attention_mask=mask, position_ids=pos,
                    past_key_values=cache, use_cache=True)
        out.logits           # [B, S, 49152] float, -inf outside kept_ids
        out.past_key_values  # the updated cache

    ``attention_mask`` may be a 2D padding mask or a 4D mask ``[B, 1, S, S_past + S]``
    (bool, True = attend, or additive float), passed to the backbone unchanged, e.g. for
    tree attention. ``full_vocab=False`` returns the restricted logits ``[B, S, K]``
    instead (column ``j`` is token ``kept_ids[j]``); ``logits_to_keep=n`` computes the
    head for the last ``n`` positions only.
    """

    def __init__(self, config: LlamaConfig, kept_ids: torch.Tensor):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        kept_ids = torch.as_tensor(kept_ids, dtype=torch.long)
        self.head = nn.Linear(config.hidden_size, kept_ids.numel(), bias=False)
        self.register_buffer("kept_ids", kept_ids, persistent=True)
        self.model.embed_tokens.weight.requires_grad_(False)


    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, cache_position=None, logits_to_keep: int = 0,
                full_vocab: bool = True, **kwargs) -> CausalLMOutputWithPast:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, inputs_embeds=inputs_embeds,
                         use_cache=use_cache, cache_position=cache_position, **kwargs)
        h = out.last_hidden_state
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.head(h)
        if full_vocab:
            logits = self.expand_logits(logits)
        return CausalLMOutputWithPast(logits=logits, past_key_values=out.past_key_values)


def config_to_json(config: LlamaConfig) -> str:
    d = config.to_dict()
    return json.dumps({k: d[k] for k in _CONFIG_KEYS + ("tie_word_embeddings",) if k in d}, sort_keys=True)


def config_from_json(s: str) -> LlamaConfig:
    return LlamaConfig(**json.loads(s))
