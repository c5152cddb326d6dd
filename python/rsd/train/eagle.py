"""Train the EAGLE-style draft (:mod:`rsd.engine.drafts.eagle`) for the embedded target.

    python -m rsd.train.eagle --out /work/eagle-run [--budget-minutes 90] [--threads 2]
    python -m rsd.train.eagle --out /tmp/tiny --tiny       # seconds; CI smoke test
    rsd train-eagle ...                                          # the same

Phases, each resumable (rerun the same command to continue after an interruption):

1. **data** -- per shard (one batch of prompts): the target's own samples at temperature 1
   with top-k soft labels, written by :func:`rsd.train.draft.sample_batch` exactly as for
   the independent draft (``data/shard_XXXX.pt``; ``--samples-from DIR`` reuses the shards
   of an earlier ``rsd.train.draft`` or ``train_eagle`` run), plus the target's last
   (post-norm) hidden state at every position in bfloat16 (``feat/shard_XXXX.pt``). The
   features are a by-product of the sampling forwards (``sample_batch(features=True)``,
   free); for reused shards, or with ``--teacher-forced-features``, they come from one
   teacher-forced forward per sequence (measured on this CPU: 4-10x the sampling rate in
   tokens/s, i.e. it would add 10-25% to the data time). The target runs in
   ``--gen-dtype``. Sampling stops at ``--data-frac`` of the budget.
2. **vocab** -- the restricted head's ids: chosen from the data as for the independent
   draft, or ``--kept-ids shipped`` to take the shipped draft's (useful with little data).
3. **train** -- :func:`rsd.engine.drafts.eagle.unrolled_forward` over ``--unroll`` streams (stream
   0 reads the target's features, stream k the draft's own predicted features of stream
   k-1, with the attention a depth-k tree node would have); per stream the loss is the
   bucketed KL of :func:`rsd.train.draft.distill_loss` + ``--feat-weight`` x smooth-L1
   between the predicted and the target's feature, weighted ``--step-decay ** k``.
   Optional uniform noise on the target features (``--feat-noise``). AdamW, warm-up,
   cosine decay to 10%, bfloat16 autocast where it is faster (``--precision``), ``ckpt.pt`` every ``--ckpt-every`` steps.
4. **export** -- ``eagle.safetensors`` (fp16, no token embedding; <= 25 MB for 2 layers).

``--budget-minutes`` caps the whole run as in :mod:`rsd.train.draft`.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..engine.drafts.eagle import EagleDraft, LayerTap, export_eagle, init_eagle_from_target, unrolled_forward
from .draft import EOS_ID, collate, distill_loss, generation_model, resolve_dtypes, run_kept_ids, run_training, sample_batch, start_run


# ----------------------------------------------------------------------------- data
@torch.no_grad()
def target_features(target, seqs: list[torch.Tensor], max_tokens: int = 4096, feature_layers=()) -> list[torch.Tensor]:
    """Teacher-forced last (post-norm) hidden states ``[L, H]`` bf16 for each sequence (right-padded batches);
    with ``feature_layers`` those layers' outputs first (``[L, (len(feature_layers) + 1) * H]``)."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out: list = [None] * len(seqs)
    s = 0
    while s < len(order):
        L = len(seqs[order[s]])
        e = s + 1
        while e < len(order) and len(seqs[order[e]]) * (e - s + 1) <= max_tokens:
            e += 1
        idx = order[s:e]
        S = max(len(seqs[i]) for i in idx)
        ids = torch.full((len(idx), S), EOS_ID, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, i in enumerate(idx):
            ids[b, :len(seqs[i])] = seqs[i].long()
            mask[b, :len(seqs[i])] = 1
        with LayerTap(target, feature_layers) as tap:
            h = tap.features(target.model(input_ids=ids, attention_mask=mask).last_hidden_state)
        for b, i in enumerate(idx):
            out[i] = h[b, :len(seqs[i])].to(torch.bfloat16).clone()
        s = e
    return out


def generate_eagle_data(target, prompt_ids, out_dir, *, samples_per_prompt, batch_size, max_new_tokens, topk,
                        seed, deadline, samples_from=None, stats=None, max_shards=None,
                        features_in_sampling=True, feature_layers=()) -> list[tuple[str, str]]:
    """Phase 1: ``data/shard_XXXX.pt`` (samples) + ``feat/shard_XXXX.pt`` (features); returns the complete pairs.

    With ``features_in_sampling`` new shards take their features from the sampling forwards
    themselves (free); otherwise, and for shards sampled earlier (``samples_from``), by one
    teacher-forced forward per sequence (:func:`target_features`).
    """
    data_dir, feat_dir = os.path.join(out_dir, "data"), os.path.join(out_dir, "feat")
    os.makedirs(data_dir, exist_ok=True)
    os.makedirs(feat_dir, exist_ok=True)
    feature_layers = list(stored_feature_layers(out_dir, feature_layers))  # a folder keeps its first choice
    if samples_from:
        for p in sorted(glob.glob(os.path.join(samples_from, "data", "shard_*.pt"))):
            dst = os.path.join(data_dir, os.path.basename(p))
            if not os.path.exists(dst):
                shutil.copy(p, dst)
    counts = samples_per_prompt if isinstance(samples_per_prompt, list) else [samples_per_prompt] * len(prompt_ids)
    jobs = [i for i in range(len(prompt_ids)) for _ in range(counts[i])]
    random.Random(seed).shuffle(jobs)  # same shard layout as rsd.train.draft
    shards = [sorted(jobs[s:s + batch_size], key=lambda i: len(prompt_ids[i]))
              for s in range(0, len(jobs), batch_size)]
    n = max(len(shards), len(glob.glob(os.path.join(data_dir, "shard_*.pt"))))
    n = min(n, max_shards) if max_shards else n
    stats = stats if stats is not None else {}
    stats.setdefault("sample_s", 0.0), stats.setdefault("sample_tok", 0)
    stats.setdefault("feat_s", 0.0), stats.setdefault("feat_tok", 0)
    pairs = []
    bar = tqdm(total=n, desc="data (samples + features)", unit="shard")
    for k in range(n):
        dpath, fpath = os.path.join(data_dir, f"shard_{k:04d}.pt"), os.path.join(feat_dir, f"shard_{k:04d}.pt")
        if not os.path.exists(dpath):
            if time.time() > deadline or k >= len(shards):
                tqdm.write(f"data: stopping after {k} of {n} shards (budget)")
                break
            g = torch.Generator().manual_seed(seed * 100003 + k)
            t = time.time()
            recs = sample_batch(target, [prompt_ids[i] for i in shards[k]], max_new_tokens, topk, g,
                                features=features_in_sampling, feature_layers=feature_layers)
            stats["sample_s"] += time.time() - t
            stats["sample_tok"] += sum(r["topk_ids"].shape[0] for r in recs)
            if features_in_sampling:
                feats = [r.pop("feat") for r in recs]
                torch.save(feats, fpath + ".tmp")
                os.replace(fpath + ".tmp", fpath)
            torch.save(recs, dpath + ".tmp")
            os.replace(dpath + ".tmp", dpath)
        if not os.path.exists(fpath):
            recs = torch.load(dpath)
            t = time.time()
            feats = target_features(target, [r["ids"] for r in recs], feature_layers=feature_layers)
            stats["feat_s"] += time.time() - t
            stats["feat_tok"] += sum(len(r["ids"]) for r in recs)
            torch.save(feats, fpath + ".tmp")
            os.replace(fpath + ".tmp", fpath)
        pairs.append((dpath, fpath))
        with open(os.path.join(out_dir, "data_stats.json"), "w") as f:  # cumulative over this invocation
            json.dump(stats, f)
        bar.update(1)
    bar.close()
    return pairs


def stored_feature_layers(out_dir, requested=()) -> tuple[int, ...]:
    """The extra feature layers of a run folder's ``feat/`` shards (``feat/feature_layers.json``;
    folders without it hold final features only). A new folder records ``requested``."""
    feat_dir = os.path.join(out_dir, "feat")
    path = os.path.join(feat_dir, "feature_layers.json")
    if os.path.exists(path):
        with open(path) as f:
            return tuple(json.load(f))
    if glob.glob(os.path.join(feat_dir, "shard_*.pt")):
        return ()
    os.makedirs(feat_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(list(requested), f)
    return tuple(requested)


def load_eagle_records(pairs, stored=(), wanted=None) -> list[dict]:
    """Records with their ``feat``; with ``wanted`` (a subset of the ``stored`` extra layers) only
    those layers' columns and the final feature's are kept."""
    idx = None
    if wanted is not None and tuple(wanted) != tuple(stored):
        missing = [i for i in wanted if i not in stored]
        if missing:
            raise ValueError(f"feature_layers: {missing} not among the stored feature layers {list(stored)}")
        idx = [list(stored).index(i) for i in wanted] + [len(stored)]
    recs = []
    for dp, fp in pairs:
        for r, f in zip(torch.load(dp), torch.load(fp)):
            if idx is not None:
                f = f.view(f.shape[0], len(stored) + 1, -1)[:, idx].reshape(f.shape[0], -1)
            r["feat"] = f
            recs.append(r)
    return recs


# ---------------------------------------------------------------------------- train
def collate_eagle(records, idx, kept_ids, vocab_size, hidden=None):
    """Inputs for :func:`unrolled_forward` and the per-position targets.

    Position ``i`` of the draft's sequence reads token ``ids[i]`` and the target feature
    ``F[i-1]`` (zeros at 0); its output predicts ``F[i]`` (the final, post-norm part: the last
    ``hidden`` columns when the stored features carry extra layers) and the distribution of
    ``ids[i+1]`` (stored top-k for response positions).
    """
    inp, mask, rows_b, rows_t, tk_col, tk_lp = collate(records, idx, kept_ids, vocab_size)
    B, S = inp.shape
    W = records[idx[0]]["feat"].shape[-1]
    H = hidden or W
    prev = torch.zeros((B, S, W))
    tgt = torch.zeros((B, S, H))
    for b, i in enumerate(idx):
        r = records[i]
        L = len(r["ids"]) - 1
        f = r["feat"].float()
        prev[b, 1:L] = f[:L - 1]  # features of ids[:L]; a stored feature of the last token is unused
        tgt[b, :L] = f[:L, W - H:]
    return inp, mask, prev, tgt, rows_b, rows_t, tk_col, tk_lp


def eagle_loss(draft, batch, *, unroll, feat_weight, step_decay, noise=0.0, bf16=True, detach=False):
    """Total loss and per-stream ``(kl, feat)`` values for one collated batch."""
    inp, mask, prev, tgt, rb, rt, tk_col, tk_lp = batch
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        outs = unrolled_forward(draft, inp, prev, mask, unroll, noise=noise, detach=detach, restricted=True)
    total, parts = 0.0, []
    valid = mask.bool()
    for k, (logits, feats) in enumerate(outs):
        sel = rt >= k  # stream k needs a root at t - k >= 0
        logq = torch.log_softmax(logits[rb[sel], rt[sel]].float(), -1)
        kl = distill_loss(logq, tk_col[sel], tk_lp[sel])
        fv = valid.clone()
        fv[:, :k] = False
        fl = F.smooth_l1_loss(feats.float()[fv], tgt[fv])
        w = step_decay ** k
        total = total + w * (kl + feat_weight * fl)
        parts.append((kl.item(), fl.item()))
    return total, parts


def train_eagle(draft: EagleDraft, records, out_dir, *, epochs, lr, max_tokens, warmup, ckpt_every, seed, deadline,
                unroll=2, feat_weight=1.0, step_decay=0.8, noise=0.0, bf16=True, detach=False,
                hard_deadline=None, max_steps=None, log=None) -> EagleDraft:
    """Phase 3 (:func:`rsd.train.draft.run_training`); resumes from ``out_dir/ckpt.pt``. ``log`` (a
    list) receives one dict per step."""
    kept, V = draft.kept_ids, draft.config.vocab_size
    last = {}

    def batch_loss(idx):
        batch = collate_eagle(records, idx, kept, V, draft.config.hidden_size)
        loss, last["parts"] = eagle_loss(draft, batch, unroll=unroll,
                                         feat_weight=feat_weight, step_decay=step_decay, noise=noise, bf16=bf16,
                                         detach=detach)
        return loss

    def on_step(step, loss, ema, lr_now):
        parts = last["parts"]
        if log is not None:
            log.append({"step": step, "loss": loss, "kl": [p[0] for p in parts], "feat": [p[1] for p in parts]})
        return {"loss": f"{ema:.3f}", "kl0": f"{parts[0][0]:.3f}", "kl_last": f"{parts[-1][0]:.3f}",
                "feat0": f"{parts[0][1]:.3f}"}

    return run_training(draft, records, out_dir, batch_loss, on_step, epochs=epochs, lr=lr, max_tokens=max_tokens,
                        warmup=warmup, ckpt_every=ckpt_every, seed=seed, deadline=deadline,
                        hard_deadline=hard_deadline, max_steps=max_steps, desc="train (eagle)")


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m rsd.train.eagle", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="run folder: data + feature shards, checkpoint, eagle.safetensors")
    ap.add_argument("--budget-minutes", type=float, default=90.0, help="wall-clock cap for the whole run")
    ap.add_argument("--tiny", action="store_true", help="tiny random target, few tokens: a smoke test")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data-frac", type=float, default=0.6, help="share of the budget for sampling")
    ap.add_argument("--samples-from", default=None, help="reuse data/shard_*.pt of an earlier run folder")
    ap.add_argument("--max-shards", type=int, default=None, help="sample/use at most this many shards (pilot runs)")
    ap.add_argument("--data-only", action="store_true", help="stop after phase 1 (samples + features)")
    ap.add_argument("--teacher-forced-features", action="store_true",
                    help="features by a separate teacher-forced forward instead of from the sampling forwards")
    ap.add_argument("--samples-per-prompt", type=int, default=8)
    ap.add_argument("--topic-samples", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--gen-dtype", choices=("auto", "bfloat16", "float32"), default="auto",
                    help="dtype of the target while it samples; auto: bfloat16 only where it is faster here")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--topk", type=int, default=64)
    ap.add_argument("--head-size", type=int, default=8192)
    ap.add_argument("--kept-ids", default=None,
                    help="'shipped' = the shipped independent draft's head ids, or a .pt file; default: from the data")
    ap.add_argument("--feature-layers", type=_int_list, default=(),
                    help="comma-separated target decoder layers whose outputs join the final feature (EAGLE-3 "
                         "style); a folder sampled with more layers can train on a subset of them")
    ap.add_argument("--init-from", default=None,
                    help="warm start: an eagle.safetensors to start from (e.g. the shipped draft, with "
                         "--kept-ids shipped); extra feature layers start unused")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--init", choices=("copy", "mean"), default="copy",
                    help="copy: start as f^_t = f_{t-1} (see rsd.engine.drafts.eagle.init_eagle_from_target)")
    ap.add_argument("--unroll", type=int, default=2, help="streams trained: 1 = target features only (EAGLE-1)")
    ap.add_argument("--feat-weight", type=float, default=1.0)
    ap.add_argument("--step-decay", type=float, default=0.8)
    ap.add_argument("--feat-noise", type=float, default=0.0)
    ap.add_argument("--detach", action="store_true", help="no gradient through predicted features")
    ap.add_argument("--epochs", type=float, default=10.0)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--ckpt-every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                    help="training: bfloat16 autocast or float32; auto: bf16 only where it is faster on this CPU")
    ap.add_argument("--fp32", action="store_true", help="the same as --precision fp32")
    return ap


