"""The decoding loop with an EAGLE feature-level draft (rsd.generate's _eagle_block), on tiny random
models: greedy exactness for every method, the feature flow (the q of every expanded tree node equals
the draft recomputed from scratch on the committed tokens with the target's features and the path's
predicted features), and the chi-square exactness of the first sampled token with a broken-verifier
negative control.

Tiny target: rsd.train.draft.tiny_target (V = 512, H = 64, 3 layers); the draft: the copy-init EAGLE
draft of that target (rsd.engine.drafts.eagle.init_eagle_from_target) over every third token id, with its
weights perturbed so that every input (token, feature) matters.
"""
import pytest
import torch
from scipy.stats import chisquare

import rsd_kernels
from rsd.engine.drafts import eagle as E
from rsd.engine.drafts.eagle import LayerTap
from rsd.train.draft import tiny_target
from rsd.engine.generate import generate
from rsd.engine.loop import Decoder

from loop_models import always_accept_first_child, greedy_by_recompute

V = 512
PROMPT = [1, 17, 230, 45, 99, 310, 7]
N_TOKENS = 14
CONFIGS = [("sd", "3"), ("spectr", "2x2"), ("rsd-c", "2,1"), ("rsd-s", "2x3")]


@pytest.fixture(scope="module")
def target():
    return tiny_target(0)


def _draft(target, kept, scale=0.05, seed=0, feature_layers=()):
    d = E.init_eagle_from_target(target, kept, 1, seed=seed, feature_layers=feature_layers).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in d.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g))
    return d.requires_grad_(False)


@pytest.fixture(scope="module", params=[(), (0, 1)], ids=["final-feature", "layers-0-1"])
def draft(target, request):
    """Reads the target's final feature, or (EAGLE-3 style) also its layers 0 and 1's outputs."""
    return _draft(target, torch.arange(0, V, 3), feature_layers=request.param)


@pytest.fixture(scope="module")
def reference(target):
    return greedy_by_recompute(target, PROMPT, N_TOKENS)


@pytest.mark.parametrize("method,config", CONFIGS)
def test_greedy_exact_with_eagle_draft(method, config, target, draft, reference):
    r = generate(target, draft, PROMPT, method, config, max_new_tokens=N_TOKENS)
    assert r.tokens == reference
    assert r.draft_calls == r.config.depth * len(r.blocks)


def test_greedy_exact_one_token_prompt(target, draft):
    ref = greedy_by_recompute(target, [5], 8)
    assert generate(target, draft, [5], "rsd-s", "2x2", max_new_tokens=8).tokens == ref


@torch.no_grad()
def _draft_from_scratch(target, draft, committed, path_tokens):
    """q at the last of ``committed + path_tokens`` (the draft's logits for its children), recomputed
    without any cache: committed tokens read the target's features of their predecessors (zeros at 0),
    path tokens their parent's predicted feature."""
    ids = torch.tensor([committed])
    with LayerTap(target, draft.feature_layers) as tap:
        F = tap.features(target.model(input_ids=ids).last_hidden_state)[0]
    if draft.feature_layers:  # projected here so that path tokens' predicted features can follow
        F = draft.project(F)
    feats = torch.cat([F.new_zeros(1, F.shape[-1]), F[:-1]], 0)
    out = draft(ids, feats[None])
    logits, f = out.logits[0, -1], out.features[0, -1]
    for tok in path_tokens:
        ids = torch.cat([ids, torch.tensor([[tok]])], 1)
        feats = torch.cat([feats, f[None]], 0)
        out = draft(ids, feats[None])
        logits, f = out.logits[0, -1], out.features[0, -1]
    return logits


def record_trees(monkeypatch) -> list:
    """Every :func:`rsd_kernels.build_tree` result from now on (the loop's drafted trees)."""
    built = []
    real = rsd_kernels.build_tree

    def spy(*a, **kw):
        out = real(*a, **kw)
        built.append(out)
        return out

    monkeypatch.setattr(rsd_kernels, "build_tree", spy)
    return built


