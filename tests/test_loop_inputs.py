"""Bad input gives clear errors; greedy exactness on tiny random models over the default
configurations; the CLI (rsd generate) end to end."""
import json

import pytest
import torch

from loop_models import embedded_target, greedy_by_recompute, tiny_llama
from rsd.engine.configs import ALL_METHODS, resolve_config
from rsd.engine.generate import generate
from rsd.engine.models import LoadedModel, check_compatible


@pytest.fixture(scope="module")
def tiny_pair():
    return tiny_llama(seed=0), tiny_llama(seed=1, layers=1)


def test_unknown_method(tiny_pair):
    with pytest.raises(ValueError, match="method must be one of"):
        generate(*tiny_pair, [1, 2, 3], "medusa", budget=4)


def test_config_not_matching_budget(tiny_pair):
    with pytest.raises(ValueError, match="has budget 4, not the requested budget 5"):
        generate(*tiny_pair, [1, 2, 3], "rsd-s", "2x2", budget=5)
    with pytest.raises(ValueError, match="no rsd-s configuration has budget 1"):
        resolve_config("rsd-s", None, 1)
    with pytest.raises(ValueError, match="cannot parse"):
        resolve_config("rsd-c", "2x2", None)
    with pytest.raises(ValueError, match="takes no tree config"):
        resolve_config("ar", "3", None)


def test_draft_vocabulary_differs(tiny_pair):
    other = tiny_llama(vocab_size=80)
    with pytest.raises(ValueError, match="draft vocabulary"):
        generate(tiny_pair[0], other, [1, 2, 3], "sd", budget=2)
    with pytest.raises(ValueError, match="draft vocabulary"):
        check_compatible(LoadedModel(tiny_pair[0], None, "t"), LoadedModel(other, None, "d"))


def test_draft_tokenizer_differs(tiny_pair):
    class Tok:
        def __init__(self, swap):
            self.v = {f"t{i}": i for i in range(64)}
            if swap:
                self.v["t1"], self.v["t2"] = 2, 1

        def get_vocab(self):
            return self.v

    check_compatible(LoadedModel(tiny_pair[0], Tok(False), "t"), LoadedModel(tiny_pair[1], Tok(False), "d"))
    with pytest.raises(ValueError, match="draft tokenizer .* differs"):
        check_compatible(LoadedModel(tiny_pair[0], Tok(False), "t"), LoadedModel(tiny_pair[1], Tok(True), "d"))


def test_prompt_longer_than_context(tiny_pair):
    with pytest.raises(ValueError, match="context is 64 tokens"):
        generate(*tiny_pair, list(range(64)), "rsd-s", budget=6)
    with pytest.raises(ValueError, match="context is 64 tokens"):
        generate(tiny_pair[0], None, [1] * 70, "ar")


def test_generation_stops_at_context(tiny_pair):
    r = generate(*tiny_pair, list(range(50)), "sd", "3", max_new_tokens=40)
    assert r.stop_reason == "context"
    assert 50 + len(r.tokens) <= 64