def warm_start(draft: EagleDraft, path: str) -> str:
    """Copy the weights of an exported EAGLE draft (``eagle.safetensors``) into ``draft``: every
    tensor of the same name and shape; ``feat_proj`` (extra feature layers) keeps its init, which
    reads the final feature alone, so the warm-started draft starts as the file's draft. The
    files' kept ids and layer count must match."""
    from safetensors.torch import load_file

    sd = load_file(path)
    if not torch.equal(sd["kept_ids"].long(), draft.kept_ids):
        raise ValueError(f"--init-from {path}: its head keeps other token ids (use the same --kept-ids)")
    own = draft.state_dict()
    copied = []
    with torch.no_grad():
        for k, v in sd.items():
            if k == "kept_ids":
                continue
            if k not in own or own[k].shape != v.shape:
                raise ValueError(f"--init-from {path}: tensor {k} {tuple(v.shape)} does not fit this draft")
            own[k].copy_(v.to(own[k].dtype))
            copied.append(k)
    skipped = [k for k in own if k not in sd and k not in ("model.embed_tokens.weight", "kept_ids")]
    return f"{len(copied)} tensors from {path}" + (f"; kept their init: {skipped}" if skipped else "")


def _int_list(text):
    return tuple(int(x) for x in text.split(",") if x.strip())


