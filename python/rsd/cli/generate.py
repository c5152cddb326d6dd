"""``rsd generate "prompt"``: decode one prompt, streaming the text as blocks are committed, then a
one-line summary (``--prompts-file``: a batch of prompts decoded together; each row and the total
throughput at the end).

The text goes to stdout, flushed per block (:mod:`rsd.cli.stream`; on a terminal, accepted draft
tokens in green unless ``--no-color`` or ``NO_COLOR``); which models, device and dtype to stderr;
the libraries' progress bars and warnings only with ``--verbose`` (:mod:`rsd.cli.console`).

The summary line (a real one: embedded pair, greedy, 1 CPU thread, ``--max-new-tokens 48``)::

    rsd-s 2x5 (budget 10) | 48 tokens | block efficiency 2.09 | 13.0 tok/s | target alone 17.0 tok/s | speed-up 0.77x

``speed-up`` is the method's decoding token rate over target-only autoregressive decoding
(``ar``) of the same prompt with the same sampling settings, run in the same process right
after it (``--no-baseline`` skips it), on models the first run has warmed (plus a two-token warm-up
of its own). Rates exclude the prefill, which absorbs most of the first call's one-time costs (the
streamed run gets no warm-up, so that its first token comes as early as possible).
"""
from __future__ import annotations

import json
import sys

from rsd_kernels.methods import METHODS, VERIFIERS

from ..engine.configs import DEFAULT_VERIFIER

from .stream import LEGEND, BlockPrinter, use_color

DEFAULT_BUDGET = 10
# explicit tree flags: flag -> (method, metavar)
CONFIG_FLAGS = {"chain": ("sd", "L"), "kxl": ("spectr", "KxL"), "branching": ("rsd-c", "b1,b2,.."),
                "beam": ("rsd-s", "WxL")}


def add_parser(subparsers):
    p = subparsers.add_parser("generate", help="generate text with speculative decoding",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("prompt", nargs="?", default=None,
                   help="the prompt text (a user turn when the target has a chat template)")
    p.add_argument("--prompts-file", default=None, metavar="PATH",
                   help="decode a batch: one prompt per line, or JSONL (a JSON string or an object with a "
                        "'prompt' field per line); prints each row and the per-row and total throughput")
    p.add_argument("--method", choices=("ar",) + METHODS + ("auto",), default=None,
                   help="decoding method (default auto: before every block the tree -- or target-only decoding -- "
                        "with the highest predicted tokens/s on this machine; or the method of an explicit tree flag)")
    p.add_argument("--budget", type=int, default=None,
                   help=f"draft tokens verified per target call (default {DEFAULT_BUDGET}); the method's default "
                        "configuration for it is used unless a tree flag gives one. With --method auto: the most "
                        "draft tokens of the trees it weighs (default: the node cap of the cost profile)")
    for flag, (method, metavar) in CONFIG_FLAGS.items():
        p.add_argument(f"--{flag}", metavar=metavar, default=None, help=f"explicit {method} tree")
    p.add_argument("--target", default="embedded", help="'embedded' (SmolLM2-135M-Instruct GGUF), a Hugging Face "
                   "model id or a local path")
    p.add_argument("--draft", default="embedded-eagle", help="'embedded-eagle' (default: the shipped EAGLE "
                   "feature-level draft), 'embedded' (the shipped independent draft), 'eagle:PATH' (an eagle.safetensors), "
                   "'truncated:N' (stand-in: the target's first N layers + head), a model id or a local path")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attention", choices=("sdpa", "eager", "rsd"), default="sdpa",
                   help="verification attention: transformers with a 4D tree mask (sdpa/eager) or "
                        "rsd_kernels.tree_attention (rsd)")
    p.add_argument("--backend", default="auto", help="rsd_kernels backend: auto, torch, triton, cuda")
    p.add_argument("--verifier", choices=VERIFIERS, default=DEFAULT_VERIFIER,
                   help=f"tree verifier (default {DEFAULT_VERIFIER}): rrs = token-level recursive rejection sampling "
                        "(SpecTr: k-sequential on its i.i.d. chains), traversal = Traversal Verification (SpecTr's "
                        "chains merged into a prefix tree); both exact, the same under greedy decoding")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--draft-dtype", default=None, choices=("float32", "float16", "bfloat16"),
                   help="the draft's dtype (default: --dtype). bfloat16 makes the embedded draft's step "
                        "~15%% cheaper on CPUs with AVX512-BF16 (see its model card); the output "
                        "distribution stays the target's")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-chat-template", action="store_true", help="feed the prompt text as is")
    p.add_argument("--no-baseline", action="store_true", help="skip the target-only run (no speed-up)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--no-color", action="store_true", help="no colours in the streamed text (also: NO_COLOR=1; "
                   "colours are only used on a terminal)")
    p.add_argument("--verbose", action="store_true", help="show the libraries' progress bars and warnings")
    return p


