"""The EAGLE-style draft (rsd.engine.drafts.eagle), its training pipeline and its offline metrics, on tiny random models."""
import os
import time

import pytest
import torch

from rsd.engine.drafts import eagle as E
from rsd.train import eagle as TE
from rsd.train.evaluate_eagle import depth_block_efficiency
from rsd.train.draft import tiny_target

V, H = 512, 64


@pytest.fixture(scope="module")
def target():
    return tiny_target(0)


@pytest.fixture()
def draft(target):
    kept = torch.arange(0, V, 3)
    d = E.init_eagle_from_target(target, kept, 1, seed=0).eval()
    with torch.no_grad():  # move away from the symmetric init so that every input matters
        for p in d.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return d


def _inputs(B=2, S=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, V, (B, S), generator=g), torch.randn(B, S, H, generator=g)


def _kept_mask(d):
    m = torch.zeros(V, dtype=torch.bool)
    m[d.kept_ids] = True
    return m


def test_shapes_and_restricted_head(draft):
    ids, f = _inputs()
    with torch.no_grad():
        out = draft(ids, f)
        kept = _kept_mask(draft)
        assert out.logits.shape == (2, 12, V) and out.features.shape == (2, 12, H)
        assert torch.isneginf(out.logits[..., ~kept]).all() and torch.isfinite(out.logits[..., kept]).all()
        torch.testing.assert_close(torch.softmax(out.logits, -1)[..., ~kept].sum(-1), torch.zeros(2, 12))
        r = draft(ids, f, full_vocab=False, logits_to_keep=3).logits
        assert r.shape == (2, 3, draft.kept_ids.numel())
        torch.testing.assert_close(r, out.logits[:, -3:][..., kept])


