"""What the sm_90 compile of the CUDA kernels says, without a GPU: resources and SASS.

Used by the SASS tests (``tests/test_cuda_sass.py``: the attention's main loop copies with
``cp.async``, the sampling and greedy kernels carry no fp64 instruction) and by the roofline
tables for the CUDA rows::

    from sass_info import cuda_kernel_resources      # with bench/ on sys.path
    rows = cuda_kernel_resources(arch=90)            # one dict per kernel instance

Each row: ``source`` (``tree_attention.cu``...), ``kernel`` (demangled), ``mangled``,
``registers``, ``spill_stores``/``spill_loads`` (bytes, from ``ptxas -v``), ``stack`` (bytes of
local memory per thread), ``static_shared`` (bytes; the dynamic shared memory a launcher adds
is not in the cubin: the tensor-core attention's is ``attention_dynamic_smem``).

Tools: ``nvcc`` (``$NVCC``, PATH, ``$CUDA_HOME/bin``) compiles; ``cuobjdump`` comes from the
CUDA toolkit or, where the toolkit lacks it, from the Triton wheel (``backends/nvidia/bin``).
Compiles are cached by source hash under the temporary directory.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
NO_BARRIER = 7

# fp64 arithmetic, conversions to/from fp64, and the fp64 special-function helpers
FP64_OPCODE = re.compile(r"^(DADD|DMUL|DFMA|DSETP|DSET|DMNMX|DMMA|DADD|DRCP)\b|\.F64\b|^MUFU\.(RCP64H|RSQ64H)")


def attention_dynamic_smem(D: int) -> int:
    """Dynamic shared memory (bytes) of the tensor-core attention kernel for head size D
    (``mma_smem_bytes`` in csrc/tree_attention.cu: Q tile + STAGES x (K, V) tiles, rows padded by
    16 bytes; 3 stages at D = 64, 2 at D = 128)."""
    stages = 3 if D == 64 else 2
    ld = D + 8
    return (64 * ld + 2 * stages * 64 * ld) * 2


def find_tool(name: str) -> str | None:
    """``nvcc``/``cuobjdump``/``nvdisasm``: $NVCC (nvcc only), PATH, $CUDA_HOME/bin, /usr/local/cuda/bin,
    then the Triton wheel's ``backends/nvidia/bin``."""
    if name == "nvcc" and os.environ.get("NVCC"):
        return os.environ["NVCC"]
    found = shutil.which(name)
    if found:
        return found
    for base in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if base and (Path(base) / "bin" / name).exists():
            return str(Path(base) / "bin" / name)
    try:
        import triton

        cand = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
        if cand.exists():
            return str(cand)
    except ImportError:
        pass
    return None


@dataclass
class Compiled:
    cubin: Path
    ptxas_log: str


def _sources_hash(src: Path) -> str:
    files = [src] + sorted(CSRC.glob("*.cuh")) + sorted(CSRC.glob("*.h"))
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()[:16]


def compile_cubin(src: str | Path, arch: int = 90) -> Compiled:
    """``nvcc -cubin -arch=sm_<arch> -O3`` of one csrc file (the flags of the extension build), cached."""
    src = Path(src)
    if not src.is_absolute():
        src = CSRC / src
    nvcc = find_tool("nvcc")
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (set NVCC or CUDA_HOME)")
    out_dir = Path(tempfile.gettempdir()) / "rsd-kernels-sass"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{src.stem}-sm{arch}-{_sources_hash(src)}"
    cubin, log = out_dir / f"{stem}.cubin", out_dir / f"{stem}.ptxas.txt"
    if not (cubin.exists() and log.exists()):
        tmp = out_dir / f"{stem}.{os.getpid()}.tmp"
        proc = subprocess.run([nvcc, "-std=c++17", "-O3", f"-I{CSRC}", f"-arch=sm_{arch}", "-cubin", "-Xptxas", "-v",
                               "-o", str(tmp), str(src)], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"nvcc failed on {src.name}:\n{proc.stdout}{proc.stderr}")
        log.write_text(proc.stdout + proc.stderr)
        os.replace(tmp, cubin)  # atomic: concurrent sessions never read a half-written file
    return Compiled(cubin, log.read_text())


