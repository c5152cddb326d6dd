// Tree attention (SPEC section 7): the T tree nodes' queries over the KV cache, node i seeing
// every prefix key and the tree keys of its ancestors-or-self (packed bitmask).
//
// K and V are read where they lie: [B, Hkv, S, D] views with any batch/head/row strides (the
// KV cache's own buffers, no copy), the last dimension contiguous.
//
// fp16/bf16 with D in {64, 128} on sm_80+: tensor cores (mma.sync m16n8k16, fp32 accumulate),
//   FlashAttention-2 style. One CTA = one (M tile of 64 rows, batch row, KV head, KV split);
//   the M rows are all query heads of the KV head times the T nodes (m = g * T + t), so every
//   K/V tile is read once per GQA group. 4 warps, 16 rows each; S, P and O live in registers.
//   K/V tiles of 64 keys stream through a STAGES-deep cp.async pipeline (tile i + STAGES - 1 is
//   in flight while tile i computes). Prefix tiles are not masked; only tiles reaching the tree
//   keys read the ancestor bits. Online softmax in exp2 with fp32 statistics; P is rounded to
//   the input dtype for P.V (as FlashAttention does). The KV range [0, prefix + T) is split into
//   `splits` chunks planned to fill one wave of CTAs (plan_kv_splits: never a partial second
//   wave, at least kMinChunk keys per split); a combine kernel merges the fp32 partials, and
//   with one split the kernel writes the output itself.
// fp32, fp64, other head sizes (D <= 256), or a GPU below sm_80: a CUDA-core kernel that
//   streams K/V the same way (32-key tiles, cp.async of 16, 8 or 4 bytes as the rows' alignment
//   allows), one warp per query row at a time, fp32 accumulation (fp64 for fp64), no split. It
//   exists for exactness and odd shapes, not speed.
// No torch headers.
#include <type_traits>

#include "common.cuh"
#include "ptx.cuh"
#include "rsd_kernels.h"

