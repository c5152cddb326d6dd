// Run the CUDA kernels of csrc/ on the CPU, for tests on machines without a GPU: the .cu
// sources are compiled as C++ (g++ -include host_shim.h), every CUDA thread of a block is a
// std::thread, __syncthreads/__syncwarp are barriers, warp shuffles go through a per-warp
// exchange buffer, __shared__ variables are statics shared by the block's threads (blocks run
// one after another). Kernel launches `k<<<grid, block, smem, stream>>>(args)` are rewritten by
// build.sh to `emu::launch(k, grid, block, smem, args)`. Only what verify.cu and sampling.cu
// use is provided; tensor-core code (WMMA) is not emulated.
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

inline unsigned char* dyn_smem() { return block->dyn_smem.data(); }

template <typename Args>
void launch(void (*kernel)(Args), unsigned grid, unsigned threads, size_t smem, const Args& args) {
  if (block_threads_override) threads = block_threads_override;
  if (threads % 32) std::abort();
  block_dim = Dim3{threads, 1, 1};
  grid_dim = Dim3{grid, 1, 1};
  for (unsigned b = 0; b < grid; ++b) {
    Block blk(threads);
    blk.dyn_smem.assign(smem + 1, 0);
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&, t, b] {
        thread_idx = Dim3{t, 0, 0};
        block_idx = Dim3{b, 0, 0};
        block = &blk;
        kernel(args);
      });
    }
    for (auto& th : pool) th.join();
  }
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
