"""The cost profile of method="auto" on this device at the seed's shape, and the trees the selector
would choose there (bench/gpu_check.sh runs it on a GPU's first run).

    python bench/auto_profile.py --out DIR                 # Llama-2-7B-shaped target, 115M draft (bf16, cuda)
    python bench/auto_profile.py --tiny --device cpu --out DIR    # tiny shapes (CI, gpu_check dry run)

Random-weight models built on the device (``bench/e2e_loop.py``'s shapes; the cost of a forward does
not depend on the weights). For each batch size: the profile (``rsd.engine.profile.measure``: target
forward time against n new tokens at two contexts, target-only step, draft level time against width),
printed as a table with the padded row counts, then the selector's choice if the draft's first child
were accepted with probability 0.2 .. 0.9 (``rsd.engine.selector.scenario_choices``). JSON: DIR/auto_profile.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--dtype", default=None, help="default bfloat16 (float32 with --tiny)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--time-budget-s", type=float, default=None, help="no batch size starts after this")
    args = ap.parse_args(argv)
    import torch

    from e2e_loop import build_model
    from rsd.engine.adapter import ModelAdapter
    from rsd.engine.profile import measure, profile_key
    from rsd.engine.selector import scenario_choices

    t0 = time.perf_counter()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype or ("float32" if args.tiny else "bfloat16"))
    tshape, dshape = ("tiny-target", "tiny-draft") if args.tiny else ("llama2-7b", "draft-115m")
    target, draft = build_model(tshape, device, dtype), build_model(dshape, device, dtype)
    ta, da = ModelAdapter(target), ModelAdapter(draft)
    dev_name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print(f"auto profile: target {tshape}, draft {dshape}, {dtype}, {dev_name}; models built in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    out = {"schema": "rsd-auto-profile/1", "target": tshape, "draft": dshape, "device": dev_name,
           "dtype": str(dtype), "profiles": {}}
    for b in (int(x) for x in args.batches.split(",")):
        if args.time_budget_s is not None and time.perf_counter() - t0 > args.time_budget_s:
            print(f"batch {b}: skipped (time budget)")
            continue
        prof = measure(ta, da, batch=b, repeats=args.repeats)
        prof.key = profile_key(ta, da, batch=b)
        print(f"\n== batch {b}\n{prof.table()}")
        choices = {}
        for T in (0.0, 1.0):
            choices[f"T={T:g}"] = scenario_choices(prof, temperature=T, batch=b)
        print("the selector's choice if the first child were accepted with probability a "
              "(the second child after a rejection: 0.3, each later one half that):")
        for key, rows in choices.items():
            for c in rows:
                tree = "target only" if c["config"] is None else f"{c['config']} ({c['rows']} rows)"
                print(f"  {key} a = {c['first_child']:.1f}: {tree:28s} best tree {c['best_tree']} "
                      f"(predicted {c['best_tree_speedup']:.2f}x)")
        out["profiles"][str(b)] = {"profile": prof.to_json(), "choices": choices}
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, "auto_profile.json"), "w") as f:
                json.dump(out, f, indent=1)
    print(f"auto profile done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