namespace rsd {
namespace {

constexpr int kBM = 64;  // query rows per CTA (tensor-core path)
constexpr int kBN = 64;  // keys per tile (tensor-core path)
constexpr int kWarps = 4;
constexpr int kAttnThreads = kWarps * 32;
constexpr int kMinChunk = 256;  // keys per split at least: partials stay <= 1/4 of the K/V bytes
constexpr float kLog2e = 1.4426950408889634f;

// Keys [begin, end) of KV split `split` of batch row b, and the row's prefix length. Values
// outside [0, S - T] (the public op rejects them; validate=False skips that check) are clamped
// so that no read leaves the cache or the bitmask.
struct KeyRange {
  int64_t prefix, begin, end;
};

__device__ __forceinline__ KeyRange key_range(const TreeAttentionArgs& a, int b, int split, int granule) {
  int64_t prefix = a.prefix_lens[b];
  prefix = prefix < 0 ? 0 : (prefix > a.S ? a.S : prefix);
  const int64_t len = prefix + a.T < a.S ? prefix + a.T : a.S;
  const int64_t per = (len + a.splits - 1) / a.splits;
  const int64_t chunk = (per + granule - 1) / granule * granule;
  const int64_t begin = static_cast<int64_t>(split) * chunk;
  return KeyRange{prefix, begin < len ? begin : len, begin + chunk < len ? begin + chunk : len};
}

// Whether key `key` (< r.end) is visible to the node whose ancestor bits are `bits`.
__device__ __forceinline__ bool key_visible(const int32_t* bits, const KeyRange& r, int64_t key) {
  if (key >= r.end) return false;
  if (key < r.prefix) return true;
  const int64_t rel = key - r.prefix;
  return (static_cast<uint32_t>(bits[rel >> 5]) >> (rel & 31)) & 1u;
}

// Element offset of M row m (query head kvh * group + m / T, node m % T) of batch row b in q.
__device__ __forceinline__ int64_t q_row_offset(const TreeAttentionArgs& a, int b, int kvh, int group, int m) {
  return b * a.q_stride[0] + static_cast<int64_t>(kvh * group + m / a.T) * a.q_stride[1] +
         static_cast<int64_t>(m % a.T) * a.q_stride[2];
}

// ---- tensor-core path ---------------------------------------------------------------------

template <int D>
struct MmaSmem {
  static constexpr int ld = D + 8;  // row stride in elements: 16 bytes of padding keep ldmatrix conflict-free
  static constexpr int tile = kBN * ld;
};

template <int D, int STAGES>
constexpr size_t mma_smem_bytes() {
  return (static_cast<size_t>(kBM) * MmaSmem<D>::ld + 2 * STAGES * static_cast<size_t>(MmaSmem<D>::tile)) * 2;
}

// Rows [first, first + kBN) of a strided [rows, D] matrix -> shared (row stride D + 8),
// asynchronously, 16-byte chunks, every thread the same number of chunks (unrolled, so all of
// them are in flight together); rows >= end are zero-filled.
template <typename T, int D>
__device__ __forceinline__ void load_kv_tile_async(T* dst, const T* src, int64_t row_stride, int64_t first,
                                                   int64_t end) {
  constexpr int kChunks = D / 8;
  static_assert(kBN * kChunks % kAttnThreads == 0, "whole chunks per thread");
#pragma unroll
  for (int i = 0; i < kBN * kChunks / kAttnThreads; ++i) {
    const int c = static_cast<int>(threadIdx.x) + i * kAttnThreads;
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const bool valid = first + r < end;
    cp_async_16(dst + r * MmaSmem<D>::ld + col, src + (valid ? (first + r) * row_stride + col : 0), valid);
  }
}

template <typename T, int D, int STAGES>
__global__ void __launch_bounds__(kAttnThreads, 2) tree_attention_mma_kernel(TreeAttentionArgs a) {
  static_assert(STAGES >= 2, "a pipeline needs two stages");
  constexpr int LD = MmaSmem<D>::ld;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sq = reinterpret_cast<T*>(smem_raw);
  T* skv = sq + kBM * LD;  // stage s: K tile at skv + 2 s tile, its V tile right after

  const int m0 = static_cast<int>(blockIdx.x) * kBM, bh = blockIdx.y, split = blockIdx.z;
  const int b = bh / a.Hkv, kvh = bh % a.Hkv, group = a.Hq / a.Hkv, M = group * a.T;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const KeyRange kr = key_range(a, b, split, kBN);
  const int n_tiles = static_cast<int>((kr.end - kr.begin + kBN - 1) / kBN);
  const T* kg = static_cast<const T*>(a.k) + b * a.k_stride[0] + kvh * a.k_stride[1];
  const T* vg = static_cast<const T*>(a.v) + b * a.v_stride[0] + kvh * a.v_stride[1];

  // Q rows m0..m0+63 -> shared, in the first copy group (rows >= M zero-filled).
  {
    constexpr int kChunks = D / 8;
    const T* qg = static_cast<const T*>(a.q);
#pragma unroll
    for (int i = 0; i < kBM * kChunks / kAttnThreads; ++i) {
      const int c = static_cast<int>(threadIdx.x) + i * kAttnThreads;
      const int r = c / kChunks, col = (c % kChunks) * 8, m = m0 + r;
      const bool valid = m < M;
      cp_async_16(sq + r * LD + col, qg + (valid ? q_row_offset(a, b, kvh, group, m) + col : 0), valid);
    }
  }
  auto load_kv = [&](int tile) {
    T* sk = skv + (tile % STAGES) * 2 * MmaSmem<D>::tile;
    const int64_t kv0 = kr.begin + static_cast<int64_t>(tile) * kBN;
    load_kv_tile_async<T, D>(sk, kg, a.k_stride[2], kv0, kr.end);
    load_kv_tile_async<T, D>(sk + MmaSmem<D>::tile, vg, a.v_stride[2], kv0, kr.end);
  };
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < n_tiles) load_kv(s);
    cp_async_commit();
  }

