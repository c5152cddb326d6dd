"""Regenerate the embedded draft from nothing: data generation + distillation.

    python -m rsd.train.draft --out /work/draft-run [--budget-minutes 90] [--threads 2]
    python -m rsd.train.draft --out /tmp/tiny --tiny        # seconds; CI smoke test

Phases, each resumable (rerun the same command to continue after an interruption):

1. **data** -- the target (in ``--gen-dtype``: bfloat16 where this CPU runs it faster than float32, else
   float32) samples responses at
   temperature 1 to the chat-templated training prompts (:mod:`rsd.train.prompts`:
   ``--samples-per-prompt`` samples of each of ``TRAIN_PROMPTS``, ``--topic-samples`` of
   each of ``TOPIC_PROMPTS``, shuffled), in batches with a KV cache. For every response position the target's top-``topk``
   next-token log-probabilities are stored (the rest of the mass is implied). One file
   ``data/shard_XXXX.pt`` per batch; existing shards are skipped.
2. **vocab** -- the ``head_size`` tokens with the largest expected count (target
   probability mass over all stored positions, plus the prompt tokens) form the draft's
   restricted head (``kept_ids``); special tokens are always kept.
3. **train** -- the draft (:class:`rsd.engine.drafts.restricted.RestrictedHeadDraft`, initialised from
   the target's first layers, final norm and the kept rows of its tied head) is trained
   with KL(p || q) from the target's stored distribution p to the draft's q. The top-k
   tokens the head keeps are matched one by one; all remaining target mass (tail beyond
   top-k and top-k tokens outside the head) is matched as one bucket against the draft's
   remaining mass. AdamW, linear warm-up, cosine decay to 10%, bfloat16 autocast where it is faster (``--precision``). ``ckpt.pt`` is written every
   ``--ckpt-every`` steps and at the end; a rerun resumes from it.
4. **export** -- ``draft.safetensors`` in ``--out`` (fp16 weights, kept ids, config in
   the metadata; the frozen token embedding is not included). Copy it to
   ``python/rsd/engine/drafts/weights/`` to ship it.

``--budget-minutes`` caps the whole run: data generation stops when its share
(``--data-frac``) of the budget is used, and the number of optimiser steps is the smaller
of ``--epochs`` passes and what fits in the rest of the budget (decided once, after timing
the first steps, and stored in the checkpoint).
"""
from __future__ import annotations

import argparse
import copy
import glob
import json
import math
import os
import random
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..engine.drafts.eagle import LayerTap
from ..engine.drafts.restricted import RestrictedHeadDraft, config_to_json, draft_config_from_target

EOS_ID = 2  # <|im_end|> in the SmolLM2 vocabulary
SPECIAL_IDS = (0, 1, 2)
FORMAT = "rsd-draft-v1"