def method_and_config(args):
    """(method, config text or None, budget or None) from the flags; ValueError on conflicts."""
    given = [(f, getattr(args, f)) for f in CONFIG_FLAGS if getattr(args, f) is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one tree flag, got {', '.join('--' + f for f, _ in given)}")
    method = args.method
    if given:
        flag, text = given[0]
        implied = CONFIG_FLAGS[flag][0]
        if method is not None and method != implied:
            raise ValueError(f"--{flag} is a {implied} tree but --method is {method}")
        return implied, text, args.budget
    method = method or "auto"
    if method == "ar":
        return method, None, None
    if method == "auto":
        return method, None, args.budget
    return method, None, DEFAULT_BUDGET if args.budget is None else args.budget


def auto_head(blocks) -> str:
    """``auto [rsd-c 2,1 x12, sd 2 x5, target only x3]``: the trees method="auto" ran, most used first."""
    from collections import Counter

    n = Counter("target only" if b.choice is None or b.choice.config is None else str(b.choice.config)
                for b in blocks)
    return "auto [" + ", ".join(f"{c} x{k}" for c, k in n.most_common(4)) + (", ..." if len(n) > 4 else "") + "]"


def summary_line(res, baseline) -> str:
    head = auto_head(res.blocks) if res.method == "auto" else (
        "ar (target only)" if res.config is None else f"{res.config} (budget {res.config.budget})")
    parts = [head, f"{len(res.tokens)} tokens", f"block efficiency {res.block_efficiency:.2f}",
             f"{res.tokens_per_s:.1f} tok/s"]
    if baseline is not None:
        parts.append(f"target alone {baseline.tokens_per_s:.1f} tok/s")
        parts.append(f"speed-up {res.tokens_per_s / baseline.tokens_per_s:.2f}x" if baseline.tokens_per_s else
                     "speed-up n/a")
    return " | ".join(parts)


def read_prompts_file(path) -> list[str]:
    """Prompts of ``--prompts-file``: one per non-empty line; a line that parses as JSON must be a
    string or an object with a ``"prompt"`` string (JSONL)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            text = line.rstrip("\n")
            if not text.strip():
                continue
            if text.lstrip()[:1] in ("{", '"'):
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError:
                    obj = text
                if isinstance(obj, dict):
                    obj = obj.get("prompt")
                    if not isinstance(obj, str):
                        raise ValueError(f"{path}:{n}: a JSON object needs a 'prompt' string")
                text = obj
            out.append(text)
    if not out:
        raise ValueError(f"{path} holds no prompt")
    return out


def run(args) -> int:
    from ..engine.configs import budget_cost
    from .checks import check_generate

    method, cfg_text, budget = method_and_config(args)
    cfg = check_generate(args, method, cfg_text, budget)  # every check that needs no model, before loading
    texts = None if args.prompts_file is None else read_prompts_file(args.prompts_file)
    if budget_cost(cfg):
        print(f"note: {budget_cost(cfg)}", file=sys.stderr)
    from .console import library_output

    with library_output(args.verbose) as log:
        return _run(args, method, cfg, texts, log, budget)


def _run(args, method, cfg, texts, log, budget=None) -> int:
    """``rsd generate`` after its checks: load, decode (streamed), report; ``log`` writes to stderr."""
    import torch

    from ..engine.generate import generate
    from ..engine.models import load_draft, load_target, prompt_ids

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    tgt = load_target(args.target, dtype=args.dtype, device=args.device, log=log)
    log(f"target: {tgt.label} | {args.device} {args.dtype}")
    drf = None
    if method != "ar":
        drf = load_draft(args.draft, tgt, dtype=args.draft_dtype or args.dtype, device=args.device, log=log)
        log(f"draft: {drf.label} | {args.device} {args.draft_dtype or args.dtype}")
    if texts is not None:
        return run_batch(args, tgt, drf, texts, method, cfg, budget)
    ids = prompt_ids(tgt.tokenizer, args.prompt, not args.no_chat_template)
    common, target_adapter, draft_adapter = _loop_setup(args, tgt, drf)
    auto = _auto_args(method, budget, target_adapter, draft_adapter, log)
    # No warm-up run before the streamed one (it would delay the first token by a prefill and a block):
    # the first call's one-time costs (~0.1 s CPU) fall mostly in the prefill, which the rates exclude.
    stream = None  # --json stays quiet; else the text streams to stdout block by block
    if not args.json:
        stream = BlockPrinter(tgt.tokenizer, sys.stdout, color=use_color(sys.stdout, args.no_color))
        if stream.color and method != "ar":
            log(LEGEND)
    res = generate(target_adapter, draft_adapter, ids, method, cfg, on_block=stream, **common, **auto)
    if stream is not None:
        stream.finish()
    baseline = None
    if not args.no_baseline and method != "ar":
        generate(target_adapter, None, ids, "ar", **dict(common, max_new_tokens=2))  # untimed warm-up
        baseline = _with_progress(lambda cb: generate(target_adapter, None, ids, "ar", progress=cb, **common),
                                  args, "ar (baseline)")
    text = tgt.tokenizer.decode(res.tokens, skip_special_tokens=True)
    line = summary_line(res, baseline)
    if args.json:
        out = {"prompt": args.prompt, "text": text, "target": tgt.label, "draft": None if drf is None else drf.label,
               "verifier": args.verifier, "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "summary": line,
               "result": res.to_dict(), "baseline": None if baseline is None else baseline.to_dict(),
               "speedup": (res.tokens_per_s / baseline.tokens_per_s) if baseline and baseline.tokens_per_s else None}
        print(json.dumps(out))
    else:
        print(line)  # the text has streamed above it
    return 0


def _auto_args(method, budget, target_adapter, draft_adapter, log, batch=None) -> dict:
    """method="auto": its node cap and (one prompt) the cost profile, measured here at first use with a note."""
    if method != "auto":
        return {}
    from ..engine.profile import cached_profile, load_or_measure

    if batch is not None:  # the batched loop loads a profile per batch size itself
        return {"budget": budget}
    if cached_profile(target_adapter, draft_adapter) is None:
        log("measuring this machine's cost profile for method auto (first use; cached for later runs)")
    return {"budget": budget, "profile": load_or_measure(target_adapter, draft_adapter, log=log)}


def _loop_setup(args, tgt, drf):
    """The generate() keyword arguments of the command line and both models' adapters (the draft's
    forwards take SDPA unless the eager path is asked for)."""
    from ..engine.adapter import ModelAdapter
    from ..engine.models import eos_ids

    common = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                  max_new_tokens=args.max_new_tokens, seed=args.seed, eos_token_id=eos_ids(tgt.tokenizer, tgt.model),
                  attention=args.attention, backend=args.backend, verifier=args.verifier)
    target_adapter = ModelAdapter(tgt.model, attention=args.attention, kernel_backend=args.backend)
    draft_adapter = None if drf is None else ModelAdapter(drf.model, attention="eager" if args.attention == "eager"
                                                          else "sdpa", kernel_backend=args.backend)
    return common, target_adapter, draft_adapter


def run_batch(args, tgt, drf, texts, method, cfg, budget=None) -> int:
    """``--prompts-file``: one batched run (and the batched target-only baseline)."""
    from ..engine.generate import generate
    from ..engine.models import prompt_ids

    batch = [prompt_ids(tgt.tokenizer, t, not args.no_chat_template) for t in texts]
    common, target_adapter, draft_adapter = _loop_setup(args, tgt, drf)
    auto = _auto_args(method, budget, target_adapter, draft_adapter, log=None, batch=len(batch))
    run_ar = not args.no_baseline and method != "ar"
    warm = dict(common, max_new_tokens=2)
    generate(target_adapter, draft_adapter, [batch[0]], method, cfg, **warm, **auto)  # untimed warm-up
    if run_ar and draft_adapter is not None:
        generate(target_adapter, None, [batch[0]], "ar", **warm)
    total = args.max_new_tokens * len(batch)
    res = _with_progress(lambda cb: generate(target_adapter, draft_adapter, [list(b) for b in batch], method, cfg,
                                             progress=cb, **common, **auto), args, method, total)
    base = None
    if run_ar:
        base = _with_progress(lambda cb: generate(target_adapter, None, [list(b) for b in batch], "ar", progress=cb,
                                                  **common), args, "ar (baseline)", total)
    head = auto_head(res.blocks) if method == "auto" else (
        "ar (target only)" if cfg is None else f"{cfg} (budget {cfg.budget})")
    total_line = (f"batch of {len(batch)} | {head} | {res.num_tokens} tokens in {res.decode_s:.2f} s | "
                  f"{res.tokens_per_s:.1f} tok/s total")
    if base is not None:
        total_line += f" | target alone (batched) {base.tokens_per_s:.1f} tok/s"
        total_line += (f" | speed-up {res.tokens_per_s / base.tokens_per_s:.2f}x" if base.tokens_per_s else
                       " | speed-up n/a")
    rows = []
    for i, (text, r) in enumerate(zip(texts, res.rows)):
        rows.append({"prompt": text, "text": tgt.tokenizer.decode(r.tokens, skip_special_tokens=True),
                     "summary": (f"row {i} | {len(r.tokens)} tokens | block efficiency {r.block_efficiency:.2f} | "
                                 f"{r.tokens_per_s:.1f} tok/s | {r.stop_reason}"),
                     "result": r.to_dict()})
    if args.json:
        print(json.dumps({"target": tgt.label, "draft": None if drf is None else drf.label, "batch": len(batch),
                          "verifier": args.verifier, "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                          "summary": total_line, "tokens_per_s": res.tokens_per_s, "num_tokens": res.num_tokens,
                          "decode_s": res.decode_s, "prefill_s": res.prefill_s, "rows": rows,
                          "baseline_tokens_per_s": None if base is None else base.tokens_per_s,
                          "speedup": (res.tokens_per_s / base.tokens_per_s) if base and base.tokens_per_s else None}))
    else:
        for row in rows:
            print(f"--- {row['summary']}")
            print(row["text"])
        print(total_line)
    return 0


PROGRESS_MIN_TOKENS = 32  # --verbose: a progress bar (on stderr, when it is a terminal) from this many tokens on


def _with_progress(fn, args, label, total=None):
    """``fn(progress)``: with ``--verbose``, under a progress bar (the batch and the baseline; the
    streamed run shows its text instead)."""
    if args.json or not args.verbose or args.max_new_tokens < PROGRESS_MIN_TOKENS:
        return fn(None)
    from tqdm import tqdm

    with tqdm(total=total or args.max_new_tokens, desc=label, unit="tok", file=sys.stderr, disable=None, leave=False) as bar:
        return fn(bar.update)
