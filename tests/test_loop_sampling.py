"""Sampling exactness of the whole loop: the first generated token's empirical distribution over
repeated single-block runs matches the target's next-token distribution (chi-square), for every
method (and under ``verifier="traversal"`` on depth-2 trees); a deliberately broken verifier fails
the same test.

Set-up: embedded target, prompt "Tell me a number between 1 and 10." (chat template), temperature
1: the target's first token is flat-ish (top-5 tokens 0.15/0.10/0.08/0.08/0.07, rest 0.52). Bins:
those 5 tokens + "other" (5 degrees of freedom). The draft is :class:`BiasedDraft` (the target +
a fixed N(0, 2^2) logit bias, seed 0): SD acceptance ~0.39 at this position, so acceptances and
residual draws both occur (the embedded stand-in draft has total-variation distance ~1 to the
target here and would only exercise the residual path). Depth-1 trees of width 3 (SD: one
token) make one run one draft call + one target call. N = 80 runs per method, from one prefill
(Decoder.snapshot/restore), seeds 0..79. Pass: p-value > 1e-3. The broken verifier (always
accepts the first child) emits the draft's first sample, whose expected chi-square here is
~0.57 * N = 46 (p ~ 1e-8).
"""
import pytest
import torch
from scipy.stats import chisquare

import rsd_kernels
from loop_models import BiasedDraft, always_accept_first_child, chat_ids, embedded_target
from rsd.engine.loop import Decoder

N = 80
ALPHA = 1e-3
PROMPT = "Tell me a number between 1 and 10."
CONFIGS = [("sd", "1"), ("spectr", "3x1"), ("rsd-c", "3"), ("rsd-s", "3x1")]

pytestmark = pytest.mark.slow


def first_token_pvalue(method, config, n=N, verifier=None):
    tgt = embedded_target().model
    ids = chat_ids(PROMPT)
    with torch.no_grad():
        p = torch.softmax(tgt(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)
    top = p.topk(5).indices.tolist()
    expected = torch.cat([p[top], (1 - p[top].sum()).view(1)]) * n
    dec = Decoder(tgt, BiasedDraft(tgt, scale=2.0), method, config, temperature=1.0, seed=0, verifier=verifier)
    dec.prefill(ids)
    snap = dec.snapshot()
    counts = [0] * 6
    accepted = 0
    for i in range(n):
        dec.restore(snap, seed=i)
        tokens, stats = dec.step()
        counts[top.index(tokens[0]) if tokens[0] in top else 5] += 1
        accepted += stats.accepted
    return chisquare(counts, expected.tolist()).pvalue, counts, accepted


@pytest.mark.parametrize("method,config", CONFIGS)
def test_first_token_matches_target(method, config):
    pvalue, counts, accepted = first_token_pvalue(method, config)
    assert 0 < accepted < N, f"acceptance {accepted}/{N}: the test must see acceptances and rejections"
    assert pvalue > ALPHA, f"{method}: counts {counts}, p={pvalue:.2e}"


@pytest.mark.parametrize("method,config", [("rsd-s", "3x2")])
def test_first_token_matches_target_traversal(method, config):
    """The same test under Traversal Verification, on a depth-2 tree (on depth 1 it is RRS; every
    method's tree under traversal: tests/test_traversal.py, on table models, at 20000 rows)."""
    pvalue, counts, accepted = first_token_pvalue(method, config, verifier="traversal")
    assert 0 < accepted, f"no acceptance in {N} runs"
    assert pvalue > ALPHA, f"{method}: counts {counts}, p={pvalue:.2e}"


def test_broken_verifier_is_caught(monkeypatch):
    monkeypatch.setattr(rsd_kernels, "verify_tree", always_accept_first_child)
    pvalue, counts, _ = first_token_pvalue("sd", "1")
    assert pvalue < ALPHA, f"the broken verifier passed: counts {counts}, p={pvalue:.2e}"
