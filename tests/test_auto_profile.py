"""The cost profile of method="auto": measured on a tiny model, cached on disk under a key that changes
with the model weights, dtype, threads, attention path and batch size, rebuilt (with a warning) when
the cached file is corrupt or belongs to another key, and its predictions (interpolation, context
growth, padding)."""
import json
import os
import warnings

import pytest
import torch

from rsd.engine import profile as P
from rsd.engine.adapter import ModelAdapter

from auto_helpers import synthetic_profile
from loop_models import BiasedDraft, tiny_llama


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RSD_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def adapters():
    target = tiny_llama(vocab_size=64, layers=2, max_positions=256, seed=0)
    return ModelAdapter(target), ModelAdapter(BiasedDraft(target, 0.5))


FAST = dict(repeats=1, target_ns=(1, 2, 3, 4, 8, 16), draft_ws=(1, 2, 4))


def test_measure_tiny(adapters):
    prof = P.measure(*adapters, **FAST)
    prof.check()
    assert prof.target_n == [1, 2, 3, 4, 8, 16] and prof.draft_w == [1, 2, 4]
    assert prof.contexts[0] < prof.contexts[1] and all(t > 0 for t in prof.target_s + prof.ar_s)
    assert prof.node_cap == 15
    assert "node cap 15" in prof.table()
    assert adapters[0].length == 0  # caches reset afterwards
    batched = P.measure(*adapters, batch=3, **FAST)
    batched.check()


def test_key_changes_with_the_setting(adapters):
    t, d = adapters
    k = P.profile_key(t, d)
    assert P.profile_key(t, d) == k
    assert P.profile_key(t, d, batch=4) != k
    assert P.profile_key(t, d, threads=k["threads"] + 1) != k
    assert P.profile_key(t, None) != k
    assert P.profile_key(ModelAdapter(t.model, attention="eager"), d) != k
    other = tiny_llama(vocab_size=64, layers=2, max_positions=256, seed=0)
    assert P.profile_key(ModelAdapter(other), d)["target"] == k["target"]  # same weights, same key
    with torch.no_grad():
        other.model.layers[1].mlp.down_proj.weight[3, 5] += 1.0  # retrained: another key
    assert P.profile_key(ModelAdapter(other), d)["target"] != k["target"]
    half = tiny_llama(vocab_size=64, layers=2, max_positions=256, seed=0).to(torch.bfloat16)
    assert P.profile_key(ModelAdapter(half), d) != k
    assert P.profile_path(k) != P.profile_path(P.profile_key(t, d, batch=4))


def test_cache_round_trip_and_rebuild(cache, adapters, monkeypatch):
    prof = P.load_or_measure(*adapters, **FAST)
    path = P.profile_path(prof.key)
    assert os.path.exists(path) and path.startswith(str(cache))

    def no_measure(*a, **kw):
        raise AssertionError("measured although a valid profile is cached")

    real = P.measure
    monkeypatch.setattr(P, "measure", no_measure)
    again = P.load_or_measure(*adapters)
    assert again.to_json() == prof.to_json()
    monkeypatch.setattr(P, "measure", lambda *a, **kw: real(*a, **{**FAST, **kw}))
    fresh = P.load_or_measure(*adapters, rebuild=True)
    assert fresh.created >= prof.created


@pytest.mark.parametrize("damage", ["truncated", "negative time", "unsorted sizes", "other key", "not json",
                                    "wrong schema", "missing field", "nan"])
def test_corrupt_cache_is_rebuilt_with_a_warning(cache, adapters, damage):
    prof = P.load_or_measure(*adapters, **FAST)
    path = P.profile_path(prof.key)
    d = prof.to_json()
    text = json.dumps(d)
    if damage == "truncated":
        text = text[: len(text) // 2]
    elif damage == "negative time":
        d["target_s"][2] = -1.0
    elif damage == "unsorted sizes":
        d["target_n"][1], d["target_n"][2] = d["target_n"][2], d["target_n"][1]
    elif damage == "other key":
        d["key"]["threads"] += 7
    elif damage == "not json":
        text = "\x00\x01 garbage"
    elif damage == "wrong schema":
        d["schema"] = "rsd-profile/0"
    elif damage == "missing field":
        del d["draft_s"]
    elif damage == "nan":
        d["ar_s"][0] = float("nan")
    if damage not in ("truncated", "not json"):
        text = json.dumps(d)
    with open(path, "w") as f:
        f.write(text)
    with pytest.warns(RuntimeWarning, match="unusable"):
        new = P.load_or_measure(*adapters, **FAST)
    new.check()
    assert new.key == prof.key
    with open(path) as f:  # the file was rewritten with a good profile
        assert P.CostProfile.from_json(json.load(f)).key == prof.key
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P.load_or_measure(*adapters)  # and is now used silently


def test_from_json_rejects_bad_input():
    good = synthetic_profile(lambda n: 1.0).to_json()
    P.CostProfile.from_json(good)
    for bad in (None, [], {"schema": "x"}, {**good, "contexts": [512, 128]}, {**good, "target_n": [2, 3] + good[
            "target_n"][2:]}, {**good, "draft_s": good["draft_s"][:-1]}, {**good, "key": "k"}, {**good, "ar_s": [1.0]}):
        with pytest.raises(ValueError):
            P.CostProfile.from_json(bad)


def test_predictions():
    prof = synthetic_profile(lambda n: 1 + 0.1 * (n - 1), t1=0.01)
    assert prof.target_time(1) == pytest.approx(0.01)
    assert prof.target_time(9) == pytest.approx(0.01 * 1.8)  # between 8 and 10
    assert prof.verify_rows(9) == 9  # monotone curve: never padded
    assert prof.target_time(5, ctx=10_000) == pytest.approx(prof.target_time(5))  # flat in the context here
    steep_ctx = P.CostProfile(**{**{k: v for k, v in prof.to_json().items() if k != "schema"},
                                 "target_ctx_s": [t * 2 for t in prof.target_ctx_s]})
    assert steep_ctx.target_time(4, ctx=512) == pytest.approx(2 * prof.target_time(4, ctx=512), rel=0.01)
    cheaper_later = P.CostProfile(**{**{k: v for k, v in prof.to_json().items() if k != "schema"},
                                     "target_ctx_s": [t * 0.5 for t in prof.target_ctx_s]})
    assert cheaper_later.target_time(4, ctx=512) == pytest.approx(prof.target_time(4))  # never cheaper with context


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = synthetic_profile(lambda n: 1 + 0.1 * (n - 1)).plot(str(tmp_path / "p.png"))
    assert os.path.getsize(out) > 1000
