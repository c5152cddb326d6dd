"""The structure of the CUDA kernels' sm_90 code, checked on the CPU (nvcc -cubin + cuobjdump,
no GPU): what no emulation can show.

* Tree attention streams: its main loop (the loop with the tensor-core MMAs) issues every
  K/V chunk of a tile as an asynchronous copy (LDGSTS, cp.async) with a commit and a wait, and
  no synchronous global load feeds a shared-memory store (the pattern that costs one DRAM round
  trip per 16 bytes). Registers without spills, for 2 CTAs per SM at D = 128.
* The negative control: the same detector flags the old synchronous copy loop.

bench/sass_info.py does the compiling, decoding and resource table.
"""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import sass_info  # noqa: E402

pytestmark = pytest.mark.skipif(sass_info.find_tool("nvcc") is None or sass_info.find_tool("cuobjdump") is None,
                                reason="needs nvcc and cuobjdump (CUDA toolkit or the triton wheel)")


@pytest.fixture(scope="module")
def attention():
    comp = sass_info.compile_cubin("tree_attention.cu", 90)
    return sass_info.sass(comp.cubin), sass_info.resources(comp.cubin), sass_info.ptxas_spills(comp.ptxas_log)


def _main_loop(code):
    """The loop that holds the kernel's tensor-core (HMMA) or, failing that, its shared-memory reads."""
    best = None
    for lo, hi in sass_info.loops(code):
        n = sum(i.opcode.startswith("HMMA") for i in code[lo:hi + 1])
        if n and (best is None or n > best[2]):
            best = (lo, hi, n)
    return best


def _kernels(code, part):
    found = {name: ins for name, ins in code.items() if part in name}
    assert found, f"no {part} kernel in the cubin: {list(code)}"
    return found