def _given_kept_ids(spec, out_dir):
    """``--kept-ids``: 'shipped' (the shipped independent draft's head ids), a .pt file, or None
    (chosen from the data); not read when the run folder already holds its ids."""
    if not spec or os.path.exists(os.path.join(out_dir, "kept_ids.pt")):
        return None
    if spec == "shipped":
        from safetensors import safe_open

        from ..engine.drafts import WEIGHTS_PATH
        with safe_open(WEIGHTS_PATH, framework="pt") as f:
            return f.get_tensor("kept_ids")
    return torch.load(spec)


def main(argv=None) -> str:
    args = build_parser().parse_args(argv)
    t0, target, prompt_ids, counts, src = start_run(args, epochs=3)
    budget = args.budget_minutes * 60
    resolve_dtypes(args)
    gen_model = generation_model(target, args.gen_dtype)
    stats = {}
    pairs = generate_eagle_data(gen_model, prompt_ids, args.out, samples_per_prompt=counts,
                                batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, topk=args.topk,
                                seed=args.seed, deadline=t0 + args.data_frac * budget,
                                samples_from=args.samples_from, stats=stats, max_shards=args.max_shards,
                                features_in_sampling=not args.teacher_forced_features,
                                feature_layers=args.feature_layers)
    del gen_model
    for kind in ("sample", "feat"):
        if stats[f"{kind}_tok"]:
            tqdm.write(f"data: {kind}: {stats[f'{kind}_tok']} tokens in {stats[f'{kind}_s']:.1f} s = "
                       f"{stats[f'{kind}_tok'] / stats[f'{kind}_s']:.0f} tokens/s")
    if args.data_only:
        return ""
    records = load_eagle_records(pairs, stored_feature_layers(args.out), args.feature_layers)
    n_tok = sum(r["topk_ids"].shape[0] for r in records)
    kept = run_kept_ids(args.out, records, target.config.vocab_size, args.head_size,
                        given=_given_kept_ids(args.kept_ids, args.out))
    tqdm.write(f"data: {len(records)} responses, {n_tok} response tokens; head keeps {kept.numel()} ids")
    width = records[0]["feat"].shape[-1]
    if width != (len(args.feature_layers) + 1) * target.config.hidden_size:
        raise ValueError(f"--feature-layers {list(args.feature_layers)}: the stored features are {width} wide")
    draft = init_eagle_from_target(target, kept, args.layers, seed=args.seed, init=args.init,
                                   feature_layers=args.feature_layers)
    if args.init_from:
        tqdm.write(f"init: {warm_start(draft, args.init_from)}")
    log = []
    draft = train_eagle(draft, records, args.out, epochs=args.epochs, lr=args.lr, max_tokens=args.max_tokens,
                        warmup=args.warmup, ckpt_every=args.ckpt_every, seed=args.seed,
                        deadline=t0 + 0.97 * budget, unroll=args.unroll, feat_weight=args.feat_weight,
                        step_decay=args.step_decay, noise=args.feat_noise, bf16=not args.fp32,
                        detach=args.detach, hard_deadline=t0 + budget, max_steps=args.max_steps, log=log)
    with open(os.path.join(args.out, "train_log.jsonl"), "a") as f:
        for row in log:
            f.write(json.dumps(row) + "\n")
    info = {"source": src, "responses": len(records), "response_tokens": n_tok, "args": vars(args),
            "data_stats": stats, "minutes": round((time.time() - t0) / 60, 1)}
    path = export_eagle(draft, os.path.join(args.out, "eagle.safetensors"), info)
    tqdm.write(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB) in {info['minutes']} min")
    return path


if __name__ == "__main__":
    main()
