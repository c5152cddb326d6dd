// Tree attention (SPEC section 7): the T tree nodes' queries over the KV cache, node i seeing
// every prefix key and the tree keys of its ancestors-or-self (packed bitmask).
//
// fp16/bf16 with D in {64, 128}: tensor cores through WMMA (16x16x16, fp32 accumulate).
//   One CTA = one (KV split, batch row, KV head, 64-row M tile); the M rows are all query heads
//   of the KV head times the T nodes (m = g * T + t), so every K/V tile is read once per GQA
//   group. Online softmax in fp32; P is rounded to the input dtype for the P.V product (as
//   FlashAttention does). The KV range [0, prefix + T) is split into `splits` chunks
//   (flash-decoding); a combine kernel merges the partial (O, max, sum) in fp32.
// fp32, fp64 and other head sizes (D <= 256): a CUDA-core kernel (one warp per query row,
//   online softmax, accumulation in fp32, fp64 for fp64), no split. It exists for exactness
//   tests and odd shapes, not speed.
// No torch headers.
#include <mma.h>

#include <type_traits>

#include "common.cuh"
#include "rsd_kernels.h"

namespace rsd {
namespace {

using namespace nvcuda;

constexpr int kBM = 64;   // query rows per CTA
constexpr int kBN = 64;   // keys per tile
constexpr int kWarps = 4; // each warp owns 16 query rows
constexpr int kAttnThreads = kWarps * 32;

__device__ __forceinline__ bool key_allowed(const int32_t* bits_row, int64_t prefix, int64_t key) {
  const int64_t rel = key - prefix;
  if (rel < 0) return true;
  return (static_cast<uint32_t>(bits_row[rel >> 5]) >> (rel & 31)) & 1u;
}

template <int D>
struct WmmaLayout {
  static constexpr int ldh = D + 8;    // Q, K, V rows (16-bit elements)
  static constexpr int lds = kBN + 4;  // S rows (float)
  static constexpr int ldp = kBN + 8;  // P rows (16-bit)
  static constexpr int ldo = D + 4;    // O rows (float)
  static constexpr size_t q_off = 0;
  static constexpr size_t k_off = q_off + size_t(kBM) * ldh * 2;
  static constexpr size_t v_off = k_off + size_t(kBN) * ldh * 2;
  static constexpr size_t s_off = v_off + size_t(kBN) * ldh * 2;
  static constexpr size_t p_off = s_off + size_t(kBM) * lds * 4;
  static constexpr size_t o_off = p_off + size_t(kBM) * ldp * 2;
  static constexpr size_t stat_off = o_off + size_t(kBM) * ldo * 4;  // m, l, alpha [kBM] each
  static constexpr size_t bytes = stat_off + 3 * kBM * 4;
};

// Copy `rows` rows of D 16-bit elements from global (row stride D) into shared (stride ld),
// zero-filling rows >= valid. 16-byte chunks.
template <typename T, int D>
__device__ __forceinline__ void load_tile(T* dst, int ld, const T* src, int rows, int valid) {
  constexpr int kChunks = D / 8;
  for (int c = threadIdx.x; c < rows * kChunks; c += blockDim.x) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r < valid) val = *reinterpret_cast<const uint4*>(src + static_cast<int64_t>(r) * D + col);
    *reinterpret_cast<uint4*>(dst + r * ld + col) = val;
  }
}

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

