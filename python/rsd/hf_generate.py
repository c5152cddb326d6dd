"""The transformers ``custom_generate`` entry point: this project's loop behind ``model.generate``.

    import rsd
    out = target.generate(input_ids, attention_mask=mask, custom_generate=rsd.CUSTOM_GENERATE_PATH,
                          trust_remote_code=True, draft_model=draft, method="rsd-s", budget=10,
                          do_sample=True, temperature=0.7, max_new_tokens=64)

transformers loads ``custom_generate/generate.py`` from the folder :data:`CUSTOM_GENERATE_PATH`
(a local path, hence ``trust_remote_code=True``) and calls its ``generate(model=target, ...)``
with every argument given to ``target.generate``; that file re-exports :func:`generate` below.

What it returns is what ``generate`` returns by default: a ``LongTensor [B, prompt + new]``, the
input ids (left padding kept) followed by the new tokens, rows that stop early (EOS) padded on
the right with ``pad_token_id`` (the first EOS id when the model has none); with
``return_dict_in_generate=True`` a ``GenerateDecoderOnlyOutput`` holding ``sequences`` only.

Generation settings are read the way ``generate`` reads them (``model.generation_config``,
then the call's arguments, then transformers' defaults): ``do_sample`` (False: greedy, the
target's greedy tokens exactly), ``temperature``, ``top_k`` (transformers' default 50 applies
when sampling; 0 disables it), ``top_p``, ``max_new_tokens`` / ``max_length``, ``eos_token_id``,
``pad_token_id``. Settings the loop does not implement (beams, repetition penalty, several
return sequences, a logits processor, stopping criteria, a streamer, scores, ...) raise
``ValueError`` naming them instead of being ignored.

All rows are decoded together by the batched loop (:func:`rsd.engine.batched.generate_batch`: one tree
per row per block, batched forwards, rows leave the batch when they stop); row r draws from the
Philox streams of ``seed`` at batch row r (a batch of one row equals :func:`rsd.generate` of
that prompt with the same seed).
"""
from __future__ import annotations

import os

import torch

CUSTOM_GENERATE_PATH = os.path.dirname(os.path.abspath(__file__))
"""The folder that holds ``custom_generate/generate.py``: pass it as ``custom_generate=``."""

# generate() arguments that must stay at their "unset" value: the loop has no equivalent
_UNSUPPORTED_ARGS = ("logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn", "assistant_model",
                     "streamer", "negative_prompt_ids", "negative_prompt_attention_mask", "synced_gpus")
# generation-config fields and their neutral values (anything else is refused)
_NEUTRAL = {"num_beams": (1,), "num_beam_groups": (1,), "num_return_sequences": (1,), "repetition_penalty": (1.0,),
            "no_repeat_ngram_size": (0,), "min_length": (0,), "min_new_tokens": (None, 0), "typical_p": (1.0,),
            "epsilon_cutoff": (0.0,), "eta_cutoff": (0.0,), "min_p": (None,), "penalty_alpha": (None,),
            "bad_words_ids": (None,), "suppress_tokens": (None,), "begin_suppress_tokens": (None,),
            "forced_bos_token_id": (None,), "forced_eos_token_id": (None,), "sequence_bias": (None,),
            "output_scores": (False,), "output_logits": (False, None), "output_attentions": (False,),
            "output_hidden_states": (False,), "guidance_scale": (None, 1.0), "stop_strings": (None,),
            "max_time": (None,)}


