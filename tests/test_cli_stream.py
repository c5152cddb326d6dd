"""Streaming: the engine's per-block callback, the incremental detokeniser of ``rsd generate``
(the streamed text equals the final text for every method, multi-byte characters whole), colours
only on a terminal and never with ``--no-color``/``NO_COLOR``, the summary line last."""
import io
import json
import random
import re

import pytest

from loop_models import embedded_draft, embedded_target, tiny_llama
from rsd.cli.stream import GREEN, RESET, BlockPrinter, use_color
from rsd.engine.configs import ALL_METHODS
from rsd.engine.generate import generate

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PROMPT = "Write one sentence with the words café, naïve, 東京 and an emoji."


class _Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(scope="module")
def tiny_pair():
    return tiny_llama(seed=0), tiny_llama(seed=1, layers=1)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_on_block_reports_every_committed_token(tiny_pair, method):
    blocks = []
    r = generate(*tiny_pair, [3, 1, 4, 1, 5], method, budget=None if method == "ar" else 6, max_new_tokens=13,
                 on_block=lambda toks, acc: blocks.append((list(toks), acc)))
    assert [t for toks, _ in blocks for t in toks] == r.tokens and len(blocks) == len(r.blocks)
    for (toks, acc), b in zip(blocks, r.blocks):
        assert acc == min(b.accepted, b.emitted) and len(toks) == b.emitted
        assert acc <= len(toks) <= acc + 1 or len(toks) == acc  # accepted draft tokens, then the target's own
    if method == "ar":
        assert all(acc == 0 for _, acc in blocks)


def test_on_block_refused_for_a_batch(tiny_pair):
    with pytest.raises(ValueError, match="on_block streams one prompt"):
        generate(*tiny_pair, [[1, 2], [3, 4, 5]], "sd", budget=2, on_block=lambda t, a: None)


class _CharTokenizer:
    """Token i is the letter chr(65 + i); 99 is a special token (decodes to nothing)."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join("" if i == 99 else chr(65 + i) for i in ids)


def test_colours_follow_the_origin_of_each_token():
    out = io.StringIO()
    p = BlockPrinter(_CharTokenizer(), out, color=True)
    p.on_block([0, 1, 2], 2)  # A, B accepted from the draft; C from the target
    p.on_block([3], 0)  # ar-like block: the target's own
    p.on_block([4, 5, 99], 2)  # E, F accepted, then an EOS-like special token
    p.finish()
    assert out.getvalue() == f"{GREEN}AB{RESET}CD{GREEN}EF{RESET}\n" and p.text == "ABCDEF"
    out = io.StringIO()
    p = BlockPrinter(_CharTokenizer(), out, color=False)
    p.on_block([0, 1, 2], 2)
    p.finish()
    assert out.getvalue() == "ABC\n"


def test_use_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(_Tty(), False) and not use_color(io.StringIO(), False) and not use_color(_Tty(), True)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color(_Tty(), False)
    monkeypatch.setenv("NO_COLOR", "")  # the convention: set and non-empty
    assert use_color(_Tty(), False)


@pytest.mark.slow
def test_multibyte_text_whole_for_any_block_split():
    tok = embedded_target().tokenizer
    text = "Café naïve 東京タワー 🌍🚀 — “quotes” and\nnew lines, ünïcödé ∑ x² "
    ids = tok(text, add_special_tokens=False)["input_ids"]
    want = tok.decode(ids, skip_special_tokens=True)
    rng = random.Random(0)
    for _ in range(20):
        out = io.StringIO()
        p = BlockPrinter(tok, out)
        i = 0
        while i < len(ids):
            n = rng.randint(1, 4)
            p.on_block(ids[i:i + n], rng.randint(0, n))
            assert "\ufffd" not in out.getvalue()  # never half a character on screen
            i += n
        p.finish()
        assert p.text == want and out.getvalue() == want + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("method", ALL_METHODS)
def test_streamed_text_equals_final_text(method):
    tgt, drf = embedded_target(), embedded_draft()
    from rsd.engine.models import prompt_ids

    ids = prompt_ids(tgt.tokenizer, PROMPT, True)
    for color in (False, True):
        out = io.StringIO()
        printer = BlockPrinter(tgt.tokenizer, out, color=color)
        r = generate(tgt.model, None if method == "ar" else drf.model, ids, method,
                     budget=None if method == "ar" else 6, max_new_tokens=24, on_block=printer)
        printer.finish()
        final = tgt.tokenizer.decode(r.tokens, skip_special_tokens=True)
        assert printer.text == final and ANSI.sub("", out.getvalue()) == final + "\n"
        if not color:
            assert "\x1b" not in out.getvalue()
        elif method != "ar" and sum(r.accepted_lengths):
            assert GREEN in out.getvalue() and out.getvalue().count(GREEN) == out.getvalue().count(RESET)
        if method == "ar":
            assert GREEN not in out.getvalue()


def _cli(monkeypatch, capsys, *extra, stdout=None):
    import sys

    import rsd.engine.models
    from rsd.cli import main

    target = embedded_target()
    monkeypatch.setattr(rsd.engine.models, "load_target", lambda *a, **k: target)
    if stdout is not None:
        monkeypatch.setattr(sys, "stdout", stdout)
    rc = main(["generate", "What is 2+2?", "--method", "rsd-s", "--budget", "6", "--draft", "embedded",
               "--max-new-tokens", "12", "--no-baseline", *extra])
    assert rc == 0
    captured = capsys.readouterr()
    return (stdout.getvalue() if stdout is not None else captured.out), captured.err


@pytest.mark.slow
def test_cli_streams_with_colour_on_a_terminal_only(monkeypatch, capsys):
    monkeypatch.delenv("NO_COLOR", raising=False)
    def text(out):  # the streamed text: everything before the summary line, which comes last
        assert out.endswith("\n") and out.strip().splitlines()[-1].startswith("rsd-s 2x3 (budget 6) | 12 tokens")
        return out[:out.rindex("rsd-s 2x3")]

    plain, err = _cli(monkeypatch, capsys)  # captured stdout: not a terminal
    assert "\x1b" not in plain
    assert "target: " in err and "draft: " in err and "cpu float32" in err and "green" not in err
    tty, err = _cli(monkeypatch, capsys, stdout=_Tty())
    assert GREEN in tty and ANSI.sub("", text(tty)) == text(plain) and "green: draft tokens" in err
    assert "\x1b" not in _cli(monkeypatch, capsys, "--no-color", stdout=_Tty())[0]
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b" not in _cli(monkeypatch, capsys, stdout=_Tty())[0]
    js, _ = _cli(monkeypatch, capsys, "--json", stdout=_Tty())
    lines = js.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["text"] + "\n" == text(plain)