def check_tree_against_recompute(target, draft, committed, drafted, depth) -> int:
    """Assert that every expanded node's q in ``drafted`` (a tree of ``depth`` levels built after
    ``committed``) equals the from-scratch draft; returns the number of nodes checked."""
    tree = drafted.tree
    toks, pars = tree.tokens[0].tolist(), tree.parents[0].tolist()
    n = int(tree.num_nodes[0])
    node_depth = [0] * n
    for i in range(1, n):
        node_depth[i] = node_depth[pars[i]] + 1
    checked = 0
    for i in range(n):
        if node_depth[i] >= depth:
            continue  # leaves of the last level are never fed to the draft
        path, j = [], i
        while j > 0:
            path.append(toks[j])
            j = pars[j]
        want = _draft_from_scratch(target, draft, committed, path[::-1])
        got = drafted.draft_logits[0, i]
        kept = torch.isfinite(want)
        assert torch.equal(kept, torch.isfinite(got)), f"block {len(committed)}: node {i} kept ids differ"
        torch.testing.assert_close(got[kept], want[kept], atol=2e-4, rtol=1e-4)
        checked += 1
    return checked


@pytest.mark.parametrize("method,config", [("rsd-s", "2x3"), ("rsd-c", "3,2"), ("sd", "4")])
def test_feature_flow_matches_recompute(method, config, target, draft, monkeypatch):
    """Every expanded node's q in every block equals the from-scratch draft (sampled decoding, so
    acceptance varies and pending chains of several tokens occur)."""
    built = record_trees(monkeypatch)
    r = generate(target, draft, PROMPT, method, config, temperature=1.0, max_new_tokens=16, seed=3)
    committed = list(PROMPT)
    checked = 0
    for drafted, blk in zip(built, r.blocks):
        checked += check_tree_against_recompute(target, draft, committed, drafted, r.config.depth)
        committed += r.tokens[len(committed) - len(PROMPT):][:blk.emitted]
    assert checked > len(built), "too few nodes checked"
    assert max(r.accepted_lengths) >= 1, "no block accepted a token: pending chains not exercised"


# ---------------------------------------------------------------------------------- chi-square
N = 200
ALPHA = 1e-3
TEMP = 0.15  # the tiny target's next-token distribution is flat at 1 (max 0.003); 0.15: max 0.044
BINS = 6


def _equal_mass_bins(p):
    """Bin of every token id: tokens sorted by target probability, cut into BINS groups of ~equal mass."""
    order = p.argsort(descending=True)
    before = p[order].cumsum(0) - p[order]
    bins = torch.empty_like(order)
    bins[order] = (before * BINS).long().clamp(max=BINS - 1)
    return bins


def _first_token_pvalue(target, draft, method, config, n=N):
    with torch.no_grad():
        p = torch.softmax(target(input_ids=torch.tensor([PROMPT])).logits[0, -1].double() / TEMP, -1)
    bins = _equal_mass_bins(p)
    expected = torch.zeros(BINS, dtype=torch.float64).index_add_(0, bins, p) * n
    dec = Decoder(target, draft, method, config, temperature=TEMP, seed=0)
    dec.prefill(PROMPT)
    snap = dec.snapshot()
    counts, accepted = [0] * BINS, 0
    for i in range(n):
        dec.restore(snap, seed=i)
        tokens, stats = dec.step()
        counts[int(bins[tokens[0]])] += 1
        accepted += stats.accepted > 0
    return chisquare(counts, expected.tolist()).pvalue, counts, accepted


@pytest.fixture(scope="module")
def dense_draft(target):
    """Over every token id (a restricted head makes the broken verifier's draws trivially wrong)."""
    return _draft(target, torch.arange(V), scale=0.02)


@pytest.mark.parametrize("method,config", [("sd", "2"), ("rsd-s", "3x2")])
def test_first_token_matches_target(method, config, target, dense_draft):
    pvalue, counts, accepted = _first_token_pvalue(target, dense_draft, method, config)
    assert 0 < accepted < N, f"first child accepted in {accepted}/{N} runs: the test must see acceptances and rejections"
    assert pvalue > ALPHA, f"{method}: counts {counts}, p={pvalue:.2e}"


def test_broken_verifier_is_caught(target, dense_draft, monkeypatch):
    monkeypatch.setattr(rsd_kernels, "verify_tree", always_accept_first_child)
    pvalue, counts, _ = _first_token_pvalue(target, dense_draft, "sd", "2")
    assert pvalue < ALPHA, f"the broken verifier passed: counts {counts}, p={pvalue:.2e}"


