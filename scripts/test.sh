#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite, then the wheel check (scripts/check_wheel.sh:
# build the wheel, install it into a fresh environment, run `rsd generate` with it; ~2-3 min;
# RSD_SKIP_WHEEL_CHECK=1 skips it). Extra arguments go to pytest.
# A run that collects no test fails (pytest exit 5 is not success).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
. .venv/bin/activate
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
python -m pytest tests/ "$@"
if [ "${RSD_SKIP_WHEEL_CHECK:-0}" != "1" ]; then
    bash scripts/check_wheel.sh
fi