def generate(model, inputs=None, generation_config=None, *, draft_model=None, method: str = "rsd-s",
             budget: int | None = None, config=None, seed: int | None = None, attention: str = "sdpa",
             backend: str = "auto", verifier: str | None = None, **kwargs):
    """``model.generate(..., custom_generate=CUSTOM_GENERATE_PATH, trust_remote_code=True, ...)``.

    Args beyond ``generate``'s own: ``draft_model`` (needed unless ``method="ar"``), ``method``
    (``ar``, ``sd``, ``spectr``, ``rsd-c``, ``rsd-s``), ``budget`` or ``config`` (the tree; see
    :func:`rsd.engine.configs.resolve_config`), ``seed`` (Philox seed; rows use disjoint counters of it),
    ``attention``, ``backend`` and ``verifier`` as in :func:`rsd.generate`.
    """
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    from .engine.batched import generate_batch

    for name in _UNSUPPORTED_ARGS:
        if kwargs.pop(name, None) not in (None, False):
            raise ValueError(f"{name} is not supported by the rsd custom_generate loop")
    input_ids = kwargs.pop("input_ids", None)
    if inputs is not None and input_ids is not None:
        raise ValueError("give the prompt as inputs or input_ids, not both")
    input_ids = inputs if inputs is not None else input_ids
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.long:
        raise ValueError("inputs must be a LongTensor [batch, length] of token ids, got "
                         f"{type(input_ids).__name__}{'' if input_ids is None else ' ' + str(getattr(input_ids, 'shape', ''))}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"inputs must hold at least one row and one token, got shape {tuple(input_ids.shape)}")
    attention_mask = kwargs.pop("attention_mask", None)
    kwargs.pop("use_cache", None)
    gc, model_kwargs = model._prepare_generation_config(generation_config, **kwargs)
    if model_kwargs:
        raise ValueError(f"unsupported generate arguments for the rsd loop: {sorted(model_kwargs)}")
    for name, neutral in _NEUTRAL.items():
        if getattr(gc, name, neutral[0]) not in neutral:
            raise ValueError(f"generation setting {name}={getattr(gc, name)!r} is not supported by the rsd loop")

    lengths = _prompt_lengths(input_ids, attention_mask)
    max_new = _max_new_tokens(gc, input_ids.shape[1])
    eos = gc.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else [int(t) for t in eos]
    pad = gc.pad_token_id if gc.pad_token_id is not None else (eos[0] if eos else None)
    samp = {"temperature": 0.0, "top_k": None, "top_p": None}
    if gc.do_sample:
        samp["temperature"] = float(gc.temperature)
        samp["top_k"] = int(gc.top_k) if gc.top_k else None  # transformers: 0/None disables top-k
        samp["top_p"] = float(gc.top_p) if gc.top_p is not None and gc.top_p < 1.0 else None
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)))

    prompts = [input_ids[r, input_ids.shape[1] - lengths[r]:].tolist() for r in range(input_ids.shape[0])]
    res = generate_batch(model, draft_model, prompts, method, config, budget, **samp, max_new_tokens=max_new,
                         seed=seed, eos_token_id=eos or None, attention=attention, backend=backend, verifier=verifier)
    rows = res.tokens
    width = max(len(t) for t in rows)
    if pad is None and any(len(t) < width for t in rows):
        raise ValueError("rows stopped at different lengths and the model has no pad_token_id or eos_token_id "
                         "to pad them with: set pad_token_id")
    new = torch.full((len(rows), width), pad if pad is not None else 0, dtype=torch.long)
    for r, t in enumerate(rows):
        new[r, : len(t)] = torch.tensor(t, dtype=torch.long)
    sequences = torch.cat([input_ids, new.to(input_ids.device)], dim=1)
    if gc.return_dict_in_generate:
        return GenerateDecoderOnlyOutput(sequences=sequences)
    return sequences


def _prompt_lengths(input_ids, attention_mask) -> list[int]:
    """Per-row prompt lengths; padding must be on the left (as decoder-only generation expects)."""
    B, n = input_ids.shape
    if attention_mask is None:
        return [n] * B
    if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != (B, n):
        raise ValueError(f"attention_mask must be a tensor of the inputs' shape {(B, n)}, got "
                         f"{tuple(getattr(attention_mask, 'shape', ())) or type(attention_mask).__name__}")
    m = attention_mask.to(torch.bool).cpu()
    lengths = m.sum(1).tolist()
    for r, k in enumerate(lengths):
        if k == 0 or not bool(m[r, n - k:].all()):
            raise ValueError(f"attention_mask row {r} is not left padding followed by at least one prompt token "
                             "(pad on the left: tokenizer.padding_side = 'left')")
    return [int(k) for k in lengths]


def _max_new_tokens(gc, input_len: int) -> int:
    if gc.max_new_tokens is not None:
        n = int(gc.max_new_tokens)
    else:
        n = int(gc.max_length) - input_len
    if n < 1:
        raise ValueError(f"no room to generate: max_new_tokens={gc.max_new_tokens}, max_length={gc.max_length}, "
                         f"input length {input_len}")
    return n