  // This lane's accumulator rows: g and g + 8 of the warp's 16 (mma C layout), columns 2 t4 + {0, 1}.
  const int g8 = lane >> 2, t4 = lane & 3;
  const int row_lo = m0 + warp * 16 + g8, row_hi = row_lo + 8;
  const bool warp_active = m0 + warp * 16 < M;
  const int W = (a.T + 31) >> 5;
  const int32_t* bits_lo = a.mask_bits + (static_cast<int64_t>(b) * a.T + (row_lo < M ? row_lo % a.T : 0)) * W;
  const int32_t* bits_hi = a.mask_bits + (static_cast<int64_t>(b) * a.T + (row_hi < M ? row_hi % a.T : 0)) * W;
  const float scale = a.scale_log2e;

  float o[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
  uint32_t qf[D / 16][4];

  for (int it = 0; it < n_tiles; ++it) {
    cp_async_wait<STAGES - 2>();  // tile it (and Q) landed for this thread's copies ...
    __syncthreads();              // ... and for everyone's; the slot of tile it - 1 is free again
    if (it + STAGES - 1 < n_tiles) load_kv(it + STAGES - 1);
    cp_async_commit();
    if (!warp_active) continue;  // warps past the last row only load
    if (it == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) ldmatrix_x4(qf[kk], sq + (warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
    }
    const T* sk = skv + (it % STAGES) * 2 * MmaSmem<D>::tile;
    const T* sv = sk + MmaSmem<D>::tile;
    const int64_t kv0 = kr.begin + static_cast<int64_t>(it) * kBN;

    // S = Q K^T: 16 rows x 64 keys per warp, 8 n-tiles of 8 keys.
    float s[kBN / 8][4];
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < kBN / 16; ++np) {
        uint32_t kb[4];  // keys np*16 + {0..7, 8..15} x dims kk*16 + {0..7, 8..15}
        ldmatrix_x4(kb, sk + (np * 16 + (lane & 7) + ((lane >> 4) << 3)) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
        mma_16816<T>(s[2 * np], qf[kk], kb[0], kb[1]);
        mma_16816<T>(s[2 * np + 1], qf[kk], kb[2], kb[3]);
      }
    }

    // Scale (log2 units); the mask only where the tile reaches the tree keys or the range end.
    const bool masked = kv0 + kBN > kr.prefix || kv0 + kBN > kr.end;
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[j][e] *= scale;
        if (masked && !key_visible(e < 2 ? bits_lo : bits_hi, kr, kv0 + j * 8 + 2 * t4 + (e & 1))) s[j][e] = -INFINITY;
      }

    // Online softmax: the row max over the 4 lanes of a row group, then p = 2^(s - m).
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j) {
      mx[0] = fmaxf(mx[0], fmaxf(s[j][0], s[j][1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[j][2], s[j][3]));
    }
    float alpha[2], m_use[2], psum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      const float m_new = fmaxf(m_run[h], mx[h]);
      m_use[h] = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing visible yet stays at p = 0
      alpha[h] = exp2f(m_run[h] - m_use[h]);
      m_run[h] = m_new;
    }
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[j][e] = exp2f(s[j][e] - m_use[e >> 1]);
        psum[e >> 1] += s[j][e];
      }
#pragma unroll
    for (int h = 0; h < 2; ++h) l_run[h] = l_run[h] * alpha[h] + psum[h];  // per-lane partial sums
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[j][e] *= alpha[e >> 1];

    // O += P V: P (the S accumulators, rounded to T) is already in the A-fragment layout.
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      const uint32_t pa[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                              pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t vb[4];  // keys kk*16 + {0..7, 8..15} x dims dp*16 + {0..7, 8..15}, transposed
        ldmatrix_x4_trans(vb, sv + (kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3)) * LD + dp * 16 + (lane >> 4) * 8);
        mma_16816<T>(o[2 * dp], pa, vb[0], vb[1]);
        mma_16816<T>(o[2 * dp + 1], pa, vb[2], vb[3]);
      }
    }
  }
  cp_async_wait<0>();  // nothing may be left in flight into shared memory at exit
  if (!warp_active) return;

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 1);
    l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 2);
  }
  const int64_t q_row0 = (static_cast<int64_t>(b) * a.Hq + static_cast<int64_t>(kvh) * group) * a.T;  // row of m = 0
  const int rows_m[2] = {row_lo, row_hi};
  if (a.splits == 1) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (rows_m[h] >= M) continue;
      const float inv = 1.0f / l_run[h];
      T* out = static_cast<T*>(a.out) + (q_row0 + rows_m[h]) * D + 2 * t4;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        const uint32_t v = pack2<T>(o[j][2 * h] * inv, o[j][2 * h + 1] * inv);
        *reinterpret_cast<uint32_t*>(out + j * 8) = v;
      }
    }
    return;
  }
  const int64_t split_rows = static_cast<int64_t>(a.B) * a.Hq * a.T;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (rows_m[h] >= M) continue;
    const int64_t row = split * split_rows + q_row0 + rows_m[h];
    float* po = a.partial_o + row * D + 2 * t4;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) *reinterpret_cast<float2*>(po + j * 8) = make_float2(o[j][2 * h], o[j][2 * h + 1]);
    if (t4 == 0) *reinterpret_cast<float2*>(a.partial_ml + row * 2) = make_float2(m_run[h], l_run[h]);
  }
}