# ----------------------------------------------------------------------------- data
@torch.no_grad()
def sample_batch(target, prompts: list[list[int]], max_new_tokens: int, topk: int, generator: torch.Generator,
                 eos_id: int = EOS_ID, pad_id: int = EOS_ID, features: bool = False,
                 feature_layers=()) -> list[dict]:
    """Sample one response per prompt from ``target`` at temperature 1 (left-padded batch, KV cache).

    Returns one record per prompt: ``ids`` (prompt + response, int32), ``start`` (index of
    the first response token), ``topk_ids`` int32 and ``topk_lp`` float16, both
    ``[len(response), topk]``: the target's top-k log-probabilities for each response
    position. The response ends with ``eos_id`` unless it hit ``max_new_tokens``. Rows
    that finished are dropped from the batch (and its KV cache) so they cost nothing more.

    With ``features`` each record also has ``feat`` ``[len(ids) - 1, H]`` bfloat16: the
    target's last (post-norm) hidden state at every position it processed (all but the
    last token), a by-product of the sampling forwards (the EAGLE draft's training input).
    With ``feature_layers`` the outputs of those decoder layers come first (:class:`LayerTap`):
    ``feat`` is then ``[len(ids) - 1, (len(feature_layers) + 1) * H]``.
    """
    B = len(prompts)
    S = max(len(p) for p in prompts)
    ids = torch.full((B, S), pad_id, dtype=torch.long)
    mask = torch.zeros((B, S), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, S - len(p):] = torch.tensor(p)
        mask[i, S - len(p):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)

    def forward(**kw):
        if not features:
            out = target(**kw, use_cache=True, logits_to_keep=1)
            return out.past_key_values, out.logits[:, -1].float(), None
        with LayerTap(target, feature_layers) as tap:
            out = target.model(**kw, use_cache=True)
        h = out.last_hidden_state
        return out.past_key_values, target.lm_head(h[:, -1]).float(), tap.features(h).to(torch.bfloat16)

    cache, logits, h = forward(input_ids=ids, attention_mask=mask, position_ids=pos)
    if features:
        prompt_feat = [h[i, S - len(p):].clone() for i, p in enumerate(prompts)]
        resp_feat = torch.zeros((B, max_new_tokens, h.shape[-1]), dtype=torch.bfloat16)
    toks = torch.full((B, max_new_tokens), pad_id, dtype=torch.long)
    tk_ids = torch.zeros((B, max_new_tokens, topk), dtype=torch.int32)
    tk_lp = torch.zeros((B, max_new_tokens, topk), dtype=torch.float16)
    lengths = torch.full((B,), max_new_tokens, dtype=torch.long)
    rows = torch.arange(B)  # batch row -> prompt index, for the rows still generating
    next_pos = pos[:, -1:] + 1
    for t in range(max_new_tokens):
        lp = torch.log_softmax(logits, -1)
        tok = torch.multinomial(lp.exp(), 1, generator=generator).squeeze(-1)
        v, j = lp.topk(topk, -1)
        toks[rows, t], tk_ids[rows, t], tk_lp[rows, t] = tok, j.int(), v.half()
        fin = tok == eos_id
        lengths[rows[fin]] = t + 1
        if bool(fin.all()) or t + 1 == max_new_tokens:
            break
        if bool(fin.any()):
            keep = (~fin).nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            rows, tok, mask, next_pos = rows[keep], tok[keep], mask[keep], next_pos[keep]
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=torch.long)], 1)
        cache, logits, h = forward(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos,
                                   past_key_values=cache)
        next_pos = next_pos + 1
        if features:
            resp_feat[rows, t] = h[:, 0]
    records = []
    for i, p in enumerate(prompts):
        n = int(lengths[i])
        records.append({"ids": torch.tensor(p + toks[i, :n].tolist(), dtype=torch.int32), "start": len(p),
                        "topk_ids": tk_ids[i, :n].clone(), "topk_lp": tk_lp[i, :n].clone()})
        if features:  # the last sampled token was never fed to the target
            records[-1]["feat"] = torch.cat([prompt_feat[i], resp_feat[i, :n - 1]])
    return records


