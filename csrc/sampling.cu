// Gumbel-top-k sampling without replacement over [R, V] (SPEC section 2), one block per row.
//
// Each thread keeps a sorted partial top-K of its strided slice in registers (K in {1, 8, 32, 64},
// the smallest >= kmax; at most kMaxSampleK = 64), reading the row with 16-byte vector loads
// where aligned. The block then merges the partial lists: kmax rounds of a block-wide argmax
// over the threads' list heads; the winner pops its head. Order: perturbed score descending,
// ties by the lower token index. Mirrors rsd_kernels/sampling/reference.py sample_topk; the
// Gumbel noise is the explicit tensor or the Philox GUMBEL stream at (offset, row, 3<<24, token).
// No torch headers.
#include "common.cuh"
#include "philox.cuh"
#include "rsd_kernels.h"

namespace rsd {
namespace {

constexpr int kSampleThreads = 256;

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
};

__device__ __forceinline__ float noise_at(const SampleArgs& a, int r, int i) {
  return a.gumbel ? a.gumbel[static_cast<int64_t>(r) * a.V + i]
                  : philox_gumbel(a.seed, a.offset, static_cast<uint32_t>(r), kStreamGumbel, static_cast<uint32_t>(i));
}

template <typename T, typename C, int K>
__global__ void __launch_bounds__(kSampleThreads) sample_topk_kernel(SampleArgs a) {
  __shared__ C vscratch[32];
  __shared__ int iscratch[32];
  __shared__ int chosen[K];
  const int r = blockIdx.x;
  const T* row = static_cast<const T*>(a.logits) + static_cast<int64_t>(r) * a.V;
  const bool noisy = a.temperature > 0;
  const C tdiv = noisy ? static_cast<C>(a.temperature) : C(1);

  // Pass 1: per-thread top-K of the perturbed scores, the row max and the support size.
  TopK<C, K> top;
  top.init();
  C mx = c_neg_inf<C>();
  int support = 0;
  for_each_in_row(row, a.V, [&](int i, T x) {
    const C scaled = static_cast<C>(widen(x)) / tdiv;
    if (!c_isfinite(scaled)) return;
    ++support;
    mx = scaled > mx ? scaled : mx;
    const C score = noisy ? scaled + static_cast<C>(noise_at(a, r, i)) : scaled;
    top.insert(score, i);
  });
  mx = block_reduce(mx, MaxOp(), vscratch);
  support = block_reduce(support, SumOp(), iscratch);

  // Pass 2: log-sum-exp for the log-probabilities (log_softmax = x - max - log(sum exp(x - max))).
  C sum = 0;
  for_each_in_row(row, a.V, [&](int, T x) { sum += c_exp(static_cast<C>(widen(x)) / tdiv - mx); });
  sum = block_reduce(sum, SumOp(), vscratch);
  const C log_sum = c_log(sum);

  // Merge: num rounds of a block argmax over the list heads.
  const int want = a.k[r];
  const int num = want < support ? want : support;
  for (int s = 0; s < num; ++s) {
    C v = top.v[0];
    int idx = top.i[0];
    block_argmax(v, idx, vscratch, iscratch);
    if (top.i[0] == idx) top.pop();  // token indices are unique: exactly one thread pops
    if (threadIdx.x == 0) chosen[s] = idx;
  }
  __syncthreads();

  C* logprobs = static_cast<C*>(a.logprobs) + static_cast<int64_t>(r) * a.kmax;
  int64_t* tokens = a.tokens + static_cast<int64_t>(r) * a.kmax;
  float* noise = a.noise + static_cast<int64_t>(r) * a.kmax;
  for (int s = threadIdx.x; s < a.kmax; s += blockDim.x) {
    if (s < num) {
      const int tok = chosen[s];
      tokens[s] = tok;
      logprobs[s] = static_cast<C>(widen(row[tok])) / tdiv - mx - log_sum;
      noise[s] = noisy ? noise_at(a, r, tok) : 0.0f;
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
  sample_topk_kernel<T, C, K><<<a.R, kSampleThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename T, typename C>
cudaError_t launch_typed(const SampleArgs& a, cudaStream_t stream) {
  // A few list sizes keep the compile short: K = 1 (one draw), 8 (tree branching), 32 (beams).
  if (a.kmax <= 1) return launch_k<T, C, 1>(a, stream);
  if (a.kmax <= 8) return launch_k<T, C, 8>(a, stream);
  if (a.kmax <= 32) return launch_k<T, C, 32>(a, stream);
  if (a.kmax <= kMaxSampleK) return launch_k<T, C, kMaxSampleK>(a, stream);
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_sample_topk(const SampleArgs& a, DType dtype, cudaStream_t stream) {
  if (a.R == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto types) {
    using P = decltype(types);
    return launch_typed<typename P::storage, typename P::compute>(a, stream);
  });
}

}  // namespace rsd
