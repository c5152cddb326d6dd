"""method="auto" in the loops (tiny models): greedy output equals the target's, trees switching between
blocks keep the output law exactly the target's (chi-square, single prompt and batched, with a broken
verifier as negative control), the Philox counters never repeat when the tree changes (and stay
b * L + l for a fixed tree), padded verification rows change nothing but the GEMM shape, and target-only
steps keep the draft's cache correct for the next speculative block (independent and EAGLE drafts)."""
import pytest
import torch
from scipy.stats import chisquare

import rsd_kernels
from rsd_kernels.methods import TreeConfig
from rsd.engine.adapter import ModelAdapter
from rsd.engine.generate import generate
from rsd.engine.loop import Decoder

from auto_helpers import ForcedSelector, synthetic_profile
from loop_models import BiasedDraft, always_accept_first_child, greedy_by_recompute, tiny_llama

PROMPT = [3, 1, 4, 1, 5, 9, 2, 6]
MIX = [TreeConfig("rsd-s", (2, 2)), None, TreeConfig("sd", (1,)), TreeConfig("rsd-c", (2, 1)), None,
       TreeConfig("spectr", (2, 2)), TreeConfig("sd", (3,)), TreeConfig("rsd-c", (3,))]


@pytest.fixture(scope="module")
def pair():
    target = tiny_llama(vocab_size=64, layers=2, max_positions=256, seed=1)
    with torch.no_grad():
        target.lm_head.weight.mul_(8.0)  # peaked next-token distributions: drafts get accepted
    return target, BiasedDraft(target, scale=1.0)


def cpu_profile():
    return synthetic_profile(lambda n: 1 + 0.1 * (n - 1), draft_ratio=0.1)


def test_greedy_auto_equals_target(pair):
    target, draft = pair
    ref = greedy_by_recompute(target, PROMPT, 40)
    r = generate(target, draft, PROMPT, "auto", max_new_tokens=40, profile=cpu_profile())
    assert r.tokens == ref
    assert r.method == "auto" and len(r.choices()) == len(r.blocks)
    assert any(c["config"] is not None for c in r.choices())
    assert all(c["realised_s"] > 0 and c["predicted_s"] > 0 for c in r.choices())
    # a node cap from the budget
    r = generate(target, draft, PROMPT, "auto", budget=3, max_new_tokens=20, profile=cpu_profile())
    assert r.tokens == ref[:20]
    assert max(b.choice.config.budget for b in r.blocks if b.choice.config is not None) <= 3


@pytest.mark.parametrize("pad", [0, 5])
def test_greedy_with_every_switch_equals_target(pair, pad):
    target, draft = pair
    ref = greedy_by_recompute(target, PROMPT, 40)
    sel = ForcedSelector(MIX, pad=pad)
    r = generate(target, draft, PROMPT, "auto", max_new_tokens=40, selector=sel)
    assert r.tokens == ref
    assert None in sel.chosen and len({c for c in sel.chosen if c is not None}) >= 4
    assert sum(b.accepted for b in r.blocks) > 5  # the draft is accepted at times (the switches matter)


def test_batched_auto_rows_equal_target(pair):
    target, draft = pair
    prompts = [PROMPT, [7], [2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4]]
    rb = generate(target, draft, prompts, "auto", max_new_tokens=24, profile=cpu_profile())
    for row, p in zip(rb.rows, prompts):
        assert row.tokens == greedy_by_recompute(target, p, 24)
    assert len(rb.to_dict()["choices"]) == len(rb.blocks)
    sel = ForcedSelector(MIX, pad=3)
    rb = generate(target, draft, prompts, "auto", max_new_tokens=24, selector=sel)
    for row, p in zip(rb.rows, prompts):
        assert row.tokens == greedy_by_recompute(target, p, 24)


def test_auto_refuses_bad_input(pair):
    target, draft = pair
    with pytest.raises(ValueError, match="needs a draft"):
        generate(target, None, PROMPT, "auto", profile=cpu_profile())
    with pytest.raises(ValueError, match="takes no tree config"):
        generate(target, draft, PROMPT, "auto", "2x2", profile=cpu_profile())
    with pytest.raises(ValueError, match="budget must be a positive int"):
        generate(target, draft, PROMPT, "auto", budget=0, profile=cpu_profile())


# ------------------------------------------------------------------------------ padding
def test_padded_verification_rows_agree(pair):
    target, _ = pair
    ad = ModelAdapter(target)
    ad.reset(64)
    ad.forward_chain(torch.tensor([PROMPT]), logits_to_keep=1)
    tree = rsd_kernels.DraftTree.from_lists([9, 4, 5, 6, 7], [-1, 0, 0, 1, 1])
    snap = ad.snapshot()
    plain = ad.forward_tree(tree)
    n_plain = ad.length
    ad.restore(snap)
    padded = ad.forward_tree(tree, rows=12)
    assert padded.shape == plain.shape and ad.length == n_plain + 7
    torch.testing.assert_close(padded, plain, atol=1e-4, rtol=1e-4)
    ad.keep_path(len(PROMPT) - 1, [0, 1, 3])  # compaction drops the padded rows' keys
    assert ad.length == len(PROMPT) + 2


