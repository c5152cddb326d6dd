#!/usr/bin/env bash
# One-command GPU check (fresh H200 machine, torch/triton/transformers preinstalled, no internet),
# run from anywhere inside the repository, in one call of under 8 minutes:
#   1. build the CUDA extension (JIT with ninja, else setup.py build_ext --inplace; timed),
#   2. the backend-parametrised kernel tests (triton and cuda against the torch reference), the
#      CUDA-specific tests and the noise contract's device checks (compiled tl.philox / log32 bit for
#      bit): pytest tests/ -k "(kernel or cuda or noise) and not <CPU-only checks>"
#      (when step 1 failed: without the cuda ones, so the triton rows still come),
#   3. the microbenchmarks: python bench/run_bench.py (the bench/bench_*.py cases, goal shapes first,
#      device times; the cuda rows are skipped when step 1 failed),
#   4. method="auto": python bench/auto_profile.py (its cost profile at the Llama-2-7B shape with the
#      115M draft, batch 1 and 8, and the trees the selector would choose there),
#   5. the end-to-end loop at the seed's shapes: python bench/e2e_loop.py measure (Llama-2-7B and
#      -13B-shaped targets, a 115M draft, random bf16 weights; AR and every method at budgets
#      6..30; then the projected token-rate table),
#   6. the table (bench/report.py): each step's status, the microbenchmarks with the floor
#      fraction of the 4.3 TB/s copy bandwidth and the ratios to SDPA / FlexAttention / the torch
#      reference, issue 21's goals met / MISSED / not measured (tree attention >= 60% of 4.3 TB/s at
#      B=1 GQA prefix 16384 and at B=8; rrs verify <= 25 us at B=1 V=32000 and <= 60 us at B=64
#      V=128256; kseq <= 3x rrs; Gumbel-top-k <= 6 us at 64x32000 k=4; equal to the reference;
#      issue 19's floor: verify_tree(mode="traversal") <= 40 us per row at B=1, T=31, V=32000),
#      and the e2e block times. The goal shapes are each bench file's first shapes, so they run first.
# The table is printed whatever failed before it. Full results go under $OUT when it is set
# (env.txt, steps.tsv, build.log, tests.txt, tests.xml, bench.json, bench.txt, e2e/e2e.json,
# e2e/projected.json, e2e.txt, summary.txt), else under a temporary directory.
# Budget: GPU_CHECK_BUDGET_S (default 440 s; with the facts and the table, under 8 minutes) is shared
# by the steps: each step's timeout is its cap (GPU_CHECK_BUILD_S 150, GPU_CHECK_TESTS_S 90,
# GPU_CHECK_BENCH_S 80, GPU_CHECK_AUTO_S 60, the rest to e2e) unless that would eat what the later steps
# are guaranteed (tests 40, bench 40, auto 30, e2e 100, table 10). A step past its timeout is stopped
# and reported TIMEOUT. Step 4 (bench/auto_profile.py) builds method="auto"'s cost profile at the
# 7B shape (batch 1 and 8) and prints the trees the selector would choose there (auto_profile.txt).
# It has not yet run on a GPU (no device was lent so far): the H200 table is still owed.
# GPU_CHECK_DRY_RUN=1 runs the same steps on a CPU at tiny shapes (the build fails there, which is
# the point: the table must still come); GPU_CHECK_TESTS_K replaces step 2's -k expression;
# GPU_CHECK_SKIP="tests bench" skips steps; GPU_CHECK_BENCH_FILES names bench files (default: all),
# E2E_ARGS adds bench/e2e_loop.py options, E2E_BACKEND sets its backend (default auto; triton when
# step 1 failed on a GPU). Exit status: non-zero if any step failed.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$(command -v python || command -v python3 || echo python)}
export PYTHONPATH="$ROOT:$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
RES=${OUT:-$(mktemp -d)}
mkdir -p "$RES"
# one interpreter start for the facts every step needs (python, torch, triton, transformers, arch, ninja)
$PY - >"$RES/facts.txt" 2>&1 <<'PYEOF'
import sys
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda)
for mod in ("triton", "transformers"):
    try:
        print(mod, __import__(mod).__version__)
    except Exception as exc:
        print(mod, "not importable:", type(exc).__name__, exc)
