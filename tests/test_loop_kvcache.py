"""The decoding engine's preallocated KV cache (rsd.engine.kvcache.KVBuffer): in-place writes, tail-only
compaction against recomputation (with negative controls that a wrong compaction is caught),
growth, and the attention calls (no mask where causal order suffices, GQA kept)."""
import pytest
import torch

import rsd.engine.adapter as adapter_mod
from loop_models import BiasedDraft, greedy_by_recompute, tiny_llama
from rsd.engine.adapter import ModelAdapter
from rsd.engine.generate import generate
from rsd.engine.loop import Decoder
from rsd.engine.kvcache import KVBuffer


def _filled(n, layers=3, H=2, D=4, capacity=8):
    """A KVBuffer holding n positions written in chunks (so that it grows), and the same data dense."""
    torch.manual_seed(0)
    c = KVBuffer(layers, capacity)
    ref_k = torch.randn(layers, 1, H, n, D)
    ref_v = torch.randn(layers, 1, H, n, D)
    done = 0
    for chunk in (1, 3, 2, n):
        m = min(chunk, n - done)
        if m <= 0:
            break
        for layer in range(layers):
            k, v = c.update(ref_k[layer, :, :, done:done + m], ref_v[layer, :, :, done:done + m], layer)
            assert k.shape[2] == done + m  # attends over exactly the valid keys
            torch.testing.assert_close(k, ref_k[layer, :, :, :done + m], rtol=0, atol=0)
        c.advance(m)
        done += m
    return c, ref_k, ref_v


def _dense(c):
    return torch.stack([c.layer_views(i)[0] for i in range(c.num_layers)]), torch.stack(
        [c.layer_views(i)[1] for i in range(c.num_layers)])


@pytest.mark.parametrize("positions", [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [0, 1, 2, 3, 5, 8], [0, 1, 2, 3, 4, 9],
                                       [2, 4, 6], [], [0, 1, 2, 3, 4, 5, 6, 7]])
def test_keep_equals_index_select(positions):
    c, ref_k, ref_v = _filled(10)
    assert c.capacity >= 10  # it grew from 8
    c.keep(torch.tensor(positions, dtype=torch.long))
    k, v = _dense(c)
    idx = torch.tensor(positions, dtype=torch.long)
    torch.testing.assert_close(k, ref_k.index_select(3, idx), rtol=0, atol=0)
    torch.testing.assert_close(v, ref_v.index_select(3, idx), rtol=0, atol=0)


def test_move_tail_touches_only_the_tail():
    c, ref_k, _ = _filled(12)
    before = c.kv.clone()
    c.move_tail(6, [7, 9, 11])
    assert c.length == 9
    torch.testing.assert_close(c.kv[:, :, :, :6], before[:, :, :, :6], rtol=0, atol=0)
    torch.testing.assert_close(_dense(c)[0][..., 6:, :], ref_k[..., [7, 9, 11], :], rtol=0, atol=0)
    # negative control: a compaction that keeps the wrong node differs from the reference
    c2, _, _ = _filled(12)
    c2.move_tail(6, [7, 8, 11])
    assert not torch.equal(_dense(c2)[0], _dense(c)[0])


def test_bad_positions_are_refused():
    c, _, _ = _filled(6)
    with pytest.raises(ValueError):
        c.move_tail(2, [4, 3])
    with pytest.raises(ValueError):
        c.move_tail(2, [3, 6])
    with pytest.raises(ValueError):
        c.keep(torch.tensor([0, 2, 2]))


def test_snapshot_restore():
    c, _, _ = _filled(7)
    snap = c.snapshot()
    want = _dense(c)
    c.move_tail(2, [5, 6])
    c.restore(snap)
    got = _dense(c)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)


@torch.no_grad()
def _recomputed_kv(model, seq):
    """Keys/values of every layer from one fresh forward over ``seq`` (transformers' own cache)."""
    out = model(input_ids=torch.tensor([seq]), use_cache=True)
    layers = out.past_key_values.layers
    return torch.stack([l.keys for l in layers]), torch.stack([l.values for l in layers])


def _blocks(dec, ids, n):
    seq = list(ids)
    dec.prefill(ids)
    accepted = []
    for _ in range(n):
        tokens, stats = dec.step()
        seq += tokens
        accepted.append(stats.accepted)
    return seq, accepted


@pytest.mark.parametrize("method,config", [("sd", "3"), ("spectr", "2x2"), ("rsd-c", "2,2"), ("rsd-s", "2x3")])
def test_compacted_cache_equals_recomputed_kv(method, config):
    """After several sampled blocks with a partially accepting draft, both caches hold exactly the
    keys/values a fresh forward over the committed sequence computes (target: all but the root)."""
    tgt = tiny_llama(vocab_size=64, max_positions=256, seed=0)
    dec = Decoder(tgt, BiasedDraft(tgt, scale=1.0), method, config, temperature=1.0, seed=3)
    ids = list(range(1, 20))
    seq, accepted = _blocks(dec, ids, 6)
    assert any(0 < a for a in accepted), accepted
    for ad, n in ((dec.target, len(seq) - 1), (dec.draft, dec.draft.length)):
        assert ad.length == n
        k, v = _dense(ad.cache)
        rk, rv = _recomputed_kv(tgt, seq[:n])
        torch.testing.assert_close(k, rk, atol=1e-5, rtol=0)
        torch.testing.assert_close(v, rv, atol=1e-5, rtol=0)


