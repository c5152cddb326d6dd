"""The surface of method="auto" (tiny offline pair): ``rsd generate`` (its default method; ``--json``
lists every block's choice with predicted and realised times), ``rsd profile`` (table, JSON, plot),
and ``rsd eval``'s extra ``auto`` row."""
import json

import pytest

from eval_tiny_pair import save_tiny_pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return save_tiny_pair(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RSD_CACHE_DIR", str(tmp_path / "cache"))


def test_generate_defaults_to_auto(pair, capsys):
    from rsd.cli import main
    from rsd.cli.generate import add_parser, method_and_config
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    args = add_parser(sub).parse_args(["hi"])
    assert method_and_config(args) == ("auto", None, None)
    t, d = pair
    assert main(["generate", "hello there", "--target", t, "--draft", d, "--max-new-tokens", "12", "--json",
                 "--no-chat-template"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    res = out["result"]
    assert res["method"] == "auto" and res["num_tokens"] == 12
    assert res["tokens"] == out["baseline"]["tokens"]  # greedy: the target's own tokens
    ch = res["choices"]
    assert len(ch) == len(res["accepted_lengths"]) and sum(c["tokens"] for c in ch) == 12
    assert all(c["predicted_s"] > 0 and c["realised_s"] > 0 and c["rows"] >= 1 for c in ch)
    assert out["summary"].startswith("auto [")


def test_generate_auto_batch_and_budget(pair, capsys, tmp_path):
    from rsd.cli import main

    t, d = pair
    pf = tmp_path / "p.txt"
    pf.write_text("one prompt\nanother, longer prompt\n")
    assert main(["generate", "--prompts-file", str(pf), "--target", t, "--draft", d, "--method", "auto", "--budget",
                 "3", "--max-new-tokens", "6", "--json", "--no-chat-template"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["num_tokens"] == 12 and out["summary"].startswith("batch of 2 | auto [")
    assert main(["generate", "x", "--method", "auto", "--beam", "2x2"]) == 2  # a tree flag is not auto
    assert main(["generate", "x", "--method", "auto", "--budget", "0", "--target", t, "--draft", d]) == 2


def test_profile_command(pair, capsys, tmp_path):
    from rsd.cli import main

    t, d = pair
    assert main(["profile", "--target", t, "--draft", d, "--plot", str(tmp_path / "p.png")]) == 0
    text = capsys.readouterr().out
    assert "t(n)/t(1)" in text and "node cap" in text and "first child were accepted" in text
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert main(["profile", "--target", t, "--draft", d, "--json"]) == 0  # the cached profile
    out = json.loads(capsys.readouterr().out)
    assert out["profile"]["target_n"][0] == 1 and len(out["choices"]) == 5
    assert main(["profile", "--target", t, "--batch", "0"]) == 2


def test_eval_has_an_auto_row(pair, tmp_path):
    from rsd.cli import main
    from rsd.eval.cli import format_summary

    t, d = pair
    out = tmp_path / "r.json"
    assert main(["eval", "--quick", "--target", t, "--draft", d, "--out", str(out), "--no-progress", "--datasets",
                 "xsum", "--methods", "sd", "--no-peer"]) == 0
    res = json.loads(out.read_text())
    assert len(res["auto"]) == 1
    a = res["auto"][0]
    assert a["method"] == "auto" and a["budget"] is None and sum(a["configs_used"].values()) >= 1
    assert a["accuracy"] == pytest.approx(1.0) or a["accuracy"] != a["accuracy"]  # sampling: any; nan if score 0
    assert "auto" in format_summary(res)
    assert main(["plot", str(out), "--out", str(tmp_path / "f")]) == 0
    out2 = tmp_path / "r2.json"
    assert main(["eval", "--quick", "--target", t, "--draft", d, "--out", str(out2), "--no-progress", "--datasets",
                 "xsum", "--methods", "sd", "--no-peer", "--no-auto"]) == 0
    assert json.loads(out2.read_text())["auto"] == []