// out[row] = sum_s 2^(m_s - M) O_s / sum_s 2^(m_s - M) l_s: one warp per query row, each lane
// D / 32 consecutive columns; the splits' loads are independent (unrolled by 4).
template <typename T, int D>
__global__ void __launch_bounds__(128) tree_attention_combine_kernel(TreeAttentionArgs a) {
  constexpr int kPer = D / 32;
  const int64_t rows = static_cast<int64_t>(a.B) * a.Hq * a.T;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 4 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  float mmax = -INFINITY;
  for (int s = lane; s < a.splits; s += 32) mmax = fmaxf(mmax, a.partial_ml[(s * rows + row) * 2]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) mmax = fmaxf(mmax, __shfl_xor_sync(0xffffffffu, mmax, off));
  float acc[kPer] = {}, den = 0.0f;
#pragma unroll 4
  for (int s = 0; s < a.splits; ++s) {
    const float2 ml = *reinterpret_cast<const float2*>(a.partial_ml + (s * rows + row) * 2);
    const float* po = a.partial_o + (s * rows + row) * D + lane * kPer;
    float x[kPer];
    if constexpr (kPer == 4) {
      const float4 v = *reinterpret_cast<const float4*>(po);
      x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
    } else {
      const float2 v = *reinterpret_cast<const float2*>(po);
      x[0] = v.x, x[1] = v.y;
    }
    const float w = ml.x == -INFINITY ? 0.0f : exp2f(ml.x - mmax);
    den += w * ml.y;
#pragma unroll
    for (int e = 0; e < kPer; ++e) acc[e] += w * x[e];
  }
  T* out = static_cast<T*>(a.out) + row * D + lane * kPer;
#pragma unroll
  for (int e = 0; e < kPer; e += 2) *reinterpret_cast<uint32_t*>(out + e) = pack2<T>(acc[e] / den, acc[e + 1] / den);
}

// ---- CUDA-core path -------------------------------------------------------------------------

template <typename T, typename Acc>
__device__ __forceinline__ T narrow(Acc x) {
  if constexpr (std::is_same<T, __half>::value) {
    return __float2half_rn(static_cast<float>(x));
  } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    return __float2bfloat16_rn(static_cast<float>(x));
  } else {
    return static_cast<T>(x);
  }
}

constexpr int kCoreBN = 32;  // keys per tile: one per lane
constexpr int kCoreMaxD = 256;
constexpr int kCorePer = kCoreMaxD / 32;

// Rows of the CUDA-core path per warp: 4 (2 for fp64, whose registers are twice as wide).
template <typename Acc>
struct CoreRows {
  static constexpr int value = sizeof(Acc) == 8 ? 2 : 4;
};

struct CoreParams {
  TreeAttentionArgs a;
  int ld;      // shared row stride in elements (D rounded up to 16 bytes)
  int vec;     // bytes per copy: 16, 8, 4 (cp.async) or 2 (plain), what the rows' alignment allows
  int stages;  // 1 or 2 K/V stages
};

