"""The selector of method="auto" on synthetic cost profiles and acceptance (no model):
a flat cost curve (a GPU) picks a large tree, a steep one or a useless draft picks target-only
decoding, a non-monotone curve pads the verification forward, the guard and the exploration are
bounded, and the expected block efficiency follows the closed forms."""
import random

import numpy as np
import pytest

from rsd_kernels.methods import TreeConfig
from rsd.engine.acceptance import AcceptanceStats
from rsd.engine.results import BlockStats
from rsd.engine.selector import Selector, candidate_configs

from auto_helpers import synthetic_profile

ISSUE_CPU_CURVE = {1: 1.0, 2: 1.59, 3: 1.93, 4: 1.45, 5: 1.28, 6: 1.60, 7: 2.06, 8: 1.73, 10: 2.08, 12: 1.60,
                   16: 1.87, 20: 2.0, 24: 2.12, 32: 2.80, 40: 3.2, 48: 3.6, 64: 4.4}


def chain_tree(outcomes, width=2):
    """A tree whose path nodes have ``width`` children each; ``outcomes[d]`` is the accepted rank
    (0-based) at depth d+1, or None (all rejected: the path ends). Returns (tokens, parents, n, path)."""
    tokens, parents, path = [0], [-1], [0]
    for rank in outcomes:
        v = path[-1]
        kids = []
        for _ in range(width):
            kids.append(len(tokens))
            tokens.append(len(tokens))
            parents.append(v)
        if rank is None:
            break
        path.append(kids[rank])
    return tokens, parents, len(tokens), path


def feed(stats, first, second=0.0, blocks=300, depth=6, seed=0):
    """Observations of trees of branching 2 where the first child is accepted with probability
    ``first``, else the second with probability ``second``."""
    rng = random.Random(seed)
    for _ in range(blocks):
        out = []
        for _ in range(depth):
            if rng.random() < first:
                out.append(0)
            elif rng.random() < second:
                out.append(1)
            else:
                out.append(None)
                break
        stats.update("rsd-c", (2,) * depth, [chain_tree(out)])


def test_candidates_cover_every_method_up_to_the_cap():
    cs = candidate_configs(10)
    methods = {c.method for c in cs}
    assert methods == {"sd", "spectr", "rsd-c", "rsd-s"}
    assert max(c.budget for c in cs) == 10 and TreeConfig("rsd-c", (2, 1)) in cs and TreeConfig("sd", (4,)) in cs
    assert TreeConfig("rsd-c", (1, 1)) not in cs  # that is SD 2
    with pytest.raises(ValueError, match="node_cap"):
        candidate_configs(0)


def test_closed_forms():
    st = AcceptanceStats(decay=1.0)
    feed(st, 0.8, 0.5, blocks=2000)
    r = st.rates("rrs")
    assert abs(r[0, 0] - 0.8) < 0.03 and abs(r[2, 0] - 0.8) < 0.04 and abs(r[0, 1] - 0.5) < 0.05
    a1, a2 = r[0, 0], r[1, 0]
    assert st.expected_tokens(TreeConfig("sd", (2,))) == pytest.approx(1 + a1 + a1 * a2)
    A = st.any_accepted(r)
    assert A[0, 2] == pytest.approx(1 - (1 - r[0, 0]) * (1 - r[0, 1]))
    assert st.expected_tokens(TreeConfig("rsd-c", (2, 1))) == pytest.approx(1 + A[0, 2] + A[0, 2] * A[1, 1])
    # a cell never observed borrows from its neighbours, and the prior alone is what the first block sees
    assert 0 < st.rates("kseq")[0, 0] == pytest.approx(AcceptanceStats().prior_first)


def test_flat_cost_curve_picks_a_large_tree():
    """A GPU-like profile: verification costs the same up to 64 tokens, a draft level is cheap."""
    prof = synthetic_profile(lambda n: 1.0, draft_ratio=0.02)
    sel = Selector(prof, explore_every=0)
    feed(sel.stats, 0.7, 0.4)
    c = sel.choose(ctx=200)
    assert c.config is not None and c.config.budget >= 16 and c.config.depth >= 4, c


def test_steep_cost_curve_picks_target_only():
    prof = synthetic_profile(lambda n: float(n), draft_ratio=0.05)
    sel = Selector(prof, explore_every=0)
    feed(sel.stats, 0.7, 0.4)
    assert sel.choose(ctx=200).config is None


def test_useless_draft_picks_target_only_and_probes_rarely():
    prof = synthetic_profile(lambda n: 1 + 0.125 * (n - 1), draft_ratio=0.1)
    sel = Selector(prof)
    feed(sel.stats, 0.0, 0.0)
    spec = 0
    for _ in range(256):
        c = sel.choose(ctx=200)
        if c.config is None:
            sel.record(c, BlockStats(0, 1, 0, 1, 0.0, 0.05, 0.0), ctx=200)
        else:  # a probe: one token, slow
            spec += 1
            sel.record(c, BlockStats(0, 1, c.config.depth, 1, 0.01 * c.config.depth, 0.06, 0.001), ctx=200,
                       verified=[chain_tree([None], width=1)])
    assert spec <= 256 // 16, f"{spec} speculative probes in 256 blocks"
    assert sel.probe_every > sel.explore_every  # losing probes back off


