// verify_tree(mode="traversal"): Traversal Verification, one thread block per batch row.
//
// Mirrors rsd_kernels/verify/traversal_reference.py: a depth-first walk, children in index
// (sampling) order, each node tested after all its child subtrees were rejected. The laws b and s
// of the nodes on the current root path live in a [B, max_depth + 1, V] workspace of the compute
// type (one vector per depth: a node's laws sit at its depth until it is popped); the scalar
// state (ratio p, node, last child visited per depth) is in shared memory, written by thread 0
// and published by barriers, so every thread takes the same branches. A node's laws are loaded
// when its first child is tested, or when it is accepted. Every update uses the reference's
// operations in the reference's order. Noise: explicit tensors or the Philox streams of
// rsd_kernels/noise.py (philox.cuh): node v's test reads the ACCEPT uniform of v, the next
// token the RESIDUAL Gumbel noise. No torch headers.
#include "common.cuh"
#include "philox.cuh"
#include "rsd_kernels.h"

namespace rsd {
namespace {

constexpr int kTraversalThreads = 1024;

template <typename C>
struct TraversalScratch {
  C v[32];
  int i[32];
};

// out[i] = softmax(logits / temperature)[i]; ends with a barrier.
template <typename T, typename C>
__device__ void softmax_into(const T* logits, C* out, int V, C temperature, TraversalScratch<C>& s) {
  C mx = c_neg_inf<C>();
  for_each_in_row(logits, V, [&](int, T x) {
    const C y = static_cast<C>(widen(x)) / temperature;
    mx = y > mx ? y : mx;
  });
  mx = block_reduce(mx, MaxOp(), s.v);
  C sum = 0;
  for_each_in_row(logits, V, [&](int, T x) { sum += c_exp(static_cast<C>(widen(x)) / temperature - mx); });
  sum = block_reduce(sum, SumOp(), s.v);
  for_each_in_row(logits, V, [&](int i, T x) { out[i] = c_exp(static_cast<C>(widen(x)) / temperature - mx) / sum; });
  __syncthreads();
}

// min(1, p * b(x) / s(x)): 0 where p * b(x) == 0, 1 where p * b(x) >= s(x) (child_ratio).
template <typename C>
__device__ __forceinline__ C child_ratio(C p, C bx, C sx) {
  const C num = p * bx;
  if (!(num > 0)) return C(0);
  if (num >= sx) return C(1);
  return num / sx;
}

// The node's state after its child with token x was rejected (reject_child): b <- max(p b - s, 0) / A
// (kept where A == 0), s <- s without x, / (1 - s(x)); returns the new ratio A / (A + 1 - p) (p where
// that denominator is 0). Ends with a barrier.
template <typename C>
__device__ C reject_child(C p, C* b, C* s, int x, int V, TraversalScratch<C>& sc) {
  C mass = 0;
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const C r = p * b[i] - s[i];
    mass += r > 0 ? r : C(0);
  }
  mass = block_reduce(mass, SumOp(), sc.v);
  const C sx = s[x];
  __syncthreads();  // every thread has read s[x] before it changes
  const C denom = C(1) - sx;
  const C denom_div = denom > c_tiny<C>() ? denom : c_tiny<C>();
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const C bi = b[i], si = s[i];
    if (mass > 0) {
      const C r = p * bi - si;
      b[i] = (r > 0 ? r : C(0)) / mass;
    }
    const C sk = i == x ? C(0) : si;
    s[i] = denom > 0 ? sk / denom_div : C(0);
  }
  __syncthreads();
  const C den = mass + (C(1) - p);
  return den > 0 ? mass / den : p;
}

// argmax over tokens with positive weight of log(weight) + gumbel (the next token).
template <typename C>
__device__ int sample_weights(const C* w, int V, const VerifyArgs& a, int b, TraversalScratch<C>& s) {
  C best = c_neg_inf<C>();
  int idx = INT_MAX;
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const C wi = w[i];
    if (!(wi > 0)) continue;
    const float g = a.gumbel ? a.gumbel[static_cast<int64_t>(b) * a.V + i]
                             : token_gumbel(a.seed, a.offset, static_cast<uint32_t>(b), kStreamResidual,
                                                            static_cast<uint32_t>(i));
    const C score = c_log(wi) + static_cast<C>(g);
    if (ranks_before(score, i, best, idx)) {
      best = score;
      idx = i;
    }
  }
  block_argmax(best, idx, s.v, s.i);
  return idx;
}

// The first child of node v after node `after` (children in index order), or INT_MAX.
__device__ int next_child(const int32_t* parents, int n, int v, int after, int* iscratch) {
  int c = INT_MAX;
  for (int j = after + 1 + threadIdx.x; j < n; j += blockDim.x)
    if (parents[j] == v && j < c) c = j;
  return block_reduce(c, MinOp(), iscratch);
}

