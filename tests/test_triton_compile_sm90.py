"""Every Triton kernel compiles for sm_90 (H100) on this machine, without a GPU.

``triton.compile`` with a CUDA ``GPUTarget`` runs the whole pipeline (TTIR, TTGIR, LLVM IR,
PTX, and ptxas -- shipped in the triton wheel -- to a cubin), so an error that only the GPU
compiler would see (types that diverge between branches, unsupported ops, register-file
blow-ups ptxas rejects) fails here instead of on the first GPU run. The interpreter
(``TRITON_INTERPRET=1``) does not catch those. Compilation runs in a subprocess: the
interpreter patches ``triton.language`` in this process.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Specs: (module, kernel, signature, constexprs, num_warps), one per variant we ship.
_F = {"fp16": "*fp16", "bf16": "*bf16", "fp32": "*fp32", "fp64": "*fp64"}
V = "rsd_kernels.verify.triton_kernel"
S = "rsd_kernels.sampling.triton_kernel"
A = "rsd_kernels.attention.triton_kernel"


def _verify_specs():
    out = []
    for greedy, dt, ct in [(False, "bf16", "fp32"), (True, "fp16", "fp32"), (False, "fp64", "fp64")]:
        sig = {"tl_ptr": _F[dt], "dl_ptr": _F[dt], "nn_ptr": "*i32", "temp_ptr": _F[ct], "temp_val": "fp32",
               "stat_ptr": _F[ct], "arg_ptr": "*i32", "T": "i32", "V": "i32", "NB": "i32"}
        out.append((V, "_node_stats_kernel", sig, {"GREEDY": greedy, "CT": ct, "BLOCK": 4096}, 8))
    for mode, gen, dt, ct, pre, *bt in [(0, True, "bf16", "fp32", True), (1, False, "fp32", "fp32", False),
                                        (2, False, "fp16", "fp32", True), (2, False, "bf16", "fp32", False),
                                        (0, True, "fp64", "fp64", False), (1, True, "bf16", "fp32", True, 256),
                                        (0, False, "fp16", "fp32", False, 256)]:
        sig = {"tl_ptr": _F[dt], "dl_ptr": _F[dt], "tok_ptr": "*i64", "par_ptr": "*i32", "nn_ptr": "*i32",
               "u_ptr": "*fp32", "temp_ptr": _F[ct], "temp_val": "fp32", "stat_ptr": _F[ct], "arg_ptr": "*i32",
               "path_ptr": "*i64", "nacc_ptr": "*i64", "next_ptr": "*i64", "stf_ptr": _F[ct], "sti_ptr": "*i32",
               "rej_ptr": _F[ct], "passes_ptr": "*i32", "T": "i32", "V": "i32", "P": "i32", "NB": "i32",
               "seed": "i64", "offset": "i64", "RHO_TOL": "fp32", "MAX_PASSES": "i32"}
        const = {"MODE": mode, "GEN": gen, "CT": ct, "PRE": pre, "BLOCK_T": bt[0] if bt else 64, "BLOCK_V": 4096,
                 "BLOCK_P": 16, "NBP": 8}
        out.append((V, "_verify_walk_kernel", sig, const, 8))
    for mode, gen, dt, ct in [(0, True, "bf16", "fp32"), (1, False, "fp32", "fp32"), (1, True, "fp64", "fp64")]:
        sig = {"tl_ptr": _F[dt], "dl_ptr": _F[dt], "g_ptr": "*fp32", "temp_ptr": _F[ct], "temp_val": "fp32",
               "stf_ptr": _F[ct], "sti_ptr": "*i32", "rej_ptr": _F[ct], "part_ptr": _F[ct], "parg_ptr": "*i32",
               "T": "i32", "V": "i32", "NB": "i32", "seed": "i64", "offset": "i64"}
        const = {"MODE": mode, "GEN": gen, "CT": ct, "BLOCK_T": 64, "NQ": 1024}
        out.append((V, "_residual_sample_kernel", sig, const, 8))
    for mode, ct in [(0, "fp32"), (1, "fp64")]:
        sig = {"part_ptr": _F[ct], "parg_ptr": "*i32", "next_ptr": "*i64", "NB": "i32"}
        out.append((V, "_residual_merge_kernel", sig, {"MODE": mode, "NBP": 32}, 1))
    return out


def _traversal_specs():
    out = []
    mod = "rsd_kernels.verify.traversal_triton"
    for gen, dt, ct, pre, bt in [(True, "bf16", "fp32", True, 32), (False, "fp16", "fp32", False, 64),
                                 (True, "fp64", "fp64", False, 32), (True, "bf16", "fp32", False, 256)]:
        sig = {"tl_ptr": _F[dt], "dl_ptr": _F[dt], "tok_ptr": "*i64", "par_ptr": "*i32", "nn_ptr": "*i32",
               "u_ptr": "*fp32", "temp_ptr": _F[ct], "temp_val": "fp32", "stat_ptr": _F[ct], "path_ptr": "*i64",
               "nacc_ptr": "*i64", "stf_ptr": _F[ct], "sti_ptr": "*i32", "rec_ptr": _F[ct], "passes_ptr": "*i32",
               "T": "i32", "V": "i32", "P": "i32", "NB": "i32", "seed": "i64", "offset": "i64"}
        const = {"GEN": gen, "CT": ct, "PRE": pre, "BLOCK_T": bt, "BLOCK_V": 4096, "BLOCK_P": 16, "NBP": 8}
        out.append((mod, "_traversal_walk_kernel", sig, const, 8))
    for gen, dt, ct in [(True, "bf16", "fp32"), (False, "fp64", "fp64")]:
        sig = {"tl_ptr": _F[dt], "dl_ptr": _F[dt], "g_ptr": "*fp32", "temp_ptr": _F[ct], "temp_val": "fp32",
               "stf_ptr": _F[ct], "sti_ptr": "*i32", "rec_ptr": _F[ct], "part_ptr": _F[ct], "parg_ptr": "*i32",
               "T": "i32", "V": "i32", "NB": "i32", "seed": "i64", "offset": "i64"}
        out.append((mod, "_traversal_sample_kernel", sig, {"GEN": gen, "CT": ct, "BLOCK_T": 32, "NQ": 256}, 4))
    return out


def _sampling_specs():
    out = []
    for noise, gen, dt, ct, kb in [(True, True, "bf16", "fp32", 16), (True, False, "fp32", "fp32", 8),
                                   (False, False, "fp16", "fp32", 2), (True, True, "fp64", "fp64", 64)]:
        sig = {"logits_ptr": _F[dt], "g_ptr": "*fp32", "temp_ptr": _F[ct], "temp_val": "fp32", "pm_ptr": _F[ct],
               "ps_ptr": _F[ct], "psup_ptr": "*i32", "pv_ptr": _F[ct], "pi_ptr": "*i32", "V": "i32", "NB": "i32",
               "KMAX": "i32", "seed": "i64", "offset": "i64"}
        const = {"NOISE": noise, "GEN": gen, "CT": ct, "KB": kb, "NQ": 1024}
        out.append((S, "_topk_partial_kernel", sig, const, 8))
    parts = lambda ct: {"pm_ptr": _F[ct], "ps_ptr": _F[ct], "psup_ptr": "*i32", "pv_ptr": _F[ct], "pi_ptr": "*i32"}
    for dt, ct in [("bf16", "fp32"), ("fp64", "fp64")]:
        sig = {"logits_ptr": _F[dt], "k_ptr": "*i32", "temp_ptr": _F[ct], "temp_val": "fp32", **parts(ct),
               "tok_ptr": "*i64", "lp_ptr": "*fp32", "num_ptr": "*i32", "V": "i32", "NB": "i32", "KMAX": "i32"}
        out.append((S, "_sample_merge_kernel", sig, {"CT": ct, "KB": 8, "NBP": 8}, 4))
    for gen, dt, ct in [(True, "bf16", "fp32"), (False, "fp64", "fp64")]:
        sig = {"logits_ptr": _F[dt], "phi_ptr": "*fp32", "G_ptr": "*fp32", "g_ptr": "*fp32", "temp_ptr": _F[ct],
               "temp_val": "fp32", **parts(ct), "tok_ptr": "*i64", "phic_ptr": _F[ct], "Gc_ptr": _F[ct], "V": "i32",
               "NB": "i32", "W": "i32", "seed": "i64", "offset": "i64"}
        out.append((S, "_beam_merge_kernel", sig, {"GEN": gen, "CT": ct, "KB": 8, "NBP": 8}, 4))
    return out


def _attention_specs():
    from rsd_kernels.attention.triton_kernel import launch_config

    out = []
    for dt, d, group, T, splits in [("fp16", 64, 4, 16, 1), ("bf16", 128, 1, 8, 8), ("fp32", 64, 3, 5, 2),
                                    ("bf16", 64, 8, 32, 1), ("fp16", 128, 2, 31, 4), ("bf16", 128, 1, 1, 16)]:
        bm, bn, warps = launch_config(d, group * T)
        sig = {"q_ptr": _F[dt], "k_ptr": _F[dt], "v_ptr": _F[dt], "bits_ptr": "*i32", "plen_ptr": "*i64",
               "out_ptr": _F[dt], "part_ptr": "*fp32", "lse_ptr": "*fp32", "Hq": "i32", "Hkv": "i32", "T": "i32",
               "S": "i32", "W": "i32", "split_len": "i32", "qk_scale": "fp32"}
        const = {"GROUP": group, "D": d, "BLOCK_M": bm, "BLOCK_N": bn, "NUM_SPLITS": splits, "ACC_DT": "fp32",
                 "PREC": "tf32x3" if dt == "fp32" else "tf32", "DOT_FP32": False}
        out.append((A, "_tree_attention_kernel", sig, const, warps))
    for dt, d in [("bf16", 128), ("fp16", 64)]:
        sig = {"part_ptr": "*fp32", "lse_ptr": "*fp32", "out_ptr": _F[dt], "n_rows": "i32"}
        out.append((A, "_combine_kernel", sig, {"NUM_SPLITS": 5, "SPLITS_P2": 8, "D": d, "BLOCK_R": 16}, 4))
    return out


FAMILIES = {"verify": _verify_specs(), "traversal": _traversal_specs(), "sampling": _sampling_specs(),
            "attention": _attention_specs()}

_SCRIPT = textwrap.dedent(
    """
    import importlib, json, os, re, subprocess, sys, tempfile
    import triton, triton.language as tl

    def ptxas_report(ptx):  # registers and spills, from the ptxas shipped with triton
        exe = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
        with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
            f.write(ptx)
        try:
            r = subprocess.run([exe, "-arch=sm_90a", "-v", f.name, "-o", os.devnull], capture_output=True, text=True)
        finally:
            os.unlink(f.name)
        regs = re.findall(r"Used (\\d+) registers", r.stderr)
        spill = re.findall(r"(\\d+) bytes spill stores", r.stderr)
        return f"regs={regs[-1] if regs else '?'} spill_stores={spill[-1] if spill else '?'}"

    from triton.backends.compiler import GPUTarget
    dt = {"fp32": tl.float32, "fp64": tl.float64, "fp16": tl.float16, "bf16": tl.bfloat16}
    for mod, name, sig, const, warps in json.loads(sys.argv[1]):
        fn = getattr(importlib.import_module(mod), name)
        const = {k: (dt.get(v, v) if isinstance(v, str) else v) for k, v in const.items()}
        sig = dict(sig, **{k: "constexpr" for k in const})
        src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=const)
        try:
            k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
        except Exception as exc:
            print("FAILED", name, json.dumps(const, default=str), file=sys.stderr)
            raise
        assert len(k.asm["cubin"]) > 0
        print("ok", name, json.dumps(const, default=str), "smem", k.metadata.shared, ptxas_report(k.asm["ptx"]),
              flush=True)
    """
)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_compiles_for_sm90(family):
    specs = FAMILIES[family]
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(specs)], env=env, capture_output=True, text=True,
                         timeout=600)
    print(res.stdout)
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stdout.count("ok ") == len(specs)
