// Run the CUDA kernels of csrc/ on the CPU, for tests on machines without a GPU: the .cu
// sources are compiled as C++ (g++ -include host_shim.h), every CUDA thread of a block is a
// std::thread, __syncthreads/__syncwarp are barriers, warp shuffles go through a per-warp
// exchange buffer (two, alternating, so that one barrier per exchange suffices), __shared__
// variables are statics shared by the block's threads (blocks run one after another). Kernel
// launches `k<<<grid, block, smem, stream>>>(args)` are rewritten by build.sh to
// `emu::launch(k, grid, block, smem, args)`.
//
// The sm_80 primitives of csrc/ptx.cuh (RSD_EMULATION replaces them):
// * cp.async: each thread queues its copies; commit closes a group; wait<N> performs the copies
//   of every group but the newest N. So a kernel that reads a stage before waiting for it reads
//   stale shared memory (the test catches a missing wait). emu_set_async_copy_eager(1) performs
//   every copy at issue instead: a kernel that overwrites a stage other threads still read
//   (a missing barrier before the refill) then reads the new data too early.
// * ldmatrix (.x4, .trans) and mma.sync m16n8k16: the lanes of a warp exchange their addresses
//   or fragment registers, and each lane computes its own fragment elements with the layouts of
//   the PTX ISA, so a kernel that indexes fragments wrongly gets wrong numbers here too.
// Only what the kernels of csrc/ use is provided.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
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
#define RSD_EMULATION 1

using std::isfinite;

namespace emu {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

struct Block {
  explicit Block(unsigned threads) : all(threads), shfl((threads + 31) / 32), frag((threads + 31) / 32) {
    for (unsigned w = 0; w < (threads + 31) / 32; ++w) warps.emplace_back(std::make_unique<std::barrier<>>(32));
  }
  std::barrier<> all;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  // per warp, two alternating buffers: the lanes' shuffle values / ldmatrix addresses, mma operands
  std::vector<std::array<std::array<uint64_t, 32>, 2>> shfl;
  std::vector<std::array<std::array<std::array<uint32_t, 6>, 32>, 2>> frag;
  std::vector<unsigned char> dyn_smem;
};

inline thread_local Dim3 thread_idx, block_idx;
inline Dim3 block_dim, grid_dim;
inline thread_local Block* block = nullptr;
// Which of the two exchange buffers this thread's next warp exchange uses. The lanes of a warp
// make the same exchanges in the same order; exchange n and n + 2 share a buffer, and the
// barrier of exchange n + 1 lies between them, which a lane passes only once every lane has
// read exchange n's values.
inline thread_local unsigned exchange_phase = 0;
inline unsigned next_phase() { return (exchange_phase ^= 1u) ^ 1u; }
// Threads per block to emulate (0: the launch's own value); must be a multiple of 32.
inline unsigned block_threads_override = 0;
// cp.async: performed at wait (false, the default) or at issue (true); see the header.
inline bool async_copy_eager = false;

struct AsyncCopy {
  void* dst;
  const void* src;
  int bytes;
  bool valid;
  void run() const {
    if (valid) {
      std::memcpy(dst, src, bytes);
    } else {
      std::memset(dst, 0, bytes);
    }
  }
};
inline thread_local std::vector<AsyncCopy> async_open;              // issued, not yet committed
inline thread_local std::deque<std::vector<AsyncCopy>> async_groups;  // committed, not yet waited for

template <typename F>
cudaError_t func_set_attribute(F, cudaFuncAttribute, int) { return cudaSuccess; }

inline unsigned char* dyn_smem() { return block->dyn_smem.data(); }

// A block whose threads do not all finish within EMU_WATCHDOG_S seconds (default 300) is stuck
// in a barrier or shuffle that some of its threads never reach (divergent __syncthreads or
// __shfl_*_sync, which hang or are undefined on the GPU too): abort with a message, not a hang.
inline void watch(const std::atomic<unsigned>& finished, unsigned threads, unsigned bx, unsigned by, unsigned bz) {
  const char* env = std::getenv("EMU_WATCHDOG_S");
  const double limit = env ? std::atof(env) : 300.0;
  const auto start = std::chrono::steady_clock::now();
  while (finished.load() < threads) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > limit) {
      std::fprintf(stderr, "emulation: blocks from (%u, %u, %u) hung: %u of %u threads finished (divergent barrier or shuffle?)\n",
                   bx, by, bz, finished.load(), threads);
      std::abort();
    }
  }
}

