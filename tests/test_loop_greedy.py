"""Greedy decoding (temperature 0) returns exactly the target's greedy tokens, for every method,
on the embedded target with three drafts: the embedded pair's draft, the target itself (every
draft token accepted: paths end at leaves the draft never processed) and a biased copy of the
target (partial acceptance)."""
import pytest

from loop_models import BiasedDraft, chat_ids, embedded_draft, embedded_target, greedy_by_recompute
from rsd.engine.generate import generate

N = 12
CONFIGS = [("sd", "3"), ("spectr", "2x2"), ("rsd-c", "2,1"), ("rsd-s", "2x3")]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference():
    return greedy_by_recompute(embedded_target().model, chat_ids(), N)


def test_ar_matches_recompute(reference):
    r = generate(embedded_target().model, None, chat_ids(), "ar", max_new_tokens=N, seed=0)
    assert r.tokens == reference
    assert r.target_calls == N and r.draft_calls == 0


@pytest.mark.parametrize("method,config", CONFIGS)
def test_embedded_pair_greedy_exact(method, config, reference):
    r = generate(embedded_target().model, embedded_draft().model, chat_ids(), method, config, max_new_tokens=N)
    assert r.tokens == reference
    assert r.draft_calls == r.config.depth * len(r.blocks)
    assert sum(b.emitted for b in r.blocks) == N


@pytest.mark.parametrize("method,config", CONFIGS)
def test_self_draft_accepts_everything(method, config, reference):
    tgt = embedded_target().model
    r = generate(tgt, tgt, chat_ids(), method, config, max_new_tokens=N)
    assert r.tokens == reference
    depth = r.config.depth
    # the draft is the target: every block but the last accepts a full path of L tokens
    assert all(a == depth for a in r.accepted_lengths[:-1]), r.accepted_lengths


def test_biased_draft_partial_acceptance(reference):
    tgt = embedded_target().model
    draft = BiasedDraft(tgt, scale=3.0)
    seen = set()
    for method, config in CONFIGS:
        r = generate(tgt, draft, chat_ids(), method, config, max_new_tokens=N)
        assert r.tokens == reference, method
        seen.update(r.accepted_lengths)
    assert len(seen) >= 2, f"acceptance did not vary ({seen}): the test would not exercise partial paths"


def test_rsd_attention_path_greedy_exact(reference):
    tgt = embedded_target().model
    try:
        r = generate(tgt, embedded_draft().model, chat_ids(), "rsd-s", "2x3", max_new_tokens=N, attention="rsd")
    finally:
        tgt.set_attn_implementation("sdpa")
    assert r.tokens == reference


def test_rsd_attention_with_self_draft(reference):
    """The draft is the target module itself and the target uses --attention rsd."""
    tgt = embedded_target().model
    try:
        r = generate(tgt, tgt, chat_ids(), "rsd-c", "2,1", max_new_tokens=N, attention="rsd")
    finally:
        tgt.set_attn_implementation("sdpa")
    assert r.tokens == reference


def test_bfloat16_draft_with_float32_target_greedy_exact(reference):
    """A draft in another dtype than the target (rsd generate --draft-dtype bfloat16)."""
    import torch

    from rsd.engine.models import load_draft

    drf = load_draft("embedded", embedded_target(), dtype="bfloat16", log=lambda m: None)
    assert next(drf.model.parameters()).dtype == torch.bfloat16
    for method, config in CONFIGS:
        r = generate(embedded_target().model, drf.model, chat_ids(), method, config, max_new_tokens=N)
        assert r.tokens == reference, method