template <typename T, int D>
__global__ void __launch_bounds__(kAttnThreads) tree_attention_wmma_kernel(TreeAttentionArgs a) {
  using L = WmmaLayout<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  T* sq = reinterpret_cast<T*>(smem + L::q_off);
  T* sk = reinterpret_cast<T*>(smem + L::k_off);
  T* sv = reinterpret_cast<T*>(smem + L::v_off);
  float* ss = reinterpret_cast<float*>(smem + L::s_off);
  T* sp = reinterpret_cast<T*>(smem + L::p_off);
  float* so = reinterpret_cast<float*>(smem + L::o_off);
  float* sm = reinterpret_cast<float*>(smem + L::stat_off);
  float* sl = sm + kBM;
  float* salpha = sl + kBM;

  const int split = blockIdx.x, bh = blockIdx.y, m0 = blockIdx.z * kBM;
  const int b = bh / a.Hkv, kvh = bh % a.Hkv, group = a.Hq / a.Hkv, M = group * a.T;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t prefix = a.prefix_lens[b];
  const int64_t len = prefix + a.T;
  const int64_t per_split = (len + a.splits - 1) / a.splits;
  const int64_t chunk = (per_split + kBN - 1) / kBN * kBN;
  const int64_t s_begin = split * chunk;
  const int64_t s_end = s_begin + chunk < len ? s_begin + chunk : len;
  const int W = (a.T + 31) >> 5;

  const int64_t q_row0 = (static_cast<int64_t>(b) * a.Hq + static_cast<int64_t>(kvh) * group) * a.T;  // row of m = 0
  const T* qg = static_cast<const T*>(a.q) + (q_row0 + m0) * D;
  const int64_t kv_row0 = (static_cast<int64_t>(b) * a.Hkv + kvh) * a.S;
  const T* kg = static_cast<const T*>(a.k) + kv_row0 * D;
  const T* vg = static_cast<const T*>(a.v) + kv_row0 * D;

  load_tile<T, D>(sq, L::ldh, qg, kBM, M - m0);
  for (int i = threadIdx.x; i < kBM * L::ldo; i += blockDim.x) so[i] = 0.0f;
  for (int i = threadIdx.x; i < kBM; i += blockDim.x) {
    sm[i] = -INFINITY;
    sl[i] = 0.0f;
  }
  const float scale = static_cast<float>(a.scale);

  for (int64_t kv0 = s_begin; kv0 < s_end; kv0 += kBN) {
    const int valid_keys = static_cast<int>(s_end - kv0 < kBN ? s_end - kv0 : kBN);
    __syncthreads();  // previous tile's K/V no longer in use; first pass: Q/O/stats initialised
    load_tile<T, D>(sk, L::ldh, kg + kv0 * D, kBN, valid_keys);
    load_tile<T, D>(sv, L::ldh, vg + kv0 * D, kBN, valid_keys);
    __syncthreads();

    // S[16 rows of this warp, 64 keys] = Q K^T
#pragma unroll
    for (int n = 0; n < kBN / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
        wmma::load_matrix_sync(fa, sq + warp * 16 * L::ldh + kk * 16, L::ldh);
        wmma::load_matrix_sync(fb, sk + n * 16 * L::ldh + kk * 16, L::ldh);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(ss + warp * 16 * L::lds + n * 16, acc, L::lds, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax over this tile, row by row (lane handles keys lane and lane + 32).
    for (int r = 0; r < 16; ++r) {
      const int row = warp * 16 + r;
      const int m = m0 + row;
      const int t = (m < M ? m : 0) % a.T;
      const int32_t* bits = a.mask_bits + (static_cast<int64_t>(b) * a.T + t) * W;
      float sc[2];
      float rmax = -INFINITY;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int c = lane + 32 * h;
        const bool ok = m < M && c < valid_keys && key_allowed(bits, prefix, kv0 + c);
        sc[h] = ok ? ss[row * L::lds + c] * scale : -INFINITY;
        rmax = fmaxf(rmax, sc[h]);
      }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) rmax = fmaxf(rmax, __shfl_xor_sync(0xffffffffu, rmax, off));
      const float m_old = sm[row];
      const float m_new = fmaxf(m_old, rmax);
      float alpha = 1.0f, psum = 0.0f;
      if (m_new != -INFINITY) {
        alpha = expf(m_old - m_new);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          sc[h] = expf(sc[h] - m_new);
          psum += sc[h];
        }
      } else {
        sc[0] = sc[1] = 0.0f;
      }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) psum += __shfl_xor_sync(0xffffffffu, psum, off);
      sp[row * L::ldp + lane] = from_float<T>(sc[0]);
      sp[row * L::ldp + lane + 32] = from_float<T>(sc[1]);
      __syncwarp();
      if (lane == 0) {
        sm[row] = m_new;
        sl[row] = sl[row] * alpha + psum;
        salpha[row] = alpha;
      }
    }
    __syncwarp();

    // O = alpha * O + P V for this warp's 16 rows.
    for (int i = lane; i < 16 * D; i += 32) {
      const int row = warp * 16 + i / D;
      so[row * L::ldo + i % D] *= salpha[row];
    }
    __syncwarp();