// Runs blocks [first, last) of the grid (in x, y, z order) at the same time, each block with its
// own barriers and dynamic shared memory.
template <typename Args>
void run_blocks(void (*kernel)(Args), dim3 grid, unsigned threads, size_t smem, const Args& args, unsigned first,
                unsigned last) {
  std::vector<std::unique_ptr<Block>> blocks;
  std::vector<std::thread> pool;
  std::atomic<unsigned> finished{0};
  for (unsigned id = first; id < last; ++id) {
    blocks.emplace_back(std::make_unique<Block>(threads));
    Block* blk = blocks.back().get();
    blk->dyn_smem.assign(smem + 1, 0);
    const Dim3 bi{id % grid.x, (id / grid.x) % grid.y, id / (grid.x * grid.y)};
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&, blk, bi, t] {
        thread_idx = Dim3{t, 0, 0};
        block_idx = bi;
        block = blk;
        kernel(args);
        finished.fetch_add(1);
      });
    }
  }
  watch(finished, threads * (last - first), first % grid.x, (first / grid.x) % grid.y, first / (grid.x * grid.y));
  for (auto& th : pool) th.join();
}

template <typename Args>
void launch(void (*kernel)(Args), dim3 grid, unsigned threads, size_t smem, const Args& args) {
  if (block_threads_override) threads = block_threads_override;
  if (threads % 32) std::abort();
  block_dim = Dim3{threads, 1, 1};
  grid_dim = Dim3{grid.x, grid.y, grid.z};
  const unsigned n = grid.x * grid.y * grid.z;
  for (unsigned id = 0; id < n; ++id) run_blocks(kernel, grid, threads, smem, args, id, id + 1);  // one after another
}

// A cooperative launch: every block of the grid runs at once (they may wait for each other).
// Their static __shared__ variables would be shared across blocks here, so such kernels keep
// all shared memory dynamic (verify.cu does).
template <typename Args>
void launch_all(void (*kernel)(Args), dim3 grid, unsigned threads, size_t smem, const Args& args) {
  if (block_threads_override) threads = block_threads_override;
  if (threads % 32) std::abort();
  block_dim = Dim3{threads, 1, 1};
  grid_dim = Dim3{grid.x, grid.y, grid.z};
  run_blocks(kernel, grid, threads, smem, args, 0, grid.x * grid.y * grid.z);
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

// Every lane publishes v; returns the value of lane src_of(lane).
template <typename T, typename F>
inline T emu_shuffle(T v, F src_of) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
  const unsigned w = threadIdx.x / 32, lane = threadIdx.x % 32;
  auto& buf = emu::block->shfl[w][emu::next_phase()];
  uint64_t raw = 0;
  std::memcpy(&raw, &v, sizeof(T));
  buf[lane] = raw;
  __syncwarp();
  const uint64_t other = buf[src_of(lane) & 31u];
  T r;
  std::memcpy(&r, &other, sizeof(T));
  return r;
}

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int off) {
  return emu_shuffle(v, [off](unsigned lane) { return lane ^ static_cast<unsigned>(off); });
}

template <typename T>
inline T __shfl_sync(unsigned, T v, int src) {
  return emu_shuffle(v, [src](unsigned) { return static_cast<unsigned>(src); });
}

// The exact-rounding intrinsics philox.cuh's log32 is written with (build.sh compiles with
// -ffp-contract=off, so no other product is fused either).
inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline int __float_as_int(float x) {
  int r;
  std::memcpy(&r, &x, 4);
  return r;
}
inline float __int_as_float(int x) {
  float r;
  std::memcpy(&r, &x, 4);
  return r;
}

inline uint32_t __umulhi(uint32_t a, uint32_t b) { return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32); }

inline float emu_to_float(float x) { return x; }
inline float emu_to_float(__half x) { return __half2float(x); }
inline float emu_to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
inline T __ldcg(const T* p) {
  return *p;
}
inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

