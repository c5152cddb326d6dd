// Gumbel-top-k sampling without replacement over [R, V] (SPEC section 2), the vocabulary split
// across blocks.
//
// sample_partial_kernel, grid (vocabulary blocks, R): each block reads its slice of a row once,
//   four tokens at a time (one Philox call gives the GUMBEL noise of the four: all lanes used),
//   and writes the slice's (max, sum of exp(x - max), support) and its top-kmax perturbed scores.
//   Each thread keeps a sorted register top-K of its tokens (K in {1, 8, 32, 64}, the smallest
//   >= kmax; at most kMaxSampleK = 64); the block merges them by kmax rounds of a block argmax.
// sample_merge_kernel, grid R: merges the blocks' statistics (log-sum-exp) and candidates (the
//   row's top-k lies among the blocks' top-kmax), writes tokens, log-probabilities and the noise
//   of each chosen token.
// Order: perturbed score descending, ties by the lower token index. Mirrors
// rsd_kernels/sampling/reference.py sample_topk; the noise is the explicit tensor or the GUMBEL
// stream of philox.cuh (float32 log32, no fp64: fp64 arithmetic only for fp64 logits).
// No torch headers.
#include "common.cuh"
#include "philox.cuh"
#include "rsd_kernels.h"

namespace rsd {
namespace {

constexpr int kSampleThreads = 256;
constexpr int kQuadsInFlight = 4;  // quads (4 tokens) each thread loads before it computes

template <typename C, int K>
struct TopK {
  C v[K];
  int i[K];