#pragma unroll
    for (int dt = 0; dt < D / 16; ++dt) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      float* o_tile = so + warp * 16 * L::ldo + dt * 16;
      wmma::load_matrix_sync(acc, o_tile, L::ldo, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, sp + warp * 16 * L::ldp + kk * 16, L::ldp);
        wmma::load_matrix_sync(fb, sv + kk * 16 * L::ldh + dt * 16, L::ldh);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(o_tile, acc, L::ldo, wmma::mem_row_major);
    }
    __syncwarp();
  }
  __syncthreads();

  // Partial results of this split: unnormalised O, running max and sum.
  const int64_t split_rows = static_cast<int64_t>(a.B) * a.Hq * a.T;
  for (int i = threadIdx.x; i < kBM * D; i += blockDim.x) {
    const int row = i / D, d = i % D, m = m0 + row;
    if (m >= M) continue;
    a.partial_o[(split * split_rows + q_row0 + m) * D + d] = so[row * L::ldo + d];
  }
  for (int row = threadIdx.x; row < kBM; row += blockDim.x) {
    const int m = m0 + row;
    if (m >= M) continue;
    float* ml = a.partial_ml + (split * split_rows + q_row0 + m) * 2;
    ml[0] = sm[row];
    ml[1] = sl[row];
  }
}

// out[row] = sum_s e^(m_s - M) O_s / sum_s e^(m_s - M) l_s, one warp per query row.
template <typename T>
__global__ void tree_attention_combine_kernel(TreeAttentionArgs a) {
  const int64_t rows = static_cast<int64_t>(a.B) * a.Hq * a.T;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  float mmax = -INFINITY;
  for (int s = 0; s < a.splits; ++s) mmax = fmaxf(mmax, a.partial_ml[(s * rows + row) * 2]);
  float den = 0.0f;
  for (int s = 0; s < a.splits; ++s) {
    const float* ml = a.partial_ml + (s * rows + row) * 2;
    if (ml[0] != -INFINITY) den += expf(ml[0] - mmax) * ml[1];
  }
  T* out = static_cast<T*>(a.out) + row * a.D;
  for (int d = lane; d < a.D; d += 32) {
    float acc = 0.0f;
    for (int s = 0; s < a.splits; ++s) {
      const float ms = a.partial_ml[(s * rows + row) * 2];
      if (ms != -INFINITY) acc += expf(ms - mmax) * a.partial_o[(s * rows + row) * a.D + d];
    }
    out[d] = from_float<T>(acc / den);
  }
}

// CUDA-core path: one warp per query row (b, h, t), keys in order, online softmax.
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

constexpr int kScalarMaxD = 256;

template <typename T, typename Acc>
__global__ void __launch_bounds__(128) tree_attention_scalar_kernel(TreeAttentionArgs a) {
  constexpr int kPer = kScalarMaxD / 32;
  const int64_t rows = static_cast<int64_t>(a.B) * a.Hq * a.T;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int t = static_cast<int>(row % a.T);
  const int h = static_cast<int>((row / a.T) % a.Hq);
  const int b = static_cast<int>(row / (static_cast<int64_t>(a.T) * a.Hq));
  const int kvh = h / (a.Hq / a.Hkv);
  const int W = (a.T + 31) >> 5;
  const int32_t* bits = a.mask_bits + (static_cast<int64_t>(b) * a.T + t) * W;
  const int64_t prefix = a.prefix_lens[b];
  const int64_t len = prefix + a.T;
  const T* qr = static_cast<const T*>(a.q) + row * a.D;
  const int64_t kv_row0 = (static_cast<int64_t>(b) * a.Hkv + kvh) * a.S;
  const T* kg = static_cast<const T*>(a.k) + kv_row0 * a.D;
  const T* vg = static_cast<const T*>(a.v) + kv_row0 * a.D;
  Acc qv[kPer], o[kPer];
#pragma unroll
  for (int e = 0; e < kPer; ++e) {
    const int d = lane + 32 * e;
    qv[e] = d < a.D ? static_cast<Acc>(widen(qr[d])) : Acc(0);
    o[e] = 0;
  }
  const Acc scale = static_cast<Acc>(a.scale);
  Acc mrun = -static_cast<Acc>(INFINITY), lrun = 0;
  for (int64_t s = 0; s < len; ++s) {
    if (!key_allowed(bits, prefix, s)) continue;
    Acc dot = 0;
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      const int d = lane + 32 * e;
      if (d < a.D) dot += qv[e] * static_cast<Acc>(widen(kg[s * a.D + d]));
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    const Acc sc = dot * scale;
    const Acc m_new = sc > mrun ? sc : mrun;
    const Acc alpha = c_exp(mrun - m_new), p = c_exp(sc - m_new);
    lrun = lrun * alpha + p;
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      const int d = lane + 32 * e;
      if (d < a.D) o[e] = o[e] * alpha + p * static_cast<Acc>(widen(vg[s * a.D + d]));
    }
    mrun = m_new;
  }
  T* out = static_cast<T*>(a.out) + row * a.D;
