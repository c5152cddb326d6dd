"""Per-block time split of the decoding loop (a benchmark script, not a timed test).

For each method (ar, sd, spectr, rsd-c, rsd-s at one budget) and each prompt length, prints the
mean **thread CPU time** per block (``time.thread_time``, torch on 1 thread: robust on a shared
machine) split into: draft forwards, target forward, verify, cache (KV compaction) and
everything else, plus the share of the block spent outside model forwards. For ``ar`` it also
times project ``ar`` against Hugging Face ``model.generate`` (greedy, same target, same prompt,
attention "sdpa") per decoded token, interleaved rounds in the same process.

The parts are measured by wrapping, from the outside, the models' ``forward`` (draft / target),
the loop's verification function and its cache-compaction function, so the same script measures
an older checkout of the loop too: ``--before DIR`` runs the identical measurement on the code in
``DIR`` (``DIR`` and ``DIR/python`` first on ``PYTHONPATH``, e.g. ``git archive <rev> python
rsd_kernels | tar -x -C DIR``) in a separate process of the same run and prints both side by side.

    python bench/loop_split.py                       # embedded pair, prompts ~40/500/1500 tokens
    python bench/loop_split.py --before /tmp/main    # + the same on another checkout
    python bench/loop_split.py --draft eagle:PATH    # an EAGLE feature-level draft
    python bench/loop_split.py --tiny                # tiny offline random pair (CI: tests/test_bench_loop.py)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
METHODS = ("ar", "sd", "spectr", "rsd-c", "rsd-s")
PARTS = ("draft", "target", "verify", "cache", "other")


# ---------------------------------------------------------------- child: one implementation
class _Clock:
    """Thread-CPU-time accumulators; ``wrap`` replaces an attribute by a timed call (not nested)."""

    def __init__(self):
        self.acc = dict.fromkeys(PARTS[:-1], 0.0)
        self.active = False
        self._undo = []

    def wrap(self, owner, name, part):
        fn = getattr(owner, name)
        clock = self

        def timed(*a, **kw):
            if clock.active:  # nested in another timed part: counted there
                return fn(*a, **kw)
            clock.active = True
            t0 = time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                clock.acc[part] += time.thread_time() - t0
                clock.active = False

        setattr(owner, name, timed)
        self._undo.append((owner, name, fn))

    def reset(self):
        for k in self.acc:
            self.acc[k] = 0.0


def first_module(*names):
    """The first importable of ``names``: this layout's module (``rsd.engine.*``) or an older
    checkout's (``--before DIR``)."""
    import importlib

    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError(" / ".join(names))


def _load_pair(tiny, draft_spec="embedded"):
    import torch

    if tiny:
        sys.path.insert(0, os.path.join(REPO, "tests"))
        from eval_tiny_pair import VOCAB, tiny_llama

        return tiny_llama(2, 0), tiny_llama(1, 1), None, VOCAB
    models = first_module("rsd.engine.models", "rsd.models")
    tgt = models.load_target("embedded")
    drf = models.load_draft(draft_spec, tgt, log=lambda m: None)
    torch.set_grad_enabled(False)
    return tgt.model, drf.model, tgt.tokenizer, tgt.model.config.vocab_size


def _prompt(tokenizer, vocab, n):
    import torch

    if tokenizer is None:
        g = torch.Generator().manual_seed(n)
        return torch.randint(0, vocab - 1, (n,), generator=g).tolist()
    text = []
    with open(os.path.join(REPO, "python", "rsd", "data", "xsum.jsonl")) as f:
        for line in f:
            text.append(json.loads(line)["document"])
    ids = tokenizer(" ".join(text))["input_ids"]
    while len(ids) < n:
        ids = ids + ids
    return ids[:n]