  __device__ __forceinline__ void init() {
#pragma unroll
    for (int s = 0; s < K; ++s) {
      v[s] = c_neg_inf<C>();
      i[s] = INT_MAX;
    }
  }
  // Insert (val, idx) keeping v[] sorted by ranks_before; static indexing keeps it in registers.
  __device__ __forceinline__ void insert(C val, int idx) {
    if (!ranks_before(val, idx, v[K - 1], i[K - 1])) return;
    bool placed = false;
#pragma unroll
    for (int s = K - 1; s > 0; --s) {
      if (!placed) {
        if (ranks_before(val, idx, v[s - 1], i[s - 1])) {
          v[s] = v[s - 1];
          i[s] = i[s - 1];
        } else {
          v[s] = val;
          i[s] = idx;
          placed = true;
        }
      }
    }
    if (!placed) {
      v[0] = val;
      i[0] = idx;
    }
  }
  __device__ __forceinline__ void pop() {
#pragma unroll
    for (int s = 0; s < K - 1; ++s) {
      v[s] = v[s + 1];
      i[s] = i[s + 1];
    }
    v[K - 1] = c_neg_inf<C>();
    i[K - 1] = INT_MAX;
  }
  // `rounds` rounds of a block argmax over the threads' list heads: the block's top-`rounds`,
  // in order, to out_v/out_i (thread 0 writes; slots past the candidates hold -inf / INT_MAX).
  __device__ __forceinline__ void merge(int rounds, C* out_v, int* out_i, C* vscratch, int* iscratch) {
    for (int s = 0; s < rounds; ++s) {
      C bv = v[0];
      int bi = i[0];
      block_argmax(bv, bi, vscratch, iscratch);
      if (bi != INT_MAX && i[0] == bi) pop();  // token indices are unique: exactly one thread pops
      if (threadIdx.x == 0) {
        out_v[s] = bv;
        out_i[s] = bi;
      }
    }
  }
};

// The temperature in the compute type (float kernels never touch the double field).
template <typename C>
__device__ __forceinline__ C temperature(const SampleArgs& a) {
  if constexpr (sizeof(C) == 8) {
    return a.temperature;
  } else {
    return a.temperature_f;
  }
}

// Four consecutive values of row[q4 .. q4 + 3] (positions >= end read as -inf / 0).
template <typename T>
__device__ __forceinline__ void load_quad(const T* row, int q4, int end, bool vec, T (&x)[4]) {
  if (vec && q4 + 4 <= end) {
    if constexpr (sizeof(T) == 2) {
      const uint2 raw = *reinterpret_cast<const uint2*>(row + q4);
      memcpy(x, &raw, 8);
    } else if constexpr (sizeof(T) == 4) {
      const uint4 raw = *reinterpret_cast<const uint4*>(row + q4);
      memcpy(x, &raw, 16);
    } else {
      const uint4 r0 = reinterpret_cast<const uint4*>(row + q4)[0], r1 = reinterpret_cast<const uint4*>(row + q4)[1];
      memcpy(x, &r0, 16);
      memcpy(x + 2, &r1, 16);
    }
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) x[e] = q4 + e < end ? row[q4 + e] : T(0);
  }
}

template <typename T, typename C, int K>
__global__ void __launch_bounds__(kSampleThreads) sample_partial_kernel(SampleArgs a) {
  __shared__ C vscratch[32];
  __shared__ int iscratch[32];
  const int blk = blockIdx.x, r = blockIdx.y;
  const int begin = blk * a.block_tokens, end = begin + a.block_tokens < a.V ? begin + a.block_tokens : a.V;
  const T* row = static_cast<const T*>(a.logits) + static_cast<int64_t>(r) * a.V;
  const float* grow = a.gumbel ? a.gumbel + static_cast<int64_t>(r) * a.V : nullptr;
  const C temp = temperature<C>(a);
  const bool noisy = temp > 0;
  const C tdiv = noisy ? temp : C(1);
  const bool vec = a.V % 4 == 0 && reinterpret_cast<uintptr_t>(a.logits) % (4 * sizeof(T)) == 0;
  const bool gvec = grow && a.V % 4 == 0 && reinterpret_cast<uintptr_t>(a.gumbel) % 16 == 0;

  TopK<C, K> top;
  top.init();
  C mx = c_neg_inf<C>(), sum = 0;
  int support = 0;
  const int q_begin = begin / 4, q_end = (end + 3) / 4;
  for (int base = q_begin + threadIdx.x; base < q_end; base += kQuadsInFlight * blockDim.x) {
    T x[kQuadsInFlight][4];
#pragma unroll
    for (int j = 0; j < kQuadsInFlight; ++j) {  // every load of this round issued before any use
      const int q = base + j * blockDim.x;
      if (q < q_end) load_quad(row, 4 * q, end, vec, x[j]);
    }
#pragma unroll
    for (int j = 0; j < kQuadsInFlight; ++j) {
      const int q = base + j * blockDim.x;
      if (q >= q_end) break;
      C s[4];
      bool any = false;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[e] = 4 * q + e < end ? static_cast<C>(widen(x[j][e])) / tdiv : c_neg_inf<C>();
        any |= c_isfinite(s[e]);
      }
      if (!any) continue;
      float g[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (noisy) {
        if (grow) {
          float gq[4];
          load_quad(grow, 4 * q, end, gvec, gq);
#pragma unroll
          for (int e = 0; e < 4; ++e) g[e] = gq[e];
        } else {
          const Philox4 bits = token_bits(a.seed, a.offset, static_cast<uint32_t>(r), kStreamGumbel, static_cast<uint32_t>(q));
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (c_isfinite(s[e])) g[e] = gumbel_from_uniform(uniform_from_bits(bits.x[e]));
        }
      }
      C qmax = c_neg_inf<C>();
#pragma unroll
      for (int e = 0; e < 4; ++e) qmax = s[e] > qmax ? s[e] : qmax;
      const C m_new = qmax > mx ? qmax : mx;
      sum = mx == c_neg_inf<C>() ? C(0) : sum * c_exp(mx - m_new);
      mx = m_new;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (!c_isfinite(s[e])) continue;
        ++support;
        sum += c_exp(s[e] - mx);
        top.insert(noisy ? s[e] + static_cast<C>(g[e]) : s[e], 4 * q + e);
      }
    }
  }
  const C bmax = block_reduce(mx, MaxOp(), vscratch);
  const C scaled_sum = mx == c_neg_inf<C>() ? C(0) : sum * c_exp(mx - bmax);
  const C bsum = block_reduce(scaled_sum, SumOp(), vscratch);
  const int bsupport = block_reduce(support, SumOp(), iscratch);

  const int64_t slot = static_cast<int64_t>(r) * a.blocks + blk;
  C* cand_v = static_cast<C*>(a.part_score) + slot * a.kmax;
  int* cand_i = a.part_token + slot * a.kmax;
  top.merge(a.kmax < bsupport ? a.kmax : bsupport, cand_v, cand_i, vscratch, iscratch);
  if (threadIdx.x == 0) {
    for (int s = bsupport; s < a.kmax; ++s) {
      cand_v[s] = c_neg_inf<C>();
      cand_i[s] = INT_MAX;
    }
    C* stats = static_cast<C*>(a.part_stats) + slot * 2;
    stats[0] = bmax;
    stats[1] = bsum;
    a.part_support[slot] = bsupport;
  }
}

