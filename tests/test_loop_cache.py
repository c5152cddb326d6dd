"""KV-cache compaction against recomputing the sequence from scratch, and the rsd_kernels
tree-attention path (transformers AttentionInterface) against the 4D-mask path."""
import pytest
import torch

from conftest import kernel_backend_params
from loop_models import BiasedDraft, chat_ids, embedded_draft, embedded_target
from rsd.engine.adapter import ModelAdapter
from rsd.engine.loop import Decoder
from rsd_kernels import DraftTree

ATOL = 2e-3  # fp32 logits (magnitudes ~10-30) after several blocks of compaction


@torch.no_grad()
def _recompute_last_logits(model, seq):
    return model(input_ids=torch.tensor([seq])).logits[0, -1].float()


def _check_caches(dec, seq):
    """Both caches hold exactly the KV of a prefix of ``seq`` (target: all but the last token)."""
    tgt, drf = dec.target, dec.draft
    assert tgt.length == len(seq) - 1
    got = tgt.forward_chain(torch.tensor([seq[-1:]]))[0, -1]
    torch.testing.assert_close(got, _recompute_last_logits(tgt.model, seq), atol=ATOL, rtol=0)
    assert drf.length <= len(seq) - 1
    got = drf.forward_chain(torch.tensor([seq[drf.length:]]))[0, -1]
    torch.testing.assert_close(got, _recompute_last_logits(drf.model, seq), atol=ATOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("method,config", [("sd", "3"), ("spectr", "2x2"), ("rsd-c", "2,1"), ("rsd-s", "2x3")])
def test_compaction_matches_recompute(method, config):
    """Sampling with a partially accepting draft for several blocks, then compare logits."""
    tgt = embedded_target().model
    dec = Decoder(tgt, BiasedDraft(tgt, scale=2.0), method, config, temperature=1.0, seed=1)
    ids = list(chat_ids())
    dec.prefill(ids)
    seq, accepted = list(ids), []
    for _ in range(4):
        tokens, stats = dec.step()
        seq += tokens
        accepted.append(stats.accepted)
    assert any(a > 0 for a in accepted), accepted
    _check_caches(dec, seq)


def test_full_acceptance_leaves_pending_draft_tokens():
    """Draft = target: every path ends at a leaf the draft never processed; the next block's first
    draft call must feed it (the draft cache lags by that token, never holds a wrong one)."""
    tgt = embedded_target().model
    dec = Decoder(tgt, tgt, "sd", "2", temperature=0.0, seed=0)
    ids = list(chat_ids())
    dec.prefill(ids)
    seq = list(ids)
    for _ in range(3):
        tokens, stats = dec.step()
        assert stats.accepted == 2
        seq += tokens
        assert dec.draft.length == len(seq) - 2  # the accepted leaf is pending
    _check_caches(dec, seq)


def test_tree_forward_matches_path_recompute():
    """Each tree node's logits equal the logits of its root-to-node path run causally."""
    tgt = embedded_target().model
    ids = list(chat_ids())
    ad = ModelAdapter(tgt)
    ad.forward_chain(torch.tensor([ids[:-1]]))
    tree = DraftTree.from_lists([[ids[-1], 504, 3575, 282, 4649, 314]], [[-1, 0, 0, 1, 2, 4]])
    logits = ad.forward_tree(tree)[0]
    for i in range(tree.max_nodes):
        path = [int(tree.tokens[0, j]) for j in tree.path_to(0, i)]
        ref = _recompute_last_logits(tgt, ids[:-1] + path)
        torch.testing.assert_close(logits[i], ref, atol=ATOL, rtol=0)
    # compaction to the path 0 -> 2 -> 4 then one more token = recompute
    snap = ad.snapshot()
    prefix = list(range(len(ids) - 1))
    ad.keep(torch.tensor(prefix + [len(ids) - 1 + j for j in (0, 2, 4)]))
    seq = ids + [3575, 4649]
    got = ad.forward_chain(torch.tensor([[77]]))[0, -1]
    ref = _recompute_last_logits(tgt, seq + [77])
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    # negative control: keeping the other branch's nodes (0 -> 1 -> 3) is detected
    ad.restore(snap)
    ad.keep(torch.tensor(prefix + [len(ids) - 1 + j for j in (0, 1, 3)]))
    wrong = ad.forward_chain(torch.tensor([[77]]))[0, -1]
    assert (wrong - ref).abs().max() > 100 * ATOL


@pytest.mark.parametrize("backend", [pytest.param("torch", id="torch")] + kernel_backend_params("tree_attention"))
def test_rsd_attention_interface_matches_4d_mask(backend):
    """--attention rsd: rsd_kernels.tree_attention inside transformers gives the 4D-mask logits
    (every tree_attention backend that runs here; Triton under the interpreter on a CPU)."""
    tgt = embedded_target().model
    ids = list(chat_ids())
    tree = DraftTree.from_lists([[ids[-1], 504, 3575, 282, 4649, 314]], [[-1, 0, 0, 1, 2, 4]])
    out = {}
    try:
        for attention in ("sdpa", "eager", "rsd"):
            ad = ModelAdapter(tgt, attention=attention, kernel_backend=backend)
            ad.forward_chain(torch.tensor([ids[:-1]]))
            out[attention] = ad.forward_tree(tree)
    finally:
        tgt.set_attn_implementation("sdpa")
    torch.testing.assert_close(out["rsd"], out["sdpa"], atol=ATOL, rtol=0)
    torch.testing.assert_close(out["eager"], out["sdpa"], atol=ATOL, rtol=0)


def test_embedded_draft_cache_after_greedy_blocks():
    """The embedded pair's draft (stand-in or shipped) also keeps an exact cache."""
    tgt = embedded_target().model
    dec = Decoder(tgt, embedded_draft().model, "rsd-s", "2x2", temperature=0.0, seed=0)
    ids = list(chat_ids())
    dec.prefill(ids)
    seq = list(ids)
    for _ in range(3):
        seq += dec.step()[0]
    _check_caches(dec, seq)
