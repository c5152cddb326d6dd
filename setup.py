"""Build script: pure Python everywhere, plus the CUDA extension where it can be built.

The extension ``rsd_kernels._C`` is compiled from ``csrc/`` only when

* ``RSD_KERNELS_BUILD_CUDA=1`` (then a failure to build is an error), or
* ``RSD_KERNELS_BUILD_CUDA`` is unset and the build environment has a CUDA build of
  torch and a CUDA toolkit (``CUDA_HOME`` or ``nvcc`` on PATH).

``RSD_KERNELS_BUILD_CUDA=0`` always skips it. Install with ``--no-build-isolation`` so
the build sees the torch you run with; ``TORCH_CUDA_ARCH_LIST`` is honoured (default
``8.0;9.0``). Without the extension, ``backend="cuda"`` can still JIT-build it with
ninja on first use (``rsd_kernels.cuda_backend``).
"""
import glob
import os
import shutil

from setuptools import find_namespace_packages, find_packages, setup
from setuptools.command.build_py import build_py


def _want_cuda():
    flag = os.environ.get("RSD_KERNELS_BUILD_CUDA", "").strip()
    if flag == "0":
        return False, False
    forced = flag == "1"
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME
    except Exception as exc:  # torch not importable in the build environment
        if forced:
            raise RuntimeError(f"RSD_KERNELS_BUILD_CUDA=1 but torch is not importable: {exc}")
        return False, False
    ok = torch.version.cuda is not None and CUDA_HOME is not None
    if forced and not ok:
        raise RuntimeError(
            "RSD_KERNELS_BUILD_CUDA=1 but torch has no CUDA build "
            f"(torch.version.cuda={torch.version.cuda}) or CUDA_HOME is unset ({CUDA_HOME})"
        )
    return ok, forced


def _extensions():
    build, _ = _want_cuda()
    sources = sorted(glob.glob("csrc/*.cu")) + sorted(glob.glob("csrc/*.cpp"))
    if not build or not sources:
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    ext = CUDAExtension(
        name="rsd_kernels._C",
        sources=sources,
        include_dirs=[os.path.abspath("csrc")],
        extra_compile_args={"cxx": ["-O3", "-std=c++17"], "nvcc": ["-O3", "-std=c++17"]},
    )
    return [ext], {"build_ext": BuildExtension}


class BuildPyWithCsrc(build_py):
    """Ship ``csrc/`` as ``rsd_kernels/csrc`` so a non-editable install can still JIT-build."""

    def run(self):
        super().run()
        for src in glob.glob("csrc/**/*", recursive=True):  # csrc/cpu/ too (the CPU Philox's JIT build)
            if src.endswith((".cu", ".cuh", ".h", ".cpp")):
                dst = os.path.join(self.build_lib, "rsd_kernels", os.path.dirname(src))
                os.makedirs(dst, exist_ok=True)
                shutil.copy(src, dst)


ext_modules, cmdclass = _extensions()
cmdclass = {**cmdclass, "build_py": BuildPyWithCsrc}

# Every folder of rsd is a package here, data-only ones included (rsd.data: the built-in data sets,
# rsd.engine.drafts.weights: the shipped drafts, rsd.custom_generate: the transformers entry point):
# setuptools drops folders absent from `packages` from the wheel (tests/test_wheel.py lists it).
packages = find_packages(include=["rsd_kernels", "rsd_kernels.*"])
packages += find_namespace_packages(where="python", include=["rsd", "rsd.*"], exclude=["*.__pycache__"])

setup(
    packages=packages,
    package_dir={"rsd": "python/rsd"},
    package_data={"rsd.engine.drafts.weights": ["*.safetensors"], "rsd.data": ["*.jsonl"],
                  "rsd.custom_generate": ["*.py"], "rsd_kernels": ["csrc/*", "csrc/cpu/*"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
