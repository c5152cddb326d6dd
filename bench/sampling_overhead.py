"""The work outside the model forwards of a decoding block (sampling, verification, bookkeeping), at
temperature 1 and 0, with the C++ Philox (rsd_kernels.cpu_philox) and with the NumPy one, side by side.

    python bench/sampling_overhead.py                    # embedded pair, EAGLE draft, 1 thread
    python bench/sampling_overhead.py --tiny             # tiny random pair (CI smoke run)

Per configuration: blocks of the real loop (``rsd.engine.loop.Decoder``) from one prefill (snapshot /
restore, the same seeds for both Philox paths); thread CPU time of the whole block and of the model
forwards (forward hooks on both models); "outside" = block - forwards, and its share of the block.
Thread CPU time with one torch thread: the numbers hold on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CONFIGS = [("rsd-s", "2x5"), ("rsd-s", "2x2"), ("rsd-c", "2,1"), ("sd", "4"), ("spectr", "2x2")]


class ForwardClock:
    """Thread CPU seconds spent inside the forwards of the given modules."""

    def __init__(self, *modules):
        self.s = 0.0
        self._t0 = None
        self.handles = []
        for m in modules:
            self.handles.append(m.register_forward_pre_hook(self._pre))
            self.handles.append(m.register_forward_hook(self._post))

    def _pre(self, *a):
        self._t0 = time.thread_time()

    def _post(self, *a):
        self.s += time.thread_time() - self._t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--temperatures", default="1,0")
    ap.add_argument("--configs", default=None, help="e.g. 'rsd-s:2x5;sd:4'")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from rsd.engine.adapter import ModelAdapter
    from rsd.engine.loop import Decoder
    from rsd_kernels import cpu_philox

    if args.tiny:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
        target, draft = LlamaForCausalLM(cfg).eval(), LlamaForCausalLM(cfg).eval()
        ids = list(range(1, 30))
    else:
        from rsd.engine.models import load_draft, load_target, prompt_ids

        tgt = load_target("embedded")
        target = tgt.model
        draft = load_draft("embedded-eagle", tgt, log=lambda m: None).model
        ids = prompt_ids(tgt.tokenizer, "Explain why the sky is blue.", True)
    configs = CONFIGS if args.configs is None else [tuple(c.split(":")) for c in args.configs.split(";")]
    clock = ForwardClock(target, draft)
    ta, da = ModelAdapter(target), ModelAdapter(draft)
    ext = cpu_philox.extension()
    rows = []
    for T in (float(t) for t in args.temperatures.split(",")):
        for method, config in configs:
            dec = Decoder(ta, da, method, config, temperature=T, seed=0)
            dec.prefill(ids)
            dec.step()  # warm-up
            snap = dec.snapshot()
            res = {}
            for name, use in (("cpp", ext), ("numpy", None)):
                if name == "cpp" and ext is None:
                    continue
                cpu_philox._state["ext"] = use
                block = fwd = 0.0
                for i in range(args.blocks):
                    dec.restore(snap, seed=i)
                    f0, t0 = clock.s, time.thread_time()
                    dec.step()
                    block += time.thread_time() - t0
                    fwd += clock.s - f0
                n = args.blocks
                res[name] = {"block_ms": block / n * 1e3, "forwards_ms": fwd / n * 1e3,
                             "outside_ms": (block - fwd) / n * 1e3, "outside_share": (block - fwd) / block}
            cpu_philox._state["ext"] = ext
            rows.append({"method": method, "config": config, "temperature": T, **res})
            line = " | ".join(f"{k}: outside {v['outside_ms']:.1f} ms of {v['block_ms']:.1f} ({100 * v['outside_share']:.1f}%)"
                              for k, v in res.items())
            print(f"T={T:g} {method} {config}: {line}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "cpp_available": ext is not None,
                       "cpp_unavailable_reason": cpu_philox.unavailable_reason()}, f, indent=1)


if __name__ == "__main__":
    main()