#pragma unroll
  for (int e = 0; e < kPer; ++e) {
    const int d = lane + 32 * e;
    if (d < a.D) out[d] = narrow<T, Acc>(o[e] / lrun);
  }
}

template <typename T, int D>
cudaError_t launch_wmma(const TreeAttentionArgs& a, cudaStream_t stream) {
  using L = WmmaLayout<D>;
  cudaError_t err = cudaFuncSetAttribute(tree_attention_wmma_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(L::bytes));
  if (err != cudaSuccess) return err;
  const int M = (a.Hq / a.Hkv) * a.T;
  const dim3 grid(a.splits, a.B * a.Hkv, (M + kBM - 1) / kBM);
  tree_attention_wmma_kernel<T, D><<<grid, kAttnThreads, L::bytes, stream>>>(a);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t rows = static_cast<int64_t>(a.B) * a.Hq * a.T;
  tree_attention_combine_kernel<T><<<static_cast<unsigned>((rows + 3) / 4), 128, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename T, typename Acc>
cudaError_t launch_scalar(const TreeAttentionArgs& a, cudaStream_t stream) {
  if (a.D > kScalarMaxD) return cudaErrorInvalidValue;
  const int64_t rows = static_cast<int64_t>(a.B) * a.Hq * a.T;
  tree_attention_scalar_kernel<T, Acc><<<static_cast<unsigned>((rows + 3) / 4), 128, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

bool tree_attention_uses_tensor_cores(int D, DType dtype) {
  return (dtype == DType::kFloat16 || dtype == DType::kBFloat16) && (D == 64 || D == 128);
}

int tree_attention_splits(int B, int Hq, int Hkv, int T, int S, int D, DType dtype, int num_sms) {
  if (!tree_attention_uses_tensor_cores(D, dtype)) return 1;
  const int64_t ctas = static_cast<int64_t>(B) * Hkv * (((Hq / Hkv) * static_cast<int64_t>(T) + kBM - 1) / kBM);
  const int64_t want = (2 * static_cast<int64_t>(num_sms) + ctas - 1) / ctas;  // about two CTAs per SM
  const int64_t most = (static_cast<int64_t>(S) + 2 * kBN - 1) / (2 * kBN);      // at least two key tiles each
  int64_t splits = want < most ? want : most;
  return static_cast<int>(splits < 1 ? 1 : splits);
}

cudaError_t launch_tree_attention(const TreeAttentionArgs& a, DType dtype, cudaStream_t stream) {
  if (a.B == 0 || a.Hq == 0 || a.T == 0) return cudaSuccess;
  if (tree_attention_uses_tensor_cores(a.D, dtype)) {
    if (dtype == DType::kFloat16) return a.D == 64 ? launch_wmma<__half, 64>(a, stream) : launch_wmma<__half, 128>(a, stream);
    return a.D == 64 ? launch_wmma<__nv_bfloat16, 64>(a, stream) : launch_wmma<__nv_bfloat16, 128>(a, stream);
  }
  return dispatch_dtype(dtype, [&](auto types) {
    using P = decltype(types);
    return launch_scalar<typename P::storage, typename P::compute>(a, stream);
  });
}

}  // namespace rsd
