// The few sm_80+ instructions the kernels use directly, behind small device functions:
//
//   cp_async_16 / cp_async_commit / cp_async_wait<N>   asynchronous global -> shared copies
//       (cp.async.cg, 16 bytes, zero-fill when the source is invalid: LDGSTS in SASS), grouped
//       and waited on per group, for multi-stage load pipelines;
//   ldmatrix_x4 / ldmatrix_x4_trans                   four 8x8 b16 tiles from shared memory
//       into the mma.sync fragment layout (LDSM);
//   mma_16816<T>                                      D += A B, m16n8k16, fp16/bf16 in, fp32
//       accumulate (HMMA), fragment layouts as in the PTX ISA ("Matrix Fragments for
//       mma.m16n8k16 with floating point type");
//   blocks_barrier / launch_cooperative                blocks of a grid that wait for each other
//       (an atomic counter), in a launch that keeps them all resident.
//
// Below sm_80 (a JIT build for an older GPU) cp.async degrades to a synchronous copy and the
// launchers never pick the mma kernels (tree_attention_uses_tensor_cores). Under the CPU
// emulation (tests/emulation/host_shim.h defines RSD_EMULATION) the shim supplies these
// functions, with the same per-lane fragment layouts, so that the same kernel source runs.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace rsd {

// Two floats rounded to a packed pair of T (the lower column in the low half), as mma takes them.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  uint32_t r;
  if constexpr (std::is_same<T, __half>::value) {
    const __half2 h = __floats2half2_rn(lo, hi);
    memcpy(&r, &h, 4);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    memcpy(&r, &h, 4);
  }
  return r;
}

#ifndef RSD_EMULATION

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronous; zero-filled (and `src` not read) when !valid.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(src_bytes)
               : "memory");
#else
  *static_cast<uint4*>(dst) = valid ? *static_cast<const uint4*>(src) : make_uint4(0, 0, 0, 0);
#endif
}

// 4 or 8 bytes global -> shared, asynchronous (cp.async.ca), zero-filled when !valid; 2 bytes: a
// plain copy (cp.async has no 2-byte form). For rows that 16-byte copies cannot tile.
template <int BYTES>
__device__ __forceinline__ void cp_async_small(void* dst, const void* src, bool valid) {
  static_assert(BYTES == 2 || BYTES == 4 || BYTES == 8, "2, 4 or 8 bytes");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (BYTES != 2) {
    const int src_bytes = valid ? BYTES : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(smem_addr(dst)), "l"(src), "n"(BYTES),
                 "r"(src_bytes)
                 : "memory");
    return;
  }
#endif
  if constexpr (BYTES == 2) {
    *static_cast<uint16_t*>(dst) = valid ? *static_cast<const uint16_t*>(src) : uint16_t(0);
  } else if constexpr (BYTES == 4) {
    *static_cast<uint32_t*>(dst) = valid ? *static_cast<const uint32_t*>(src) : 0u;
  } else {
    *static_cast<uint2*>(dst) = valid ? *static_cast<const uint2*>(src) : make_uint2(0, 0);
  }
}

// Closes the group of copies issued since the previous commit.
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most N committed groups are still in flight (this thread's copies only:
// a __syncthreads() must follow before other threads read them).
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
// Lanes 8i..8i+7 give the row addresses (16 bytes each) of tile i; r[i] receives tile i's
// (row lane/4, columns 2(lane%4), 2(lane%4)+1); _trans: (rows 2(lane%4), 2(lane%4)+1, column lane/4).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row_addr)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row_addr)));
}

// d += a b for one 16x8 tile: a = 16x16 row-major (4 regs), b = 16x8 column-major (2 regs).
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same<T, __half>::value) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}
#else
// Never launched below sm_80 (the launcher checks the device); defined so every arch compiles.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void*) { r[0] = r[1] = r[2] = r[3] = 0; __trap(); }
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void*) {
  r[0] = r[1] = r[2] = r[3] = 0;
  __trap();
}
template <typename T>
__device__ __forceinline__ void mma_16816(float (&)[4], const uint32_t (&)[4], uint32_t, uint32_t) { __trap(); }
#endif

// ---- blocks of one row that cooperate (verify.cu) ----

// Barrier over the blocks that share `counter` (zeroed before the launch): every block calls it
// the same number of times; the n-th call returns once all `blocks` blocks have made their n-th
// call, with their global writes before the call visible. Call from all threads of the block.
__device__ __forceinline__ void blocks_barrier(unsigned* counter, unsigned blocks, unsigned n) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(counter, 1u);
    const unsigned target = n * blocks;
    while (*static_cast<volatile unsigned*>(counter) < target) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
      __nanosleep(32);
#endif
    }
    __threadfence();
  }
  __syncthreads();
}

// A launch whose blocks are all resident at once (blocks_barrier needs that): the CUDA runtime
// refuses it (cudaErrorCooperativeLaunchTooLarge) rather than start a grid that could deadlock.
template <typename Args>
inline cudaError_t launch_cooperative(void (*kernel)(Args), dim3 grid, unsigned threads, size_t smem, Args args,
                                      cudaStream_t stream) {
  void* params[] = {&args};
  return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), grid, dim3(threads), params, smem, stream);
}

#endif  // RSD_EMULATION

}  // namespace rsd