# ------------------------------------------------------------------------------ Philox counters
def _spy_offsets(monkeypatch):
    seen = {"levels": [], "verify": [], "ar": []}
    real_build, real_verify, real_sample = rsd_kernels.build_tree, rsd_kernels.verify_tree, \
        rsd_kernels.sample_without_replacement

    def build(cfg, *a, offset=0, **kw):
        seen["levels"].extend(offset + level for level in range(cfg.depth))
        return real_build(cfg, *a, offset=offset, **kw)

    def verify(*a, offset=0, **kw):
        seen["verify"].append(offset)
        return real_verify(*a, offset=offset, **kw)

    def sample(*a, offset=0, **kw):  # the loop's target-only steps (build_tree calls the sampling module's own)
        seen["ar"].append(offset)
        return real_sample(*a, offset=offset, **kw)

    monkeypatch.setattr(rsd_kernels, "build_tree", build)
    monkeypatch.setattr(rsd_kernels, "verify_tree", verify)
    monkeypatch.setattr(rsd_kernels, "sample_without_replacement", sample)
    return seen


def test_offsets_never_repeat_when_the_tree_changes(pair, monkeypatch):
    target, draft = pair
    seen = _spy_offsets(monkeypatch)
    generate(target, draft, PROMPT, "auto", max_new_tokens=40, temperature=1.0, seed=5, selector=ForcedSelector(MIX))
    gumbel = seen["levels"] + seen["ar"]
    assert len(gumbel) == len(set(gumbel)), "a GUMBEL offset was used twice"
    assert len(seen["verify"]) == len(set(seen["verify"]))
    assert seen["ar"] and len(seen["levels"]) > len(seen["verify"])


def test_offsets_of_a_fixed_tree_are_unchanged(pair, monkeypatch):
    """A fixed tree of depth L samples level l of block b at b * L + l and verifies at b (as before
    method="auto"); target-only decoding samples step b at b."""
    target, draft = pair
    seen = _spy_offsets(monkeypatch)
    r = generate(target, draft, PROMPT, "rsd-c", "2,1,1", max_new_tokens=20, temperature=1.0, seed=5)
    nb = len(r.blocks)
    assert seen["levels"] == [b * 3 + level for b in range(nb) for level in range(3)]
    assert seen["verify"] == list(range(nb))
    seen["ar"].clear()
    generate(target, None, PROMPT, "ar", max_new_tokens=6, temperature=1.0, seed=5)
    assert seen["ar"] == list(range(6))


# ------------------------------------------------------------------------------ the draft cache after target-only steps
def test_draft_cache_correct_after_target_only_steps():
    """The draft is an exact copy of the target: at temperature 0 every speculative block must accept
    its whole chain, whatever ran before it (target-only steps leave tokens the draft catches up on)."""
    target = tiny_llama(vocab_size=64, layers=2, max_positions=256, seed=3)
    copy = tiny_llama(vocab_size=64, layers=2, max_positions=256, seed=3)
    sel = ForcedSelector([None, None, TreeConfig("sd", (3,)), None, TreeConfig("sd", (2,)), TreeConfig("sd", (4,)),
                          None, None, None, TreeConfig("rsd-c", (2, 1, 1))])
    r = generate(target, copy, PROMPT, "auto", max_new_tokens=40, selector=sel)
    assert r.tokens == greedy_by_recompute(target, PROMPT, 40)
    spec = [b for b in r.blocks if b.choice.config is not None]
    assert len(spec) >= 4
    for b in spec:
        assert b.accepted == b.choice.config.depth, (b.choice.config, b.accepted)


def test_eagle_draft_after_target_only_steps(monkeypatch):
    """An EAGLE draft: after target-only steps every expanded node's q equals the draft recomputed from
    scratch on the committed tokens (the target features of the steps it missed are fed)."""
    from test_loop_eagle import V, _draft, check_tree_against_recompute, record_trees

    from rsd.train.draft import tiny_target

    target = tiny_target(0)
    draft = _draft(target, torch.arange(0, V, 3))
    prompt = [1, 17, 230, 45, 99, 310, 7]
    built = record_trees(monkeypatch)
    sel = ForcedSelector([None, None, TreeConfig("rsd-c", (2, 1)), None, TreeConfig("sd", (2,)), None, None,
                          TreeConfig("rsd-s", (2, 2))])
    r = generate(target, draft, prompt, "auto", temperature=1.0, max_new_tokens=24, seed=3, selector=sel)
    committed, checked, it = list(prompt), 0, iter(built)
    for blk in r.blocks:
        if blk.choice.config is not None:
            checked += check_tree_against_recompute(target, draft, committed, next(it), blk.choice.config.depth)
        committed += r.tokens[len(committed) - len(prompt):][:blk.emitted]
    assert checked >= 6


