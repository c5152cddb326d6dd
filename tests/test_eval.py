"""``rsd eval --quick`` end to end on a tiny offline pair, resume, the configuration cap, and
exactness: at temperature 0 every method's text equals the autoregressive one (accuracy 1.0)."""
import json
import math

import pytest

from eval_tiny_pair import save_tiny_pair
from rsd.eval import metrics as M
from rsd.eval.runner import EvalSettings, grid_configs, load_or_new_results


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return save_tiny_pair(str(tmp_path_factory.mktemp("tiny")))


def _eval(pair, out, *extra):
    from rsd.cli import main

    t, d = pair
    return main(["eval", "--quick", "--target", t, "--draft", d, "--out", str(out), "--no-progress", *extra])


def test_grid_configs_cap():
    counts = [len(grid_configs("rsd-c", b)) for b in (6, 10, 14, 21, 30)]
    assert counts == [5, 4, 4, 6, 13]
    assert all(list(c.shape) == sorted(c.shape, reverse=True) for c in grid_configs("rsd-c", 30))
    assert len(grid_configs("rsd-c", 30, mode="all")) == 79
    assert [str(c) for c in grid_configs("spectr", 30)] == ["spectr 5x6", "spectr 6x5", "spectr 10x3",
                                                           "spectr 15x2", "spectr 30x1"]
    assert [str(c) for c in grid_configs("rsd-s", 10, mode="default")] == ["rsd-s 2x5"]
    two = grid_configs("rsd-c", 21, max_configs=2)
    assert len(two) == 2 and all(c.budget == 21 and c.depth <= 6 for c in two)
    assert grid_configs("sd", 30)[0].depth == 30  # SD's depth is its budget, never capped
    with pytest.raises(ValueError, match="configs"):
        grid_configs("sd", 6, mode="some")