gpu = torch.cuda.is_available()
c = torch.cuda.get_device_capability() if gpu else (9, 0)
print(f"arch={c[0]}.{c[1]}")
print(f"gpu={int(gpu)}")
from torch.utils.cpp_extension import is_ninja_available
print(f"ninja={int(is_ninja_available())}")
PYEOF
fact() { sed -n "s/^$1=//p" "$RES/facts.txt" | head -n 1; }
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(fact arch)}
TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
BUDGET=${GPU_CHECK_BUDGET_S:-440}
DRY=${GPU_CHECK_DRY_RUN:-0}
SKIP=" ${GPU_CHECK_SKIP:-} "
T0=$(date +%s)
status=0
: >"$RES/steps.tsv"

elapsed() { echo $(( $(date +%s) - T0 )); }
cap() {  # seconds for a step: min($1, budget left - $2 reserved for later steps), at least 15
  local rem=$(( BUDGET - $(elapsed) - $2 ))
  [ "$rem" -lt "$1" ] || rem=$1
  [ "$rem" -gt 15 ] || rem=15
  echo "$rem"
}
step() {  # name status seconds detail
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RES/steps.tsv"
  [ "${2%% *}" = ok ] || [ "${2%% *}" = skipped ] || status=1
}
rcstatus() {  # exit code -> status word
  case $1 in 0) echo ok ;; 124|137|130) echo "TIMEOUT (rc $1)" ;; *) echo "FAILED (rc $1)" ;; esac
}
skipped() { case "$SKIP" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

{
  echo "date: $(date -u +%FT%TZ)"
  echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'none (nvidia-smi failed or absent)')"
  grep -v '=' "$RES/facts.txt"
  echo "nvcc: $(nvcc --version 2>/dev/null | tail -n 1)"
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS budget=${BUDGET}s dry_run=$DRY"
} | tee "$RES/env.txt"

echo "== 1/5 build the CUDA extension"
t=$(date +%s)
: >"$RES/build.log"
build_ok=0
if skipped build; then
  step build "skipped" 0 "GPU_CHECK_SKIP"
else
  # The JIT build needs ninja; a machine without it (and without internet) builds the same
  # extension in place through setup.py (setuptools compiles without ninja, one file at a time).
  if [ "$(fact ninja)" != 1 ]; then
    echo "ninja not found: RSD_KERNELS_BUILD_CUDA=1 python setup.py build_ext --inplace" | tee -a "$RES/build.log"
    RSD_KERNELS_BUILD_CUDA=1 timeout -k 10 "$(cap ${GPU_CHECK_BUILD_S:-150} 220)" $PY setup.py build_ext --inplace >>"$RES/build.log" 2>&1
  fi
  timeout -k 10 "$(cap ${GPU_CHECK_BUILD_S:-150} 220)" $PY -c "
import time
t = time.perf_counter()
from rsd_kernels import cuda_backend
ext = cuda_backend.extension()
print(f'extension {ext.__name__} from {ext.__file__} ready in {time.perf_counter() - t:.1f} s')
" >>"$RES/build.log" 2>&1
  rc=$?
  tail -n 20 "$RES/build.log"
  [ $rc -eq 0 ] && build_ok=1
  step build "$(rcstatus $rc)" $(( $(date +%s) - t )) "$(grep -v '^\s*$' "$RES/build.log" | tail -n 1 | cut -c1-150)"
fi
if [ $build_ok -eq 0 ]; then
  # no later step retries the build: the cuda rows are skipped, the e2e loop runs on triton
  # (a build killed by its timeout may also leave torch's JIT lock behind, on which a retry would wait)
  export RSD_BENCH_SKIP_CUDA="the CUDA extension did not build in step 1 (build.log)"
  export RSD_KERNELS_DISABLE_CUDA="$RSD_BENCH_SKIP_CUDA"
  CUDA_K=" and not cuda"
  if [ "$(fact gpu)" = 1 ]; then E2E_BACKEND=${E2E_BACKEND:-triton}; else E2E_BACKEND=${E2E_BACKEND:-auto}; fi
else
  CUDA_K=""
  E2E_BACKEND=${E2E_BACKEND:-auto}
fi

