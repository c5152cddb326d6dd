"""The evaluation metrics of SPEC section 5, one definition each.

* :func:`block_efficiency` tau = generated tokens / target verification calls, pooled over
  a data set (sum of tokens over sum of calls, not a mean of per-prompt ratios); the
  prompt's prefill call is not a verification call and is not counted.
  :func:`block_efficiency_ci` is its percentile bootstrap confidence interval over items
  (:func:`bootstrap_ci`), :func:`token_rate_ci` the same for token rate.
* :func:`mbsu` = tau / (1 + r * L), r = draft parameters / target parameters, L = the
  sequential draft calls per block.
* :func:`token_rate` = (tokens / second of the method) / (tokens / second of target-only
  autoregressive decoding), both measured in the same run.
* :func:`accuracy` = task score of the method / task score of autoregressive decoding, with
  :func:`bleu` (sacrebleu corpus BLEU) for translation and :func:`rouge_l` (rouge-score
  ROUGE-L F1, averaged over items) for summarization and instruction following.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np

# the bootstrap of the confidence intervals: fixed, so a results file is reproducible
CI_LEVEL = 0.95
CI_RESAMPLES = 1000
CI_SEED = 0


def _nonneg_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def block_efficiency(generated_tokens: Iterable[int], target_calls: Iterable[int]) -> float:
    """Pooled tau: ``sum(generated_tokens) / sum(target_calls)``.

    ``generated_tokens[i]`` and ``target_calls[i]`` are one prompt's new tokens and its
    number of target verification calls (prefill excluded). Either both lists are per
    prompt, or both are per block (then each call count is 1).
    """
    toks, calls = list(generated_tokens), list(target_calls)
    if len(toks) != len(calls):
        raise ValueError(f"generated_tokens and target_calls differ in length ({len(toks)} vs {len(calls)})")
    if not toks:
        raise ValueError("generated_tokens is empty")
    for i, (t, c) in enumerate(zip(toks, calls)):
        _nonneg_int(f"generated_tokens[{i}]", t)
        _nonneg_int(f"target_calls[{i}]", c)
    total_calls = sum(calls)
    if total_calls == 0:
        raise ValueError("target_calls sums to 0: no verification call was made")
    return sum(toks) / total_calls


def bootstrap_ci(columns: Sequence[Sequence[float]], statistic: Callable, *, level: float = CI_LEVEL,
                 resamples: int = CI_RESAMPLES, seed: int = CI_SEED) -> list[float]:
    """Percentile bootstrap interval ``[lo, hi]`` over items of a statistic of column sums.

    ``columns[k][i]`` is item ``i``'s value in column ``k`` (e.g. its tokens and its target
    calls). Each of ``resamples`` resamples draws ``n`` items with replacement (numpy
    ``default_rng(seed)``, so the interval is deterministic), sums every column over the drawn
    items (an item's values stay together: the pairing is kept) and evaluates
    ``statistic(*sums)``, vectorized over the resamples (each sum an array of ``resamples``).
    The interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the finite
    values (a resample whose denominator sums to 0 gives no value and is left out).
    """
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive int, got {resamples!r}")
    _nonneg_int("seed", seed)
    cols = [np.asarray(c, dtype=np.float64) for c in columns]
    if not cols or any(c.ndim != 1 for c in cols):
        raise ValueError("columns must be a non-empty list of 1-D per-item sequences")
    n = len(cols[0])
    if n == 0:
        raise ValueError("columns hold no items")
    if any(len(c) != n for c in cols):
        raise ValueError(f"columns differ in length ({[len(c) for c in cols]})")
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.asarray(statistic(*(c[idx].sum(axis=1) for c in cols)), dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("statistic is not finite on any resample")
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def block_efficiency_ci(generated_tokens: Iterable[int], target_calls: Iterable[int], **kw) -> list[float]:
    """Bootstrap interval over prompts of the pooled :func:`block_efficiency`: each resample
    recomputes ``sum(tokens) / sum(calls)`` over prompts drawn with replacement. ``kw``:
    ``level``, ``resamples``, ``seed`` of :func:`bootstrap_ci`."""
    toks, calls = list(generated_tokens), list(target_calls)
    block_efficiency(toks, calls)  # the same checks of the inputs
    return bootstrap_ci([toks, calls], np.divide, **kw)


def mbsu(tau: float, param_ratio: float, depth: int) -> float:
    """Memory-bound speed-up ``tau / (1 + param_ratio * depth)``."""
    _positive("tau", tau)
    if isinstance(param_ratio, bool) or not isinstance(param_ratio, (int, float)) or not (param_ratio >= 0):
        raise ValueError(f"param_ratio must be a non-negative number, got {param_ratio!r}")
    _nonneg_int("depth", depth)
    return tau / (1.0 + param_ratio * depth)


def param_ratio(draft_params: int, target_params: int) -> float:
    """``r = draft_params / target_params`` (both counts of parameters)."""
    return _positive("draft_params", draft_params) / _positive("target_params", target_params)


def tokens_per_second(tokens: int, seconds: float) -> float:
    _nonneg_int("tokens", tokens)
    return tokens / _positive("seconds", seconds)


def token_rate(tokens: int, seconds: float, ar_tokens: int, ar_seconds: float) -> float:
    """Throughput of the method over that of autoregressive decoding (same prompts, same run)."""
    ar = tokens_per_second(ar_tokens, ar_seconds)
    if ar == 0:
        raise ValueError("ar_tokens is 0: the autoregressive baseline generated nothing")
    return tokens_per_second(tokens, seconds) / ar


def token_rate_ci(tokens: Sequence[int], seconds: Sequence[float], ar_tokens: Sequence[int],
                  ar_seconds: Sequence[float], **kw) -> list[float]:
    """Bootstrap interval over prompts of :func:`token_rate` from per-prompt tokens and wall
    seconds of the method and of autoregressive decoding on the same prompts: a resample draws
    prompts and takes both runs' values of each drawn prompt (paired)."""
    cols = [list(tokens), list(seconds), list(ar_tokens), list(ar_seconds)]
    names = ("tokens", "seconds", "ar_tokens", "ar_seconds")
    if len({len(c) for c in cols}) != 1:
        raise ValueError(f"tokens, seconds, ar_tokens and ar_seconds differ in length ({[len(c) for c in cols]})")
    for name, col in zip(names, cols):
        for i, v in enumerate(col):
            (_nonneg_int if "tokens" in name else _positive)(f"{name}[{i}]", v)
    if cols[2] and sum(cols[2]) == 0:
        raise ValueError("ar_tokens is 0: the autoregressive baseline generated nothing")
    return bootstrap_ci(cols, lambda t, s, at, as_: (t / s) / (at / as_), **kw)


def _texts(name, texts):
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{name} must be strings")
    return texts


def _pair(hypotheses, references):
    hyps, refs = _texts("hypotheses", hypotheses), _texts("references", references)
    if len(hyps) != len(refs):
        raise ValueError(f"hypotheses and references differ in length ({len(hyps)} vs {len(refs)})")
    if not hyps:
        raise ValueError("hypotheses is empty")
    return hyps, refs


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0..100), one reference per hypothesis, default 13a tokenization."""
    import sacrebleu

    hyps, refs = _pair(hypotheses, references)
    return float(sacrebleu.corpus_bleu(hyps, [refs]).score)


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 (0..1) of rouge-score, with its Porter stemmer."""
    from rouge_score import rouge_scorer

    hyps, refs = _pair(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return sum(scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs)) / len(hyps)


SCORERS = {"bleu": bleu, "rougeL": rouge_l}


def task_score(metric: str, hypotheses: Sequence[str], references: Sequence[str]) -> float:
    if metric not in SCORERS:
        raise ValueError(f"metric must be one of {sorted(SCORERS)}, got {metric!r}")
    return SCORERS[metric](hypotheses, references)


def accuracy(score: float, ar_score: float) -> float:
    """``score / ar_score``; NaN when the autoregressive score is 0 (the ratio is undefined)."""
    for name, v in (("score", score), ("ar_score", ar_score)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a non-negative finite number, got {v!r}")
    return float("nan") if ar_score == 0 else score / ar_score
