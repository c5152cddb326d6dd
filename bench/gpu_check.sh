#!/usr/bin/env bash
# One-command GPU check (fresh H100 machine, torch/triton/transformers preinstalled, no internet),
# run from anywhere inside the repository:
#   1. build the CUDA extension (JIT, ninja; timed),
#   2. the backend-parametrised kernel tests (triton and cuda against the torch reference) and
#      the CUDA-specific tests: pytest tests/ -k "kernel or cuda" (less the CPU-only compile
#      check and CPU emulation of the kernels, which CI runs),
#   3. the microbenchmarks: pytest bench/bench_*.py --benchmark-only,
#   4. a short table (bench/report.py: python bench/report.py bench.json), printed last.
# Full results go under $OUT when it is set (build.log, tests.txt, tests.xml, bench.json,
# bench.txt, env.txt, summary.txt), else under a temporary directory. Every step runs under a
# timeout drawn from one overall budget (GPU_CHECK_BUDGET_S, default 450 s) so the whole run
# stays under 8 minutes. Exit status: non-zero if any step failed.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python}
export PYTHONPATH="$ROOT:$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$($PY -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')" 2>/dev/null || echo 9.0)}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
RES=${OUT:-$(mktemp -d)}
mkdir -p "$RES"
BUDGET=${GPU_CHECK_BUDGET_S:-450}
T0=$(date +%s)
status=0

left() {  # seconds left of the budget, capped by $1
  local rem=$(( BUDGET - ($(date +%s) - T0) ))
  [ "$rem" -lt "$1" ] || rem=$1
  [ "$rem" -gt 10 ] || rem=10
  echo "$rem"
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'none (nvidia-smi failed or absent)')"
  $PY -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda)" 2>&1
  $PY -c "import triton; print('triton', triton.__version__)" 2>&1 || true
  echo "nvcc: $(nvcc --version 2>/dev/null | tail -n 1)"
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
} | tee "$RES/env.txt"

echo "== 1/3 build the CUDA extension"
t=$(date +%s)
if timeout "$(left 300)" $PY -c "
import time
t = time.perf_counter()
from rsd_kernels import cuda_backend
ext = cuda_backend.extension()
print(f'extension {ext.__name__} from {ext.__file__} ready in {time.perf_counter() - t:.1f} s')
" >"$RES/build.log" 2>&1; then
  build="ok"
else
  build="FAILED (rc $?)"
  status=1
fi
build_s=$(( $(date +%s) - t ))
tail -n 20 "$RES/build.log"
echo "build: $build in ${build_s}s"

echo "== 2/3 kernel tests (cuda, triton vs the torch reference)"
t=$(date +%s)
timeout "$(left 240)" $PY -m pytest tests/ -q -p no:cacheprovider -rs -k "(kernel or cuda) and not all_cuda_sources_compile and not emulated" \
  --junitxml="$RES/tests.xml" >"$RES/tests.txt" 2>&1
rc=$?
[ $rc -eq 0 ] || status=1
tests_s=$(( $(date +%s) - t ))
tail -n 25 "$RES/tests.txt"
tests_line=$(tail -n 1 "$RES/tests.txt")

echo "== 3/3 microbenchmarks"
t=$(date +%s)
bench_files=$(ls bench/bench_*.py 2>/dev/null)
if [ -n "$bench_files" ]; then
  # the files are named explicitly: bench_*.py does not match pytest's default test_*.py pattern
  # shellcheck disable=SC2086
  timeout "$(left 240)" $PY -m pytest $bench_files -q -p no:cacheprovider -o addopts="" --benchmark-only \
    --benchmark-json="$RES/bench.json" --benchmark-max-time="${BENCH_MAX_TIME:-0.2}" >"$RES/bench.txt" 2>&1
  brc=$?
  [ $brc -eq 0 ] || status=1
  tail -n 5 "$RES/bench.txt"
  bench_line="rc $brc"
else
  bench_line="no bench/bench_*.py in this checkout"
  echo "$bench_line"
fi
bench_s=$(( $(date +%s) - t ))

{
  echo "gpu_check: $(grep '^gpu:' "$RES/env.txt") | $(grep '^python' "$RES/env.txt")"
  echo "build: $build (${build_s}s) | tests: $tests_line (${tests_s}s) | bench: $bench_line (${bench_s}s) | total $(( $(date +%s) - T0 ))s"
  if [ ! -s "$RES/bench.json" ]; then
    echo "(no benchmark results)"
  elif [ -f bench/report.py ]; then
    $PY bench/report.py "$RES/bench.json"
  else
    echo "(bench/report.py, the table printer of the Triton branch, is not in this checkout: see $RES/bench.json)"
  fi
} | tee "$RES/summary.txt"
exit $status
