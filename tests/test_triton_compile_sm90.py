"""Every Triton kernel compiles for sm_90 (H100/H200) on this machine, without a GPU -- in the variant
the runtime actually launches.

``bench/sm90.py`` runs the real launchers on ``meta`` tensors and records each launch as Triton's JIT
binder sees it (signature, constexprs, the runtime's specialisation: 16-byte aligned pointers,
integers divisible by 16, integers equal to 1 made constexpr, ``do_not_specialize`` honoured, and
the options), then ``triton.compile`` builds exactly those variants for ``GPUTarget("cuda", 90, 32)``:
TTIR, TTGIR, LLVM IR, PTX and ptxas (shipped in the triton wheel) to a cubin. An error only the GPU
compiler would see fails here; and the checks below read the compiled code:

* no register spills;
* the attention kernel fits ``CTAS_PER_SM`` programs per SM (the launch plan's one-wave rule assumes
  it) and its K/V loop is software-pipelined (``LDGSTS`` = cp.async in the SASS);
* no double-precision instruction in the sampling kernels and in verification for fp16/bf16/fp32
  logits (greedy compares in float32; the noise takes float32 logs).

Compilation runs in a subprocess: the interpreter patches ``triton.language`` in this process.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Shapes whose launches are compiled: the review's (bench/roofline.py) and small / odd ones.
FAMILIES = {
    "attention": [("tree_attention", dict(B=1, Hq=32, Hkv=8, T=31, D=128, prefix=4096)),
                  ("tree_attention", dict(B=1, Hq=32, Hkv=32, T=31, D=128, prefix=16384)),
                  ("tree_attention", dict(B=8, Hq=32, Hkv=32, T=31, D=128, prefix=4096)),
                  ("tree_attention", dict(B=2, Hq=4, Hkv=4, T=16, D=64, prefix=700, dtype="fp16")),
                  ("tree_attention", dict(B=1, Hq=6, Hkv=2, T=5, D=64, prefix=300, dtype="fp32")),
                  ("tree_attention", dict(B=1, Hq=4, Hkv=4, T=1, D=256, prefix=5000, dtype="fp16"))],
    "verify": [("verify_tree", dict(mode="rrs", B=1, V=32000)), ("verify_tree", dict(mode="rrs", B=64, V=128256)),
               ("verify_tree", dict(mode="kseq", B=1, V=32000, dtype="fp32")),
               ("verify_tree", dict(mode="kseq", B=64, V=32000)),
               ("verify_tree", dict(mode="greedy", B=1, V=32000)),
               ("verify_tree", dict(mode="greedy", B=64, V=128256, dtype="fp32")),
               ("verify_tree", dict(mode="rrs", B=2, V=1000, dtype="fp64"))],
    "traversal": [("verify_tree", dict(mode="traversal", B=1, V=32000)),
                  ("verify_tree", dict(mode="traversal", B=64, V=128256)),
                  ("verify_tree", dict(mode="traversal", B=2, V=1000, dtype="fp64"))],
    "sampling": [("sample_without_replacement", dict(R=64, V=32000, k=4)),
                 ("sample_without_replacement", dict(R=30, V=32000, k=4, dtype="fp32")),
                 ("sample_without_replacement", dict(R=4, V=1000, k=64, dtype="fp16")),
                 ("sample_without_replacement", dict(R=2, V=500, k=3, dtype="fp64")),
                 ("stochastic_beam_step", dict(B=1, N=6, V=32000, W=6))],
}

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, "bench")
    import sm90
    seen = set()
    for op, shape in json.loads(sys.argv[1]):
        for launch in sm90.launches_at(op, shape):
            if launch.key in seen:
                continue
            seen.add(launch.key)
            try:
                r = sm90.compile_launch(launch)
            except Exception:
                print("FAILED", launch.name, op, shape, file=sys.stderr)
                raise
            out = {k: v for k, v in r.items() if k not in ("ptx", "sass", "ttgir")}
            out.update(op=op, shape=shape, fp64=len(sm90.fp64_ops(r["ptx"])), ldgsts=r["sass"].count("LDGSTS"),
                       constexprs={str(k): str(v) for k, v in launch.constexprs.items()})
            print("RESULT", json.dumps(out), flush=True)
    """
)


def _compile(family):
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(FAMILIES[family])], env=env, capture_output=True,
                         text=True, timeout=900, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-4000:]
    return [json.loads(line[len("RESULT "):]) for line in res.stdout.splitlines() if line.startswith("RESULT ")]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_launched_variants_compile_for_sm90(family):
    from rsd_kernels.attention.triton_kernel import CTAS_PER_SM

    results = _compile(family)
    for r in results:
        print(r["kernel"], r["shape"], "regs", r["regs"], "spill", r["spill_bytes"], "smem", r["smem"],
              "ctas/SM", r["ctas_per_sm"], "fp64", r["fp64"], "LDGSTS", r["ldgsts"])
    assert results
    names = {r["kernel"] for r in results}
    want = {"attention": {"_tree_attention_kernel", "_combine_kernel"},
            "verify": {"_node_stats_kernel", "_verify_walk_kernel", "_residual_sample_kernel", "_residual_merge_kernel"},
            "traversal": {"_node_stats_kernel", "_traversal_walk_kernel", "_traversal_sample_kernel",
                          "_residual_merge_kernel"},
            "sampling": {"_topk_partial_kernel", "_sample_merge_kernel", "_beam_merge_kernel"}}[family]
    assert names == want, names
    for r in results:
        assert r["spill_bytes"] == 0, r
        assert r["ctas_per_sm"] >= 1, r
        if family == "attention" and r["kernel"] == "_tree_attention_kernel":
            assert r["ctas_per_sm"] >= CTAS_PER_SM, r  # the one-wave plan counts on it
            if int(r["shape"]["prefix"]) >= 1024:
                assert r["ldgsts"] > 0, r  # K/V tiles loaded asynchronously (pipelined)
        if family in ("verify", "traversal", "sampling") and r["shape"].get("dtype", "bf16") != "fp64":
            assert r["fp64"] == 0, r  # no double precision in sampling, greedy or the noise
