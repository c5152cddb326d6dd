// Device helpers shared by the kernels: dtype widening, block-wide reductions, and a
// row walker with 16-byte vector loads. No torch headers.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cstdint>

#include "rsd_kernels.h"

namespace rsd {

// The storage type of a DType and the type the kernels compute in (double for float64).
template <typename T, typename C>
struct TypePair {
  using storage = T;
  using compute = C;
};

// Calls f(TypePair<storage, compute>{}) for dtype: one switch for every launcher.
template <typename F>
inline cudaError_t dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat16: return f(TypePair<__half, float>{});
    case DType::kBFloat16: return f(TypePair<__nv_bfloat16, float>{});
    case DType::kFloat32: return f(TypePair<float, float>{});
    case DType::kFloat64: return f(TypePair<double, double>{});
  }
  return cudaErrorInvalidValue;
}

__device__ __forceinline__ float widen(__half x) { return __half2float(x); }
__device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float widen(float x) { return x; }
__device__ __forceinline__ double widen(double x) { return x; }

// exp/log/pow of the compute type: float math for float (no fp64 instruction in the fp16/bf16/
// fp32 kernels), double for fp64 logits. None of them feeds the noise (philox.cuh's log32 does).
__device__ __forceinline__ float c_exp(float x) { return expf(x); }
__device__ __forceinline__ double c_exp(double x) { return exp(x); }
__device__ __forceinline__ float c_log(float x) { return logf(x); }
__device__ __forceinline__ double c_log(double x) { return log(x); }
__device__ __forceinline__ float c_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double c_pow(double x, double y) { return pow(x, y); }
template <typename C> __device__ __forceinline__ C c_tiny();
template <> __device__ __forceinline__ float c_tiny<float>() { return 1.17549435e-38f; }
template <> __device__ __forceinline__ double c_tiny<double>() { return 2.2250738585072014e-308; }
template <typename C> __device__ __forceinline__ C c_neg_inf() { return -static_cast<C>(INFINITY); }
template <typename C> __device__ __forceinline__ bool c_isfinite(C x) { return isfinite(x); }

struct SumOp {
  template <typename V> __device__ __forceinline__ V operator()(V a, V b) const { return a + b; }
};
struct MaxOp {
  template <typename V> __device__ __forceinline__ V operator()(V a, V b) const { return a > b ? a : b; }
};
struct MinOp {
  template <typename V> __device__ __forceinline__ V operator()(V a, V b) const { return a < b ? a : b; }
};

// Block-wide reduction; every thread gets the result. `scratch` holds >= 32 values.
// Contains two __syncthreads(): call it from all threads of the block.
template <typename V, typename Op>
__device__ __forceinline__ V block_reduce(V v, Op op, V* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  V r = scratch[0];
  for (int w = 1; w < nwarps; ++w) r = op(r, scratch[w]);
  __syncthreads();
  return r;
}

// One butterfly step: lanes with bit W set keep v[W..2W), the others v[0..W); each adds the
// partner's copy of the half it keeps (into v[0..W)).
template <int W, typename Acc>
__device__ __forceinline__ void transpose_sum_step(Acc (&v)[32], int lane) {
  const bool upper = lane & W;
#pragma unroll
  for (int i = 0; i < W; ++i) {
    const Acc lo = v[i], hi = v[i + W];  // values first: a select of addresses would put v in local memory
    v[i] = (upper ? hi : lo) + __shfl_xor_sync(0xffffffffu, upper ? lo : hi, W);
  }
}

// The full sum over the warp of v[j] (j < 32), returned on lane j: a butterfly that halves the
// live values at every step (31 shuffles for 32 dot products instead of 32 x 5).
template <typename Acc>
__device__ __forceinline__ Acc warp_transpose_sum(Acc (&v)[32], int lane) {
  transpose_sum_step<16>(v, lane);
  transpose_sum_step<8>(v, lane);
  transpose_sum_step<4>(v, lane);
  transpose_sum_step<2>(v, lane);
  transpose_sum_step<1>(v, lane);
  return v[0];
}

// (value, index) ordering: larger value first, then lower index (torch's argmax tie rule).
template <typename C>
__device__ __forceinline__ bool ranks_before(C va, int ia, C vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}

// Block-wide argmax over (value, index) pairs; every thread gets the winner.
template <typename C>
__device__ __forceinline__ void block_argmax(C& v, int& i, C* vscratch, int* iscratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const C ov = __shfl_xor_sync(0xffffffffu, v, off);
    const int oi = __shfl_xor_sync(0xffffffffu, i, off);
    if (ranks_before(ov, oi, v, i)) {
      v = ov;
      i = oi;
    }
  }
  if (lane == 0) {
    vscratch[warp] = v;
    iscratch[warp] = i;
  }
  __syncthreads();
  v = vscratch[0];
  i = iscratch[0];
  for (int w = 1; w < nwarps; ++w)
    if (ranks_before(vscratch[w], iscratch[w], v, i)) {
      v = vscratch[w];
      i = iscratch[w];
    }
  __syncthreads();
}

// Calls f(i, x) for every element of row[0..n), threads striding; 16-byte loads when the
// row is 16-byte aligned and n is a multiple of the vector width.
template <typename T, typename F>
__device__ __forceinline__ void for_each_in_row(const T* row, int n, F&& f) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  const bool vec_ok = (n % kVec == 0) && (reinterpret_cast<uintptr_t>(row) % 16 == 0);
  if (vec_ok) {
    const int nvec = n / kVec;
    for (int c = threadIdx.x; c < nvec; c += blockDim.x) {
      const uint4 raw = reinterpret_cast<const uint4*>(row)[c];
      T vals[kVec];
      memcpy(vals, &raw, sizeof(raw));
#pragma unroll
      for (int e = 0; e < kVec; ++e) f(c * kVec + e, vals[e]);
    }
  } else {
    for (int i = threadIdx.x; i < n; i += blockDim.x) f(i, row[i]);
  }
}

}  // namespace rsd
