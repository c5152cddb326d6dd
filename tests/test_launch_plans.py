"""Launch plans of the Triton kernels, checked on the CPU.

* Grid plans (programs per wave of an H200's 132 SMs): tree attention's split-KV fills one wave and
  never spills into a second one; the vocabulary-parallel sampling and verification grids give
  every SM work when the shape allows it.
* A fixed number of compiled variants over a sweep: the prefix growing during a generation, new
  steps (Philox offsets), seeds and tree sizes reuse the kernels the first call compiled
  (recorded through Triton's own JIT binder, bench/sm90.py, in a subprocess without the interpreter).
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import triton

from rsd_kernels.attention import triton_kernel as attn
from rsd_kernels.sampling import triton_kernel as samp
from rsd_kernels.verify import triton_kernel as ver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMS = 132


def test_attention_split_kv_fills_one_wave():
    slots = SMS * attn.CTAS_PER_SM
    for B in (1, 2, 4, 8, 16, 64):
        for Hq, Hkv in ((32, 32), (32, 8), (64, 8), (32, 1), (8, 8)):
            for T in (1, 8, 31, 64):
                for prefix in (0, 100, 512, 4096, 16384, 65536):
                    p = attn.launch_plan(B, Hq, Hkv, T, 128, prefix + T, SMS)
                    base = B * Hkv * p["m_blocks"]
                    M = (Hq // Hkv) * T
                    assert 1 <= p["num_splits"] <= attn.MAX_SPLITS
                    if base <= slots:
                        assert p["programs"] <= slots, (B, Hq, Hkv, T, prefix, p)  # one wave, no tail
                    else:
                        assert p["num_splits"] == 1
                    if p["num_splits"] > 1:  # splits only where each keeps enough keys
                        assert p["split_len"] >= max(attn.MIN_KEYS_PER_SPLIT, 4 * M) - p["block_n"], p
                        assert (p["num_splits"] - 1) * p["split_len"] < prefix
    # the review's shapes: the old rule (ceil(2 * SMs / CTAs) splits) made 1.45-2 waves of these
    for shape, splits in (((1, 32, 8, 31, 128, 16384 + 31), 16), ((1, 32, 32, 31, 128, 4096 + 31), 8),
                          ((8, 32, 8, 31, 128, 4096 + 31), 2)):
        p = attn.launch_plan(*shape, SMS)
        assert p["num_splits"] == splits and p["programs"] <= slots, p


def test_sampling_grid_gives_every_sm_work():
    for R in (1, 4, 30, 64, 256):
        for V in (1000, 32000, 49152, 128256):
            for k in (1, 4, 64):
                p = samp.launch_plan(R, V, k, SMS)
                assert samp.MIN_BLOCK_V <= p["BLOCK_V"] <= samp.MAX_BLOCK_V or p["BLOCK_V"] >= V
                assert p["NB"] == triton.cdiv(V, p["BLOCK_V"]) and p["programs"] == R * p["NB"]
                if R * triton.cdiv(V, samp.MIN_BLOCK_V) >= 2 * SMS:
                    assert p["programs"] >= 2 * SMS, (R, V, p)  # at least two programs per SM
    p = samp.launch_plan(64, 32000, 4, SMS)
    assert p["programs"] == 512 and p["BLOCK_V"] == 4096  # the review's shape: 64 of 132 SMs before


def test_verify_grids_give_every_sm_work():
    for B in (1, 8, 64):
        for V in (32000, 128256):
            for mode in ("rrs", "kseq", "greedy"):
                for nbytes in (2, 4):
                    p = ver.launch_plan(B, 31, V, mode, nbytes, SMS)
                    assert p["pre"] == (B * 31 * V * nbytes * (1 if mode == "greedy" else 2) <= ver.PRE_MAX_BYTES)
                    if p["pre"]:
                        assert p["programs"]["node_stats"] >= 2 * SMS
                    if mode != "greedy" and B * triton.cdiv(V, 1024) >= 2 * SMS:
                        assert p["programs"]["residual_sample"] >= 2 * SMS, p
    p = ver.launch_plan(1, 31, 32000, "rrs", 2, SMS)  # the review's B = 1 case: one program before
    assert p["pre"] and p["programs"]["node_stats"] >= 2 * SMS and p["programs"]["residual_sample"] == 32


_SWEEP = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, "bench")
    import sm90
    keys = {}
    def add(config, launches):
        for l in launches:
            keys.setdefault(config + ":" + l.name, set()).add(l.key)
    for prefix in range(0, 8193, 97):  # a generation's prefix growing: B = 1 GQA and MHA, B = 8
        add("gqa", sm90.attention_launches(1, 32, 8, 31, 128, prefix))
        add("mha", sm90.attention_launches(1, 32, 32, 31, 128, prefix, capacity=8192 + 64))
        add("b8", sm90.attention_launches(8, 32, 8, 16, 128, prefix))
    for step in range(40):  # new steps (offsets), seeds
        for mode in ("rrs", "kseq", "greedy"):
            add(mode, sm90.verify_launches(mode, 2, 32000, T=31, seed=7 * step + 1, offset=step))
        add("sample", sm90.sampling_launches(30, 32000, 4, seed=step + 1, offset=step))
        add("beam", sm90.beam_launches(1, 4, 32000, 4, seed=step + 1, offset=step))
    print(json.dumps({k: len(v) for k, v in keys.items()}))
    """
)


@pytest.mark.slow
def test_fixed_number_of_compiles_over_a_sweep():
    """Over a prefix sweep 0..8192 the attention kernel of a model has 2 variants (one split, or
    several: IS_SPLIT) and the combine kernel 1 -- not one per split count and per S % 16 as before;
    40 decoding steps (offsets, seeds) compile each verification and sampling kernel once."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", _SWEEP], env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    counts = json.loads(res.stdout.strip().splitlines()[-1])
    print(counts)
    for config in ("gqa", "mha", "b8"):
        assert counts.pop(f"{config}:_tree_attention_kernel") == 2
        assert counts.pop(f"{config}:_combine_kernel") == 1
    assert len(counts) == 4 + 4 + 2 + 2 + 2  # rrs, kseq: 4 kernels each; greedy: 2; sample: 2; beam: 2
    assert all(n == 1 for n in counts.values()), counts