# ------------------------------------------------------------------------------ chi-square with switching trees
V_SMALL = 5
N_SINGLE = 240
N_BATCH = 1500
ALPHA = 1e-3
SWITCH = [TreeConfig("sd", (1,)), TreeConfig("rsd-s", (2, 2)), None, TreeConfig("rsd-c", (2, 1)),
          TreeConfig("spectr", (2, 1)), TreeConfig("sd", (2,))]


@pytest.fixture(scope="module")
def small_pair():
    target = tiny_llama(vocab_size=V_SMALL, layers=1, max_positions=64, seed=2)
    with torch.no_grad():
        target.lm_head.weight.mul_(6.0)
    return target, BiasedDraft(target, scale=1.5, seed=1)


@torch.no_grad()
def two_token_law(target, prompt):
    p1 = torch.softmax(target(input_ids=torch.tensor([prompt])).logits[0, -1].double(), -1)
    ids = torch.tensor([prompt + [x] for x in range(V_SMALL)])
    p2 = torch.softmax(target(input_ids=ids).logits[:, -1].double(), -1)
    return p1[:, None] * p2  # [V, V]


def _pvalue(pairs, law):
    counts = torch.bincount(pairs[:, 0] * V_SMALL + pairs[:, 1], minlength=V_SMALL ** 2).double()
    exp = law.flatten() * pairs.shape[0]
    keep = exp >= 5
    obs = torch.cat([counts[keep], counts[~keep].sum()[None]])
    ex = torch.cat([exp[keep], exp[~keep].sum()[None]])
    nz = ex > 0
    return chisquare(obs[nz].numpy(), ex[nz].numpy() * obs.sum().item() / ex[nz].sum().item()).pvalue


def _break_verifier(monkeypatch, broken):
    if broken:
        monkeypatch.setattr(rsd_kernels, "verify_tree", always_accept_first_child)


def _assert_law(pairs, target, broken):
    p = _pvalue(pairs, two_token_law(target, [1, 2, 3]))
    if broken:
        assert p < ALPHA, f"the broken verifier passed: p = {p:.2e}"
    else:
        assert p > ALPHA, f"p = {p:.2e}"


def _single_pairs(target, draft, n):
    sel = ForcedSelector(SWITCH)
    dec = Decoder(target, draft, "auto", temperature=1.0, seed=0, selector=sel)
    dec.prefill([1, 2, 3])
    snap = dec.snapshot()
    out, accepted, switched = [], 0, 0
    for i in range(n):
        dec.restore(snap, seed=i)
        toks, st = dec.step()
        accepted += st.accepted > 0
        if len(toks) < 2:
            toks = toks + dec.step()[0]
            switched += 1
        out.append(toks[:2])
    return torch.tensor(out), accepted, switched


@pytest.mark.slow
@pytest.mark.parametrize("broken", [False, True], ids=["exact", "broken-verifier"])
def test_switching_trees_single_prompt(small_pair, monkeypatch, broken):
    """The law of the first two tokens with trees switching between blocks; a broken verifier must fail."""
    _break_verifier(monkeypatch, broken)
    target, draft = small_pair
    pairs, accepted, switched = _single_pairs(target, draft, N_SINGLE)
    if not broken:
        assert 0.1 * N_SINGLE < accepted < 0.9 * N_SINGLE and switched > 0.1 * N_SINGLE
    _assert_law(pairs, target, broken)


def _batch_pairs(target, draft, n):
    sel = ForcedSelector(SWITCH[1:] + SWITCH[:1])
    rb = generate(target, draft, [[1, 2, 3]] * n, "auto", max_new_tokens=2, temperature=1.0, seed=11, selector=sel)
    return torch.tensor([r.tokens[:2] for r in rb.rows]), rb


@pytest.mark.slow
@pytest.mark.parametrize("broken", [False, True], ids=["exact", "broken-verifier"])
def test_switching_trees_batched(small_pair, monkeypatch, broken):
    """As above with the batched loop (one tree for all rows per block; rows independent)."""
    _break_verifier(monkeypatch, broken)
    target, draft = small_pair
    pairs, rb = _batch_pairs(target, draft, N_BATCH)
    if not broken:  # many rows took their 2nd token from another tree
        assert len(rb.blocks) >= 2 and rb.batch_sizes[1] > 0.1 * N_BATCH
    _assert_law(pairs, target, broken)
