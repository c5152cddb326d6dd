#!/usr/bin/env bash
# Compile check of the CUDA sources: every csrc/*.cu with nvcc for sm_80 and sm_90, warnings
# as errors (device and host), objects into a temporary directory; then, when a Python with
# torch is at hand, a syntax-only g++ pass over csrc/bindings.cpp against torch's headers.
# One line per file and arch; exits non-zero if anything fails.
#
#   scripts/check_cuda_compile.sh            # all of it
#   NVCC=/path/to/nvcc ARCHS="80 90" JOBS=2 PYTHON=python3 SKIP_BINDINGS=1 scripts/check_cuda_compile.sh
# (JOBS compiles at a time, default: the number of CPUs)
set -u
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
ARCHS=${ARCHS:-"80 90"}
PYTHON=${PYTHON:-python3}
if [ ! -x "$NVCC" ]; then
  echo "check_cuda_compile: nvcc not found (set NVCC)" >&2
  exit 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "nvcc: $("$NVCC" --version | tail -n 1)"
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
fail=0
compile_one() {  # compile_one SRC ARCH: writes $tmp/SRC_smARCH.{res,log}
  local src=$1 arch=$2 name start
  name="$tmp/$(basename "$src" .cu)_sm$arch"
  start=$(date +%s)
  if "$NVCC" -std=c++17 -O3 -Icsrc -gencode "arch=compute_$arch,code=sm_$arch" \
      -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror -c "$src" -o "$name.o" >"$name.log" 2>&1; then
    echo "ok    $src sm_$arch ($(( $(date +%s) - start ))s)" >"$name.res"
  else
    { echo "FAIL  $src sm_$arch"; sed 's/^/      /' "$name.log"; } >"$name.res"
  fi
}
# every (file, arch) pair, JOBS at a time (the largest files first), then the lines in a fixed order
running=0
for src in $(ls -S csrc/*.cu); do
  for arch in $ARCHS; do
    compile_one "$src" "$arch" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
      wait -n
      running=$((running - 1))
    fi
  done
done
wait
for src in csrc/*.cu; do
  for arch in $ARCHS; do
    res="$tmp/$(basename "$src" .cu)_sm$arch.res"
    [ -s "$res" ] || echo "FAIL  $src sm_$arch (no result)" >"$res"
    cat "$res"
    grep -q '^FAIL' "$res" && fail=1
  done
done

# bindings.cpp: syntax only, against the installed torch's headers (a CPU torch lacks one
# generated CUDA header, c10/cuda/impl/cuda_cmake_macros.h: an empty stand-in is supplied).
if [ "${SKIP_BINDINGS:-0}" != 1 ] && "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  cuda_inc=$(dirname "$(dirname "$(readlink -f "$NVCC")")")/include
  [ -f "$cuda_inc/cuda_runtime.h" ] || cuda_inc=/usr/local/cuda/include
  mkdir -p "$tmp/stub/c10/cuda/impl"
  echo '#pragma once' >"$tmp/stub/c10/cuda/impl/cuda_cmake_macros.h"
  incs=$("$PYTHON" -c "import sysconfig, torch.utils.cpp_extension as c; print(' '.join('-isystem ' + p for p in c.include_paths() + [sysconfig.get_paths()['include']]))")
  start=$(date +%s)
  # shellcheck disable=SC2086
  if ${CXX:-g++} -std=c++17 -fsyntax-only -Wall -Wextra -Werror $incs -isystem "$cuda_inc" -isystem "$tmp/stub" -Icsrc \
      -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H csrc/bindings.cpp >"$tmp/log" 2>&1; then
    echo "ok    csrc/bindings.cpp syntax ($(( $(date +%s) - start ))s)"
  else
    echo "FAIL  csrc/bindings.cpp syntax"
    sed 's/^/      /' "$tmp/log"
    fail=1
  fi
else
  echo "skip  csrc/bindings.cpp syntax (no Python with torch, or SKIP_BINDINGS=1)"
fi
exit $fail