// Rows [first, first + kCoreBN) of a strided [rows, D] matrix -> shared (row stride p.ld), in
// p.vec-byte copies; rows >= end are zero-filled.
template <typename T>
__device__ __forceinline__ void load_core_tile(const CoreParams& p, T* dst, const T* src, int64_t row_stride,
                                               int64_t first, int64_t end) {
  const int row_bytes = p.a.D * static_cast<int>(sizeof(T));
  const int per_row = row_bytes / p.vec;
  for (int c = threadIdx.x; c < kCoreBN * per_row; c += blockDim.x) {
    const int r = c / per_row, off = (c % per_row) * p.vec;
    const bool valid = first + r < end;
    char* d = reinterpret_cast<char*>(dst + r * p.ld) + off;
    const char* s = valid ? reinterpret_cast<const char*>(src + (first + r) * row_stride) + off
                          : reinterpret_cast<const char*>(src);
    switch (p.vec) {
      case 16: cp_async_16(d, s, valid); break;
      case 8: cp_async_small<8>(d, s, valid); break;
      case 4: cp_async_small<4>(d, s, valid); break;
      default: cp_async_small<2>(d, s, valid); break;
    }
  }
}

template <typename T, typename Acc>
__global__ void __launch_bounds__(kAttnThreads) tree_attention_core_kernel(CoreParams p) {
  constexpr int R = CoreRows<Acc>::value;
  const TreeAttentionArgs& a = p.a;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* skv = reinterpret_cast<T*>(smem_raw);  // stage s: K tile at 2 s kCoreBN ld, V right after
  const int tile_elems = kCoreBN * p.ld;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int bh = blockIdx.y, b = bh / a.Hkv, kvh = bh % a.Hkv, group = a.Hq / a.Hkv, M = group * a.T;
  const int mw = (static_cast<int>(blockIdx.x) * kWarps + warp) * R;  // this warp's first M row
  const KeyRange kr = key_range(a, b, 0, 1);
  const int n_tiles = static_cast<int>((kr.end + kCoreBN - 1) / kCoreBN);
  const T* kg = static_cast<const T*>(a.k) + b * a.k_stride[0] + kvh * a.k_stride[1];
  const T* vg = static_cast<const T*>(a.v) + b * a.v_stride[0] + kvh * a.v_stride[1];
  auto load_kv = [&](int tile) {
    T* sk = skv + (tile % p.stages) * 2 * tile_elems;
    load_core_tile(p, sk, kg, a.k_stride[2], static_cast<int64_t>(tile) * kCoreBN, kr.end);
    load_core_tile(p, sk + tile_elems, vg, a.v_stride[2], static_cast<int64_t>(tile) * kCoreBN, kr.end);
  };
  if (p.stages > 1 && n_tiles > 0) load_kv(0);
  cp_async_commit();

  const int W = (a.T + 31) >> 5;
  Acc q[R][kCorePer], o[R][kCorePer], m_run[R], l_run[R];
  const int32_t* bits[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int m = mw + r < M ? mw + r : 0;
    const T* qr = static_cast<const T*>(a.q) + q_row_offset(a, b, kvh, group, m);
#pragma unroll
    for (int e = 0; e < kCorePer; ++e) {
      const int d = lane + 32 * e;
      q[r][e] = d < a.D ? static_cast<Acc>(widen(qr[d])) : Acc(0);
      o[r][e] = 0;
    }
    m_run[r] = -static_cast<Acc>(INFINITY);
    l_run[r] = 0;
    bits[r] = a.mask_bits + (static_cast<int64_t>(b) * a.T + m % a.T) * W;
  }
  const Acc scale = static_cast<Acc>(a.scale);

  for (int it = 0; it < n_tiles; ++it) {
    if (p.stages > 1) {
      cp_async_wait<0>();
      __syncthreads();  // tile it landed; the other slot (tile it - 1) is free
      if (it + 1 < n_tiles) load_kv(it + 1);
      cp_async_commit();
    } else {
      __syncthreads();  // the single slot is free
      load_kv(it);
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();
    }
    const T* sk = skv + (p.stages > 1 ? it % 2 : 0) * 2 * tile_elems;
    const T* sv = sk + tile_elems;
    const int64_t kv0 = static_cast<int64_t>(it) * kCoreBN;
    const bool masked = kv0 + kCoreBN > kr.prefix;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (mw + r >= M) continue;  // warp-uniform
      Acc dots[32];
#pragma unroll
      for (int j = 0; j < kCoreBN; ++j) {
        Acc acc = 0;
#pragma unroll
        for (int e = 0; e < kCorePer; ++e) {
          const int d = lane + 32 * e;
          if (d < a.D) acc += q[r][e] * static_cast<Acc>(widen(sk[j * p.ld + d]));
        }
        dots[j] = acc;
      }
      const int64_t key = kv0 + lane;
      const bool visible = masked ? key_visible(bits[r], kr, key) : true;
      const Acc dot = warp_transpose_sum(dots, lane);  // every lane shuffles, visible or not
      const Acc sc = visible ? dot * scale : -static_cast<Acc>(INFINITY);
      Acc mx = sc;
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        const Acc other = __shfl_xor_sync(0xffffffffu, mx, off);
        mx = other > mx ? other : mx;
      }
      const Acc m_new = mx > m_run[r] ? mx : m_run[r];
      const Acc m_use = m_new == -static_cast<Acc>(INFINITY) ? Acc(0) : m_new;
      const Acc alpha = c_exp(m_run[r] - m_use);
      const Acc pj = c_exp(sc - m_use);
      Acc psum = pj;
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) psum += __shfl_xor_sync(0xffffffffu, psum, off);
      l_run[r] = l_run[r] * alpha + psum;
      m_run[r] = m_new;
