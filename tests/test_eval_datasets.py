"""Loaders of the evaluation data sets: the built-in sets and small fixtures of each real format."""
import json
import os

import pytest

from rsd.eval import datasets as D

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.mark.parametrize("name,task,metric", [("wmt", "translation", "bleu"), ("xsum", "summarization", "rougeL"),
                                              ("dolly", "instruction", "rougeL")])
def test_builtin_sets(name, task, metric):
    s = D.load_eval_set(name)
    assert (s.name, s.task, s.metric) == (name, task, metric)
    assert len(s) == 30
    assert len({it.id for it in s.items}) == 30
    assert all(it.prompt.strip() and it.reference.strip() for it in s.items)
    assert len({it.prompt for it in s.items}) == 30


def test_builtin_files_are_in_their_public_formats():
    with open(os.path.join(D.DATA_DIR, "wmt_de_en.jsonl")) as f:
        assert set(json.loads(f.readline())["translation"]) == {"de", "en"}
    with open(os.path.join(D.DATA_DIR, "xsum.jsonl")) as f:
        rec = json.loads(f.readline())
        assert set(rec) == {"document", "summary", "id"}
        assert 40 <= len(rec["document"].split()) <= 130
    with open(os.path.join(D.DATA_DIR, "dolly.jsonl")) as f:
        assert set(json.loads(f.readline())) == {"instruction", "context", "response", "category"}


def test_wmt_hf_export_jsonl():
    s = D.load_wmt(os.path.join(FIX, "wmt16_de_en_sample.jsonl"))
    assert len(s) == 3
    assert s.items[0].reference == "The house is small."
    assert "German: Das Haus ist klein." in s.items[0].prompt and "into English" in s.items[0].prompt


def test_wmt_flat_pairs_json_list_and_limit():
    s = D.load_eval_set("wmt:" + os.path.join(FIX, "wmt_pairs_sample.json"), limit=1)
    assert len(s) == 1 and s.items[0].id == "p1"
    assert s.items[0].reference == "It has been raining since the morning."


def test_xsum_jsonl_and_rows_export():
    s = D.load_xsum(os.path.join(FIX, "xsum_sample.jsonl"))
    assert [it.id for it in s.items] == ["10001", "10002"]
    assert s.items[0].prompt.startswith("Summarize the following news article in one sentence.")
    assert "four thousand signatures" in s.items[0].prompt
    r = D.load_eval_set("xsum:" + os.path.join(FIX, "xsum_rows_sample.json"))
    assert len(r) == 1 and r.items[0].reference == "Snow has closed a mountain pass for a second day."


def test_dolly_context_only_when_present():
    s = D.load_dolly(os.path.join(FIX, "databricks-dolly-15k_sample.jsonl"))
    assert s.items[0].prompt == "Which planet is known as the red planet?"
    assert s.items[1].prompt.endswith("Context: The oak in the square was planted in 1850 and cut down in 1950.")
    assert s.items[1].reference == "The tree was one hundred years old."


def test_bad_input_names_the_problem(tmp_path):
    with pytest.raises(ValueError, match="missing field 'summary'"):
        D.load_xsum(os.path.join(FIX, "xsum_missing_summary.jsonl"))
    with pytest.raises(FileNotFoundError):
        D.load_dolly(str(tmp_path / "nope.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "response": "b"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        D.load_dolly(str(bad))
    with pytest.raises(ValueError, match="spec must start with"):
        D.load_eval_set("squad")
    with pytest.raises(ValueError, match="limit"):
        D.load_wmt(limit=0)
    with pytest.raises(ValueError, match="German|'de'"):
        D.load_wmt(os.path.join(FIX, "xsum_sample.jsonl"))


def test_hub_loader_is_guarded():
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="optional package `datasets`"):
            D.load_eval_set("xsum:hub", limit=2)
    else:
        pytest.skip("datasets is installed; the hub is not reachable from CI, so the loader is not exercised here")