template <typename T, typename C, int K>
__global__ void __launch_bounds__(kSampleThreads) sample_merge_kernel(SampleArgs a) {
  __shared__ C vscratch[32];
  __shared__ int iscratch[32];
  __shared__ C chosen_v[K];
  __shared__ int chosen_i[K];
  const int r = blockIdx.x;
  const int64_t slot0 = static_cast<int64_t>(r) * a.blocks;
  const C* stats = static_cast<const C*>(a.part_stats) + slot0 * 2;

  C mx = c_neg_inf<C>();
  int support = 0;
  for (int b = threadIdx.x; b < a.blocks; b += blockDim.x) {
    mx = stats[2 * b] > mx ? stats[2 * b] : mx;
    support += a.part_support[slot0 + b];
  }
  mx = block_reduce(mx, MaxOp(), vscratch);
  support = block_reduce(support, SumOp(), iscratch);
  C sum = 0;
  for (int b = threadIdx.x; b < a.blocks; b += blockDim.x)
    if (stats[2 * b] != c_neg_inf<C>()) sum += stats[2 * b + 1] * c_exp(stats[2 * b] - mx);
  sum = block_reduce(sum, SumOp(), vscratch);
  const C log_sum = c_log(sum);

  TopK<C, K> top;
  top.init();
  const C* cand_v = static_cast<const C*>(a.part_score) + slot0 * a.kmax;
  const int* cand_i = a.part_token + slot0 * a.kmax;
  for (int c = threadIdx.x; c < a.blocks * a.kmax; c += blockDim.x)
    if (cand_i[c] != INT_MAX) top.insert(cand_v[c], cand_i[c]);
  const int want = a.k[r];
  const int num = want < support ? want : support;
  top.merge(num, chosen_v, chosen_i, vscratch, iscratch);
  __syncthreads();

  const T* row = static_cast<const T*>(a.logits) + static_cast<int64_t>(r) * a.V;
  const C temp = temperature<C>(a);
  const bool noisy = temp > 0;
  const C tdiv = noisy ? temp : C(1);
  C* logprobs = static_cast<C*>(a.logprobs) + static_cast<int64_t>(r) * a.kmax;
  int64_t* tokens = a.tokens + static_cast<int64_t>(r) * a.kmax;
  float* noise = a.noise + static_cast<int64_t>(r) * a.kmax;
  for (int s = threadIdx.x; s < a.kmax; s += blockDim.x) {
    if (s < num) {
      const int tok = chosen_i[s];
      tokens[s] = tok;
      logprobs[s] = static_cast<C>(widen(row[tok])) / tdiv - mx - log_sum;
      noise[s] = !noisy ? 0.0f
                 : a.gumbel ? a.gumbel[static_cast<int64_t>(r) * a.V + tok]
                            : token_gumbel(a.seed, a.offset, static_cast<uint32_t>(r), kStreamGumbel, static_cast<uint32_t>(tok));
    } else {
      tokens[s] = -1;
      logprobs[s] = c_neg_inf<C>();
      noise[s] = 0.0f;
    }
  }
  if (threadIdx.x == 0) a.num[r] = num;
}

template <typename T, typename C, int K>
cudaError_t launch_k(const SampleArgs& a, cudaStream_t stream) {
  const dim3 grid(a.blocks, a.R, 1);
  sample_partial_kernel<T, C, K><<<grid, kSampleThreads, 0, stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  sample_merge_kernel<T, C, K><<<a.R, kSampleThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename T, typename C>
cudaError_t launch_typed(const SampleArgs& a, cudaStream_t stream) {
  // A few list sizes keep the compile short: K = 1 (one draw), 8 (tree branching), 32 and 64 (beams).
  if (a.kmax <= 1) return launch_k<T, C, 1>(a, stream);
  if (a.kmax <= 8) return launch_k<T, C, 8>(a, stream);
  if (a.kmax <= 32) return launch_k<T, C, 32>(a, stream);
  if (a.kmax <= kMaxSampleK) return launch_k<T, C, kMaxSampleK>(a, stream);
  return cudaErrorInvalidValue;
}

}  // namespace

SamplePlan sample_plan(int R, int V, int num_sms) {
  // Enough blocks for about 4 per SM (256 threads each) over all rows, whole sweeps of
  // 256 threads x 4 tokens per block, and never more blocks than sweeps in a row.
  constexpr int kSweep = kSampleThreads * 4;
  const int64_t sweeps = (static_cast<int64_t>(V) + kSweep - 1) / kSweep;
  int64_t blocks = (4 * static_cast<int64_t>(num_sms) + R - 1) / (R > 0 ? R : 1);
  blocks = blocks < 1 ? 1 : (blocks > sweeps ? sweeps : blocks);
  const int64_t per = (sweeps + blocks - 1) / blocks * kSweep;
  return SamplePlan{static_cast<int>((V + per - 1) / per), static_cast<int>(per)};
}

cudaError_t launch_sample_topk(const SampleArgs& args, DType dtype, cudaStream_t stream) {
  if (args.R == 0) return cudaSuccess;
  if (args.blocks < 1 || args.block_tokens < 4 || args.block_tokens % 4 ||
      static_cast<int64_t>(args.blocks) * args.block_tokens < args.V)
    return cudaErrorInvalidValue;
  SampleArgs a = args;
  a.temperature_f = static_cast<float>(a.temperature);
  return dispatch_dtype(dtype, [&](auto types) {
    using P = decltype(types);
    return launch_typed<typename P::storage, typename P::compute>(a, stream);
  });
}

}  // namespace rsd
