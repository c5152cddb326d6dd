"""The embedded draft model for the embedded target (SmolLM2-135M-Instruct).

    from rsd.engine.embedded import load_embedded_target
    from rsd.engine.drafts import load_embedded_draft

    target, tok = load_embedded_target()
    draft = load_embedded_draft(target)      # shares the target's token embedding

``draft`` is a :class:`~rsd.engine.drafts.restricted.RestrictedHeadDraft`: call it like the target
(``input_ids``, ``attention_mask`` 2D or 4D, ``position_ids``, ``past_key_values``,
``use_cache``); ``.logits`` are over the full 49152-token vocabulary, ``-inf`` outside
``draft.kept_ids``. See ``docs/draft-model-card.md``.
"""
from __future__ import annotations

import json
import os

import torch

from .restricted import RestrictedHeadDraft, config_from_json

WEIGHTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "draft.safetensors")
# the shipped EAGLE-style feature-level draft (rsd.engine.drafts.eagle; docs/eagle-draft.md): ``--draft embedded-eagle``
EAGLE_WEIGHTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "eagle.safetensors")

__all__ = ["EAGLE_WEIGHTS_PATH", "WEIGHTS_PATH", "RestrictedHeadDraft", "load_draft", "load_embedded_draft", "target_token_embedding"]


def target_token_embedding(dtype=torch.float32) -> torch.Tensor:
    """The target's token embedding ``[49152, 576]``, read (and dequantized) from its GGUF file only."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from ..embedded import smollm2_gguf_path

    reader = GGUFReader(smollm2_gguf_path())
    t = next(t for t in reader.tensors if t.name == "token_embd.weight")
    return torch.from_numpy(dequantize(t.data, t.tensor_type).copy()).to(dtype)


def load_draft(path: str, embedding: torch.Tensor | torch.nn.Parameter, dtype=torch.float32) -> RestrictedHeadDraft:
    """Load a draft exported by :func:`rsd.train.draft.export_draft` around the given token embedding.

    ``embedding`` (``[vocab_size, hidden_size]``) is used as is, without a copy when its
    dtype matches, so a draft built from a loaded target's embedding shares its memory.
    """
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        sd = {k: f.get_tensor(k) for k in f.keys()}
    config = config_from_json(meta["config"])
    kept = sd.pop("kept_ids").long()
    if tuple(embedding.shape) != (config.vocab_size, config.hidden_size):
        raise ValueError(f"embedding shape {tuple(embedding.shape)} does not match the draft's "
                         f"({config.vocab_size}, {config.hidden_size})")
    with torch.device("meta"):
        draft = RestrictedHeadDraft(config, torch.zeros(kept.numel(), dtype=torch.long))
    draft.to_empty(device="cpu")
    draft.kept_ids = kept
    draft.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=False)
    emb = embedding.detach()
    draft.model.embed_tokens.weight = torch.nn.Parameter(emb if emb.dtype == dtype else emb.to(dtype),
                                                         requires_grad=False)
    draft.model.rotary_emb = type(draft.model.rotary_emb)(config=config)  # recompute RoPE buffers off "meta"
    draft.info = json.loads(meta.get("info", "{}"))
    draft.requires_grad_(False)
    return draft.to(dtype).eval()


def load_embedded_draft(target=None, dtype=torch.float32, path: str | None = None) -> RestrictedHeadDraft:
    """The shipped draft (``weights/draft.safetensors``), ready to use (eval mode, no grad needed).

    With ``target`` (the model from :func:`rsd.engine.embedded.load_embedded_target`) the draft
    shares the target's token embedding; without it the embedding is read from the GGUF.
    """
    path = path or WEIGHTS_PATH
    if not os.path.exists(path):
        raise FileNotFoundError(f"draft weights not found at {path}; regenerate them with "
                                "`python -m rsd.train.draft --out DIR` and copy DIR/draft.safetensors there")
    emb = target.get_input_embeddings().weight if target is not None else target_token_embedding(dtype)
    return load_draft(path, emb, dtype)