def test_bad_sampling_arguments(tiny_pair):
    with pytest.raises(ValueError, match="temperature"):
        generate(*tiny_pair, [1, 2], "sd", budget=2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        generate(*tiny_pair, [1, 2], "sd", budget=2, temperature=1.0, top_p=1.5)
    with pytest.raises(ValueError, match="needs a draft"):
        generate(tiny_pair[0], None, [1, 2], "sd", budget=2)
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        generate(*tiny_pair, [], "sd", budget=2)
    with pytest.raises(ValueError, match=r"prompt_ids must lie in \[0, 64\)"):
        generate(*tiny_pair, [1, 99], "sd", budget=2)


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("budget", [6, 10])
def test_tiny_greedy_exact_default_configs(tiny_pair, method, budget):
    target, draft = tiny_pair
    ref = greedy_by_recompute(target, [3, 1, 4, 1, 5], 16)
    r = generate(target, draft, [3, 1, 4, 1, 5], method, budget=None if method == "ar" else budget,
                 max_new_tokens=16)
    assert r.tokens == ref


def test_tiny_sampling_reproducible_from_seed(tiny_pair):
    kw = dict(temperature=0.8, top_k=20, top_p=0.9, max_new_tokens=12)
    a = generate(*tiny_pair, [3, 1, 4], "rsd-c", "2,2", seed=7, **kw)
    b = generate(*tiny_pair, [3, 1, 4], "rsd-c", "2,2", seed=7, **kw)
    c = generate(*tiny_pair, [3, 1, 4], "rsd-c", "2,2", seed=8, **kw)
    assert a.tokens == b.tokens and len(a.tokens) == 12
    assert a.tokens != c.tokens or a.accepted_lengths != c.accepted_lengths


def test_eos_stops_and_is_kept(tiny_pair):
    target, draft = tiny_pair
    ref = greedy_by_recompute(target, [3, 1, 4], 10)
    eos = ref[4]
    r = generate(target, draft, [3, 1, 4], "rsd-s", "2x2", max_new_tokens=10, eos_token_id=eos)
    assert r.tokens == ref[: ref.index(eos) + 1] and r.stop_reason == "eos"


# ---------------------------------------------------------------- CLI

def test_cli_bad_input_exits_2(capsys):
    from rsd.cli import main

    with pytest.raises(SystemExit) as e:
        main(["generate", "hi", "--method", "medusa"])
    assert e.value.code == 2
    assert main(["generate", "hi", "--method", "sd", "--beam", "2x2"]) == 2
    assert "--beam is a rsd-s tree but --method is sd" in capsys.readouterr().err
    assert main(["generate", "hi", "--branching", "2,2", "--budget", "5"]) == 2
    assert "has budget 6, not the requested budget 5" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_generate_json(monkeypatch, capsys):
    import rsd.engine.models
    from rsd.cli import main

    target = embedded_target()  # cached per session; the CLI would load it again
    monkeypatch.setattr(rsd.engine.models, "load_target", lambda *a, **k: target)
    rc = main(["generate", "What is 2+2?", "--method", "rsd-s", "--budget", "6", "--draft", "truncated:2",
               "--max-new-tokens", "6", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["result"]["config"] == "rsd-s 2x3" and out["result"]["num_tokens"] == out["baseline"]["num_tokens"]
    assert out["result"]["tokens"] == out["baseline"]["tokens"]  # greedy: the target's own tokens
    assert "stand-in" in out["draft"] and "speed-up" in out["summary"]
    assert set(out["result"]) >= {"block_efficiency", "tokens_per_s", "draft_s", "target_s", "verify_s",
                                  "accepted_lengths", "target_calls", "draft_calls"}


@pytest.mark.slow
def test_cli_generate_text(monkeypatch, capsys):
    import rsd.engine.models
    from rsd.cli import main

    target = embedded_target()  # cached per session; the CLI would load it again
    monkeypatch.setattr(rsd.engine.models, "load_target", lambda *a, **k: target)
    assert main(["generate", "What is 2+2?", "--chain", "2", "--draft", "truncated:2", "--max-new-tokens", "4",
                 "--no-baseline"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("sd 2 (budget 2) | 4 tokens | block efficiency")


class _RestrictedDraft(torch.nn.Module):
    """Like the shipped draft's head: logits -inf outside a kept subset of the vocabulary."""

    def __init__(self, inner, kept):
        super().__init__()
        self.inner, self.config = inner, inner.config
        self.register_buffer("mask", torch.full((inner.config.vocab_size,), float("-inf")))
        self.mask[kept] = 0.0

    def forward(self, **kw):
        out = self.inner(**kw)
        out.logits = out.logits + self.mask
        return out


@pytest.mark.parametrize("method,config", [("sd", "3"), ("spectr", "2x2"), ("rsd-c", "3,2"), ("rsd-s", "3x2")])
def test_draft_with_zero_probability_tokens(tiny_pair, method, config):
    target, inner = tiny_pair
    draft = _RestrictedDraft(inner, torch.arange(0, 64, 2))  # even tokens only
    ref = greedy_by_recompute(target, [3, 1, 4], 12)
    assert generate(target, draft, [3, 1, 4], method, config, max_new_tokens=12).tokens == ref
    r = generate(target, draft, [3, 1, 4], method, config, temperature=1.0, max_new_tokens=12, seed=3)
    assert len(r.tokens) == 12 and all(0 <= t < 64 for t in r.tokens)


@pytest.mark.slow
def test_load_from_local_folder(tmp_path):
    """--target/--draft accept a local folder (the same code path as a Hugging Face model id)."""
    from rsd.engine.models import load_draft, load_target

    tok = embedded_target().tokenizer
    model = tiny_llama(vocab_size=len(tok), max_positions=128)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    tgt = load_target(str(tmp_path))
    drf = load_draft(str(tmp_path), tgt)
    assert tgt.label == str(tmp_path) and drf.tokenizer is not None
    ids = tok("Hello there")["input_ids"]
    r = generate(tgt.model, drf.model, ids, "rsd-s", "2x2", max_new_tokens=6)
    assert r.tokens == greedy_by_recompute(tgt.model, ids, 6)
    assert all(a == 2 for a in r.accepted_lengths[:-1])  # identical weights: everything accepted
