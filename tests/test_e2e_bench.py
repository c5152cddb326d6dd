"""bench/e2e_loop.py at tiny shapes on the CPU: the code path the GPU run takes (models built from
LlamaConfig, synchronising hooks, both acceptance patterns, per-part block times), and the
projection's arithmetic and file format (``rsd plot`` reads it)."""
import importlib.util
import json
import math
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
    spec = importlib.util.spec_from_file_location("e2e_loop", os.path.join(ROOT, "bench", "e2e_loop.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


e2e = _load()


def test_seed_shapes_are_the_llama2_ones():
    assert e2e.SHAPES["llama2-7b"]["hidden_size"] == 4096 and e2e.SHAPES["llama2-7b"]["num_hidden_layers"] == 32
    assert e2e.SHAPES["llama2-13b"]["intermediate_size"] == 13824 and e2e.SHAPES["llama2-13b"]["num_attention_heads"] == 40
    assert e2e.COMMON["vocab_size"] == 32000
    # the draft's parameter count stated in the docstring (7 x 9.44M + 2 x 24.6M), computed without building it
    d, v = e2e.SHAPES["draft-115m"], e2e.COMMON["vocab_size"]
    h, i, n = d["hidden_size"], d["intermediate_size"], d["num_hidden_layers"]
    assert 2 * v * h + n * (4 * h * h + 3 * h * i + 2 * h) + h == 115_223_808


def test_tiny_measure_and_projection(tmp_path, capsys):
    out = tmp_path / "e2e"
    rc = e2e.main(["measure", "--tiny", "--out", str(out), "--budgets", "6", "--blocks", "2", "--warmup", "0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "PROJECTION, not a measurement" in printed and "block_ms" in printed
    res = json.loads((out / "e2e.json").read_text())
    assert res["schema"] == e2e.SCHEMA and res["tiny"] and not res["skipped"]
    recs = {(r["method"], r["pattern"]): r for r in res["results"]}
    assert set(recs) == {("ar", "none")} | {(m, p) for m in e2e.METHODS for p in e2e.PATTERNS}
    for (method, pattern), r in recs.items():
        assert "error" not in r and r["blocks"] == 2 and r["unsynced_blocks"] == 2 and len(r["per_block"]) == 4
        assert r["wall_unsynced_s"] > 0 and [b["unsynced"] for b in r["per_block"]] == [False, False, True, True]
        for b in r["per_block"]:  # the loop's parts, read by name, and the unattributed rest
            assert {"draft_s", "target_s", "verify_s", "wall_s", "other_s"} <= set(b)
            assert b["wall_s"] > 0 and b["other_s"] > -1e-3
        if pattern == "full":  # the logit bias makes every block accept a full path
            assert r["accepted_mean"] == r["depth"]
        elif method != "ar":
            assert r["accepted_mean"] < r["depth"]
    for m in ("tiny-draft", "tiny-target"):  # the synchronising hooks ran around every forward
        info = res["models"][m]
        assert info["params"]["total"] > 0 and info["head_calls"] > 0 and info["syncs"] > info["head_calls"]

    proj = json.loads((out / "projected.json").read_text())
    assert "PROJECTION" in proj["projection"] and proj["runs"]
    ar = recs[("ar", "none")]["wall_unsynced_s"]
    for r in proj["runs"]:
        assert r["budget"] == 6 and r["projected"]
        none, full = recs[(r["method"], "none")]["wall_unsynced_s"], recs[(r["method"], "full")]["wall_unsynced_s"]
        assert min(none, full) - 1e-12 <= r["block_time_s"] <= max(none, full) + 1e-12
        assert math.isclose(r["token_rate"], r["block_efficiency"] * ar / r["block_time_s"])
        assert math.isclose(r["mbsu"], r["block_efficiency"] / (1 + r["param_ratio"] * r["depth"]))
    assert proj["datasets_order"] == ["wmt", "xsum", "dolly"]

    from rsd.eval.plot import best_points

    best = best_points(proj)  # what `rsd plot` draws: one row per (model, data set), every method
    assert len(best) == 3 and all(set(cell) == set(e2e.METHODS) for cell in best.values())


def test_block_time_interpolation_and_projection_arithmetic():
    none = {"wall_s": 0.010, "accepted_mean": 0.0}
    full = {"wall_s": 0.014, "accepted_mean": 4.0}
    assert e2e.block_time_at(full, none, 1.0) == pytest.approx(0.011)
    assert e2e.block_time_at(full, none, 9.0) == pytest.approx(0.014)  # clamped to the measured range
    assert e2e.block_time_at(None, none, 2.0) == 0.010
    assert e2e.block_time_at(dict(full, wall_unsynced_s=0.012), dict(none, wall_unsynced_s=0.008), 2.0) == \
        pytest.approx(0.010)  # the unsynchronised block times where measured
    res = {"settings": {"targets": ["llama2-7b"], "draft": "draft-115m", "budgets": [10]}, "environment": {},
           "models": {"draft-115m": {"params": {"read_per_call": 100}}, "llama2-7b": {"params": {"read_per_call": 10000}}},
           "results": [
               {"target": "llama2-7b", "method": "ar", "config": None, "pattern": "none", "blocks": 3, "wall_s": 0.020,
                "depth": 1, "accepted_mean": 0.0},
               {"target": "llama2-7b", "method": "rsd-s", "config": "rsd-s 2x5", "pattern": "none", "blocks": 3,
                "wall_s": 0.030, "depth": 5, "accepted_mean": 0.0},
               {"target": "llama2-7b", "method": "rsd-s", "config": "rsd-s 2x5", "pattern": "full", "blocks": 3,
                "wall_s": 0.035, "depth": 5, "accepted_mean": 5.0}]}
    runs = [{"model": "m", "dataset": "xsum", "method": "rsd-s", "config": "rsd-s 2x5", "budget": 10, "depth": 5,
             "block_efficiency": 3.0, "accepted_per_block": 2.0, "accuracy": 1.0},
            {"model": "m", "dataset": "xsum", "method": "sd", "config": "sd 10", "budget": 10, "depth": 10,
             "block_efficiency": 2.0, "accepted_per_block": 1.0, "accuracy": 1.0}]
    proj = e2e.project(res, runs)
    (r,) = proj["runs"]
    assert r["block_time_s"] == pytest.approx(0.032)
    assert r["token_rate"] == pytest.approx(3.0 * 0.020 / 0.032)
    assert r["mbsu"] == pytest.approx(3.0 / (1 + 0.01 * 5))
    assert r["model"] == "Llama 2-7B shape (projected)"
    assert proj["missing"] == [{"target": "llama2-7b", "dataset": "xsum", "config": "sd 10",
                                "reason": "no GPU block time for this configuration"}]