echo "== 2/5 kernel tests (cuda, triton vs the torch reference)"
t=$(date +%s)
K=${GPU_CHECK_TESTS_K:-"(kernel or cuda or noise) and not all_cuda_sources_compile and not emulated$CUDA_K"}
if skipped tests; then
  step tests "skipped" 0 "GPU_CHECK_SKIP"
else
  # SIGINT first: pytest then still writes the JUnit XML of the tests that ran
  timeout -s INT -k 15 "$(cap ${GPU_CHECK_TESTS_S:-90} 180)" $PY -m pytest tests/ -q -p no:cacheprovider -rs -k "$K" \
    --junitxml="$RES/tests.xml" >"$RES/tests.txt" 2>&1
  rc=$?
  tail -n 25 "$RES/tests.txt"
  [ $rc -eq 5 ] && rc=0  # nothing selected is not a failure of the kernels
  step tests "$(rcstatus $rc)" $(( $(date +%s) - t )) "$(tail -n 1 "$RES/tests.txt" | cut -c1-150)"
fi

echo "== 3/5 microbenchmarks"
t=$(date +%s)
if skipped bench; then
  step bench "skipped" 0 "GPU_CHECK_SKIP"
else
  c=$(cap ${GPU_CHECK_BENCH_S:-80} 140)
  # no case starts after c - 20 s; the JSON is rewritten after every case, so a timeout keeps them
  # shellcheck disable=SC2086
  timeout -k 10 "$c" $PY bench/run_bench.py --out "$RES/bench.json" --deadline-s $(( c > 40 ? c - 20 : c / 2 )) \
    ${GPU_CHECK_BENCH_FILES:-} >"$RES/bench.txt" 2>&1
  rc=$?
  tail -n 5 "$RES/bench.txt"
  step bench "$(rcstatus $rc)" $(( $(date +%s) - t )) "$(tail -n 1 "$RES/bench.txt" | cut -c1-150)"
fi

echo "== 4/5 method=auto: the cost profile at the 7B shape and the trees it picks"
t=$(date +%s)
if skipped auto; then
  step auto "skipped" 0 "GPU_CHECK_SKIP"
else
  c=$(cap ${GPU_CHECK_AUTO_S:-60} 110)
  AUTO_ARGS=""
  [ "$DRY" = 1 ] && AUTO_ARGS="--tiny --device cpu"
  timeout -k 10 "$c" $PY bench/auto_profile.py --out "$RES/auto" --time-budget-s $(( c / 2 )) $AUTO_ARGS \
    >"$RES/auto_profile.txt" 2>&1
  rc=$?
  grep -E "^(==|auto profile|  T=0 a = 0.[48])" "$RES/auto_profile.txt" | head -n 12
  step auto "$(rcstatus $rc)" $(( $(date +%s) - t )) "$(tail -n 1 "$RES/auto_profile.txt" | cut -c1-150)"
fi

echo "== 5/5 end-to-end decoding loop"
t=$(date +%s)
if skipped e2e; then
  step e2e "skipped" 0 "GPU_CHECK_SKIP"
else
  c=$(cap 600 10)
  E2E_ARGS=${E2E_ARGS:-}
  [ "$DRY" = 1 ] && E2E_ARGS="--tiny $E2E_ARGS"
  # no configuration starts after c - 45 s (one configuration, model teardown and the projection fit in the rest)
  timeout -k 10 "$c" $PY bench/e2e_loop.py measure --out "$RES/e2e" --backend "$E2E_BACKEND" \
    --time-budget-s $(( c > 90 ? c - 45 : c / 2 )) $E2E_ARGS >"$RES/e2e.txt" 2>&1
  rc=$?
  tail -n 8 "$RES/e2e.txt"
  step e2e "$(rcstatus $rc)" $(( $(date +%s) - t )) "backend $E2E_BACKEND; $(grep -c . "$RES/e2e.txt") lines in e2e.txt"
fi

{
  echo
  echo "gpu_check: $(grep '^gpu:' "$RES/env.txt") | $(grep '^python' "$RES/env.txt") | total $(elapsed)s | results in $RES"
  $PY bench/report.py "$RES/bench.json" --steps "$RES/steps.tsv" --tests "$RES/tests.xml" --e2e "$RES/e2e/e2e.json" \
    || { echo "(bench/report.py failed: the steps as recorded)"; cat "$RES/steps.tsv"; }
} | tee "$RES/summary.txt"
exit $status
