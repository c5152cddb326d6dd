"""The wheel carries every file the installed package needs, and its build warns about nothing.

The wheel is built from a clean copy of the checkout's files (tracked, plus untracked ones git does
not ignore), so a stale ``build/`` folder cannot hide a missing file. Its file list must hold every
module of ``rsd_kernels`` and ``rsd``, the data sets, both drafts' weights, the ``custom_generate``
entry point and ``csrc/`` (as ``rsd_kernels/csrc``, for the JIT build of a non-editable install).
``scripts/check_wheel.sh`` (run by ``scripts/test.sh``) installs such a wheel into a fresh
environment and runs ``rsd generate`` with it.
"""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".benchmarks", "results"}


def source_files():
    """The checkout's files, relative to the root: git's view when there is one, else a walk."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                             capture_output=True, check=True, timeout=60).stdout
        files = [f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for root, dirs, names in os.walk(REPO):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            files += [os.path.relpath(os.path.join(root, n), REPO) for n in names]
    return [f for f in files if os.path.isfile(os.path.join(REPO, f))]


def expected_in_wheel(files):
    """Where each shipped source file lands in the wheel."""
    out = set()
    for f in files:
        if f.startswith("rsd_kernels/") and f.endswith(".py"):
            out.add(f)
        elif f.startswith("python/rsd/") and f.endswith((".py", ".jsonl", ".safetensors")):
            out.add(f[len("python/"):])
        elif f.startswith("csrc/") and f.endswith((".cu", ".cuh", ".h", ".cpp")):
            out.add("rsd_kernels/" + f)
    return out


def build_wheel(dest):
    """Build the wheel of a clean copy of the checkout into ``dest``; (wheel path, build log)."""
    src = os.path.join(dest, "src")
    for f in source_files():
        os.makedirs(os.path.dirname(os.path.join(src, f)) or src, exist_ok=True)
        shutil.copy2(os.path.join(REPO, f), os.path.join(src, f))
    env = dict(os.environ, RSD_KERNELS_BUILD_CUDA="0")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w",
                        os.path.join(dest, "wheel"), src], env=env, capture_output=True, text=True, timeout=600)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-4000:]
    wheels = [w for w in os.listdir(os.path.join(dest, "wheel")) if w.endswith(".whl")]
    assert len(wheels) == 1, wheels
    return os.path.join(dest, "wheel", wheels[0]), log


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(str(tmp_path_factory.mktemp("wheel")))


def test_wheel_lists_every_shipped_file(wheel):
    path, _ = wheel
    names = set(zipfile.ZipFile(path).namelist())
    want = expected_in_wheel(source_files())
    # the files the issue names, spelled out (so that the expectation itself cannot go empty)
    named = {"rsd/data/dolly.jsonl", "rsd/data/wmt_de_en.jsonl", "rsd/data/xsum.jsonl",
             "rsd/engine/drafts/weights/draft.safetensors", "rsd/engine/drafts/weights/eagle.safetensors",
             "rsd/custom_generate/generate.py", "rsd/cli/__init__.py", "rsd/engine/generate.py",
             "rsd_kernels/__init__.py", "rsd_kernels/csrc/verify.cu", "rsd_kernels/csrc/bindings.cpp"}
    assert named <= want
    missing = sorted(want - names)
    assert not missing, f"the wheel lacks {missing}"
    assert any(n.endswith("entry_points.txt") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "rsd = rsd.cli:main" in zipfile.ZipFile(path).read(entry).decode()


def test_wheel_build_warns_about_nothing(wheel):
    _, log = wheel
    warnings = [ln.strip() for ln in log.splitlines() if "Warning:" in ln or "absent from the `packages`" in ln]
    assert not warnings, "\n".join(warnings)
