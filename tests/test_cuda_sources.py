"""The CUDA sources compile (nvcc, sm_80 and sm_90, warnings as errors), keep torch out of the
device code, and the CUDA backend reports why it cannot run where it cannot."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from rsd_kernels import backends

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)


def test_device_code_includes_no_torch_headers():
    device_files = sorted(CSRC.glob("*.cu")) + sorted(CSRC.glob("*.cuh")) + sorted(CSRC.glob("*.h"))
    assert {p.name for p in device_files} >= {"verify.cu", "sampling.cu", "tree_attention.cu", "philox.cuh", "rsd_kernels.h"}
    pattern = re.compile(r'#\s*include\s*[<"](torch|ATen|c10|pybind11)/')
    offenders = [p.name for p in device_files if pattern.search(p.read_text())]
    assert not offenders, f"device code includes torch headers: {offenders}"
    assert pattern.search((CSRC / "bindings.cpp").read_text()), "bindings.cpp is where the torch headers belong"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error message where CUDA is absent")
@pytest.mark.parametrize("op", ["verify_tree", "sample_without_replacement", "stochastic_beam_step", "tree_attention"])
def test_cuda_backend_says_why_it_cannot_run(op):
    with pytest.raises(ValueError, match=r"backend='cuda' cannot run here: .*CUDA"):
        backends.resolve(op, "cuda", "cpu")
    assert "cuda" not in backends.available(op, "cpu")


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_all_cuda_sources_compile():
    proc = subprocess.run([str(ROOT / "scripts" / "check_cuda_compile.sh")], capture_output=True, text=True,
                          timeout=900, env={**__import__("os").environ, "NVCC": NVCC})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for src in sorted(CSRC.glob("*.cu")):
        for arch in ("sm_80", "sm_90"):
            assert f"ok    csrc/{src.name} {arch}" in out, out


def test_auto_picks_triton_for_attention_and_cuda_first_elsewhere(monkeypatch):
    """On a CUDA device ``auto`` takes Triton for tree attention (the CUDA kernel is untimed on a
    GPU), CUDA first for the other ops; the CPU gets the reference."""
    monkeypatch.setattr(backends, "_why_not", lambda op, b, dev: None)  # as if every backend could run
    monkeypatch.setitem(backends._IMPLS["cuda"], "tree_attention", "cuda-impl")
    monkeypatch.setitem(backends._IMPLS["triton"], "tree_attention", "triton-impl")
    monkeypatch.setitem(backends._IMPLS["cuda"], "verify_tree", "cuda-verify")
    assert backends.resolve("tree_attention", "auto", "cuda") == ("triton", "triton-impl")
    assert backends.resolve("verify_tree", "auto", "cuda") == ("cuda", "cuda-verify")
    assert backends.auto_order("tree_attention", "cpu") == ("torch",)