def _demangle(names: list[str]) -> dict[str, str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return {n: n for n in names}
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def _per_function(text: str, header: str, values: str) -> dict[str, tuple[int, ...]]:
    """``{function: ints}``: each ``values`` match (integer groups) after a ``header`` match naming the
    function (its first group); a function's first values line counts."""
    out, name = {}, None
    for line in text.splitlines():
        m = re.search(header, line)
        if m:
            name = m.group(1)
            continue
        m = re.search(values, line)
        if m and name:
            out[name] = tuple(int(x) for x in m.groups())
            name = None
    return out


def ptxas_spills(log: str) -> dict[str, tuple[int, int, int]]:
    """``{mangled: (stack frame, spill stores, spill loads)}`` bytes, from a ``ptxas -v`` log."""
    return _per_function(log, r"Function properties for (\S+)",
                         r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def resources(cubin: Path) -> dict[str, dict]:
    """``{mangled: {registers, stack, static_shared}}`` from ``cuobjdump -res-usage``."""
    tool = find_tool("cuobjdump")
    if tool is None:
        raise FileNotFoundError("cuobjdump not found (CUDA toolkit or the triton wheel)")
    text = subprocess.run([tool, "-res-usage", str(cubin)], capture_output=True, text=True, check=True).stdout
    found = _per_function(text, r"Function (\S+):", r"REG:(\d+) STACK:(\d+) SHARED:(\d+)")
    return {n: {"registers": r, "stack": st, "static_shared": sh} for n, (r, st, sh) in found.items()}


def cuda_kernel_resources(arch: int = 90, sources=("tree_attention.cu", "sampling.cu", "verify.cu")) -> list[dict]:
    """One row per kernel instance of the given csrc files compiled for ``sm_<arch>``: source,
    kernel (demangled), mangled, registers, spill_stores, spill_loads, stack, static_shared."""
    rows = []
    for src in sources:
        comp = compile_cubin(src, arch)
        spills = ptxas_spills(comp.ptxas_log)
        res = resources(comp.cubin)
        names = _demangle(sorted(res))
        for mangled in sorted(res):
            frame, st, ld = spills.get(mangled, (0, 0, 0))
            rows.append({"source": Path(src).name, "kernel": names[mangled], "mangled": mangled, **res[mangled],
                         "spill_stores": st, "spill_loads": ld})
    return rows


@dataclass
class Instr:
    addr: int
    opcode: str   # e.g. "LDG.E.128", "LDGSTS.E.BYPASS.128", predicate stripped
    text: str     # the whole instruction
    wr_barrier: int  # scoreboard this instruction sets on completion (7: none)
    rd_barrier: int
    wait_mask: int   # scoreboards it waits on before issuing

    def waits_on(self, barrier: int) -> bool:
        return barrier != NO_BARRIER and bool(self.wait_mask >> barrier & 1)


_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;\s*/\*\s*(0x[0-9a-f]{16})\s*\*/")
_CTRL = re.compile(r"^\s*/\*\s*(0x[0-9a-f]{16})\s*\*/\s*$")


@lru_cache(maxsize=16)
def _sass_text(cubin: str) -> str:
    tool = find_tool("cuobjdump")
    if tool is None:
        raise FileNotFoundError("cuobjdump not found (CUDA toolkit or the triton wheel)")
    return subprocess.run([tool, "-sass", cubin], capture_output=True, text=True, check=True).stdout


def sass(cubin: Path) -> dict[str, list[Instr]]:
    """``{mangled: [Instr]}``: each kernel's SASS with the scheduling control bits decoded
    (Volta+ encoding: bits 105-125 of the 128-bit instruction; write barrier (c >> 5) & 7,
    read barrier (c >> 8) & 7, wait mask (c >> 11) & 0x3f with c = high word >> 41)."""
    out: dict[str, list[Instr]] = {}
    current, pending = None, None
    for line in _sass_text(str(cubin)).splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            current = out.setdefault(m.group(1), [])
            continue
        m = _LINE.search(line)
        if m and current is not None:
            text = m.group(2).strip()
            op = re.sub(r"^@!?U?P\w+\s+", "", text).split()[0] if text else ""
            pending = (int(m.group(1), 16), op, text)
            continue
        m = _CTRL.match(line)
        if m and pending is not None and current is not None:
            c = int(m.group(1), 16) >> 41
            current.append(Instr(pending[0], pending[1], pending[2], (c >> 5) & 7, (c >> 8) & 7, (c >> 11) & 0x3F))
            pending = None
    return out


def loops(code: list[Instr]) -> list[tuple[int, int]]:
    """Index ranges ``(first, last)`` of the loops: a branch back to an earlier address closes one."""
    index = {ins.addr: i for i, ins in enumerate(code)}
    out = []
    for i, ins in enumerate(code):
        if ins.opcode.startswith("BRA"):
            m = re.search(r"`?\(?\.L_x_\d+\)?|0x([0-9a-f]+)", ins.text)
            target = None
            if m and m.group(1):
                target = int(m.group(1), 16)
            if target is not None and target <= ins.addr and target in index:
                out.append((index[target], i))
    return out


def dependent_load_store_pairs(code: list[Instr], lo: int = 0, hi: int | None = None) -> list[tuple[Instr, Instr]]:
    """Synchronous global loads (``LDG``) in ``code[lo:hi+1]`` whose destination register is
    stored to shared memory (``STS``) by the first instruction that waits for the load: the
    serialised copy pattern (one DRAM round trip per store) that ``cp.async`` replaces."""
    hi = len(code) - 1 if hi is None else hi
    pairs = []
    for i in range(lo, hi + 1):
        ld = code[i]
        if not ld.opcode.startswith("LDG") or ld.wr_barrier == NO_BARRIER:
            continue
        dest = _operands(ld.text)[0]
        for nxt in code[i + 1:hi + 1]:
            if nxt.waits_on(ld.wr_barrier):
                if nxt.opcode.startswith("STS") and _operands(nxt.text)[-1] == dest:
                    pairs.append((ld, nxt))
                break
    return pairs


def _operands(text: str) -> list[str]:
    body = re.sub(r"^@!?U?P\w+\s+", "", text).split(None, 1)
    return [o.strip() for o in body[1].split(",")] if len(body) > 1 else [""]


def fp64_instructions(code: list[Instr]) -> list[Instr]:
    """The fp64 instructions of a kernel (arithmetic, conversions from/to fp64, fp64 MUFU helpers)."""
    return [ins for ins in code if FP64_OPCODE.search(ins.opcode)]


if __name__ == "__main__":  # print the resource table
    for row in cuda_kernel_resources():
        print(f"{row['source']:<18} regs {row['registers']:>3}  spill {row['spill_stores']:>3}/{row['spill_loads']:<3} "
              f"stack {row['stack']:>4}  smem {row['static_shared']:>6}  {row['kernel']}")
