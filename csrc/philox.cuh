// The noise contract of rsd_kernels/noise.py, bit for bit: Philox4x32-10 keyed by the 64-bit
// seed (key words seed & 0xFFFFFFFF, seed >> 32), the uniform map, and the float32 log32 behind
// the Gumbel noise. Every kernel draws its noise through these functions.
//
//   ACCEPT    lane 0 of (offset, row, 1<<24 | node, 0)           one uniform per tree node
//   RESIDUAL  lane token & 3 of (offset, row, 2<<24, token >> 2)  verify's correction/bonus token
//   GUMBEL    lane token & 3 of (offset, row, 3<<24, token >> 2)  sampling / beam step
//
// One Philox call gives the four tokens 4c .. 4c+3 of a token stream. u = (2 (x >> 9) + 1) 2^-24
// (exact in float32, inside (0, 1)); Gumbel = -log32(-log32(u)) where log32 is the contract's
// float32 logarithm: bit tricks, fused multiply-adds written as __fmaf_rn and the one product as
// __fmul_rn, so neither -fmad nor --use_fast_math can change a bit. No fp64, no logf.
#pragma once
#include <cstdint>

namespace rsd {

constexpr uint32_t kStreamAccept = 1u << 24;
constexpr uint32_t kStreamResidual = 2u << 24;
constexpr uint32_t kStreamGumbel = 3u << 24;

struct Philox4 {
  uint32_t x[4];
};

__device__ __forceinline__ Philox4 philox4x32(uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3) {
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
  return Philox4{{c0, c1, c2, c3}};
}

__device__ __forceinline__ float uniform_from_bits(uint32_t x) {
  return static_cast<float>((x >> 9) * 2u + 1u) * 5.9604644775390625e-08f;  // exact: 2^-24
}

// The contract's float32 logarithm of a positive normal x (noise.py, "Gumbel").
__device__ __forceinline__ float log32(float x) {
  const int32_t bits = __float_as_int(x);
  const int32_t e = (bits - 0x3F2AAAAB) >> 23;
  const float m = __int_as_float(bits - static_cast<int32_t>(static_cast<uint32_t>(e) << 23));
  const float i = static_cast<float>(e);  // exact
  const float f = m - 1.0f;               // exact (Sterbenz)
  const float s = __fmul_rn(f, f);
  float r = __fmaf_rn(f, -0x1.0931d6p-3f, 0x1.1ed146p-3f);  // C10, C9
  r = __fmaf_rn(r, f, -0x1.f25de0p-4f);                     // C8
  r = __fmaf_rn(r, f, 0x1.1ebe68p-3f);                      // C7
  r = __fmaf_rn(r, f, -0x1.55a754p-3f);                     // C6
  r = __fmaf_rn(r, f, 0x1.99d1f2p-3f);                      // C5
  r = __fmaf_rn(r, f, -0x1.fffe84p-3f);                     // C4
  r = __fmaf_rn(r, f, 0x1.555502p-2f);                      // C3
  r = __fmaf_rn(r, f, -0x1.000000p-1f);                     // C2
  r = __fmaf_rn(r, s, f);
  return __fmaf_rn(i, 0x1.62e430p-1f, r);  // LN2
}

__device__ __forceinline__ float gumbel_from_uniform(float u) { return -log32(-log32(u)); }

// ACCEPT stream: the uniform of tree node `node`.
__device__ __forceinline__ float accept_uniform(uint64_t seed, uint32_t offset, uint32_t row, uint32_t node) {
  return uniform_from_bits(philox4x32(seed, offset, row, kStreamAccept | node, 0).x[0]);
}

// A token stream's four uniforms of tokens 4 quad .. 4 quad + 3 (one Philox call).
__device__ __forceinline__ Philox4 token_bits(uint64_t seed, uint32_t offset, uint32_t row, uint32_t stream,
                                              uint32_t quad) {
  return philox4x32(seed, offset, row, stream, quad);
}

// A token stream's Gumbel noise of one token (for the few tokens read one at a time).
__device__ __forceinline__ float token_gumbel(uint64_t seed, uint32_t offset, uint32_t row, uint32_t stream,
                                              uint32_t token) {
  return gumbel_from_uniform(uniform_from_bits(token_bits(seed, offset, row, stream, token >> 2).x[token & 3]));
}

}  // namespace rsd
