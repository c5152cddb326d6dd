"""The transformers ``custom_generate`` entry point (rsd.CUSTOM_GENERATE_PATH) end to end on the
tiny offline pair: ``target.generate(..., custom_generate=..., draft_model=...)`` runs this
project's loop and returns what ``generate`` returns."""
import pytest
import torch

import rsd
from eval_tiny_pair import tiny_llama

METHODS = ("ar", "sd", "spectr", "rsd-c", "rsd-s")
PROMPTS = ([5, 6, 7, 8, 9], [40, 41], [100, 3, 77, 12, 19, 250, 31])


@pytest.fixture(scope="module")
def pair():
    torch.set_num_threads(1)
    return tiny_llama(2, 0), tiny_llama(1, 1)


def _left_padded(prompts, pad):
    n = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), n), pad, dtype=torch.long)
    mask = torch.zeros(len(prompts), n, dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, n - len(p):] = torch.tensor(p)
        mask[r, n - len(p):] = 1
    return ids, mask


def _rsd(target, draft, ids, **kw):
    kw.setdefault("max_new_tokens", 10)
    return target.generate(ids, custom_generate=rsd.CUSTOM_GENERATE_PATH, trust_remote_code=True,
                           draft_model=draft, **kw)


@pytest.mark.parametrize("method", METHODS)
def test_greedy_batch_equals_hf_greedy_per_row(pair, method):
    target, draft = pair
    ids, mask = _left_padded(PROMPTS, pad=0)
    out = _rsd(target, draft, ids, attention_mask=mask, method=method, budget=None if method == "ar" else 6,
               do_sample=False)
    assert out.shape == (len(PROMPTS), ids.shape[1] + 10)
    assert torch.equal(out[:, : ids.shape[1]], ids)  # the inputs, left padding kept
    for r, p in enumerate(PROMPTS):
        ref = target.generate(torch.tensor([p]), do_sample=False, max_new_tokens=10)[0, len(p):]
        assert out[r, ids.shape[1]:].tolist() == ref.tolist(), (method, r)


def test_eos_stops_a_row_and_pads_it(pair):
    target, draft = pair
    free = target.generate(torch.tensor([PROMPTS[0]]), do_sample=False, max_new_tokens=10)[0, 5:].tolist()
    eos = free[3]  # row 0 emits it as its 4th new token
    ids, mask = _left_padded(PROMPTS[:2], pad=0)
    out = _rsd(target, draft, ids, attention_mask=mask, method="rsd-s", budget=6, do_sample=False,
               eos_token_id=eos, pad_token_id=1)
    new0 = out[0, ids.shape[1]:].tolist()
    stop = free.index(eos)
    assert new0[: stop + 1] == free[: stop + 1]
    assert set(new0[stop + 1:]) <= {1}, "tokens after EOS must be the pad id"


def test_sampling_is_reproducible_and_seed_dependent(pair):
    target, draft = pair
    ids, mask = _left_padded(PROMPTS, pad=0)
    kw = dict(attention_mask=mask, method="rsd-s", budget=6, do_sample=True, temperature=1.0, top_k=0)
    a = _rsd(target, draft, ids, seed=3, **kw)
    b = _rsd(target, draft, ids, seed=3, **kw)
    c = _rsd(target, draft, ids, seed=4, **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    out = _rsd(target, draft, ids, seed=3, return_dict_in_generate=True, **kw)
    assert torch.equal(out.sequences, a)


@pytest.mark.parametrize("kw, name", [
    (dict(num_beams=2), "num_beams"),
    (dict(repetition_penalty=1.3), "repetition_penalty"),
    (dict(num_return_sequences=2, do_sample=True), "num_return_sequences"),
    (dict(output_scores=True, return_dict_in_generate=True), "output_scores"),
])
def test_unsupported_generation_settings_are_refused(pair, kw, name):
    target, draft = pair
    with pytest.raises(ValueError, match=name):
        _rsd(target, draft, torch.tensor([PROMPTS[0]]), method="sd", budget=3, **kw)


def test_bad_calls_are_refused(pair):
    target, draft = pair
    ids = torch.tensor([PROMPTS[0]])
    with pytest.raises(ValueError, match="draft"):
        _rsd(target, None, ids, method="rsd-s", budget=6)
    with pytest.raises(ValueError, match="streamer"):
        _rsd(target, draft, ids, method="sd", budget=3, streamer=object())
    right = torch.tensor([[1, 1, 1, 0, 0]])
    with pytest.raises(ValueError, match="attention_mask"):
        _rsd(target, draft, ids, attention_mask=right, method="sd", budget=3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        _rsd(target, draft, ids, method="sd", budget=3, max_new_tokens=None, max_length=3)


def test_rows_are_decoded_in_one_batch(pair, monkeypatch):
    """The entry point runs the batched loop once for all rows; with sampling, row 0 equals
    rsd.generate of its prompt with the same seed (batch row 0's Philox streams)."""
    import rsd.engine.batched

    target, draft = pair
    calls = []
    real = rsd.engine.batched.generate_batch

    def spy(t, d, prompts, *a, **kw):
        calls.append([list(p) for p in prompts])
        return real(t, d, prompts, *a, **kw)

    monkeypatch.setattr(rsd.engine.batched, "generate_batch", spy)
    ids, mask = _left_padded(PROMPTS, pad=0)
    out = _rsd(target, draft, ids, attention_mask=mask, method="rsd-c", budget=6, do_sample=True, temperature=1.0,
               top_k=0, seed=5)
    assert calls == [[list(p) for p in PROMPTS]]
    one = rsd.generate(target, draft, list(PROMPTS[0]), "rsd-c", budget=6, temperature=1.0, max_new_tokens=10, seed=5)
    assert out[0, ids.shape[1]:].tolist() == one.tokens


def test_eagle_draft_through_custom_generate(pair):
    """An EAGLE feature-level draft as ``draft_model``: greedy rows equal ``generate(do_sample=False)``."""
    from rsd.engine.drafts.eagle import init_eagle_from_target

    target, _ = pair
    eagle = init_eagle_from_target(target, torch.arange(target.config.vocab_size), 1).eval()
    ids, mask = _left_padded(PROMPTS, pad=0)
    out = _rsd(target, eagle, ids, attention_mask=mask, method="rsd-s", budget=6, do_sample=False)
    for r, p in enumerate(PROMPTS):
        ref = target.generate(torch.tensor([p]), do_sample=False, max_new_tokens=10)[0, len(p):]
        assert out[r, ids.shape[1]:].tolist() == ref.tolist(), r