def test_kv_cache_and_tree_mask(draft):
    ids, f = _inputs()
    kept = _kept_mask(draft)
    with torch.no_grad():
        full = draft(ids, f)
        o = draft(ids[:, :7], f[:, :7], use_cache=True)
        inc = draft(ids[:, 7:], f[:, 7:], past_key_values=o.past_key_values, use_cache=True)
        torch.testing.assert_close(inc.logits[..., kept], full.logits[:, 7:][..., kept], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(inc.features, full.features[:, 7:], atol=1e-4, rtol=1e-4)
        # tree: nodes 9, 10, 11 are siblings (children of node 8): each sees the prefix 0..8 and itself only
        m = torch.tril(torch.ones(12, 12, dtype=torch.bool))
        for i in (10, 11):
            m[i, 9:i] = False
        pos = torch.arange(12).repeat(2, 1)
        pos[:, 9:] = 9
        tree = draft(ids, f, attention_mask=m[None, None].expand(2, 1, 12, 12), position_ids=pos)
        for i in (9, 10, 11):
            keep = list(range(9)) + [i]
            alone = draft(ids[:, keep], f[:, keep])
            torch.testing.assert_close(tree.logits[:, i][..., kept], alone.logits[:, -1][..., kept],
                                       atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(tree.features[:, i], alone.features[:, -1], atol=1e-4, rtol=1e-4)
        # changing a sibling's token or feature changes nothing at the others
        ids2, f2 = ids.clone(), f.clone()
        ids2[:, 10], f2[:, 10] = 5, 0.0
        tree2 = draft(ids2, f2, attention_mask=m[None, None].expand(2, 1, 12, 12), position_ids=pos)
        torch.testing.assert_close(tree2.logits[:, 11][..., kept], tree.logits[:, 11][..., kept])


def test_unrolled_streams_equal_kv_cache_chain(draft):
    """Stream k at t = a depth-k chain node whose ancestors read the draft's own predicted features."""
    ids, f = _inputs()
    kept = _kept_mask(draft)
    with torch.no_grad():
        streams = E.unrolled_forward(draft, ids, f, torch.ones(2, 12), 4, restricted=False)
        torch.testing.assert_close(streams[0][0][..., kept], draft(ids, f).logits[..., kept])
        root = 5
        o = draft(ids[:, :root + 1], f[:, :root + 1], use_cache=True)
        cache, feat = o.past_key_values, o.features[:, -1:]
        for k in (1, 2, 3):
            t = root + k
            o = draft(ids[:, t:t + 1], feat, past_key_values=cache, position_ids=torch.full((2, 1), t), use_cache=True)
            cache, feat = o.past_key_values, o.features
            torch.testing.assert_close(streams[k][0][:, t][..., kept], o.logits[:, 0][..., kept], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(streams[k][1][:, t], o.features[:, 0], atol=1e-4, rtol=1e-4)


def test_depth2_reads_predicted_not_target_feature(draft):
    """The target feature F[t-1] (input of position t) does not reach stream 1 at t; F[t-2] does, via f^_{t-1}."""
    ids, f = _inputs()
    t = 8
    with torch.no_grad():
        base = E.unrolled_forward(draft, ids, f, torch.ones(2, 12), 2)[1][0][:, t]
        f1 = f.clone()
        f1[:, t] += 1.0  # prev feature of token t = F[t-1]
        same = E.unrolled_forward(draft, ids, f1, torch.ones(2, 12), 2)[1][0][:, t]
        f2 = f.clone()
        f2[:, t - 1] += 1.0  # F[t-2]: enters f^_{t-1}, the feature stream 1 reads at t
        diff = E.unrolled_forward(draft, ids, f2, torch.ones(2, 12), 2)[1][0][:, t]
    torch.testing.assert_close(same, base)
    assert (diff - base).abs().max() > 1e-3


def test_unrolled_mask_padding():
    pad = torch.tensor([[1, 1, 1, 0]])
    m = E.unrolled_mask(pad, 1)
    assert m.shape == (1, 1, 4, 8)
    # stream 1 at t=2 sees stream 0 at 0..1 and itself; never the padded key 3
    assert m[0, 0, 2].tolist() == [True, True, False, False, False, False, True, False]
    assert not m[0, 0, :, 3].any()


def test_export_load_roundtrip(draft, tmp_path):
    import copy

    path = E.export_eagle(draft, str(tmp_path / "e.safetensors"), {"x": 1})
    emb = draft.model.embed_tokens.weight
    d2 = E.load_eagle(path, emb)
    assert d2.model.embed_tokens.weight.data_ptr() == emb.data_ptr()  # shared with the target, not copied
    assert d2.info == {"x": 1}
    ref = copy.deepcopy(draft)
    with torch.no_grad():
        for k, v in ref.trainable_state_dict().items():
            if v.is_floating_point():
                v.copy_(v.half().float())
    ids, f = _inputs()
    kept = _kept_mask(draft)
    with torch.no_grad():
        torch.testing.assert_close(d2(ids, f).logits[..., kept], ref(ids, f).logits[..., kept],
                                   atol=1e-4, rtol=1e-4)


def test_shipped_size_estimate():
    """1 and 2 layers at the target's width with the 8192-row head fit the 25 MB limit in fp16."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_attention_heads=9,
                      num_key_value_heads=3, head_dim=64)
    for layers in (1, 2):
        cfg.num_hidden_layers = layers
        with torch.device("meta"):
            d = E.EagleDraft(cfg, torch.arange(8192))
        n = sum(v.numel() for k, v in d.trainable_state_dict().items() if k != "kept_ids")
        assert 2 * n + 4 * 8192 <= 25 * 10**6, (layers, n)


def _tiny_records(target, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    prompts = [[1] + torch.randint(3, V, (6,), generator=g).tolist() for _ in range(n)]
    recs = TE.sample_batch(target, prompts, 10, 8, g)
    for r, f in zip(recs, TE.target_features(target, [r["ids"] for r in recs])):
        r["feat"] = f
    return recs


def test_features_match_target(target):
    recs = _tiny_records(target, 2)
    with torch.no_grad():
        h = target.model(input_ids=recs[0]["ids"].long()[None]).last_hidden_state[0]
    torch.testing.assert_close(recs[0]["feat"].float(), h, atol=0.05, rtol=0.02)


def test_overfit_loss_decreases(target, tmp_path):
    recs = _tiny_records(target)
    d = E.init_eagle_from_target(target, torch.arange(V), 1)
    batch = TE.collate_eagle(recs, list(range(len(recs))), d.kept_ids, V)
    before, p0 = TE.eagle_loss(d, batch, unroll=2, feat_weight=1.0, step_decay=0.8)
    log = []
    TE.train_eagle(d, recs, str(tmp_path), epochs=60, lr=3e-3, max_tokens=4096, warmup=2, ckpt_every=1000, seed=0,
                   deadline=time.time() + 3600, unroll=2, log=log)
    after, p1 = TE.eagle_loss(d, batch, unroll=2, feat_weight=1.0, step_decay=0.8)
    assert after.item() < 0.5 * before.item()
    assert p1[0][0] < p0[0][0] and p1[1][0] < p0[1][0]  # KL falls at depth 1 and depth 2
    assert p1[0][1] < p0[0][1]  # feature regression falls


def test_train_eagle_tiny_resume(tmp_path):
    out = str(tmp_path / "run")
    path = TE.main(["--out", out, "--tiny", "--threads", "1"])
    assert os.path.exists(path) and os.path.exists(os.path.join(out, "feat", "shard_0000.pt"))
    step = torch.load(os.path.join(out, "ckpt.pt"))["step"]
    mtime = os.path.getmtime(os.path.join(out, "data", "shard_0000.pt"))
    TE.main(["--out", out, "--tiny", "--threads", "1"])  # resumes: no new data, no extra steps
    assert torch.load(os.path.join(out, "ckpt.pt"))["step"] == step
    assert os.path.getmtime(os.path.join(out, "data", "shard_0000.pt")) == mtime
    d = E.load_eagle(path, tiny_target(0).get_input_embeddings().weight)
    assert isinstance(d, E.EagleDraft)


def test_depth_block_efficiency_constant():
    a = 0.6
    acc = [[torch.full((20,), a)] for _ in range(4)]
    assert depth_block_efficiency(acc) == pytest.approx((1 - a ** 5) / (1 - a))
    acc = [[torch.full((20,), x)] for x in (1.0, 0.5, 1.0, 0.0)]
    assert depth_block_efficiency(acc) == pytest.approx(1 + 1 + 0.5 + 0.5)


def test_cli_forwards_options(tmp_path):
    from rsd.cli import main

    assert main(["train-eagle", "--out", str(tmp_path / "r"), "--tiny", "--threads", "1"]) == 0
    assert os.path.exists(tmp_path / "r" / "eagle.safetensors")


def test_copy_init_predicts_previous_feature(target):
    """init='copy': the untrained draft's predicted feature at t is (about) its input feature f_{t-1}."""
    d = E.init_eagle_from_target(target, torch.arange(V), 1, init="copy").eval()
    ids = torch.randint(3, V, (1, 10))
    with torch.no_grad():
        f = target.model(input_ids=ids).last_hidden_state  # post-norm features
        out = d(ids, f)
    cos = torch.nn.functional.cosine_similarity(out.features, f, dim=-1)
    assert cos.min() > 0.99


def test_sampling_features_match_teacher_forced(target):
    """sample_batch(features=True) gives the same features as a teacher-forced forward (all but the last token)."""
    g = torch.Generator().manual_seed(3)
    prompts = [[1, 5, 9, 200], [1, 7, 300, 301, 302, 303, 11]]
    recs = TE.sample_batch(target, prompts, 8, 4, g, features=True)
    g = torch.Generator().manual_seed(3)
    plain = TE.sample_batch(target, prompts, 8, 4, g)
    tf = TE.target_features(target, [r["ids"] for r in recs])
    for r, p, f in zip(recs, plain, tf):
        assert torch.equal(r["ids"], p["ids"]) and torch.equal(r["topk_ids"], p["topk_ids"])
        assert r["feat"].shape == (len(r["ids"]) - 1, H)
        torch.testing.assert_close(r["feat"].float(), f[:-1].float(), atol=0.05, rtol=0.02)


def test_train_resumes_after_interruption(target, tmp_path):
    recs = _tiny_records(target)
    kw = dict(epochs=4, lr=3e-3, max_tokens=64, warmup=2, ckpt_every=1, seed=0, unroll=2)
    d = E.init_eagle_from_target(target, torch.arange(V), 1)
    log1 = []
    TE.train_eagle(d, recs, str(tmp_path), deadline=time.time() + 3600, hard_deadline=0.0, log=log1, **kw)
    assert [r["step"] for r in log1] == [1]  # interrupted after one step
    d2 = E.init_eagle_from_target(target, torch.arange(V), 1)
    log2 = []
    TE.train_eagle(d2, recs, str(tmp_path), deadline=time.time() + 3600, log=log2, **kw)
    ck = torch.load(os.path.join(tmp_path, "ckpt.pt"))
    assert log2[0]["step"] == 2 and ck["step"] == log2[-1]["step"] == ck["total"] > 2


def test_auto_dtypes_follow_the_cpu(monkeypatch):
    """--gen-dtype auto / --precision auto: bfloat16 only where it is faster on this CPU; explicit
    choices and --fp32 are kept."""
    import argparse

    from rsd.train import draft as T

    for fast, gen, fp32 in ((True, "bfloat16", False), (False, "float32", True)):
        monkeypatch.setattr(T, "_BF16_FAST", fast)
        a = argparse.Namespace(gen_dtype="auto", precision="auto", fp32=False)
        T.resolve_dtypes(a)
        assert (a.gen_dtype, a.fp32) == (gen, fp32)
    a = argparse.Namespace(gen_dtype="bfloat16", precision="bf16", fp32=False)
    T.resolve_dtypes(a)
    assert (a.gen_dtype, a.fp32) == ("bfloat16", False)
    a = argparse.Namespace(gen_dtype="float32", precision="auto", fp32=True)
    monkeypatch.setattr(T, "_BF16_FAST", True)
    T.resolve_dtypes(a)
    assert a.fp32
    monkeypatch.setattr(T, "_BF16_FAST", None)
    assert isinstance(T.bf16_is_fast(), bool)
