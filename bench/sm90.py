"""The Triton kernels as the runtime launches them, recorded and compiled for sm_90 without a GPU.

* :func:`record` runs a launcher of ``rsd_kernels`` (its own Python code, on ``meta`` tensors:
  no memory, no data) and records every kernel launch **as the JIT would see it on a GPU**:
  Triton's own binder computes the signature, the constexprs and the specialisation the
  runtime derives from the arguments (16-byte aligned pointers -- CUDA allocations and the
  KV cache's views are --, integers divisible by 16, integers equal to 1 made constexpr, minus
  the ``do_not_specialize`` ones), the options (``num_warps``, ``num_stages``) and the grid.
  Nothing runs. Two launches with the same ``key`` are the same compiled variant.
* :func:`compile_launch` compiles exactly that variant (``triton.compile`` for
  ``GPUTarget("cuda", 90, 32)``) and reads registers, spill bytes and shared memory from the
  cubin (``cuobjdump -res-usage``) and ``ptxas -v``; :func:`occupancy` turns them into
  resident programs per SM of an H100/H200.
* :func:`launches_at` gives the launches of one op at one shape (the review's shapes come from
  ``bench/roofline.py``).

``TRITON_INTERPRET`` must be unset before triton is imported (the interpreter replaces the JIT):
use this module in its own process (tests do, through a subprocess).
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field

if os.environ.get("TRITON_INTERPRET") == "1":
    raise RuntimeError("bench/sm90.py needs the Triton JIT: run it with TRITON_INTERPRET unset")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler.compiler import make_backend  # noqa: E402
from triton.runtime import jit as _jit  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
SMS = 132  # H200
REGS_PER_SM, SMEM_PER_SM, SMEM_RESERVED_PER_CTA, MAX_CTAS_PER_SM, MAX_WARPS_PER_SM = 65536, 233472, 1024, 32, 64
_BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


@dataclass
class Launch:
    name: str
    fn: object
    grid: tuple
    signature: dict
    constexprs: dict
    attrs: dict
    options: object
    key: str
    args: dict = field(repr=False, default_factory=dict)

    @property
    def programs(self) -> int:
        n = 1
        for g in self.grid:
            n *= int(g)
        return n

    @property
    def num_warps(self) -> int:
        return self.options.num_warps


_RECORDING: list | None = None


def _recording_run(self, *args, grid, warmup, **kwargs):
    backend = make_backend(TARGET)
    binder = _jit.create_function_from_signature(self.signature, self.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    key = str(_jit.compute_cache_key({}, specialization, options))
    options, signature, constexprs, attrs = self._pack_args(backend, kwargs, bound_args, specialization, options)
    g = grid(bound_args) if callable(grid) else grid
    g = tuple(g) + (1,) * (3 - len(tuple(g)))
    _RECORDING.append(Launch(self.__name__, self, g, signature, constexprs, attrs, options, key, bound_args))
    return None


@contextlib.contextmanager
def record():
    """Within the block, Triton launches are recorded (list yielded) instead of run."""
    global _RECORDING
    saved, prev = _jit.JITFunction.run, _RECORDING
    _RECORDING = []
    _jit.JITFunction.run = _recording_run
    try:
        yield _RECORDING
    finally:
        _jit.JITFunction.run = saved
        _RECORDING = prev


def _tool(name, *args):
    return subprocess.run([os.path.join(_BIN, name), *args], capture_output=True, text=True)


def compile_launch(launch: Launch) -> dict:
    """Compile the recorded variant for sm_90; its resources and code."""
    src = triton.compiler.ASTSource(fn=launch.fn, signature=launch.signature, constexprs=launch.constexprs,
                                    attrs=launch.attrs)
    k = triton.compile(src, target=TARGET, options=launch.options.__dict__)
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        with open(cubin, "wb") as f:
            f.write(k.asm["cubin"])
        res = _tool("cuobjdump", "-res-usage", cubin).stdout
        sass = _tool("cuobjdump", "-sass", cubin).stdout
        ptx = os.path.join(tmp, "k.ptx")
        with open(ptx, "w") as f:
            f.write(k.asm["ptx"])
        ptxas = _tool("ptxas", "-arch=sm_90a", "-v", ptx, "-o", os.devnull).stderr
    regs = int(re.search(r"REG:(\d+)", res).group(1))
    stack = int(re.search(r"STACK:(\d+)", res).group(1))
    spills = re.findall(r"(\d+) bytes spill stores", ptxas)
    smem = int(k.metadata.shared)
    return {"kernel": launch.name, "regs": regs, "stack": stack, "spill_bytes": int(spills[-1]) if spills else 0,
            "smem": smem, "num_warps": launch.num_warps, "num_stages": launch.options.num_stages,
            "ctas_per_sm": occupancy(regs, smem, launch.num_warps), "ptx": k.asm["ptx"], "sass": sass,
            "ttgir": k.asm["ttgir"]}


def occupancy(regs: int, smem: int, num_warps: int) -> int:
    """Resident programs (CTAs) per SM on sm_90 for these per-thread registers, shared bytes and warps."""
    regs_per_warp = -(-max(regs, 1) * 32 // 256) * 256  # allocated per warp in units of 256
    by_regs = REGS_PER_SM // (regs_per_warp * num_warps)
    by_smem = SMEM_PER_SM // (smem + SMEM_RESERVED_PER_CTA)
    return max(0, min(by_regs, by_smem, MAX_CTAS_PER_SM, MAX_WARPS_PER_SM // num_warps))


def fp64_ops(ptx: str) -> list[str]:
    """The PTX instructions that compute in double precision (conversions to/from f64 included)."""
    return [line.strip() for line in ptx.splitlines()
            if re.search(r"\.f64\b", line) and not line.strip().startswith(("//", ".", "ld.param"))]


# ---------------------------------------------------------------- the ops' launches at a shape

_DT = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp64": torch.float64}


def _meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, dtype=dtype, device="meta")


def attention_launches(B, Hq, Hkv, T, D, prefix, dtype="bf16", capacity=None):
    """Tree attention on the KV cache's views: ``k/v = buffer[:, :, :prefix + T]`` of a buffer of
    ``capacity`` positions (default: exactly ``prefix + T``, as the review assumed)."""
    from rsd_kernels.attention import triton_kernel

    S = prefix + T
    cap = capacity or S
    dt = _DT[dtype]
    q = _meta(B, Hq, T, D, dtype=dt)
    k = _meta(B, Hkv, cap, D, dtype=dt)[:, :, :S]
    v = _meta(B, Hkv, cap, D, dtype=dt)[:, :, :S]
    bits = _meta(B, T, (T + 31) // 32, dtype=torch.int32)
    plens = _meta(B, dtype=torch.int64)
    with record() as rec:
        triton_kernel.tree_attention(q, k, v, bits, plens, D**-0.5)
    return rec


def verify_launches(mode, B, V, T=31, dtype="bf16", seed=1, offset=0):
    from rsd_kernels.verify import traversal_triton, triton_kernel

    dt = _DT[dtype]
    t = _meta(B, T, V, dtype=dt)
    tok = _meta(B, T, dtype=torch.int64)
    par = _meta(B, T, dtype=torch.int32)
    nn = _meta(B, dtype=torch.int32)
    with record() as rec:
        fn = traversal_triton.verify if mode == "traversal" else triton_kernel.verify
        fn(t, None if mode == "greedy" else _meta(B, T, V, dtype=dt), tok, par, nn, mode, 1.0, 8,
           seed=None if mode == "greedy" else seed, offset=offset)
    return rec


def sampling_launches(R, V, k, dtype="bf16", seed=1, offset=0):
    from rsd_kernels.sampling import triton_kernel

    with record() as rec:
        triton_kernel.sample_topk(_meta(R, V, dtype=_DT[dtype]), _meta(R, dtype=torch.int32), k, 1.0, seed=seed,
                                  offset=offset)
    return rec


def beam_launches(B, N, V, W, dtype="bf16", seed=1, offset=0):
    from rsd_kernels.sampling import triton_kernel

    with record() as rec:
        triton_kernel.beam_step(_meta(B, N, V, dtype=_DT[dtype]), _meta(B, N), _meta(B, N), W, 1.0, seed=seed,
                                offset=offset)
    return rec


def launches_at(op: str, shape: dict) -> list[Launch]:
    return {"tree_attention": attention_launches, "verify_tree": verify_launches,
            "sample_without_replacement": sampling_launches, "stochastic_beam_step": beam_launches}[op](**shape)
