// Philox4x32-10 and the noise streams of rsd_kernels/noise.py, bit for bit.
//
// Counter (c0, c1, c2, c3) = (offset, row, stream | node, slot), key = (seed lo, seed hi);
// only output lane 0 is used. u = (2 * (x >> 9) + 1) * 2^-24 (exact in float32, inside (0, 1)),
// Gumbel = -log(-log(u)) in float32. The logs are taken in double and rounded to float so
// that --use_fast_math (which replaces logf by an approximation) cannot change the noise.
#pragma once
#include <cstdint>

namespace rsd {

constexpr uint32_t kStreamAccept = 1u << 24;
constexpr uint32_t kStreamResidual = 2u << 24;
constexpr uint32_t kStreamGumbel = 3u << 24;

__device__ __forceinline__ uint32_t philox_lane0(uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#pragma unroll
  for (int i = 0; i < 10; ++i) {
    const uint32_t hi_b = __umulhi(0xCD9E8D57u, c2), lo_b = 0xCD9E8D57u * c2;
    const uint32_t hi_a = __umulhi(0xD2511F53u, c0), lo_a = 0xD2511F53u * c0;
    c0 = hi_b ^ c1 ^ k0;
    c1 = lo_b;
    c2 = hi_a ^ c3 ^ k1;
    c3 = lo_a;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c0;
}

__device__ __forceinline__ float uniform_from_bits(uint32_t x) {
  return static_cast<float>((x >> 9) * 2u + 1u) * 5.9604644775390625e-08f;  // 2^-24
}

__device__ __forceinline__ float philox_uniform(uint64_t seed, uint32_t offset, uint32_t row, uint32_t stream_node,
                                                uint32_t slot) {
  return uniform_from_bits(philox_lane0(seed, offset, row, stream_node, slot));
}

// -log(-log(u)) with each log rounded to float32, as torch computes it in float32.
__device__ __forceinline__ float gumbel_from_uniform(float u) {
  const float inner = static_cast<float>(log(static_cast<double>(u)));
  return -static_cast<float>(log(static_cast<double>(-inner)));
}

__device__ __forceinline__ float philox_gumbel(uint64_t seed, uint32_t offset, uint32_t row, uint32_t stream,
                                               uint32_t slot) {
  return gumbel_from_uniform(philox_uniform(seed, offset, row, stream, slot));
}

}  // namespace rsd
