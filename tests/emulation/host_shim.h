// Run the CUDA kernels of csrc/ on the CPU, for tests on machines without a GPU: the .cu
// sources are compiled as C++ (g++ -include host_shim.h), every CUDA thread of a block is a
// std::thread, __syncthreads/__syncwarp are barriers, warp shuffles go through a per-warp
// exchange buffer, __shared__ variables are statics shared by the block's threads (blocks run
// one after another). Kernel launches `k<<<grid, block, smem, stream>>>(args)` are rewritten by
// build.sh to `emu::launch(k, grid, block, smem, args)`. nvcuda::wmma is emulated per warp:
// every lane holds the whole 16x16 tile in fp32 and computes the whole product; lane 0 stores.
// Only what the kernels of csrc/ use is provided.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <array>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#undef __device__
#undef __global__
#undef __host__
#undef __forceinline__
#undef __shared__
#define __device__
#define __global__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

using std::isfinite;

namespace emu {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

struct Block {
  explicit Block(unsigned threads) : all(threads), shfl((threads + 31) / 32) {
    for (unsigned w = 0; w < (threads + 31) / 32; ++w) warps.emplace_back(std::make_unique<std::barrier<>>(32));
  }
  std::barrier<> all;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<std::array<uint64_t, 32>> shfl;
  std::vector<unsigned char> dyn_smem;
};

inline thread_local Dim3 thread_idx, block_idx;
inline Dim3 block_dim, grid_dim;
inline thread_local Block* block = nullptr;
// Threads per block to emulate (0: the launch's own value); must be a multiple of 32.
inline unsigned block_threads_override = 0;

template <typename F>
cudaError_t func_set_attribute(F, cudaFuncAttribute, int) { return cudaSuccess; }

inline unsigned char* dyn_smem() { return block->dyn_smem.data(); }

template <typename Args>
void launch(void (*kernel)(Args), dim3 grid, unsigned threads, size_t smem, const Args& args) {
  if (block_threads_override) threads = block_threads_override;
  if (threads % 32) std::abort();
  block_dim = Dim3{threads, 1, 1};
  grid_dim = Dim3{grid.x, grid.y, grid.z};
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Block blk(threads);
        blk.dyn_smem.assign(smem + 1, 0);
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; ++t) {
          pool.emplace_back([&, t] {
            thread_idx = Dim3{t, 0, 0};
            block_idx = Dim3{bx, by, bz};
            block = &blk;
            kernel(args);
          });
        }
        for (auto& th : pool) th.join();
      }
}
template <typename Args>
void launch(void (*kernel)(Args), unsigned grid, unsigned threads, size_t smem, const Args& args) {
  launch(kernel, dim3(grid, 1, 1), threads, smem, args);
}

}  // namespace emu

#define threadIdx emu::thread_idx
#define blockIdx emu::block_idx
#define blockDim emu::block_dim
#define gridDim emu::grid_dim

inline void __syncthreads() { emu::block->all.arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::block->warps[threadIdx.x / 32]->arrive_and_wait(); }

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int off) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
  const unsigned w = threadIdx.x / 32, lane = threadIdx.x % 32;
  uint64_t raw = 0;
  std::memcpy(&raw, &v, sizeof(T));
  emu::block->shfl[w][lane] = raw;
  __syncwarp();
  const uint64_t other = emu::block->shfl[w][lane ^ static_cast<unsigned>(off)];
  __syncwarp();
  T r;
  std::memcpy(&r, &other, sizeof(T));
  return r;
}

inline uint32_t __umulhi(uint32_t a, uint32_t b) { return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32); }

inline float emu_to_float(float x) { return x; }
inline float emu_to_float(__half x) { return __half2float(x); }
inline float emu_to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "only 16x16x16 is emulated");
  float x[16][16];  // element (row, col) of the logical tile
};

template <typename Use, int M, int N, int K, typename T, typename L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v) {
  for (auto& row : f.x)
    for (float& e : row) e = v;
}

template <typename Use, int M, int N, int K, typename T, typename L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const T* p, unsigned ld) {
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      f.x[r][c] = emu_to_float(std::is_same<L, row_major>::value ? p[r * ld + c] : p[c * ld + r]);
}

template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ld, layout_t l) {
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.x[r][c] = l == mem_row_major ? p[r * ld + c] : p[c * ld + r];
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ld, layout_t l) {
  if (threadIdx.x % 32 != 0) return;  // one lane writes; readers must __syncwarp first, as on the GPU
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) (l == mem_row_major ? p[r * ld + c] : p[c * ld + r]) = f.x[r][c];
}

template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  float out[16][16];
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 16; ++n) {
      float acc = c.x[r][n];
      for (int k = 0; k < 16; ++k) acc += a.x[r][k] * b.x[k][n];
      out[r][n] = acc;
    }
  std::memcpy(d.x, out, sizeof(out));
}
}  // namespace wmma
}  // namespace nvcuda
