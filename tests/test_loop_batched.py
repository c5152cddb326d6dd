"""Batched decoding (``rsd.generate`` on a list of prompts of different lengths).

* greedy: every row equals single-prompt decoding of its prompt, for batches of 1, 3 and 8
  mixed-length prompts and every method, with partial acceptance (a biased copy of the target as
  draft), full acceptance (the target as its own draft: paths end at leaves the draft never
  processed, so rows carry different pending tokens), every attention path, rows that stop at
  different times (EOS, max_new_tokens, context) and leave the batch;
* sampling: a batch of one equals single-prompt decoding with the same seed; the loop's
  chi-square exactness test at batch 4 (rows of different lengths, the tested prompt in two rows),
  which a deliberately broken verifier fails.

All on tiny random Llama models (offline, fast); the embedded-pair variant of the chi-square test
is marked slow.
"""
import sys
import os

import pytest
import torch
from scipy.stats import chisquare

import rsd_kernels
from loop_models import BiasedDraft, always_accept_first_child, tiny_llama as small_llama
from rsd.engine.batched import BatchDecoder, BatchGenerationResult
from rsd.engine.generate import generate

sys.path.insert(0, os.path.dirname(__file__))
from eval_tiny_pair import tiny_llama  # noqa: E402

METHODS = [("ar", None), ("sd", "3"), ("spectr", "2x2"), ("rsd-c", "2,1"), ("rsd-s", "2x3")]
LENGTHS = {1: (7,), 3: (1, 9, 4), 8: (1, 5, 12, 3, 7, 20, 2, 9)}
N = 12


class Scaled(torch.nn.Module):
    """A model whose logits are multiplied by ``scale`` (a peaked distribution from a random model)."""

    def __init__(self, inner, scale):
        super().__init__()
        self.inner, self.config, self.scale = inner, inner.config, scale

    def forward(self, **kw):
        out = self.inner(**kw)
        out.logits = out.logits * self.scale
        return out


@pytest.fixture(scope="module")
def target():
    return tiny_llama(2, 0)


@pytest.fixture(scope="module")
def biased(target):
    return BiasedDraft(target, scale=0.02)  # partial acceptance on the tiny target


def prompts(lengths, seed=0, vocab=256):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


def singles(target, draft, ps, method, config, **kw):
    return [generate(target, draft, p, method, config, **kw) for p in ps]


@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("method,config", METHODS)
def test_greedy_rows_equal_single_prompt(target, biased, method, config, batch):
    ps = prompts(LENGTHS[batch])
    draft = None if method == "ar" else biased
    ref = singles(target, draft, ps, method, config, max_new_tokens=N, seed=0)
    res = generate(target, draft, ps, method, config, max_new_tokens=N, seed=0)
    assert isinstance(res, BatchGenerationResult) and len(res) == batch
    assert res.tokens == [r.tokens for r in ref]
    assert all(len(t) == N for t in res.tokens)
    depth = 1 if method == "ar" else res.rows[0].config.depth
    assert all(b.target_calls == 1 and b.draft_calls == (0 if method == "ar" else depth) for b in res.blocks)
    if method != "ar" and batch == 8:
        acc = [a for r in res.rows for a in r.accepted_lengths]
        assert 0 < sum(acc) and min(acc) < depth, acc  # acceptances and rejections both happen
        # one batched block serves every row: fewer blocks than the rows' blocks together
        assert len(res.blocks) == max(len(r.blocks) for r in res.rows)


@pytest.mark.parametrize("method,config", METHODS[1:])
def test_self_draft_full_acceptance(target, method, config):
    ps = prompts(LENGTHS[3], seed=1)
    ref = singles(target, target, ps, method, config, max_new_tokens=N)
    res = generate(target, target, ps, method, config, max_new_tokens=N)
    assert res.tokens == [r.tokens for r in ref]
    depth = res.rows[0].config.depth
    acc = [a for r in res.rows for a in r.accepted_lengths[:-1]]
    if method == "rsd-s":  # greedy beam search keeps the W most likely paths: not always the greedy one
        assert sum(acc) > 0.6 * depth * len(acc), acc
    else:
        assert all(a == depth for a in acc), acc


@pytest.mark.parametrize("attention", ["eager", "rsd"])
def test_attention_paths(target, biased, attention):
    ps = prompts(LENGTHS[3], seed=2)
    for method, config in (("rsd-s", "2x3"), ("spectr", "2x2")):
        ref = singles(target, biased, ps, method, config, max_new_tokens=N, attention=attention)
        res = generate(target, biased, ps, method, config, max_new_tokens=N, attention=attention)
        assert res.tokens == [r.tokens for r in ref]


