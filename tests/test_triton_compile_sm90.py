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

# (module, kernel, signature, constexprs): one entry per compiled variant we ship.
_F = {"fp16": "*fp16", "bf16": "*bf16", "fp32": "*fp32", "fp64": "*fp64"}


def _verify_specs():
    out = []
    for mode, gen, dt, ct in [(0, True, "bf16", "fp32"), (0, False, "fp16", "fp32"), (1, True, "fp32", "fp32"),
                              (1, False, "bf16", "fp32"), (2, False, "fp16", "fp32"), (0, True, "fp64", "fp64")]:
        sig = {"tl_ptr": _F[dt], "dl_ptr": _F[dt], "tok_ptr": "*i64", "par_ptr": "*i32", "nn_ptr": "*i32",
               "u_ptr": "*fp32", "g_ptr": "*fp32", "temp_ptr": _F[ct], "path_ptr": "*i64", "nacc_ptr": "*i64",
               "next_ptr": "*i64", "T": "i32", "V": "i32", "P": "i32", "seed": "i64", "offset": "i64"}
        const = {"MODE": mode, "GEN": gen, "CT": ct, "RHO_STEPS": 40, "BLOCK_T": 64, "BLOCK_V": 2048, "BLOCK_P": 64}
        out.append(("rsd_kernels.verify.triton_kernel", "_verify_tree_kernel", sig, const, 8))
    return out


SPECS = _verify_specs()

_SCRIPT = textwrap.dedent(
    """
    import importlib, json, sys
    import triton, triton.language as tl
    from triton.backends.compiler import GPUTarget
    mod, name, sig, const, warps = json.loads(sys.argv[1])
    fn = getattr(importlib.import_module(mod), name)
    dt = {"fp32": tl.float32, "fp64": tl.float64, "fp16": tl.float16, "bf16": tl.bfloat16}
    const = {k: (dt[v] if isinstance(v, str) else v) for k, v in const.items()}
    sig = dict(sig)
    for k in const:
        sig[k] = "constexpr"
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=const)
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    assert len(k.asm["cubin"]) > 0
    print("ok", k.n_regs if hasattr(k, "n_regs") else "", k.metadata.shared)
    """
)


@pytest.mark.parametrize("spec", SPECS, ids=[f"{s[1]}-{i}" for i, s in enumerate(SPECS)])
def test_compiles_for_sm90(spec):
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(spec)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stdout.startswith("ok")