#pragma unroll
      for (int e = 0; e < kCorePer; ++e) o[r][e] *= alpha;
#pragma unroll 4
      for (int j = 0; j < kCoreBN; ++j) {
        const Acc pk = __shfl_sync(0xffffffffu, pj, j);
#pragma unroll
        for (int e = 0; e < kCorePer; ++e) {
          const int d = lane + 32 * e;
          if (d < a.D) o[r][e] += pk * static_cast<Acc>(widen(sv[j * p.ld + d]));
        }
      }
    }
  }
  cp_async_wait<0>();
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int m = mw + r;
    if (m >= M) continue;
    T* out = static_cast<T*>(a.out) + ((static_cast<int64_t>(b) * a.Hq + kvh * group + m / a.T) * a.T + m % a.T) * a.D;
#pragma unroll
    for (int e = 0; e < kCorePer; ++e) {
      const int d = lane + 32 * e;
      if (d < a.D) out[d] = narrow<T, Acc>(o[r][e] / l_run[r]);
    }
  }
}

// ---- launchers ------------------------------------------------------------------------------

// K/V stages of the tensor-core kernel: D = 64 fits three (63 KB, 3 CTAs per SM), D = 128 two
// (85 KB, 2 CTAs per SM; 64 KB of K/V in flight per SM).
template <int D>
constexpr int mma_stages() {
  return D == 64 ? 3 : 2;
}

template <typename T, int D>
cudaError_t set_mma_smem() {
  return cudaFuncSetAttribute(tree_attention_mma_kernel<T, D, mma_stages<D>()>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(mma_smem_bytes<D, mma_stages<D>()>()));
}

template <typename T, int D>
int mma_ctas_per_sm() {
  int n = 0;
  if (set_mma_smem<T, D>() != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(
          &n, reinterpret_cast<const void*>(tree_attention_mma_kernel<T, D, mma_stages<D>()>), kAttnThreads,
          mma_smem_bytes<D, mma_stages<D>()>()) != cudaSuccess ||
      n < 1) {
    (void)cudaGetLastError();  // a failed query is not the caller's error
    return 1;
  }
  return n;
}