@pytest.mark.parametrize("method,config", METHODS)
def test_rows_finish_at_different_times(target, biased, method, config):
    ps = prompts(LENGTHS[8], seed=3)
    draft = None if method == "ar" else biased
    free = singles(target, draft, ps, method, config, max_new_tokens=16, seed=0)
    # an EOS id that some rows emit early and others never: they stop at different blocks
    counts = {}
    for r in free:
        for t in set(r.tokens[:10]):
            counts[t] = counts.get(t, 0) + 1
    eos = max(counts, key=lambda t: (0 < counts[t] < len(ps), counts[t]))
    ref = singles(target, draft, ps, method, config, max_new_tokens=16, seed=0, eos_token_id=eos)
    res = generate(target, draft, ps, method, config, max_new_tokens=16, seed=0, eos_token_id=eos)
    assert res.tokens == [r.tokens for r in ref]
    assert [r.stop_reason for r in res.rows] == [r.stop_reason for r in ref]
    assert {r.stop_reason for r in res.rows} == {"eos", "max_new_tokens"}
    assert res.batch_sizes == sorted(res.batch_sizes, reverse=True) and res.batch_sizes[-1] < len(ps)
    assert len(set(len(r.blocks) for r in res.rows)) > 1


@pytest.mark.parametrize("method,config", [("ar", None), ("sd", "3"), ("rsd-s", "2x2")])
def test_context_stop_leaves_the_batch(method, config):
    tgt = small_llama(vocab_size=64, layers=2, max_positions=40, seed=0)
    drf = None if method == "ar" else small_llama(vocab_size=64, layers=1, max_positions=40, seed=1)
    ps = prompts((30, 3, 12), seed=4, vocab=64)
    ref = singles(tgt, drf, ps, method, config, max_new_tokens=20, seed=0)
    res = generate(tgt, drf, ps, method, config, max_new_tokens=20, seed=0)
    assert res.tokens == [r.tokens for r in ref]
    assert [r.stop_reason for r in res.rows] == [r.stop_reason for r in ref]
    assert res.rows[0].stop_reason == "context" and res.rows[1].stop_reason == "max_new_tokens"


@pytest.mark.parametrize("method,config", METHODS)
def test_sampling_batch_of_one_equals_single_prompt(target, biased, method, config):
    p = prompts((6,), seed=5)[0]
    draft = None if method == "ar" else biased
    kw = dict(temperature=1.0, top_k=50, max_new_tokens=N, seed=7)
    one = generate(target, draft, p, method, config, **kw)
    batch = generate(target, draft, [p], method, config, **kw)
    assert batch.tokens == [one.tokens]


def test_sampling_batch_is_reproducible_and_rows_differ(target, biased):
    p = prompts((6,), seed=5)[0]
    ps = [p, p, p]
    kw = dict(temperature=1.0, max_new_tokens=N)
    a = generate(target, biased, ps, "rsd-s", "2x3", seed=1, **kw)
    b = generate(target, biased, ps, "rsd-s", "2x3", seed=1, **kw)
    assert a.tokens == b.tokens
    assert len({tuple(t) for t in a.tokens}) > 1  # the same prompt in three rows: independent draws


# ---- chi-square exactness at batch 4 ---------------------------------------------------------
CHI_N = 160  # samples of the tested prompt (two rows per batched block)
ALPHA = 1e-3
CHI_CONFIGS = [("sd", "1"), ("spectr", "3x1"), ("rsd-c", "3"), ("rsd-s", "3x1")]


