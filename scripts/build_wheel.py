"""Build the wheel of a clean copy of the checkout: ``python scripts/build_wheel.py DEST`` prints its path.

The copy holds the checkout's files as git sees them (tracked, plus untracked files it does not
ignore; a plain walk without git), so a stale ``build/`` folder or a local virtual environment
cannot leak into the wheel or hide a missing file. The build is ``pip wheel --no-deps
--no-build-isolation`` with ``RSD_KERNELS_BUILD_CUDA=0`` (pure Python). Used by
``tests/test_wheel.py`` (the wheel's file list) and ``scripts/check_wheel.sh`` (install and run).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".benchmarks", "results"}


def source_files() -> list[str]:
    """The checkout's files, relative to its root."""
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


def build_wheel(dest: str) -> tuple[str, str]:
    """Build into ``dest``; returns (the wheel's path, the build's log). RuntimeError if it fails."""
    src = os.path.join(dest, "src")
    for f in source_files():
        os.makedirs(os.path.dirname(os.path.join(src, f)), exist_ok=True)
        shutil.copy2(os.path.join(REPO, f), os.path.join(src, f))
    env = dict(os.environ, RSD_KERNELS_BUILD_CUDA="0")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w",
                        os.path.join(dest, "wheel"), src], env=env, capture_output=True, text=True, timeout=900)
    log = p.stdout + p.stderr
    if p.returncode != 0:
        raise RuntimeError(f"pip wheel failed:\n{log[-4000:]}")
    wheels = [w for w in os.listdir(os.path.join(dest, "wheel")) if w.endswith(".whl")]
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel, got {wheels}")
    return os.path.join(dest, "wheel", wheels[0]), log


if __name__ == "__main__":
    print(build_wheel(os.path.abspath(sys.argv[1]))[0])