template <typename T, typename C>
__global__ void __launch_bounds__(kTraversalThreads) verify_traversal_kernel(VerifyArgs a) {
  __shared__ TraversalScratch<C> s;
  __shared__ int iscratch[32];
  // per depth of the current path: ratio p, node, last child visited (0: none yet)
  extern __shared__ __align__(16) unsigned char depth_smem[];
  const int D = a.max_depth + 1;
  C* p_at = reinterpret_cast<C*>(depth_smem);
  int* node_at = reinterpret_cast<int*>(p_at + D);
  int* last_at = node_at + D;
  const int b = blockIdx.x;
  const int n = a.num_nodes ? a.num_nodes[b] : a.T;
  const int64_t row_stride = static_cast<int64_t>(a.T) * a.V;
  const T* tl = static_cast<const T*>(a.target_logits) + b * row_stride;
  const T* dl = static_cast<const T*>(a.draft_logits) + b * row_stride;
  const int64_t* tokens = a.tokens + static_cast<int64_t>(b) * a.T;
  const int32_t* parents = a.parents + static_cast<int64_t>(b) * a.T;
  C* bw = static_cast<C*>(a.p_work) + static_cast<int64_t>(b) * D * a.V;  // b at depth d: bw + d * V
  C* sw = static_cast<C*>(a.q_work) + static_cast<int64_t>(b) * D * a.V;
  const C temp = static_cast<C>(a.temperature);
  if (threadIdx.x == 0) {
    p_at[0] = C(1);
    node_at[0] = 0;
    last_at[0] = 0;
  }
  softmax_into(tl, bw, a.V, temp, s);  // its barriers also publish the root's state
  softmax_into(dl, sw, a.V, temp, s);
  int d = 0, cur = 0;
  bool has_laws = true;  // whether cur's laws are loaded at depth d
  while (true) {
    const int c = next_child(parents, n, cur, last_at[d], iscratch);  // its barriers order the reads above
    if (c != INT_MAX) {
      if (!has_laws) {  // cur's first child: its laws are needed now
        softmax_into(tl + cur * static_cast<int64_t>(a.V), bw + static_cast<int64_t>(d) * a.V, a.V, temp, s);
        softmax_into(dl + cur * static_cast<int64_t>(a.V), sw + static_cast<int64_t>(d) * a.V, a.V, temp, s);
      }
      const int x = static_cast<int>(tokens[c]);
      const C pc = child_ratio(p_at[d], bw[static_cast<int64_t>(d) * a.V + x], sw[static_cast<int64_t>(d) * a.V + x]);
      __syncthreads();  // every thread has read p_at[d], last_at[d]
      if (threadIdx.x == 0) {
        last_at[d] = c;
        p_at[d + 1] = pc;
        node_at[d + 1] = c;
        last_at[d + 1] = 0;
      }
      __syncthreads();
      ++d;
      cur = c;
      has_laws = false;
      continue;
    }
    // every child of cur rejected (or none): test cur (the root always passes)
    const float u = a.uniform ? a.uniform[static_cast<int64_t>(b) * a.T + cur]
                              : accept_uniform(a.seed, a.offset, static_cast<uint32_t>(b), static_cast<uint32_t>(cur));
    if (cur == 0 || static_cast<C>(u) < p_at[d]) break;
    // cur rejected: its parent, one depth up, takes the rejection
    const int x = static_cast<int>(tokens[cur]);
    --d;
    cur = node_at[d];
    const C p_new = reject_child(p_at[d], bw + static_cast<int64_t>(d) * a.V, sw + static_cast<int64_t>(d) * a.V, x,
                                 a.V, s);
    if (threadIdx.x == 0) p_at[d] = p_new;
    __syncthreads();
    has_laws = true;
  }
  if (!has_laws)  // an accepted leaf: its target law is read now
    softmax_into(tl + cur * static_cast<int64_t>(a.V), bw + static_cast<int64_t>(d) * a.V, a.V, temp, s);
  const int next = sample_weights(bw + static_cast<int64_t>(d) * a.V, a.V, a, b, s);
  if (threadIdx.x == 0) {
    int64_t* path = a.path + static_cast<int64_t>(b) * (a.max_depth + 1);
    for (int k = 0; k <= a.max_depth; ++k) path[k] = k <= d ? node_at[k] : -1;
    a.num_accepted[b] = d;
    a.next_token[b] = next;
  }
}

template <typename T, typename C>
cudaError_t launch_typed(const VerifyArgs& a, cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(a.max_depth + 1) * (sizeof(C) + 2 * sizeof(int));
  verify_traversal_kernel<T, C><<<a.B, kTraversalThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_verify_traversal(const VerifyArgs& a, DType dtype, cudaStream_t stream) {
  if (a.B == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto types) {
    using P = decltype(types);
    return launch_typed<typename P::storage, typename P::compute>(a, stream);
  });
}

}  // namespace rsd