def test_eval_quick_end_to_end_and_resume(pair, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert _eval(pair, out, "--plot", str(tmp_path / "fig")) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    r = res["models"]["param_ratio"]
    assert 0 < r < 1 and res["models"]["draft_params"] < res["models"]["target_params"]
    runs = res["runs"]
    assert len(runs) == 3 * 2 * 4  # data sets x budgets x methods, one configuration each
    assert {(x["dataset"], x["method"], x["budget"]) for x in runs} == {
        (d, m, b) for d in ("wmt", "xsum", "dolly") for m in ("sd", "spectr", "rsd-c", "rsd-s") for b in (6, 10)}
    for x in runs:
        assert x["items"] == 2 and sum(x["tokens_per_item"]) == x["tokens"]
        assert x["block_efficiency"] == pytest.approx(x["tokens"] / x["target_calls"])
        assert 1.0 <= x["block_efficiency"] <= x["depth"] + 1
        assert x["mbsu"] == pytest.approx(x["block_efficiency"] / (1 + r * x["depth"]))
        # bootstrap intervals over the 2 items, from the per-item counts the record keeps
        assert sum(x["target_calls_per_item"]) == x["target_calls"] and len(x["wall_s_per_item"]) == 2
        assert x["block_efficiency_ci"] == M.block_efficiency_ci(x["tokens_per_item"], x["target_calls_per_item"])
        for f in ("block_efficiency", "mbsu", "token_rate"):
            lo, hi = x[f + "_ci"]
            assert lo <= x[f] * (1 + 1e-12) and x[f] <= hi * (1 + 1e-12), (f, x)
        assert x["mbsu_ci"] == pytest.approx([v * x["mbsu"] / x["block_efficiency"] for v in x["block_efficiency_ci"]])
        assert x["draft_calls"] == x["target_calls"] * x["depth"]
        assert math.isfinite(x["token_rate"]) and x["token_rate"] > 0
        ar_score = next(a["score"] for a in res["ar"] if (a["dataset"], a["method"]) == (x["dataset"], "ar"))
        if ar_score > 0:  # accuracy = score / ar's score, undefined (NaN) when ar scored 0
            assert x["accuracy"] == pytest.approx(x["score"] / ar_score)
        else:
            assert math.isnan(x["accuracy"])
        split = x["time_split"]
        assert set(split) == {"prefill_s", "draft_s", "target_s", "verify_s", "cache_s", "other_s"}
        assert sum(split.values()) == pytest.approx(x["wall_s"], rel=1e-6)
    assert {(a["dataset"], a["method"]) for a in res["ar"]} == {
        (d, k) for d in ("wmt", "xsum", "dolly") for k in ("ar", "ar_repeat")}
    assert res["ci"] == {"kind": "percentile bootstrap over items", "level": 0.95, "resamples": 1000, "seed": 0}
    peer = res["peer"]
    assert len(peer) == 3 * 2 and all(p["available"] for p in peer), peer
    assert all(p["token_rate"] > 0 and p["num_assistant_tokens"] == p["budget"] for p in peer)
    assert (tmp_path / "fig.png").stat().st_size > 0 and (tmp_path / "fig.pdf").stat().st_size > 0
    assert "rsd-s" in printed and "hf-assisted" in printed

    # resume: nothing recorded is run again, and a new budget adds only its own configurations
    assert _eval(pair, out) == 0
    again = json.loads(out.read_text())
    assert again["runs"] == runs and again["ar"] == res["ar"] and again["peer"] == peer
    assert _eval(pair, out, "--budgets", "6,10,14", "--methods", "sd,rsd-s", "--datasets", "wmt", "--no-peer") == 0
    more = json.loads(out.read_text())
    assert more["runs"][: len(runs)] == runs
    assert [(x["method"], x["budget"]) for x in more["runs"][len(runs):]] == [("sd", 14), ("rsd-s", 14)]


def test_greedy_every_method_equals_autoregressive(pair, tmp_path):
    out = tmp_path / "g.json"
    assert _eval(pair, out, "--temperature", "0", "--datasets", "wmt,dolly", "--no-peer") == 0
    res = json.loads(out.read_text())
    ar = {a["dataset"]: a for a in res["ar"] if a["method"] == "ar"}
    for x in res["runs"]:
        assert x["outputs"] == ar[x["dataset"]]["outputs"], (x["method"], x["config"])
        assert x["score"] == ar[x["dataset"]]["score"]
        # a random tiny model scores 0 against the references, where the ratio is undefined (NaN)
        assert x["accuracy"] == 1.0 or (math.isnan(x["accuracy"]) and x["score"] == 0)


def test_resume_refuses_other_settings(tmp_path):
    path = tmp_path / "r.json"
    res = load_or_new_results(str(path), EvalSettings(temperature=1.0))
    path.write_text(json.dumps(res))
    with pytest.raises(ValueError, match="temperature"):
        load_or_new_results(str(path), EvalSettings(temperature=0.5))
    assert load_or_new_results(str(path), EvalSettings(temperature=0.5), overwrite=True)["runs"] == []


@pytest.mark.parametrize("spec", ["embedded", "embedded-eagle"])
def test_resume_refuses_other_embedded_draft_weights(spec, tmp_path, monkeypatch):
    """Results of an older shipped draft are not extended with a new one's (same --draft spec)."""
    from rsd.eval import runner

    path = tmp_path / "r.json"
    settings = EvalSettings(draft=spec)
    path.write_text(json.dumps(load_or_new_results(str(path), settings)))
    assert load_or_new_results(str(path), settings)["fingerprint"]["draft_weights"]  # same weights: resumes
    monkeypatch.setattr(runner, "draft_weights_digest", lambda spec: "0" * 16)
    with pytest.raises(ValueError, match="draft_weights"):
        load_or_new_results(str(path), settings)


def test_resume_refuses_a_changed_eagle_weights_file(tmp_path):
    """--draft eagle:PATH: the file's digest is part of the fingerprint."""
    import os

    weights = tmp_path / "eagle.safetensors"
    weights.write_bytes(b"first")
    path = tmp_path / "r.json"
    settings = EvalSettings(draft=f"eagle:{weights}")
    path.write_text(json.dumps(load_or_new_results(str(path), settings)))
    weights.write_bytes(b"second")
    os.utime(weights, ns=(1, 1))
    with pytest.raises(ValueError, match="draft_weights"):
        load_or_new_results(str(path), settings)


class _PlainDraft(__import__("torch").nn.Module):
    """A draft that is not a transformers PreTrainedModel (like the embedded restricted-head draft)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, **kw):
        return self.inner(**kw)


def test_peer_reports_na_for_a_non_hf_draft(pair, tmp_path):
    from rsd.eval.runner import EvalSettings, Pair, count_params, eos_ids, run_grid
    from rsd.engine.models import load_draft, load_target

    t = load_target(pair[0])
    d = load_draft(pair[1], t)
    p = Pair(t.model, _PlainDraft(d.model), t.tokenizer, t.label, "plain", "tiny", count_params(t.model),
             count_params(d.model), eos_ids(t.tokenizer, t.model))
    s = EvalSettings(target=pair[0], draft="plain", datasets=("dolly",), methods=("sd",), budgets=(6, 10),
                     items=1, max_new_tokens=4, configs="default")
    res = run_grid(s, str(tmp_path / "p.json"), pair=p, progress=False, log=lambda m: None)
    assert len(res["runs"]) == 2
    assert [pp["budget"] for pp in res["peer"]] == [6, 10]
    assert all(pp["available"] is False and pp["token_rate"] is None for pp in res["peer"])
    assert "not a transformers PreTrainedModel" in res["peer"][0]["reason"]


def test_rsd_plot_command(pair, tmp_path):
    from rsd.cli import main

    out = tmp_path / "r.json"
    assert _eval(pair, out, "--datasets", "xsum", "--methods", "sd,rsd-s", "--no-peer") == 0
    assert main(["plot", str(out), "--out", str(tmp_path / "f")]) == 0
    assert (tmp_path / "f.png").stat().st_size > 0 and (tmp_path / "f.pdf").stat().st_size > 0
    # several files merge into one figure, their baselines included
    out2 = tmp_path / "r2.json"
    assert _eval(pair, out2, "--datasets", "wmt", "--methods", "sd", "--no-peer") == 0
    captured = {}
    import rsd.eval.plot as P
    real = P.plot_results
    P.plot_results = lambda res, prefix, **kw: captured.setdefault("res", res) and real(res, prefix, **kw)
    try:
        assert main(["plot", str(out), str(out2), "--out", str(tmp_path / "g")]) == 0
    finally:
        P.plot_results = real
    res = captured["res"]
    assert {r["dataset"] for r in res["runs"]} == {"xsum", "wmt"}
    assert {(a["dataset"], a["method"]) for a in res["ar"]} >= {("wmt", "ar_repeat"), ("xsum", "ar_repeat")}


def test_peer_honours_the_budget(pair):
    """transformers reads num_assistant_tokens from the assistant's generation_config: check that
    the peer's chain length really is the budget (fewer target calls for a longer chain when the
    draft is the target itself) and that the draft's config is restored."""
    import copy

    from rsd.eval.peer import hf_generate
    from rsd.eval.runner import EvalSettings, Pair, count_params, eos_ids
    from rsd.engine.models import load_target

    t = load_target(pair[0])
    draft = copy.deepcopy(t.model)
    p = Pair(t.model, draft, t.tokenizer, "t", "t-copy", "tiny", count_params(t.model), count_params(draft), [])
    s = EvalSettings(temperature=0.0, max_new_tokens=20)
    before = draft.generation_config.num_assistant_tokens
    calls = []
    hook = t.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        counts = {}
        for budget in (2, 9):
            calls.clear()
            rec = hf_generate(p, [[5, 6, 7]], s, assistant=True, budget=budget)
            assert rec["available"] and rec["tokens"] == 20, rec
            counts[budget] = len(calls)
    finally:
        hook.remove()
    assert counts[9] < counts[2], counts
    assert draft.generation_config.num_assistant_tokens == before