def child(args):
    import torch

    torch.set_num_threads(1)
    import rsd_kernels

    adapter_mod = first_module("rsd.engine.adapter", "rsd.adapter")
    gen = first_module("rsd.engine.loop", "rsd.generate")  # the single-prompt loop (Decoder, _verify)
    ModelAdapter = adapter_mod.ModelAdapter

    target, draft, tok, vocab = _load_pair(args.tiny, args.draft)
    clock = _Clock()
    target_fw, draft_fw = target.forward, draft.forward
    clock.wrap(target, "forward", "target")
    clock.wrap(draft, "forward", "draft")
    if hasattr(gen, "_verify"):  # this engine
        clock.wrap(gen, "_verify", "verify")
        kvc = first_module("rsd.engine.kvcache", "rsd.kvcache")
        clock.wrap(kvc.KVBuffer, "move_tail", "cache")
    else:  # the loop before it: verify_tree inside the block, ModelAdapter.keep for both caches
        clock.wrap(rsd_kernels, "verify_tree", "verify")
        clock.wrap(adapter_mod.ModelAdapter, "keep", "cache")
    tad, dad = ModelAdapter(target), ModelAdapter(draft)
    out = {"lengths": {}}
    for L in args.lengths:
        ids = _prompt(tok, vocab, L)
        res = {}
        for method in args.methods:
            cfg_budget = None if method == "ar" else args.budget
            dec = gen.Decoder(tad, None if method == "ar" else dad, method, budget=cfg_budget,
                              temperature=args.temperature, seed=0)
            dec.prefill(ids)
            tokens = []
            for _ in range(args.warmup):
                tokens += dec.step()[0]
            clock.reset()
            total, blocks, accepted = 0.0, 0, 0
            while blocks < args.blocks and dec.fits():
                t0 = time.thread_time()
                new, st = dec.step()
                total += time.thread_time() - t0
                blocks += 1
                accepted += st.accepted
                tokens += new
            parts = {k: v / blocks for k, v in clock.acc.items()}
            parts["other"] = total / blocks - sum(parts.values())
            res[method] = {"config": None if dec.config is None else str(dec.config), "blocks": blocks,
                           "block_s": total / blocks, "tokens_per_block": (accepted + blocks) / blocks,
                           "parts": parts, "tokens": tokens}
        if not args.no_hf:
            res["hf"] = _ar_vs_hf(target, tad, gen, ids, args)
        out["lengths"][str(L)] = res
    target.forward, draft.forward = target_fw, draft_fw
    return out


