"""Metric definitions (SPEC section 5) on hand-made block statistics."""
import math

import pytest

from rsd.eval import metrics as M


def test_block_efficiency_pools_over_prompts():
    # prompt A: blocks emitting 3, 1, 4 tokens (3 verification calls); prompt B: 2, 2 (2 calls)
    tokens, calls = [3 + 1 + 4, 2 + 2], [3, 2]
    assert M.block_efficiency(tokens, calls) == pytest.approx(12 / 5)
    # pooled, not the mean of per-prompt ratios (8/3 and 2 -> 2.333)
    assert M.block_efficiency(tokens, calls) != pytest.approx((8 / 3 + 2) / 2)
    # per-block form gives the same number
    assert M.block_efficiency([3, 1, 4, 2, 2], [1] * 5) == pytest.approx(12 / 5)


def test_block_efficiency_rejects_bad_stats():
    with pytest.raises(ValueError, match="differ in length"):
        M.block_efficiency([1, 2], [1])
    with pytest.raises(ValueError, match="sums to 0"):
        M.block_efficiency([0], [0])
    with pytest.raises(ValueError, match=r"target_calls\[1\]"):
        M.block_efficiency([1, 1], [1, -1])
    with pytest.raises(ValueError, match="empty"):
        M.block_efficiency([], [])


def test_mbsu():
    r = M.param_ratio(10_000_000, 135_000_000)
    assert r == pytest.approx(10 / 135)
    # tau 2.4 with 3 sequential draft calls per block
    assert M.mbsu(2.4, r, 3) == pytest.approx(2.4 / (1 + 3 * 10 / 135))
    assert M.mbsu(2.4, 0.0, 5) == pytest.approx(2.4)  # free draft: MBSU = tau
    with pytest.raises(ValueError, match="param_ratio"):
        M.mbsu(2.0, -0.1, 2)
    with pytest.raises(ValueError, match="tau"):
        M.mbsu(0.0, 0.1, 2)


def test_token_rate():
    # method: 120 tokens in 2 s; AR: 100 tokens in 4 s -> 60 / 25
    assert M.token_rate(120, 2.0, 100, 4.0) == pytest.approx(2.4)
    with pytest.raises(ValueError, match="seconds"):
        M.token_rate(1, 0.0, 1, 1.0)
    with pytest.raises(ValueError, match="ar_tokens"):
        M.token_rate(1, 1.0, 0, 1.0)


def test_scores_and_accuracy():
    refs = ["the cat sat on the mat today", "a dog ran in the park"]
    assert M.bleu(refs, refs) == pytest.approx(100.0)
    assert M.rouge_l(refs, refs) == pytest.approx(1.0)
    half = ["the cat sat", "a dog ran in the park"]
    rl = M.rouge_l(half, refs)
    # ROUGE-L F1 of item 1: LCS 3, P 3/3, R 3/7 -> 2PR/(P+R) = 0.6; item 2: 1.0
    assert rl == pytest.approx((0.6 + 1.0) / 2)
    assert 0 < M.bleu(half, refs) < 100
    assert M.task_score("rougeL", half, refs) == rl
    assert M.accuracy(30.0, 20.0) == pytest.approx(1.5)
    assert math.isnan(M.accuracy(0.0, 0.0))
    with pytest.raises(ValueError, match="metric"):
        M.task_score("meteor", refs, refs)
    with pytest.raises(ValueError, match="differ in length"):
        M.bleu(refs[:1], refs)
