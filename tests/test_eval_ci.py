"""Bootstrap confidence intervals over items (metrics.bootstrap_ci and its two users)."""
import random

import pytest

from rsd.eval import metrics as M


def _items(n, accept, seed=0):
    """``n`` prompts of 10-30 blocks; a block emits 1 + (draft tokens accepted, each with
    probability ``accept``, at most 4): per-prompt tokens and target calls."""
    rng = random.Random(seed)
    toks, calls = [], []
    for _ in range(n):
        blocks = rng.randint(10, 30)
        t = 0
        for _ in range(blocks):
            a = 0
            while a < 4 and rng.random() < accept:
                a += 1
            t += 1 + a
        toks.append(t)
        calls.append(blocks)
    return toks, calls


def _width(ci):
    return ci[1] - ci[0]


def test_hand_computed_cases():
    # one item: every resample is that item
    assert M.block_efficiency_ci([5], [2]) == [2.5, 2.5]
    # two items (2 tokens / 1 call, 6 / 1): a resample is {a,a} (tau 2), {b,b} (6) or mixed (4),
    # each pure kind with probability 1/4 > 2.5 %, so the 95 % interval is [2, 6]
    assert M.block_efficiency_ci([2, 6], [1, 1]) == [2.0, 6.0]
    # the pooled ratio, not a mean of ratios: (1 + 9) / (1 + 3) mixed, 1 and 3 pure
    assert M.block_efficiency_ci([1, 9], [1, 3], level=0.4) == [2.5, 2.5]
    # token rate: both prompts run at twice the AR rate
    assert M.token_rate_ci([10, 20], [1.0, 2.0], [5, 5], [1.0, 1.0]) == [2.0, 2.0]


def test_contains_estimate_shrinks_and_is_deterministic():
    small, large = _items(10, 0.5), _items(400, 0.5)
    ci_small, ci_large = M.block_efficiency_ci(*small), M.block_efficiency_ci(*large)
    for (toks, calls), ci in ((small, ci_small), (large, ci_large)):
        assert ci[0] < M.block_efficiency(toks, calls) < ci[1]
    assert _width(ci_large) < _width(ci_small) / 3  # ~ 1/sqrt(n): sqrt(40) = 6.3
    assert M.block_efficiency_ci(*large) == ci_large  # same seed, same interval
    assert M.block_efficiency_ci(*large, seed=1) != ci_large
    assert _width(M.block_efficiency_ci(*large, level=0.5)) < _width(ci_large)


def test_separates_different_methods_not_identical_ones():
    # acceptance 0.48 vs 0.52 per draft token: tau about 1.87 vs 1.99
    weak, strong = M.block_efficiency_ci(*_items(400, 0.48, seed=1)), M.block_efficiency_ci(*_items(400, 0.52, seed=2))
    assert weak[1] < strong[0]  # different methods at many items: disjoint intervals
    a, b = M.block_efficiency_ci(*_items(400, 0.5, seed=3)), M.block_efficiency_ci(*_items(400, 0.5, seed=4))
    assert a[0] < b[1] and b[0] < a[1]  # the same method on other prompts: overlapping
    # at 10 items the same two are not told apart
    weak, strong = M.block_efficiency_ci(*_items(10, 0.48, seed=1)), M.block_efficiency_ci(*_items(10, 0.52, seed=2))
    assert weak[1] > strong[0]


def test_token_rate_ci_is_paired():
    # the method is exactly 1.5x as fast as AR on every prompt, prompts differing 10x in speed:
    # pairing keeps the interval at 1.5 (unpaired resampling would spread it)
    secs = [0.1 * (1 + 9 * (i % 2)) for i in range(20)]
    ci = M.token_rate_ci([30] * 20, [s / 1.5 for s in secs], [30] * 20, secs)
    assert ci == pytest.approx([1.5, 1.5])


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="differ in length"):
        M.block_efficiency_ci([1, 2], [1])
    with pytest.raises(ValueError, match=r"target_calls\[0\]"):
        M.block_efficiency_ci([1], [-1])
    with pytest.raises(ValueError, match="sums to 0"):
        M.block_efficiency_ci([0, 0], [0, 0])
    with pytest.raises(ValueError, match="level"):
        M.block_efficiency_ci([1], [1], level=1.0)
    with pytest.raises(ValueError, match="resamples"):
        M.block_efficiency_ci([1], [1], resamples=0)
    with pytest.raises(ValueError, match="seed"):
        M.block_efficiency_ci([1], [1], seed=-1)
    with pytest.raises(ValueError, match="no items"):
        M.bootstrap_ci([[]], lambda s: s)
    with pytest.raises(ValueError, match=r"ar_seconds\[1\]"):
        M.token_rate_ci([1, 1], [1.0, 1.0], [1, 1], [1.0, 0.0])
    with pytest.raises(ValueError, match="ar_tokens is 0"):
        M.token_rate_ci([1], [1.0], [0], [1.0])
    with pytest.raises(ValueError, match="differ in length"):
        M.token_rate_ci([1], [1.0], [1, 1], [1.0, 1.0])


def test_runner_intervals_of_a_record():
    from rsd.eval.runner import confidence_intervals

    s = {"tokens_per_item": [2, 6], "target_calls_per_item": [1, 1], "wall_s_per_item": [1.0, 1.0]}
    ar = {"tokens_per_item": [1, 3], "wall_s_per_item": [1.0, 1.0]}
    ci = confidence_intervals(s, ar, 4.0, 2.0)
    assert ci == {"block_efficiency_ci": [2.0, 6.0], "mbsu_ci": [1.0, 3.0], "token_rate_ci": [2.0, 2.0]}
    # an autoregressive record of an older file has no per-item times: no token-rate interval
    assert confidence_intervals(s, {"tokens_per_item": [1, 3]}, 4.0, 2.0)["token_rate_ci"] is None
    # no verification call at all: no block-efficiency (nor MBSU) interval
    none = confidence_intervals({**s, "target_calls_per_item": [0, 0]}, ar, float("nan"), float("nan"))
    assert none["block_efficiency_ci"] is None and none["mbsu_ci"] is None