def _ar_vs_hf(model, tad, gen, ids, args):
    """Project ``ar`` and Hugging Face greedy ``generate`` (attention "sdpa", DynamicCache), per decoded
    token, interleaved over ``--rounds`` rounds (min of each): ar times ``n`` steps after a prefill
    and one warm step; HF's steps are timed from a stopping criterion called after every token
    (prefill and the first step excluded)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Stamp(StoppingCriteria):
        def __init__(self):
            self.t = []

        def __call__(self, input_ids, scores, **kw):
            self.t.append(time.thread_time())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    n = args.blocks
    x = torch.tensor([ids])
    kw = dict(attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n + 2, min_new_tokens=n + 2,
              pad_token_id=model.config.eos_token_id or 0, eos_token_id=None)
    ar_s, hf_s, same = [], [], True
    for _ in range(args.rounds):
        dec = gen.Decoder(tad, None, "ar", temperature=0.0, seed=0)
        dec.prefill(ids)
        toks = dec.step()[0]
        t0 = time.thread_time()
        for _ in range(n):
            toks += dec.step()[0]
        ar_s.append((time.thread_time() - t0) / n)
        prev = model.config._attn_implementation
        model.set_attn_implementation("sdpa")
        try:
            stamp = Stamp()
            out = model.generate(x, stopping_criteria=StoppingCriteriaList([stamp]), **kw)
        finally:
            model.set_attn_implementation(prev)
        hf_s.append((stamp.t[n + 1] - stamp.t[1]) / n)
        same = same and out[0, len(ids):len(ids) + n + 1].tolist() == toks
    return {"ar_token_s": min(ar_s), "hf_token_s": min(hf_s), "same_tokens": same}


# ---------------------------------------------------------------- driver
def _run_child(impl, args, hf=True):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([impl, os.path.join(impl, "python"), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--lengths", ",".join(map(str, args.lengths)),
           "--methods", ",".join(args.methods), "--budget", str(args.budget), "--blocks", str(args.blocks),
           "--warmup", str(args.warmup), "--rounds", str(args.rounds), "--temperature", str(args.temperature)]
    if args.tiny:
        cmd.append("--tiny")
    else:
        cmd += ["--draft", args.draft]
    if args.no_hf or not hf:
        cmd.append("--no-hf")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"benchmark child for {impl} failed:\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _fmt(res, label):
    rows = []
    for L, per in res["lengths"].items():
        for m, r in per.items():
            if m == "hf":
                continue
            p = r["parts"]
            outside = 1 - (p["draft"] + p["target"]) / r["block_s"]
            rows.append(f"{label:>6} {L:>5} {m:>6} {r['config'] or '':>11} "
                        + " ".join(f"{1000 * p[k]:8.2f}" for k in PARTS)
                        + f" {1000 * r['block_s']:8.2f} {1000 * (r['block_s'] - p['draft'] - p['target']):8.2f}"
                        f" {100 * outside:6.1f}% {r['tokens_per_block']:5.2f}")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny offline random pair (tests/eval_tiny_pair.py)")
    ap.add_argument("--before", metavar="DIR", help="also measure the loop in DIR (another checkout), same run")
    ap.add_argument("--lengths", default=None, help="prompt lengths (default 40,500,1500; --tiny: 40,200)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--budget", type=int, default=10)
    ap.add_argument("--draft", default="embedded", help="draft spec of the embedded target (rsd.engine.models.load_draft: "
                    "embedded, eagle:PATH, truncated:N)")
    ap.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); > 0 samples (seed 0)")
    ap.add_argument("--blocks", type=int, default=None, help="measured blocks per method (default 8; --tiny 3)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-hf", action="store_true", help="skip the ar vs Hugging Face generate comparison")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of ar vs HF generate")
    ap.add_argument("--json", metavar="PATH", help="write all results here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.lengths = [int(x) for x in (args.lengths or ("40,200" if args.tiny else "40,500,1500")).split(",")]
    args.methods = [m for m in args.methods.split(",") if m]
    args.blocks = args.blocks or (3 if args.tiny else 8)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    results = {"now": _run_child(REPO, args)}
    if args.before:
        results["before"] = _run_child(os.path.abspath(args.before), args, hf=False)
    print(f"thread CPU ms per block (1 thread), {'tiny pair' if args.tiny else 'embedded pair'}, "
          f"{'greedy' if args.temperature == 0 else f'temperature {args.temperature}'}, "
          f"budget {args.budget}; outside = block - draft forwards - target forward")
    print(f"{'impl':>6} {'len':>5} {'method':>6} {'config':>11} " + " ".join(f"{k:>8}" for k in PARTS)
          + f" {'block':>8} {'outside':>8} {'share':>7} {'tok/b':>5}")
    for label in ("before", "now"):
        if label in results:
            print("\n".join(_fmt(results[label], label)))
    for L, per in results["now"]["lengths"].items():
        if "hf" in per:
            hf = per["hf"]
            print(f"ar vs HF generate at {L:>5} tokens (min of {args.rounds} interleaved rounds): project ar "
                  f"{1000 * hf['ar_token_s']:.2f} ms/token, HF {1000 * hf['hf_token_s']:.2f} ms/token, "
                  f"HF/ar = {hf['hf_token_s'] / hf['ar_token_s']:.2f} (same tokens: {hf['same_tokens']})")
    if "before" in results:
        for L, per in results["now"]["lengths"].items():
            for m, r in per.items():
                if m == "hf":
                    continue
                b = results["before"]["lengths"][L][m]
                print(f"{m:>6} at {L:>5}: block {1000 * b['block_s']:.1f} -> {1000 * r['block_s']:.1f} ms "
                      f"({b['block_s'] / r['block_s']:.2f}x); same tokens: {b['tokens'] == r['tokens']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
