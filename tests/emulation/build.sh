#!/usr/bin/env bash
# Build the CPU emulation of the csrc kernels (host_shim.h): build.sh OUT_DIR -> OUT_DIR/libemu.so
set -eu
here=$(cd "$(dirname "$0")" && pwd)
csrc=$(cd "$here/../../csrc" && pwd)
out=$1
mkdir -p "$out"
cuda_inc=${CUDA_INCLUDE:-/usr/local/cuda/include}
for f in verify verify_traversal sampling tree_attention; do
  # kernel<<<grid, block, smem, stream>>>(p);  ->  emu::launch(kernel, grid, block, smem, p);
  # extern __shared__ T name[];                ->  T* name = (T*)emu::dyn_smem();
  sed -E -e 's/([A-Za-z_][A-Za-z0-9_]*<[^;]*>)<<<([^,]+), ([^,]+), ([^,]+), [^>]+>>>\(([a-z_]+)\);/emu::launch(\1, \2, \3, \4, \5);/' \
         -e 's/__align__\([0-9]+\) //' -e 's/cudaFuncSetAttribute\(/emu::func_set_attribute(/' \
         -e 's/extern __shared__ ([a-z ]+) ([a-z_]+)\[\];/\1* \2 = reinterpret_cast<\1*>(emu::dyn_smem());/' \
         "$csrc/$f.cu" >"$out/$f.cc"
  grep -q "emu::launch" "$out/$f.cc" || { echo "build.sh: no launch rewritten in $f.cu" >&2; exit 1; }
done
cp "$here/harness.cc" "$out/harness.cc"
${CXX:-g++} -std=c++20 -O2 -ffp-contract=off -fPIC -shared -pthread -Wno-attributes -include "$here/host_shim.h" \
  -I"$csrc" -I"$cuda_inc" "$out/verify.cc" "$out/verify_traversal.cc" "$out/sampling.cc" "$out/tree_attention.cc" "$out/harness.cc" -o "$out/libemu.so"