def generate_data(target, prompt_ids: list[list[int]], out_dir: str, *, samples_per_prompt: int | list[int],
                  batch_size: int, max_new_tokens: int, topk: int, seed: int, deadline: float) -> list[str]:
    """Phase 1: write ``out_dir/data/shard_XXXX.pt`` (skipping existing ones) until done or ``deadline``.

    ``samples_per_prompt`` is one count for all prompts or one count per prompt.
    """
    data_dir = os.path.join(out_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    counts = samples_per_prompt if isinstance(samples_per_prompt, list) else [samples_per_prompt] * len(prompt_ids)
    if len(counts) != len(prompt_ids):
        raise ValueError(f"samples_per_prompt: {len(counts)} counts for {len(prompt_ids)} prompts")
    jobs = [i for i in range(len(prompt_ids)) for _ in range(counts[i])]
    random.Random(seed).shuffle(jobs)
    # Sort each shard's prompts by length so left padding stays small.
    shards = [sorted(jobs[s:s + batch_size], key=lambda i: len(prompt_ids[i]))
              for s in range(0, len(jobs), batch_size)]
    bar = tqdm(total=len(shards), desc="data (target samples)", unit="batch")
    for k, shard in enumerate(shards):
        path = os.path.join(data_dir, f"shard_{k:04d}.pt")
        if not os.path.exists(path):
            if time.time() > deadline:
                tqdm.write(f"data: budget reached after {k} of {len(shards)} batches")
                break
            g = torch.Generator().manual_seed(seed * 100003 + k)
            recs = sample_batch(target, [prompt_ids[i] for i in shard], max_new_tokens, topk, g)
            torch.save(recs, path + ".tmp")
            os.replace(path + ".tmp", path)
        bar.update(1)
    bar.close()
    return sorted(glob.glob(os.path.join(data_dir, "shard_*.pt")))


def load_records(paths: list[str]) -> list[dict]:
    return [r for p in paths for r in torch.load(p)]


# ---------------------------------------------------------------------------- vocab
def choose_kept_ids(records: list[dict], vocab_size: int, head_size: int) -> torch.Tensor:
    """Phase 2: the ``head_size`` ids with the largest expected count, sorted ascending."""
    mass = torch.zeros(vocab_size, dtype=torch.float64)
    for r in records:
        mass.index_add_(0, r["topk_ids"].reshape(-1).long(), r["topk_lp"].reshape(-1).double().exp())
        mass.index_add_(0, r["ids"][: r["start"]].long(), torch.ones(r["start"], dtype=torch.float64))
    mass[list(SPECIAL_IDS)] = float("inf")
    return mass.topk(min(head_size, vocab_size)).indices.sort().values


# ---------------------------------------------------------------------------- train
def init_draft_from_target(target, kept_ids: torch.Tensor, num_layers: int) -> RestrictedHeadDraft:
    """Draft with the target's frozen embedding, its first ``num_layers`` layers, final norm and kept head rows."""
    cfg = draft_config_from_target(target.config, num_layers)
    draft = RestrictedHeadDraft(cfg, kept_ids)
    tsd = target.model.state_dict()
    sd = {k: v for k, v in tsd.items()
          if not k.startswith("layers.") or int(k.split(".")[1]) < num_layers}
    draft.model.load_state_dict(sd)
    head = target.get_output_embeddings().weight
    draft.head.weight.data.copy_(head.detach()[kept_ids])
    draft.model.embed_tokens.weight.requires_grad_(False)
    return draft


def make_batches(records: list[dict], max_tokens: int, seed: int) -> list[list[int]]:
    """Index batches of similar-length records with at most ``max_tokens`` padded tokens each."""
    order = sorted(range(len(records)), key=lambda i: len(records[i]["ids"]))
    batches, cur, cur_len = [], [], 0
    for i in order:
        L = len(records[i]["ids"])
        if cur and max(cur_len, L) * (len(cur) + 1) > max_tokens:
            batches.append(cur)
            cur, cur_len = [], 0
        cur.append(i)
        cur_len = max(cur_len, L)
    if cur:
        batches.append(cur)
    random.Random(seed).shuffle(batches)
    return batches


def collate(records: list[dict], idx: list[int], kept_ids: torch.Tensor, vocab_size: int):
    """Inputs ``[B, S]``, mask, and per-response-position targets mapped onto the head's columns."""
    col = torch.full((vocab_size,), -1, dtype=torch.long)
    col[kept_ids] = torch.arange(kept_ids.numel())
    S = max(len(records[i]["ids"]) for i in idx) - 1
    B = len(idx)
    inp = torch.full((B, S), EOS_ID, dtype=torch.long)
    mask = torch.zeros((B, S), dtype=torch.long)
    rows_b, rows_t, tk_col, tk_lp = [], [], [], []
    for b, i in enumerate(idx):
        r = records[i]
        L = len(r["ids"]) - 1
        inp[b, :L] = r["ids"][:-1].long()
        mask[b, :L] = 1
        n = r["topk_ids"].shape[0]
        rows_b.append(torch.full((n,), b)), rows_t.append(torch.arange(r["start"] - 1, r["start"] - 1 + n))
        tk_col.append(col[r["topk_ids"].long()]), tk_lp.append(r["topk_lp"].float())
    return inp, mask, torch.cat(rows_b), torch.cat(rows_t), torch.cat(tk_col), torch.cat(tk_lp)


def distill_loss(logq: torch.Tensor, tk_col: torch.Tensor, tk_lp: torch.Tensor) -> torch.Tensor:
    """Mean KL(p || q) over positions between bucketed distributions.

    ``logq`` ``[N, K]`` draft log-probs over the head; ``tk_col`` ``[N, k]`` head column of
    each stored top-k token (-1 if not in the head); ``tk_lp`` its target log-prob. Buckets:
    each top-k token in the head, plus one "rest" bucket (everything else).
    """
    inside = tk_col >= 0
    p = tk_lp.exp() * inside
    lq = logq.gather(1, tk_col.clamp(min=0))
    kl_in = (p * (tk_lp - lq)).masked_fill(~inside, 0).sum(-1)
    p_rest = (1 - p.sum(-1)).clamp(min=1e-8)
    q_in = (lq.exp() * inside).sum(-1)
    q_rest = (1 - q_in).clamp(min=1e-8)
    kl_rest = p_rest * (p_rest.log() - q_rest.log())
    return (kl_in + kl_rest).mean()


def run_training(draft, records: list[dict], out_dir: str, batch_loss, on_step, *, epochs: float, lr: float,
                 max_tokens: int, warmup: int, ckpt_every: int, seed: int, deadline: float,
                 hard_deadline: float | None = None, max_steps: int | None = None, desc: str = "train"):
    """The training loop of both trainers (this module's draft and the EAGLE draft).

    AdamW over the trainable parameters, warm-up then cosine decay to 10%, gradient clipping at
    1.0; batches of ``make_batches`` (reshuffled per epoch); ``ckpt.pt`` in ``out_dir`` every
    ``ckpt_every`` steps and at the end, resumed from when present. The schedule length is
    decided once, after 5 steps, from the measured speed: as many steps as fit before
    ``deadline`` (at most ``epochs`` passes, at most ``max_steps``); training stops early
    (keeping what it has) if it is still running at ``hard_deadline``.

    ``batch_loss(indices) -> loss`` computes one batch's loss; ``on_step(step, loss, ema, lr)``
    runs after each optimiser step and returns the progress bar's postfix (a dict).
    """
    ckpt_path = os.path.join(out_dir, "ckpt.pt")
    params = [p for p in draft.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    step, total = 0, None
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path)
        draft.load_state_dict(ck["model"], strict=False)
        opt.load_state_dict(ck["opt"])
        step, total = ck["step"], ck["total"]
        tqdm.write(f"train: resumed at step {step}/{total}")
    per_epoch = len(make_batches(records, max_tokens, seed))
    planned = max(1, int(math.ceil(epochs * per_epoch)))
    if max_steps:
        planned = min(planned, max_steps)

    def save():
        torch.save({"model": draft.trainable_state_dict(), "opt": opt.state_dict(), "step": step,
                    "total": total}, ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)

    draft.train()
    bar = tqdm(total=total or planned, initial=step, desc=desc, unit="step")
    t_start, s_start, ema = time.time(), step, None
    batches, batches_epoch = None, None
    while step < (planned if total is None else total):
        epoch, k = divmod(step, per_epoch)
        if epoch != batches_epoch:
            batches, batches_epoch = make_batches(records, max_tokens, seed + epoch), epoch
        frac = step / max(1, total or planned)
        lr_now = lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
        for g in opt.param_groups:
            g["lr"] = lr_now
        loss = batch_loss(batches[k])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        bar.update(1)
        bar.set_postfix(**on_step(step, loss.item(), ema, lr_now))
        if total is None and (step - s_start >= 5 or step >= planned):  # decide the schedule length once, from measured speed
            per_step = (time.time() - t_start) / (step - s_start)
            fit = step + int(max(0.0, deadline - time.time()) / per_step)
            total = max(step, min(planned, fit))
            bar.total = total
            bar.refresh()
            tqdm.write(f"train: {per_step:.2f} s/step, {per_epoch} steps/epoch, schedule = {total} steps")
        if step % ckpt_every == 0 or step == total:
            save()
        if hard_deadline is not None and time.time() > hard_deadline and step < (total or planned):
            tqdm.write(f"train: budget exhausted at step {step} of {total}")
            break
    bar.close()
    save()
    draft.eval()
    return draft


def train_draft(draft: RestrictedHeadDraft, records: list[dict], out_dir: str, *, epochs: float, lr: float,
                max_tokens: int, warmup: int, ckpt_every: int, seed: int, deadline: float,
                bf16: bool = True, hard_deadline: float | None = None) -> RestrictedHeadDraft:
    """Phase 3: distil into ``draft`` (:func:`run_training`); resumes from ``out_dir/ckpt.pt`` if present.

    With ``bf16`` the forward pass runs under CPU bfloat16 autocast (about twice as fast
    on CPUs with AVX512-BF16); parameters, optimiser state and the loss stay float32.
    Training stops early (keeping what it has) if it is still running at ``hard_deadline``.
    """
    kept, V = draft.kept_ids, draft.config.vocab_size

    def batch_loss(idx):
        inp, mask, rb, rt, tk_col, tk_lp = collate(records, idx, kept, V)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            h = draft.model(input_ids=inp, attention_mask=mask, use_cache=False).last_hidden_state
            logits = draft.head(h[rb, rt])
        return distill_loss(torch.log_softmax(logits.float(), -1), tk_col, tk_lp)

    return run_training(draft, records, out_dir, batch_loss, lambda step, loss, ema, lr_now: {
        "kl": f"{ema:.3f}", "lr": f"{lr_now:.1e}"}, epochs=epochs, lr=lr, max_tokens=max_tokens, warmup=warmup,
        ckpt_every=ckpt_every, seed=seed, deadline=deadline, hard_deadline=hard_deadline,
        desc="train (KL distillation)")


# --------------------------------------------------------------------------- export
def export_draft(draft: RestrictedHeadDraft, path: str, info: dict | None = None) -> str:
    """Phase 4: write the shipped safetensors (fp16 weights, int32 kept ids; no token embedding)."""
    from safetensors.torch import save_file

    sd = {k: (v.to(torch.int32) if k == "kept_ids" else v.detach().to(torch.float16)).contiguous()
          for k, v in draft.trainable_state_dict().items()}
    meta = {"format": FORMAT, "config": config_to_json(draft.config), "info": json.dumps(info or {})}
    save_file(sd, path, metadata=meta)
    return path


# ----------------------------------------------------------------------------- main
def tiny_target(seed: int = 0):
    """A tiny random Llama in the target's shape family (for the CI smoke test)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                      bos_token_id=1, eos_token_id=EOS_ID, pad_token_id=EOS_ID)
    return LlamaForCausalLM(cfg).eval()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m rsd.train.draft", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="run folder: data shards, checkpoint, draft.safetensors")
    ap.add_argument("--budget-minutes", type=float, default=90.0, help="wall-clock cap for the whole run")
    ap.add_argument("--tiny", action="store_true", help="tiny random target, few tokens: a smoke test")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--data-frac", type=float, default=0.65, help="share of the budget for data generation")
    ap.add_argument("--samples-per-prompt", type=int, default=8,
                    help="samples per prompt of the translation/summarization/instruction/chat set")
    ap.add_argument("--topic-samples", type=int, default=2, help="samples per topic x template prompt")
    ap.add_argument("--batch-size", type=int, default=64, help="prompts per generation batch")
    ap.add_argument("--gen-dtype", choices=("auto", "bfloat16", "float32"), default="auto",
                    help="dtype of the target while it generates data; auto: bfloat16 only where it is faster "
                         "than float32 on this CPU (native bf16), else float32")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--topk", type=int, default=64, help="stored target log-probs per position")
    ap.add_argument("--head-size", type=int, default=8192, help="tokens in the draft's restricted head")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=10.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-tokens", type=int, default=4096, help="padded tokens per training batch")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--ckpt-every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                    help="training: bfloat16 autocast or float32; auto: bf16 only where it is faster on this CPU")
    ap.add_argument("--fp32", action="store_true", help="the same as --precision fp32")
    return ap


def start_run(args, **tiny) -> tuple[float, object, list[list[int]], list[int], str]:
    """What a training run (this module's and ``train_eagle``'s ``main``) starts with: threads,
    seed and output folder set; the target, the training prompts and samples per prompt, and a
    label of the source. ``--tiny`` takes a tiny random target and sets ``args``' sizes to small
    values (``tiny``: the run's own overrides). Returns ``(t0, target, prompt_ids, counts, src)``."""
    t0 = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    if args.tiny:
        target = tiny_target(args.seed)
        rng = random.Random(args.seed)
        prompt_ids = [[1] + [rng.randrange(3, 512) for _ in range(rng.randrange(4, 12))] for _ in range(8)]
        counts = [1] * len(prompt_ids)
        for k, v in dict(batch_size=4, max_new_tokens=12, head_size=128, topk=8, warmup=2, **tiny).items():
            setattr(args, k, v)
        return t0, target, prompt_ids, counts, "tiny random target"
    from ..engine.embedded import load_embedded_target
    from .prompts import TOPIC_PROMPTS, TRAIN_PROMPTS, chat_ids

    target, tok = load_embedded_target()
    prompt_ids = [chat_ids(tok, p) for _, p in TRAIN_PROMPTS + TOPIC_PROMPTS]
    counts = [args.samples_per_prompt] * len(TRAIN_PROMPTS) + [args.topic_samples] * len(TOPIC_PROMPTS)
    return t0, target, prompt_ids, counts, "SmolLM2-135M-Instruct (embedded GGUF)"


_BF16_FAST = None


def bf16_is_fast(threads: int | None = None) -> bool:
    """Whether bfloat16 matmuls beat float32 on this CPU (timed once, ~0.2 s): they do where the CPU
    has native bf16 (AVX512-BF16, AMX) and are 4-8x *slower* where it has not (AVX2 only: a
    4096x576x1536 matmul measured 66 ms in float32 and 508 ms under bf16 autocast, 2 threads)."""
    global _BF16_FAST
    if _BF16_FAST is None:
        x, w = torch.randn(512, 576), torch.randn(1536, 576)
        times = {}
        for dt in (torch.float32, torch.bfloat16):
            a, b = x.to(dt), w.to(dt)
            a @ b.T
            t = time.perf_counter()
            for _ in range(3):
                a @ b.T
            times[dt] = time.perf_counter() - t
        _BF16_FAST = times[torch.bfloat16] < 0.8 * times[torch.float32]
    return _BF16_FAST


def resolve_dtypes(args):
    """``--gen-dtype auto`` / ``--precision auto``: bfloat16 where :func:`bf16_is_fast`, else float32.
    Sets ``args.gen_dtype`` and ``args.fp32`` and logs the choice."""
    fast = None
    if args.gen_dtype == "auto":
        fast = bf16_is_fast()
        args.gen_dtype = "bfloat16" if fast else "float32"
    if args.precision == "auto":
        fast = bf16_is_fast() if fast is None else fast
        args.precision = "bf16" if fast else "fp32"
    args.fp32 = args.fp32 or args.precision == "fp32"
    tqdm.write(f"dtypes: data generation {args.gen_dtype}, training {'float32' if args.fp32 else 'bfloat16 autocast'}"
               + (f" (bf16 {'faster' if fast else 'slower'} than fp32 on this CPU)" if fast is not None else ""))


def generation_model(target, gen_dtype: str):
    """The model that samples the training data: the target itself in float32, else a copy in ``gen_dtype``."""
    return target if gen_dtype == "float32" else copy.deepcopy(target).to(getattr(torch, gen_dtype))


def run_kept_ids(out_dir: str, records: list[dict], vocab_size: int, head_size: int, given=None) -> torch.Tensor:
    """The head's kept token ids of a run: ``out_dir/kept_ids.pt`` when a (resumed) run saved them;
    else ``given`` (a tensor) or the ``head_size`` most frequent ids of ``records``, saved there."""
    path = os.path.join(out_dir, "kept_ids.pt")
    if os.path.exists(path):
        return torch.load(path)
    kept = given.long() if given is not None else choose_kept_ids(records, vocab_size, head_size)
    torch.save(kept, path)
    return kept


def main(argv=None) -> str:
    args = build_parser().parse_args(argv)
    t0, target, prompt_ids, counts, src = start_run(args, layers=1, epochs=2)
    budget = args.budget_minutes * 60
    resolve_dtypes(args)
    gen_model = generation_model(target, args.gen_dtype)
    paths = generate_data(gen_model, prompt_ids, args.out, samples_per_prompt=counts,
                          batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, topk=args.topk,
                          seed=args.seed, deadline=t0 + args.data_frac * budget)
    del gen_model
    records = load_records(paths)
    n_tok = sum(r["topk_ids"].shape[0] for r in records)
    kept = run_kept_ids(args.out, records, target.config.vocab_size, args.head_size)
    tqdm.write(f"data: {len(records)} responses, {n_tok} response tokens; head keeps {kept.numel()} ids")
    draft = init_draft_from_target(target, kept, args.layers)
    draft = train_draft(draft, records, args.out, epochs=args.epochs, lr=args.lr, max_tokens=args.max_tokens,
                        warmup=args.warmup, ckpt_every=args.ckpt_every, seed=args.seed,
                        deadline=t0 + 0.97 * budget, bf16=not args.fp32, hard_deadline=t0 + budget)
    info = {"source": src, "responses": len(records), "response_tokens": n_tok, "args": vars(args),
            "minutes": round((time.time() - t0) / 60, 1)}
    path = export_draft(draft, os.path.join(args.out, "draft.safetensors"), info)
    tqdm.write(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB) in {info['minutes']} min")
    return path


if __name__ == "__main__":
    main()