def test_nonmonotone_curve_pads_the_verification():
    prof = synthetic_profile(lambda n: ISSUE_CPU_CURVE[n], ns=sorted(ISSUE_CPU_CURVE), draft_ratio=0.09)
    assert prof.verify_rows(2) == 5 and prof.verify_rows(4) == 5 and prof.verify_rows(5) == 5
    assert prof.verify_rows(11) == 12 and prof.verify_rows(12) == 12
    sel = Selector(prof, explore_every=0)
    feed(sel.stats, 0.75, 0.3)
    c = sel.choose(ctx=200)
    assert c.config is not None
    assert c.rows == prof.verify_rows(c.config.budget + 1) and c.rows >= c.config.budget + 1
    # every candidate whose own row count is dearer than a larger measured one is padded
    E, T, rows = sel.predict(200)
    padded = [cfg for cfg, r in zip(sel.candidates, rows) if r > cfg.budget + 1]
    assert TreeConfig("sd", (1,)) in padded and TreeConfig("rsd-c", (2,)) in padded
    assert TreeConfig("rsd-c", (2, 1)) not in padded  # 5 rows: already the cheapest


def test_margin_and_hysteresis():
    prof = synthetic_profile(lambda n: 1 + 0.1 * (n - 1), draft_ratio=0.05)
    sel = Selector(prof, explore_every=0)
    feed(sel.stats, 0.8, 0.3)
    first = sel.choose(ctx=200)
    assert first.config is not None and first.reason == "best"
    again = sel.choose(ctx=200)
    assert again.config == first.config and again.reason in ("keep", "best")
    E, T, _ = sel.predict(200)
    rate = E / T
    i = sel.index_of[first.config]
    assert rate[i] * (1 + sel.hysteresis) >= rate.max()


def test_guard_falls_back_to_target_only():
    """The statistics say the trees are accepted in full and the blocks take the predicted time,
    but the realised blocks commit one token each (a model the predictions cannot see): the guard
    compares realised rates and switches to target-only decoding for a cool-down, then tries again."""
    prof = synthetic_profile(lambda n: 1 + 0.05 * (n - 1), draft_ratio=0.02)
    sel = Selector(prof, explore_every=0, calibrate_every=1000)
    feed(sel.stats, 0.8, 0.3)
    seen = []
    for _ in range(80):
        c = sel.choose(ctx=200)
        seen.append(c.reason)
        if c.config is None:
            sel.record(c, BlockStats(0, 1, 0, 1, 0.0, prof.ar_time(200), 0.0), ctx=200)
        else:
            t = prof.target_time(c.rows, 200)
            sel.record(c, BlockStats(0, 1, c.config.depth, 1, c.predicted_s - t, t, 0.0), ctx=200, tokens=1,
                       verified=[chain_tree([0] * c.config.depth)])
    assert "calibrate" in seen and "guard" in seen
    assert seen.count("guard") >= 8
    first = seen.index("guard")
    assert any(r in ("best", "keep") for r in seen[first + 8:]), "never tried again after the cool-down"


def test_realised_times_correct_the_profile():
    """A profile measured on an idle machine, blocks run 2x slower: the timing factors follow."""
    prof = synthetic_profile(lambda n: 1 + 0.1 * (n - 1))
    sel = Selector(prof, explore_every=0)
    c = sel.choose(ctx=200)
    for _ in range(30):
        sel.record(c, BlockStats(0, 1, 0, 1, 0.0, 2 * prof.target_time(c.rows, 200), 0.0), ctx=200,
                   verified=[chain_tree([None], width=1)])
    assert sel.f_T.value == pytest.approx(2.0, rel=1e-6)


def test_selection_is_cheap():
    import time

    prof = synthetic_profile(lambda n: 1.0)
    sel = Selector(prof)
    feed(sel.stats, 0.6, 0.3, blocks=20)
    assert len(sel.candidates) > 400
    t0 = time.thread_time()
    for i in range(20):
        sel.stats._tables = None  # as after every verification
        sel.stats.version += 1
        sel.choose(ctx=200 + i)
    per = (time.thread_time() - t0) / 20
    assert per < 0.02, f"{per * 1e3:.1f} ms per choice"  # generous: CI machines are slow; ~1 ms here
    assert np.isfinite(sel.predict(200)[1]).all()


def test_warm_start_never_from_the_same_seed():
    """A new run starts from the last run's state on the same profile, but never from a state that
    learnt from a run with its own Philox seed (a tree choice must not depend on its block's noise)."""
    from rsd.engine.selector import forget_warm_state, make_selector

    forget_warm_state()
    prof = synthetic_profile(lambda n: 1 + 0.1 * (n - 1))
    a = make_selector(None, None, temperature=1.0, profile=prof, seed=1)
    feed(a.stats, 0.9, 0.3, blocks=50)
    b = make_selector(None, None, temperature=1.0, profile=prof, seed=2)
    assert b.stats.trials["rrs"].sum() > 0 and b.seeds == {1, 2}  # inherited (at half weight)
    assert b.stats.trials["rrs"].sum() == pytest.approx(0.5 * a.stats.trials["rrs"].sum())
    c = make_selector(None, None, temperature=1.0, profile=prof, seed=1)
    assert c.stats.trials["rrs"].sum() == 0 and c.seeds == {1}  # b's state holds seed 1's run: not inherited
    d = make_selector(None, None, temperature=0.0, profile=prof, seed=3)
    assert d.stats.trials["rrs"].sum() == 0  # another kind of temperature: its own state
    forget_warm_state()
