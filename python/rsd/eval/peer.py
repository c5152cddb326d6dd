"""The peer baseline: Hugging Face assisted generation, ``target.generate(..., assistant_model=draft)``.

Same prompts, sampling settings, ``max_new_tokens`` and EOS tokens as the grid; the draft
proposes ``num_assistant_tokens = budget`` tokens per step with the ``"constant"`` schedule
(so it is transformers' own SD with chain length = budget), early exit on assistant
confidence disabled. transformers reads these three from the *assistant's*
``generation_config`` (and its ``"heuristic"`` schedule writes back into it), so they are set
there for the duration of the call and restored afterwards. With ``do_sample=True`` transformers verifies with speculative sampling,
which is exact. ``top_k`` is passed explicitly (transformers would otherwise apply its default
``top_k=50``, a warp the grid does not use). Seeds: ``torch.manual_seed(seed + i)`` per prompt,
which does not reproduce the Philox draws of :func:`rsd.generate`: only the distributions match.

Hugging Face's own target-only ``generate`` (no assistant) is timed too, so the peer can be
compared both with our ``ar`` (the figure's reference) and with its own framework's decoding.

When the draft is not a ``transformers.PreTrainedModel`` (the embedded restricted-head draft is
a plain ``nn.Module``), or this transformers version rejects the arguments, the record says
``"available": false`` with the reason instead of a number.
"""
from __future__ import annotations

import time


def _generation_config(pair, settings):
    from transformers import GenerationConfig

    greedy = settings.temperature == 0
    kw = dict(max_new_tokens=settings.max_new_tokens, min_new_tokens=0, do_sample=not greedy,
              eos_token_id=pair.eos or None, pad_token_id=(pair.eos[0] if pair.eos else None))
    if not greedy:
        kw.update(temperature=float(settings.temperature), top_k=settings.top_k or 0,
                  top_p=1.0 if settings.top_p is None else float(settings.top_p))
    return GenerationConfig(**kw)


ASSISTANT_FIELDS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")


def _set_assistant(draft, budget):
    """Set the assisted-generation fields on the draft's generation_config; returns the old values."""
    gc = draft.generation_config
    old = {k: getattr(gc, k, None) for k in ASSISTANT_FIELDS}
    gc.num_assistant_tokens = int(budget)
    gc.num_assistant_tokens_schedule = "constant"
    gc.assistant_confidence_threshold = 0.0
    return old


def unavailable_reason(pair) -> str | None:
    """Why assisted generation cannot run with this pair, or None."""
    try:
        from transformers import PreTrainedModel
    except ImportError as exc:  # pragma: no cover - transformers is a loop dependency
        return f"transformers is not importable: {exc}"
    if not isinstance(pair.target, PreTrainedModel):
        return f"the target is a {type(pair.target).__name__}, not a transformers PreTrainedModel"
    if not isinstance(pair.draft, PreTrainedModel):
        return (f"the draft is a {type(pair.draft).__name__}, not a transformers PreTrainedModel: "
                "generate(assistant_model=...) needs one")
    return None


def hf_generate(pair, prompts, settings, *, assistant: bool, budget: int | None = None) -> dict:
    """Time ``pair.target.generate`` over ``prompts`` (with the draft as assistant when
    ``assistant``); returns a record with ``available``, and when it ran: ``tokens``,
    ``wall_s``, ``tokens_per_s``, ``texts``."""
    import torch

    kind = "hf_assisted" if assistant else "hf_ar"
    rec = {"method": kind}
    reason = unavailable_reason(pair) if assistant else None
    if reason is None and not assistant:
        from transformers import PreTrainedModel

        if not isinstance(pair.target, PreTrainedModel):
            reason = f"the target is a {type(pair.target).__name__}, not a transformers PreTrainedModel"
    if reason is not None:
        return {**rec, "available": False, "reason": reason}
    saved = _set_assistant(pair.draft, budget) if assistant else None
    try:
        cfg = _generation_config(pair, settings)
        extra = {"assistant_model": pair.draft} if assistant else {}
        # warm-up, untimed
        _one(pair, prompts[0], cfg, settings.seed, extra, max_new_tokens=2)
        tokens, texts, wall = [], [], 0.0
        for i, ids in enumerate(prompts):
            t0 = time.perf_counter()
            new = _one(pair, ids, cfg, settings.seed + i, extra)
            wall += time.perf_counter() - t0
            tokens.append(len(new))
            texts.append(pair.tokenizer.decode(new, skip_special_tokens=True).strip())
    except (TypeError, ValueError, AttributeError, NotImplementedError, RuntimeError) as exc:
        return {**rec, "available": False, "reason": f"transformers generate failed: {type(exc).__name__}: {exc}"}
    finally:
        if saved is not None:
            for k, v in saved.items():
                setattr(pair.draft.generation_config, k, v)
    import transformers

    return {**rec, "available": True, "transformers": transformers.__version__, "items": len(prompts),
            "tokens": sum(tokens), "tokens_per_item": tokens, "wall_s": wall,
            "tokens_per_s": sum(tokens) / wall if wall > 0 else float("nan"), "texts": texts,
            "num_assistant_tokens": budget if assistant else None}


def _one(pair, ids, cfg, seed, extra, max_new_tokens=None):
    import copy

    import torch

    if max_new_tokens is not None:
        cfg = copy.deepcopy(cfg)
        cfg.max_new_tokens = max_new_tokens
    x = torch.tensor([ids], dtype=torch.long, device=pair.target.device)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = pair.target.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=cfg, **extra)
    new = out[0, x.shape[1]:].tolist()
    # generate pads finished sequences with pad_token_id only in batches; batch 1 stops at EOS
    return new
