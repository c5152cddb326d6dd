#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job on the embedded default.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m rsd_kernels.demo "$@"
