"""The decoding loop with ``verifier="traversal"`` (issue 19) on tiny random Llama models.

* every method under traversal leaves both KV caches equal to a recomputation over the
  committed sequence (SpecTr's merged trees map the draft cache through ``source``); a mapping
  that ignores ``source`` is caught;
* the batched loop's row 0 equals single-prompt decoding under traversal (ragged merged trees);
* ``Decoder.propose()`` returns the tree the next ``step()`` verifies and leaves the caches as
  they were; greedy decoding is the same under both verifiers; a bad verifier name is refused.
The chi-square exactness of the loop under traversal is in ``test_loop_sampling.py``.
"""
import pytest
import torch

import rsd.engine.loop as loop_mod
import rsd_kernels
from loop_models import BiasedDraft, tiny_llama
from rsd.engine.configs import resolve_config, resolve_verifier
from rsd.engine.generate import generate
from rsd.engine.loop import Decoder
from test_loop_kvcache import _blocks, _dense, _recomputed_kv

CONFIGS = [("sd", "3"), ("spectr", "3x2"), ("rsd-c", "2,2"), ("rsd-s", "2x3")]


def _check_caches(dec, seq, tgt):
    for ad, n in ((dec.target, len(seq) - 1), (dec.draft, dec.draft.length)):
        assert ad.length == n
        k, v = _dense(ad.cache)
        rk, rv = _recomputed_kv(tgt, seq[:n])
        torch.testing.assert_close(k, rk, atol=1e-5, rtol=0)
        torch.testing.assert_close(v, rv, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method,config", CONFIGS)
def test_traversal_caches_equal_recomputed_kv(method, config):
    tgt = tiny_llama(vocab_size=8, max_positions=256, seed=0)  # 8 tokens: SpecTr's chains repeat prefixes
    dec = Decoder(tgt, BiasedDraft(tgt, scale=1.0), method, config, temperature=1.0, seed=3, verifier="traversal")
    assert dec.mode == "traversal" and dec.merge == (method == "spectr")
    seq, accepted = _blocks(dec, [t % 8 for t in range(1, 20)], 6)
    assert any(a > 0 for a in accepted), accepted
    _check_caches(dec, seq, tgt)


def test_merged_slots_without_source_are_caught(monkeypatch):
    """Negative control: the merged tree's nodes mapped to draft cache slots by their own index
    (ignoring ``source``) keeps the wrong keys/values, and the recomputation check fails."""
    real = loop_mod.tree_slots

    def ignore_source(slots, seen_ok, drafted, row=0):
        return loop_mod.final_slots(slots, seen_ok, drafted.tree.max_nodes)

    tgt = tiny_llama(vocab_size=8, max_positions=256, seed=0)
    failed = False
    for seed in range(4):
        monkeypatch.setattr(loop_mod, "tree_slots", ignore_source)
        dec = Decoder(tgt, BiasedDraft(tgt, scale=1.0), "spectr", "3x2", temperature=1.0, seed=seed,
                      verifier="traversal")
        seq, _ = _blocks(dec, [t % 8 for t in range(1, 20)], 6)
        monkeypatch.setattr(loop_mod, "tree_slots", real)
        try:
            _check_caches(dec, seq, tgt)
        except AssertionError:
            failed = True
    assert failed


@pytest.mark.parametrize("method,config", [("spectr", "3x2"), ("rsd-s", "3x2")])
def test_batched_row_zero_equals_single_prompt(method, config):
    tgt = tiny_llama(vocab_size=8, max_positions=256, seed=1)
    drf = BiasedDraft(tgt, scale=1.0)
    g = torch.Generator().manual_seed(8)
    ps = [torch.randint(0, 8, (n,), generator=g).tolist() for n in (6, 1, 14)]
    kw = dict(temperature=1.0, max_new_tokens=12, seed=11, verifier="traversal")
    one = generate(tgt, drf, ps[0], method, config, **kw)
    batch = generate(tgt, drf, ps, method, config, **kw)
    assert one.verifier == "traversal" and batch.rows[0].verifier == "traversal"
    assert batch.tokens[0] == one.tokens
    assert all(len(t) == 12 for t in batch.tokens)


@pytest.mark.parametrize("method,config", [("spectr", "3x2"), ("rsd-c", "2,2")])
def test_propose_is_the_next_blocks_tree(method, config, monkeypatch):
    tgt = tiny_llama(vocab_size=8, max_positions=256, seed=0)
    dec = Decoder(tgt, BiasedDraft(tgt, scale=1.0), method, config, temperature=1.0, seed=5, verifier="traversal")
    dec.prefill([t % 8 for t in range(1, 12)])
    dec.step()
    lengths = dec.target.length, dec.draft.length
    kv = [ad.cache.snapshot()[0].clone() for ad in (dec.target, dec.draft)]
    drafted, logits = dec.propose()
    assert (dec.target.length, dec.draft.length) == lengths
    for ad, before in zip((dec.target, dec.draft), kv):
        assert torch.equal(ad.cache.snapshot()[0], before)
    seen = {}
    real = rsd_kernels.verify_tree

    def record(target_logits, draft_logits, tree, **kw):
        seen.update(tree=tree, logits=target_logits, mode=kw["mode"])
        return real(target_logits, draft_logits, tree, **kw)

    monkeypatch.setattr(rsd_kernels, "verify_tree", record)
    dec.step()
    assert seen["mode"] == "traversal"
    assert torch.equal(seen["tree"].tokens, drafted.tree.tokens) and torch.equal(seen["tree"].parents,
                                                                                 drafted.tree.parents)
    torch.testing.assert_close(seen["logits"], logits, atol=1e-5, rtol=0)
    if method == "spectr":
        assert drafted.source is not None


@pytest.mark.parametrize("method,config", CONFIGS)
def test_greedy_is_the_same_under_both_verifiers(method, config):
    tgt = tiny_llama(vocab_size=8, max_positions=256, seed=2)
    drf = BiasedDraft(tgt, scale=0.5)
    p = [t % 8 for t in range(1, 9)]
    a = generate(tgt, drf, p, method, config, max_new_tokens=12, verifier="rrs")
    b = generate(tgt, drf, p, method, config, max_new_tokens=12, verifier="traversal")
    assert a.tokens == b.tokens


def test_verifier_resolution_and_errors():
    assert resolve_verifier(resolve_config("spectr", "2x2"), "rrs") == ("rrs", "kseq", False)
    assert resolve_verifier(resolve_config("spectr", "2x2"), "traversal") == ("traversal", "traversal", True)
    assert resolve_verifier(resolve_config("rsd-s", "2x2"), "rrs") == ("rrs", "rrs", False)
    assert resolve_verifier(None, "traversal") == ("traversal", None, False)
    tgt = tiny_llama(vocab_size=8, seed=0)
    with pytest.raises(ValueError, match="verifier must be one of"):
        generate(tgt, tgt, [1, 2], "sd", "2", verifier="block")
