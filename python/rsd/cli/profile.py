"""``rsd profile``: measure (or show the cached) cost profile of this machine for a target/draft
pair -- what method="auto" chooses its trees from -- and print it: the target's forward time
against the new tokens n at two context lengths (with the padded row count where a larger
forward is cheaper), the target-only step, the draft level time against its width, and the trees
the selector would choose at a few acceptance rates. ``--plot PATH`` also draws it (PNG)."""
from __future__ import annotations

import json
import sys


def add_parser(subparsers):
    p = subparsers.add_parser("profile", help="measure and print this machine's cost profile (method auto)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="embedded", help="'embedded', a Hugging Face model id or a local path")
    p.add_argument("--draft", default="embedded-eagle", help="the draft spec, as for rsd generate ('none': target only)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--draft-dtype", default=None, choices=("float32", "float16", "bfloat16"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (part of the profile's key)")
    p.add_argument("--attention", choices=("sdpa", "eager", "rsd"), default="sdpa")
    p.add_argument("--batch", type=int, default=1, help="batch size of the profile (the batched loop)")
    p.add_argument("--temperature", type=float, default=0.0, help="for the choices shown (outside-work prior)")
    p.add_argument("--rebuild", action="store_true", help="measure again even if a cached profile exists")
    p.add_argument("--plot", default=None, metavar="PATH", help="also draw the profile to PATH (PNG)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p


def run(args) -> int:
    import torch

    from ..engine.adapter import ModelAdapter
    from ..engine.models import load_draft, load_target
    from ..engine.profile import load_or_measure, profile_path
    from ..engine.selector import scenario_choices

    if isinstance(args.batch, bool) or args.batch < 1:
        raise ValueError(f"--batch must be a positive int, got {args.batch}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive int, got {args.threads}")
        torch.set_num_threads(args.threads)
    log = (lambda msg: print(msg, file=sys.stderr))
    tgt = load_target(args.target, dtype=args.dtype, device=args.device)
    drf = None
    if args.draft != "none":
        drf = load_draft(args.draft, tgt, dtype=args.draft_dtype or args.dtype, device=args.device, log=log)
    ta = ModelAdapter(tgt.model, attention=args.attention)
    da = None if drf is None else ModelAdapter(drf.model, attention="eager" if args.attention == "eager" else "sdpa")
    prof = load_or_measure(ta, da, batch=args.batch, rebuild=args.rebuild, log=log)
    choices = scenario_choices(prof, temperature=args.temperature, batch=args.batch) if da is not None else []
    path = profile_path(prof.key)
    if args.plot:
        prof.plot(args.plot)
    if args.json:
        print(json.dumps({"path": path, "profile": prof.to_json(), "choices": choices, "plot": args.plot}))
        return 0
    print(f"cost profile: {tgt.label}" + ("" if drf is None else f" + {drf.label}") +
          f" | {prof.key['device']} | {prof.key['threads']} threads | batch {args.batch} | {args.attention}")
    print(prof.table())
    if choices:
        print("the selector's choice if the draft's first child were accepted with probability a "
              "(the second child after a rejection: 0.3, each later one half that):")
        for c in choices:
            tree = "target only" if c["config"] is None else f"{c['config']} ({c['rows']} rows)"
            print(f"  a = {c['first_child']:.1f}: {tree:28s} best tree {c['best_tree']} "
                  f"predicted {c['best_tree_speedup']:.2f}x")
    print(f"cached at {path}" + (f"; plot: {args.plot}" if args.plot else ""))
    return 0