def test_attention_main_loop_copies_asynchronously(attention):
    code, res, spills = attention
    mma = _kernels(code, "tree_attention_mma_kernel")
    assert len(mma) == 4  # fp16/bf16 x D 64/128
    for name, ins in mma.items():
        D = 128 if "Li128E" in name else 64
        loop = _main_loop(ins)
        assert loop is not None, f"{name}: no loop with HMMA"
        lo, hi, _ = loop
        body = [i.opcode for i in ins[lo:hi + 1]]
        chunks = 2 * 64 * (D // 8) // 128  # K and V chunks of one 64-key tile per thread
        assert sum(op.startswith("LDGSTS") for op in body) >= chunks, f"{name}: K/V not copied asynchronously"
        assert any(op.startswith("LDGDEPBAR") for op in body), f"{name}: no cp.async commit in the main loop"
        assert any(op.startswith("DEPBAR") for op in body), f"{name}: no cp.async wait in the main loop"
        assert not [op for op in (i.opcode for i in ins) if op.startswith("LDG.E.128")], \
            f"{name}: synchronous 16-byte global loads"
        assert sass_info.dependent_load_store_pairs(ins) == [], f"{name}: a global load feeds a shared store"
        r = res[name]
        assert spills[name][1:] == (0, 0) and r["stack"] == 0, f"{name}: spills {spills[name]}, {r}"
        per_sm = 2 if D == 128 else 3  # what the shared memory allows (sass_info.attention_dynamic_smem)
        assert r["registers"] * 128 * per_sm <= 65536, f"{name}: {r['registers']} registers limit occupancy"
        assert sass_info.attention_dynamic_smem(D) * per_sm <= 228 * 1024


def test_attention_cuda_core_kernel_streams_too(attention):
    code, res, spills = attention
    for name, ins in _kernels(code, "tree_attention_core_kernel").items():
        loops = sass_info.loops(ins)
        assert any(any(i.opcode.startswith("LDGSTS") for i in ins[lo:hi + 1]) for lo, hi in loops), name
        # only the 2-byte copies of rows that no 4-byte copy tiles (odd fp16 head sizes) are plain
        pairs = sass_info.dependent_load_store_pairs(ins)
        assert all(ld.opcode == "LDG.E.U16" for ld, _ in pairs), (name, pairs)
        assert spills[name][1:] == (0, 0) and res[name]["stack"] == 0, (name, spills[name], res[name])


OLD_COPY_LOOP = textwrap.dedent("""\
    #include <cstdint>
    // the copy loop the streaming kernel replaced: one 16-byte load, then its store, per iteration
    __global__ void old_load_tile(const uint4* src, int rows) {
      __shared__ uint4 dst[64 * 16];
      for (int c = threadIdx.x; c < rows * 16; c += blockDim.x) dst[c] = src[c];
      __syncthreads();
      if (threadIdx.x == 0 && dst[rows].x == 7u) asm volatile("trap;");
    }
""")


def test_detector_flags_a_synchronous_copy_loop(tmp_path):
    """Negative control: the check above must fail on the old load_tile pattern."""
    src = tmp_path / "old.cu"
    src.write_text(OLD_COPY_LOOP)
    cubin = tmp_path / "old.cubin"
    subprocess.run([sass_info.find_tool("nvcc"), "-O3", "-arch=sm_90", "-cubin", "-o", str(cubin), str(src)],
                   check=True, capture_output=True)
    (ins,) = sass_info.sass(cubin).values()
    pairs = sass_info.dependent_load_store_pairs(ins)
    assert pairs and all(ld.opcode.startswith("LDG.E.128") and st.opcode.startswith("STS.128") for ld, st in pairs)


def test_resource_table_lists_every_kernel():
    rows = sass_info.cuda_kernel_resources(90, sources=("tree_attention.cu",))
    names = {r["kernel"] for r in rows}
    assert any("tree_attention_mma_kernel" in n for n in names) and any("combine" in n for n in names)
    assert all(r["registers"] > 0 for r in rows)


@pytest.fixture(scope="module")
def sampling():
    return sass_info.sass(sass_info.compile_cubin("sampling.cu", 90).cubin)


def _float_instances(code, part):
    """The fp16/bf16/fp32 instances of a kernel template (fp64 logits compute in fp64 by design)."""
    found = {n: ins for n, ins in _kernels(code, part).items() if "Idd" not in n}
    assert found
    return found


@pytest.mark.parametrize("kernel", ["sample_partial_kernel", "sample_merge_kernel"])
def test_sampling_has_no_fp64(sampling, kernel):
    """Noise (log32), softmax statistics and the merge run in fp32: no fp64 instruction at all."""
    for name, ins in _float_instances(sampling, kernel).items():
        assert sass_info.fp64_instructions(ins) == [], (name, sass_info.fp64_instructions(ins)[:5])


def test_fp64_detector_flags_double_logs(tmp_path):
    """Negative control: the old noise (logs through double) is caught."""
    src = tmp_path / "old.cu"
    src.write_text("__global__ void g(float* x) { x[threadIdx.x] = -(float)log(-(double)logf(x[threadIdx.x])); }\n")
    cubin = tmp_path / "old.cubin"
    subprocess.run([sass_info.find_tool("nvcc"), "-O3", "-arch=sm_90", "-cubin", "-o", str(cubin), str(src)],
                   check=True, capture_output=True)
    (ins,) = sass_info.sass(cubin).values()
    assert sass_info.fp64_instructions(ins)


@pytest.fixture(scope="module")
def verify():
    return sass_info.sass(sass_info.compile_cubin("verify.cu", 90).cubin)


def test_verify_has_no_fp64(verify):
    """Greedy compares in fp32, and rrs/kseq (statistics, residuals, rho*, the Gumbel argmax) run in
    fp32 too: no fp64 instruction in any fp16/bf16/fp32 instance (one kernel per mode)."""
    instances = _float_instances(verify, "verify_tree_kernel")
    assert len(instances) == 9  # 3 dtypes x 3 modes
    for name, ins in instances.items():
        assert sass_info.fp64_instructions(ins) == [], (name, sass_info.fp64_instructions(ins)[:5])