def test_eval_with_both_verifiers(pair, tmp_path, capsys):
    """``--verifier rrs,traversal``: every configuration once per verifier, recorded in the run; the
    summary names the verifier; a rerun adds nothing; a file of one verifier extends with the other."""
    out = tmp_path / "v.json"
    base = ("--datasets", "wmt", "--no-peer", "--budgets", "6")
    assert _eval(pair, out, *base, "--verifier", "rrs") == 0
    assert {r["verifier"] for r in json.loads(out.read_text())["runs"]} == {"rrs"}
    assert _eval(pair, out, *base, "--verifier", "rrs,traversal", "--plot", str(tmp_path / "fig")) == 0
    printed = capsys.readouterr().out
    runs = json.loads(out.read_text())["runs"]
    assert sorted((r["method"], r["verifier"]) for r in runs) == sorted(
        (m, v) for m in ("sd", "spectr", "rsd-c", "rsd-s") for v in ("rrs", "traversal"))
    assert all(r["block_efficiency"] >= 1.0 for r in runs)
    assert "traversal" in printed and (tmp_path / "fig.png").stat().st_size > 0
    assert _eval(pair, out, *base, "--verifier", "traversal,rrs") == 0
    assert len(json.loads(out.read_text())["runs"]) == len(runs)  # resume: nothing run twice
    with pytest.raises(ValueError, match="verifiers must be among"):
        EvalSettings(verifiers=("block",))