# ------------------------------------------------------------------------------ loading, refusals
def test_load_draft_eagle_spec_round_trip(target, draft, reference, tmp_path):
    from rsd.engine.models import LoadedModel, load_draft

    path = E.export_eagle(draft, str(tmp_path / "eagle.safetensors"))
    loaded = load_draft(f"eagle:{path}", LoadedModel(target, None, "tiny"), log=lambda m: None)
    assert isinstance(loaded.model, E.EagleDraft) and "EAGLE" in loaded.label
    r = generate(target, loaded.model, PROMPT, "rsd-s", "2x3", max_new_tokens=N_TOKENS)
    assert r.tokens == reference
    with pytest.raises(ValueError, match="eagle:PATH"):
        load_draft("eagle:", LoadedModel(target, None, "tiny"), log=lambda m: None)


BATCH_PROMPTS = [PROMPT, [5], PROMPT[2:5] + [400, 401, 402, 17, 230, 45, 8]]


@pytest.mark.parametrize("method,config", CONFIGS)
def test_batched_rows_equal_single_prompt(method, config, target, draft, monkeypatch):
    """The batched loop with an EAGLE draft (prompts of 7, 1 and 10 tokens): greedy, every row equals
    single-prompt decoding; at temperature 1, row 0 (whose noise is the single-prompt loop's) draws
    the single-prompt tokens with the same per-block acceptance, and the draft's q at every node of
    its trees equals the single-prompt loop's, whichever prompt it holds, while the other rows (other
    lengths, other acceptance) share its forwards."""
    from rsd.engine.batched import generate_batch

    singles = [generate(target, draft, p, method, config, max_new_tokens=N_TOKENS) for p in BATCH_PROMPTS]
    res = generate_batch(target, draft, BATCH_PROMPTS, method, config, max_new_tokens=N_TOKENS)
    assert res.tokens == [r.tokens for r in singles]
    built = []
    real = rsd_kernels.build_tree

    def spy(*a, **kw):
        out = real(*a, **kw)
        built.append(out.draft_logits[0])
        return out

    monkeypatch.setattr(rsd_kernels, "build_tree", spy)
    accepted = 0
    for i in range(len(BATCH_PROMPTS)):
        batch = BATCH_PROMPTS[i:] + BATCH_PROMPTS[:i]
        built.clear()
        one = generate(target, draft, batch[0], method, config, temperature=1.0, max_new_tokens=16, seed=5)
        q_one = list(built)
        built.clear()
        res = generate_batch(target, draft, batch, method, config, temperature=1.0, max_new_tokens=16, seed=5)
        assert res.tokens[0] == one.tokens, f"prompt {i} in row 0"
        assert res.rows[0].accepted_lengths == one.accepted_lengths, f"prompt {i} in row 0"
        for a, b in zip(q_one, built):  # row 0's blocks come first (all rows run every block)
            torch.testing.assert_close(b[:a.shape[0]], a, atol=2e-4, rtol=1e-4)
        accepted += sum(one.accepted_lengths)
    assert accepted > 0, "no token accepted: pending chains and their features not exercised"


def test_eagle_width_must_match_target(draft):
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    with pytest.raises(ValueError, match="hidden size"):
        Decoder(other, draft, "rsd-s", "2x2")


# ------------------------------------------------------------------- the shipped EAGLE draft
@pytest.mark.slow
def test_shipped_eagle_draft_greedy_exact_on_embedded_target():
    """``--draft embedded-eagle`` on the embedded target: greedy equality for every method, and the
    trained draft is accepted (more than one token per block on average)."""
    from loop_models import chat_ids, embedded_target
    from rsd.engine.models import load_draft

    tgt = embedded_target()
    drf = load_draft("embedded-eagle", tgt, log=lambda m: None)
    assert isinstance(drf.model, E.EagleDraft) and "EAGLE" in drf.label
    ref = greedy_by_recompute(tgt.model, chat_ids(), 12)
    for method, config in CONFIGS:
        r = generate(tgt.model, drf.model, chat_ids(), method, config, max_new_tokens=12)
        assert r.tokens == ref, method
        assert r.block_efficiency > 1.0, (method, r.accepted_lengths)