template <typename T, int D>
cudaError_t launch_mma(const TreeAttentionArgs& a, cudaStream_t stream) {
  constexpr int S = mma_stages<D>();
  cudaError_t err = set_mma_smem<T, D>();
  if (err != cudaSuccess) return err;
  const int M = (a.Hq / a.Hkv) * a.T;
  const dim3 grid((M + kBM - 1) / kBM, a.B * a.Hkv, a.splits);  // M tiles fastest: they share K/V in L2
  const size_t smem = mma_smem_bytes<D, S>();
  tree_attention_mma_kernel<T, D, S><<<grid, kAttnThreads, smem, stream>>>(a);
  err = cudaGetLastError();
  if (err != cudaSuccess || a.splits == 1) return err;
  const int64_t rows = static_cast<int64_t>(a.B) * a.Hq * a.T;
  tree_attention_combine_kernel<T, D><<<static_cast<unsigned>((rows + 3) / 4), 128, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename T, typename Acc>
cudaError_t launch_core(const TreeAttentionArgs& a, cudaStream_t stream) {
  if (a.D > kCoreMaxD) return cudaErrorInvalidValue;
  CoreParams p{};
  p.a = a;
  p.a.splits = 1;
  const int row_bytes = a.D * static_cast<int>(sizeof(T));
  p.ld = (row_bytes + 15) / 16 * 16 / static_cast<int>(sizeof(T));
  p.vec = a.kv_align < 16 ? a.kv_align : 16;
  while (row_bytes % p.vec) p.vec /= 2;
  if (p.vec < 2) p.vec = 2;
  const size_t stage_bytes = 2 * static_cast<size_t>(kCoreBN) * p.ld * sizeof(T);
  p.stages = 2 * stage_bytes <= static_cast<size_t>(a.max_smem) ? 2 : 1;
  const size_t smem = p.stages * stage_bytes;
  cudaError_t err = cudaFuncSetAttribute(tree_attention_core_kernel<T, Acc>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  const int rows_per_cta = kWarps * CoreRows<Acc>::value;
  const int M = (a.Hq / a.Hkv) * a.T;
  const dim3 grid((M + rows_per_cta - 1) / rows_per_cta, a.B * a.Hkv, 1);
  tree_attention_core_kernel<T, Acc><<<grid, kAttnThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

bool tree_attention_uses_tensor_cores(int D, DType dtype, int sm_arch) {
  return sm_arch >= 80 && (dtype == DType::kFloat16 || dtype == DType::kBFloat16) && (D == 64 || D == 128);
}

int plan_kv_splits(int64_t ctas, int64_t S, int64_t slots) {
  if (ctas <= 0 || slots <= ctas) return 1;  // one split already fills a wave (or more)
  int64_t splits = slots / ctas;             // floor: the grid never spills into a partial second wave
  const int64_t most = (S + kMinChunk - 1) / kMinChunk;
  if (splits > most) splits = most;
  return static_cast<int>(splits < 1 ? 1 : splits);
}

int tree_attention_splits(int B, int Hq, int Hkv, int T, int S, int D, DType dtype, int num_sms, int sm_arch) {
  if (!tree_attention_uses_tensor_cores(D, dtype, sm_arch) || Hkv < 1) return 1;
  const int64_t m_tiles = ((Hq / Hkv) * static_cast<int64_t>(T) + kBM - 1) / kBM;
  const int64_t ctas = static_cast<int64_t>(B) * Hkv * m_tiles;
  int per_sm = 1;
  if (dtype == DType::kFloat16) {
    per_sm = D == 64 ? mma_ctas_per_sm<__half, 64>() : mma_ctas_per_sm<__half, 128>();
  } else {
    per_sm = D == 64 ? mma_ctas_per_sm<__nv_bfloat16, 64>() : mma_ctas_per_sm<__nv_bfloat16, 128>();
  }
  return plan_kv_splits(ctas, S, static_cast<int64_t>(num_sms) * per_sm);
}

cudaError_t launch_tree_attention(const TreeAttentionArgs& args, DType dtype, cudaStream_t stream) {
  if (args.B == 0 || args.Hq == 0 || args.T == 0) return cudaSuccess;
  TreeAttentionArgs a = args;
  a.scale_log2e = static_cast<float>(a.scale) * kLog2e;
  if (tree_attention_uses_tensor_cores(a.D, dtype, a.sm_arch)) {
    if (dtype == DType::kFloat16) return a.D == 64 ? launch_mma<__half, 64>(a, stream) : launch_mma<__half, 128>(a, stream);
    return a.D == 64 ? launch_mma<__nv_bfloat16, 64>(a, stream) : launch_mma<__nv_bfloat16, 128>(a, stream);
  }
  return dispatch_dtype(dtype, [&](auto types) {
    using P = decltype(types);
    return launch_core<typename P::storage, typename P::compute>(a, stream);
  });
}

}  // namespace rsd