def test_wrong_compaction_is_caught(monkeypatch):
    """Negative control: a compaction that keeps the right number of positions but not the
    accepted path's (here: the first nodes in slot order) fails the recomputation check."""
    from rsd.engine.kvcache import KVBuffer as KB

    good = KB.move_tail

    def wrong(self, start, src):
        src = list(src)
        return good(self, start, list(range(start, start + len(src))))

    tgt = tiny_llama(vocab_size=64, max_positions=256, seed=0)
    monkeypatch.setattr(KB, "move_tail", wrong)
    dec = Decoder(tgt, BiasedDraft(tgt, scale=1.0), "rsd-s", "2x3", temperature=1.0, seed=3)
    seq, accepted = _blocks(dec, list(range(1, 20)), 6)
    k, _ = _dense(dec.target.cache)
    rk, _ = _recomputed_kv(tgt, seq[:len(seq) - 1])
    assert (k - rk).abs().max() > 1e-3


def test_growth_beyond_the_initial_capacity_is_exact():
    """ar and rsd-s for more tokens than the preallocated room: the buffer doubles, output stays exact."""
    tgt, drf = tiny_llama(vocab_size=64, max_positions=1024, seed=0), tiny_llama(vocab_size=64, layers=1,
                                                                                 max_positions=1024, seed=1)
    ids = [1, 2, 3, 4, 5]
    ref = greedy_by_recompute(tgt, ids, 300)
    r = generate(tgt, None, ids, "ar", max_new_tokens=300)
    assert r.tokens == ref
    r = generate(tgt, drf, ids, "rsd-s", "2x3", max_new_tokens=300)
    assert r.tokens == ref


def test_attention_calls_mask_only_trees(monkeypatch):
    """Prefill and single-token steps call SDPA with no mask and GQA; a tree forward with a bool
    mask (still GQA on the CPU); keys are exactly the valid cache positions."""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        calls.append((q.shape[2], k.shape[2], k.shape[1], None if attn_mask is None else attn_mask.dtype,
                      kw.get("is_causal"), kw.get("enable_gqa", False)))
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    tgt = tiny_llama(vocab_size=64, layers=1, max_positions=256, seed=0)
    ad = ModelAdapter(tgt)
    monkeypatch.setattr(adapter_mod.torch.nn.functional, "scaled_dot_product_attention", spy)
    ad.forward_chain(torch.tensor([[1, 2, 3, 4]]), logits_to_keep=1)  # prefill
    ad.forward_chain(torch.tensor([[5]]), logits_to_keep=1)  # a step
    from rsd_kernels import DraftTree

    out = ad.forward_tree(DraftTree.from_lists([[6, 7, 8]], [[-1, 0, 0]]))
    assert out.shape == (1, 3, 64)
    assert calls[0] == (4, 4, 2, None, True, True)
    assert calls[1] == (1, 5, 2, None, False, True)
    assert calls[2] == (3, 8, 2, torch.bool, False, True)
    assert ad.length == 8


def test_hf_generate_after_an_adapter_is_unchanged():
    """An adapter leaves the module on its own attention function; Hugging Face generate on that
    module (DynamicCache, masks from transformers) still returns the same greedy tokens."""
    tgt = tiny_llama(vocab_size=64, max_positions=256, seed=0)
    x = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    kw = dict(attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=6, min_new_tokens=6,
              pad_token_id=0)
    ref = tgt.generate(x, **kw)
    ModelAdapter(tgt)
    assert tgt.config._attn_implementation == adapter_mod.RSD_ATTENTION_NAME
    torch.testing.assert_close(tgt.generate(x, **kw), ref, rtol=0, atol=0)


def test_build_tree_without_draft_logits():
    """build_tree(draft_logits=False) (what greedy decoding uses) grows the same tree, no logits."""
    import rsd_kernels

    torch.manual_seed(0)
    table = torch.randn(64, 64)

    def draft_fn(level, nodes, tokens, parents):
        return table[tokens[0, nodes[0].clamp(min=0)]][None]

    for method, shape in (("sd", (3,)), ("spectr", (2, 2)), ("rsd-c", (2, 1)), ("rsd-s", (2, 3))):
        cfg = rsd_kernels.TreeConfig(method, shape)
        root = torch.tensor([5])
        a = rsd_kernels.build_tree(cfg, root, draft_fn, temperature=0.0)
        b = rsd_kernels.build_tree(cfg, root, draft_fn, temperature=0.0, draft_logits=False)
        assert b.draft_logits is None and a.draft_logits is not None
        assert torch.equal(a.tree.tokens, b.tree.tokens) and torch.equal(a.tree.parents, b.tree.parents)


@pytest.mark.parametrize("attention", ["sdpa", "eager", "rsd"])
@pytest.mark.parametrize("method,config", [("sd", "4"), ("spectr", "2x2"), ("rsd-c", "2,2"), ("rsd-s", "3x2")])
def test_every_attention_path_greedy_exact(attention, method, config):
    """Greedy output equals recomputation on each attention path of the engine (tiny models, the
    draft is the target itself for some blocks of full acceptance, so pending draft tokens occur)."""
    tgt = tiny_llama(vocab_size=64, max_positions=256, seed=0)
    ids = [7, 3, 9, 1, 4, 4, 2]
    ref = greedy_by_recompute(tgt, ids, 20)
    try:
        for drf in (tgt, BiasedDraft(tgt, scale=0.5)):
            r = generate(tgt, drf, ids, method, config, max_new_tokens=20, attention=attention, backend="torch")
            assert r.tokens == ref
    finally:
        tgt.set_attn_implementation("sdpa")