def batched_first_token_pvalue(tgt, draft, ps, rows, method, config, n):
    """Run the first block of a batch ``ps`` n/len(rows) times (seeds 0..); pool the first token of
    the batch rows ``rows`` (all the same prompt) against the target's next-token distribution."""
    with torch.no_grad():
        p = torch.softmax(tgt(input_ids=torch.tensor([ps[rows[0]]])).logits[0, -1].double(), -1)
    top = p.topk(5).indices.tolist()
    expected = torch.cat([p[top], (1 - p[top].sum()).view(1)]) * n
    dec = BatchDecoder(tgt, draft, method, config, temperature=1.0, seed=0)
    dec.prefill(ps)
    snap = dec.snapshot()
    counts, accepted = [0] * 6, 0
    for i in range(n // len(rows)):
        dec.restore(snap, seed=i)
        new, acc, _, _ = dec.step()
        for r in rows:
            t = new[r][0]
            counts[top.index(t) if t in top else 5] += 1
            accepted += acc[r]
    return chisquare(counts, expected.tolist()).pvalue, counts, accepted


def _tiny_chi_setup():
    tgt = Scaled(tiny_llama(2, 0), 20.0)
    draft = BiasedDraft(tgt, scale=2.0)
    a, b, c = prompts((6, 2, 11), seed=6)
    return tgt, draft, [a, b, a, c]  # the tested prompt in rows 0 and 2, between shorter/longer rows


@pytest.mark.parametrize("method,config", CHI_CONFIGS)
def test_batched_first_token_matches_target(method, config):
    tgt, draft, ps = _tiny_chi_setup()
    pvalue, counts, accepted = batched_first_token_pvalue(tgt, draft, ps, [0, 2], method, config, CHI_N)
    assert 0 < accepted < CHI_N, f"acceptance {accepted}/{CHI_N}: the test must see acceptances and rejections"
    assert pvalue > ALPHA, f"{method}: counts {counts}, p={pvalue:.2e}"


def test_batched_broken_verifier_is_caught(monkeypatch):
    monkeypatch.setattr(rsd_kernels, "verify_tree", always_accept_first_child)
    tgt, draft, ps = _tiny_chi_setup()
    pvalue, counts, _ = batched_first_token_pvalue(tgt, draft, ps, [0, 2], "sd", "1", CHI_N)
    assert pvalue < ALPHA, f"the broken verifier passed: counts {counts}, p={pvalue:.2e}"


@pytest.mark.slow
@pytest.mark.parametrize("method,config", CHI_CONFIGS)
def test_batched_first_token_matches_target_embedded(method, config):
    from loop_models import chat_ids, embedded_target

    tgt = embedded_target().model
    ps = [list(chat_ids("Tell me a number between 1 and 10.")), list(chat_ids("Hi")),
          list(chat_ids("Tell me a number between 1 and 10.")), list(chat_ids("Write one long sentence about the sea and ships."))]
    pvalue, counts, accepted = batched_first_token_pvalue(tgt, BiasedDraft(tgt, scale=2.0), ps, [0, 2], method,
                                                          config, 80)
    assert 0 < accepted < 80
    assert pvalue > ALPHA, f"{method}: counts {counts}, p={pvalue:.2e}"


def test_batched_row_mixup_is_caught(monkeypatch):
    """A batch-only bug: verification sees the target logits of the next row (rows mixed up)."""
    real = rsd_kernels.verify_tree

    def mixed_up(target_logits, *a, **kw):
        return real(target_logits.roll(1, 0), *a, **kw)

    monkeypatch.setattr(rsd_kernels, "verify_tree", mixed_up)
    tgt, draft, ps = _tiny_chi_setup()
    pvalue, counts, _ = batched_first_token_pvalue(tgt, draft, ps, [0, 2], "rsd-c", "3", CHI_N)
    assert pvalue < ALPHA, f"the row mix-up passed: counts {counts}, p={pvalue:.2e}"


@pytest.mark.slow
@pytest.mark.parametrize("method,config", [("ar", None), ("sd", "3"), ("rsd-s", "2x3")])
def test_embedded_pair_batch_greedy(method, config):
    from loop_models import chat_ids, embedded_draft, embedded_target

    tgt = embedded_target().model
    drf = None if method == "ar" else embedded_draft().model
    ps = [list(chat_ids(t)) for t in ("Hi", "What is the capital of France?",
                                      "Write one long sentence about the sea and ships.")]
    ref = singles(tgt, drf, ps, method, config, max_new_tokens=10)
    res = generate(tgt, drf, ps, method, config, max_new_tokens=10)
    assert res.tokens == [r.tokens for r in ref]


@pytest.mark.parametrize("method,config,top_k", [("ar", None, 50), ("sd", "3", 50), ("spectr", "3x2", 2),
                                                 ("rsd-c", "3,2", 2), ("rsd-s", "3x2", 2), ("rsd-c", "2,1", None)])
def test_sampling_row_zero_equals_single_prompt(target, biased, method, config, top_k):
    """Row 0 of a batch draws from row 0's streams, like a single prompt: equal tokens with the same
    seed, also when trees are ragged (top_k=2 < the branching: rows lose nodes) and rows differ."""
    ps = prompts((6, 1, 14), seed=8)
    draft = None if method == "ar" else biased
    kw = dict(temperature=1.0, top_k=top_k, max_new_tokens=N, seed=11)
    one = generate(target, draft, ps[0], method, config, **kw)
    batch = generate(target, draft, ps, method, config, **kw)
    assert batch.tokens[0] == one.tokens
    assert all(len(t) == N for t in batch.tokens)


def test_batch_kv_buffer_unit():
    from rsd.engine.kvcache import BatchKVBuffer

    c = BatchKVBuffer(num_layers=2, batch=3, capacity=4)
    k = torch.arange(3 * 1 * 5 * 2, dtype=torch.float32).view(3, 1, 5, 2)
    c.write_slots = torch.tensor([[0, 1, 2, 3, 4], [2, 3, 4, 5, 6], [1, 2, 3, 4, 5]])
    c.set_lengths([0, 2, 1])
    for layer in range(2):
        kk, vv = c.update(k + layer, -k, layer)
        assert kk.shape == (3, 1, 7, 2)  # attends over [:max slot + 1]
    assert c.capacity >= 7
    c.advance([5, 5, 5])
    assert c.lengths == [5, 7, 6]
    assert torch.equal(c.kv[1, 0, 1, 0, 2:7], k[1, 0] + 1)
    # keep [0, start) and the listed slots; rows move independently, in one gather
    c.move_tails([1, 2, 1], [[3], [2, 5, 6], []])
    assert c.lengths == [2, 5, 1]
    assert torch.equal(c.kv[:, 0, 0, 0, 1], torch.stack([k[0, 0, 3], k[0, 0, 3] + 1]))
    assert torch.equal(c.kv[0, 0, 1, 0, 3:5], k[1, 0, 3:5])
    assert torch.equal(c.kv[0, 1, 1, 0, 3:5], -k[1, 0, 3:5])
    with pytest.raises(ValueError):
        c.move_tails([0, 0, 0], [[5], [], []])  # beyond row 0's length
    c.select_rows([2, 0])
    assert c.batch == 2 and c.lengths == [1, 2] and c.kv.shape[2] == 2
    assert torch.equal(c.kv[0, 0, 1, 0, 1], k[0, 0, 3])


@pytest.mark.parametrize("method,config", [("rsd-c", "3,2"), ("rsd-s", "3x2")])
def test_sampling_ragged_rows(monkeypatch, method, config):
    """top_p on a peaked target: rows' trees have different node counts in one block (ragged
    build and verification); row 0 still equals the single-prompt run, every row completes."""
    real, sizes = rsd_kernels.build_tree, []

    def recording(*a, **kw):
        r = real(*a, **kw)
        if r.tree.num_nodes is not None:
            sizes.append(r.tree.num_nodes.tolist())
        return r

    tgt = Scaled(tiny_llama(2, 0), 20.0)
    draft = BiasedDraft(tgt, scale=1.0)
    ps = prompts((6, 1, 14), seed=8)
    kw = dict(temperature=1.0, top_p=0.5, max_new_tokens=N, seed=11)
    one = generate(tgt, draft, ps[0], method, config, **kw)
    monkeypatch.setattr(rsd_kernels, "build_tree", recording)
    batch = generate(tgt, draft, ps, method, config, **kw)
    assert any(len(set(s)) > 1 for s in sizes), sizes
    assert batch.tokens[0] == one.tokens
    assert all(len(t) == N for t in batch.tokens)


def test_batch_input_forms_and_errors(target, biased):
    ps = prompts((4, 4, 4), seed=9)
    ref = [r.tokens for r in singles(target, biased, ps, "sd", "2", max_new_tokens=4)]
    as_tensor = generate(target, biased, torch.tensor(ps), "sd", "2", max_new_tokens=4)
    as_list_of_tensors = generate(target, biased, [torch.tensor(p) for p in ps], "sd", "2", max_new_tokens=4)
    assert as_tensor.tokens == as_list_of_tensors.tokens == ref
    single = generate(target, biased, torch.tensor([ps[0]]), "sd", "2", max_new_tokens=4)  # [1, n]: one prompt
    assert not isinstance(single, BatchGenerationResult) and single.tokens == ref[0]
    with pytest.raises(ValueError, match="empty"):
        generate(target, biased, [ps[0], []], "sd", "2", max_new_tokens=4)
    with pytest.raises(ValueError, match="lie in"):
        generate(target, biased, [ps[0], [1, 999]], "sd", "2", max_new_tokens=4)
    with pytest.raises(ValueError, match="context"):
        generate(target, biased, [ps[0], [1] * 1024], "sd", "2", max_new_tokens=4)
