"""``generate``: the public entry point of the engine. One prompt runs on the single-prompt loop
(:class:`rsd.engine.loop.Decoder`); a batch of prompts on the batched loop
(:func:`rsd.engine.batched.generate_batch`)."""
from __future__ import annotations

from .batched import generate_batch, is_batch
from .loop import Decoder
from .results import GenerationResult, check_max_new_tokens, cut_new_tokens, eos_set


def generate(target, draft, prompt_ids, method: str = "rsd-s", config=None, budget: int | None = None, *,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             max_new_tokens: int = 64, seed: int | None = None, eos_token_id=None, attention: str = "sdpa",
             backend: str = "auto", progress=None, verifier: str | None = None, on_block=None, profile=None,
             selector=None) -> GenerationResult:
    """Generate up to ``max_new_tokens`` tokens after ``prompt_ids`` with ``method``.

    Args:
        target, draft: ``transformers`` causal LMs (or :class:`ModelAdapter` s) sharing one
            vocabulary; ``draft`` may be ``None`` for ``method="ar"``.
        prompt_ids: 1-D token ids (list or tensor).
        method: ``"ar"`` (target only), ``"sd"``, ``"spectr"``, ``"rsd-c"``, ``"rsd-s"``, or
            ``"auto"``: before every block the tree (or target-only decoding) with the highest
            predicted tokens per second on this machine (:mod:`rsd.engine.selector`); the output
            distribution is still exactly the target's (its trees follow measured times, so two
            sampled runs with one seed may differ; greedy output is the target's).
        config, budget: the tree (see :func:`resolve_config`); for ``"auto"`` ``budget`` caps the
            draft nodes of the trees it weighs.
        temperature, top_k, top_p: sampling warps, shared by draft and target; temperature 0
            is greedy decoding and returns exactly the target's greedy tokens.
        seed: Philox seed (``None``: drawn from torch's global generator).
        eos_token_id: an int or a collection of ints that end generation (the EOS is kept).
        attention: ``"sdpa"``, ``"eager"`` (4D mask) or ``"rsd"`` (rsd_kernels.tree_attention
            for the target's verification forward).
        backend: the ``rsd_kernels`` backend for every tree op.
        progress: optional callable ``progress(num_new_tokens)`` called after each block.
        verifier: ``"rrs"`` (token-level recursive rejection sampling; SpecTr's k-sequential
            selection on its i.i.d. chains) or ``"traversal"`` (Traversal Verification: exact,
            accepts at least as much in expectation on our measurements; SpecTr's chains are
            merged into a prefix tree first); ``None``: :data:`rsd.engine.configs.DEFAULT_VERIFIER`.
            Greedy decoding (temperature 0) is the same under both.
        on_block: optional callable ``on_block(tokens, num_accepted)`` called after each block of a
            single prompt (streaming) with the tokens it committed (cut at EOS / ``max_new_tokens``):
            the first ``num_accepted`` are draft tokens the target accepted, the rest (at most one)
            the token the target supplied (correction or bonus; every token of ``ar``).
        profile: ``"auto"``: the :class:`~rsd.engine.profile.CostProfile` to use (default: the
            cached one of this setting, measured at first use -- seconds -- and kept in the user
            cache folder).
        selector: ``"auto"``: a ready :class:`~rsd.engine.selector.Selector` (or any object with
            its ``choose``/``record`` methods) instead of a new one.

    Raises ``ValueError`` for an unknown method, a config that does not match the budget,
    target and draft vocabularies that differ, or a prompt that leaves no room in the context.

    A **batch** of prompts (a list of token lists of different lengths, or a 2-D tensor with
    more than one row) is decoded together by :func:`rsd.engine.batched.generate_batch`, which returns
    a :class:`rsd.engine.batched.BatchGenerationResult` (one :class:`GenerationResult` per prompt).
    """
    if is_batch(prompt_ids):
        if on_block is not None:
            raise ValueError("on_block streams one prompt; a batch of prompts has no block stream")
        return generate_batch(target, draft, prompt_ids, method, config, budget, temperature=temperature,
                              top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                              eos_token_id=eos_token_id, attention=attention, backend=backend, progress=progress,
                              verifier=verifier, profile=profile, selector=selector)
    dec = Decoder(target, draft, method, config, budget, temperature=temperature, top_k=top_k, top_p=top_p,
                  seed=seed, attention=attention, backend=backend, verifier=verifier, profile=profile,
                  selector=selector)
    check_max_new_tokens(max_new_tokens)
    eos = eos_set(eos_token_id)
    result = GenerationResult([], method, dec.config, seed=dec.seed, verifier=dec.verifier if dec.config else None)
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
        if on_block is not None:
            on_block(list(new), min(stats.accepted, len(new)))
        if stop:
            result.stop_reason = stop
            break
    return result