namespace rsd {
// blocks_barrier of ptx.cuh over concurrently running emulated blocks.
inline void blocks_barrier(unsigned* counter, unsigned blocks, unsigned n) {
  __syncthreads();
  if (threadIdx.x == 0) {
    std::atomic_ref<unsigned> c(*counter);
    c.fetch_add(1);
    while (c.load() < n * blocks) std::this_thread::yield();
  }
  __syncthreads();
}
template <typename Args>
inline cudaError_t launch_cooperative(void (*kernel)(Args), dim3 grid, unsigned threads, size_t smem, Args args,
                                      cudaStream_t) {
  emu::launch_all(kernel, grid, threads, smem, args);
  return cudaSuccess;
}

inline void cp_async_issue(void* dst, const void* src, int bytes, bool valid) {
  const emu::AsyncCopy c{dst, src, bytes, valid};
  if (emu::async_copy_eager) {
    c.run();
  } else {
    emu::async_open.push_back(c);
  }
}
inline void cp_async_16(void* dst, const void* src, bool valid) { cp_async_issue(dst, src, 16, valid); }
template <int BYTES>
inline void cp_async_small(void* dst, const void* src, bool valid) {
  if (BYTES == 2) {  // the device does this one synchronously too
    emu::AsyncCopy{dst, src, 2, valid}.run();
  } else {
    cp_async_issue(dst, src, BYTES, valid);
  }
}
inline void cp_async_commit() {
  emu::async_groups.push_back(std::move(emu::async_open));
  emu::async_open.clear();
}
template <int N>
inline void cp_async_wait() {
  while (emu::async_groups.size() > static_cast<size_t>(N)) {
    for (const auto& c : emu::async_groups.front()) c.run();
    emu::async_groups.pop_front();
  }
}

// ldmatrix .x4: lanes 8i..8i+7 give the rows of tile i; r[i] gets (row lane/4, cols 2(lane%4) + {0,1}),
// or with trans (rows 2(lane%4) + {0,1}, col lane/4), two b16 packed, the first in the low half.
inline void emu_ldmatrix_x4(uint32_t (&r)[4], const void* addr, bool trans) {
  const unsigned w = threadIdx.x / 32, lane = threadIdx.x % 32;
  auto& buf = emu::block->shfl[w][emu::next_phase()];
  buf[lane] = reinterpret_cast<uintptr_t>(addr);
  __syncwarp();
  for (int i = 0; i < 4; ++i) {
    uint16_t h[2];
    for (int e = 0; e < 2; ++e) {
      const unsigned row = trans ? 2 * (lane % 4) + e : lane / 4;
      const unsigned col = trans ? lane / 4 : 2 * (lane % 4) + e;
      const auto* base = reinterpret_cast<const uint16_t*>(buf[8 * i + row]);
      h[e] = base[col];
    }
    r[i] = static_cast<uint32_t>(h[0]) | (static_cast<uint32_t>(h[1]) << 16);
  }
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* addr) { emu_ldmatrix_x4(r, addr, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* addr) { emu_ldmatrix_x4(r, addr, true); }

template <typename T>
inline float emu_half_bits(uint32_t packed, int e) {
  const uint16_t bits = static_cast<uint16_t>(packed >> (16 * e));
  T x;
  std::memcpy(&x, &bits, 2);
  return emu_to_float(x);
}

// mma.sync.m16n8k16.row.col, fp32 accumulate. g = lane/4, t = lane%4. A (16x16): a[0] (g, 2t..),
// a[1] (g+8, 2t..), a[2] (g, 2t+8..), a[3] (g+8, 2t+8..); B (16x8, k x n): b0 (k 2t.., n g),
// b1 (k 2t+8.., n g); C/D (16x8): d[0..1] (g, 2t + {0,1}), d[2..3] (g+8, 2t + {0,1}).
template <typename T>
inline void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const unsigned w = threadIdx.x / 32, lane = threadIdx.x % 32;
  auto& x = emu::block->frag[w][emu::next_phase()];
  x[lane] = {a[0], a[1], a[2], a[3], b0, b1};
  __syncwarp();
  auto A = [&](int r, int k) {  // element (r, k) of A
    const int reg = (r >= 8) + 2 * (k >= 8);
    return emu_half_bits<T>(x[(r % 8) * 4 + (k % 8) / 2][reg], k % 2);
  };
  auto B = [&](int k, int n) { return emu_half_bits<T>(x[n * 4 + (k % 8) / 2][4 + (k >= 8)], k % 2); };
  const int g = lane / 4, t = lane % 4;
  float out[4];
  for (int e = 0; e < 4; ++e) {
    const int r = g + 8 * (e >= 2), n = 2 * t + (e & 1);
    float acc = d[e];
    for (int k = 0; k < 16; ++k) acc += A(r, k) * B(k, n);
    out[e] = acc;
  }
  for (int e = 0; e < 4; ++e) d[e] = out[e];
}
}  // namespace rsd

