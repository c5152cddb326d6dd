// verify_tree: one thread block per batch row walks the draft tree (SPEC sections 3 and 4).
//
// Mirrors rsd_kernels/verify/reference.py operation by operation: p and q are kept as whole
// vectors in a [B, V] workspace of the compute type (float, or double for fp64 logits), the
// residuals are successive divisions, and every reduction over the vocabulary is block-wide.
// Only the nodes the walk visits are read (greedy: the nodes whose root path matches). Noise: explicit tensors or the Philox streams of
// rsd_kernels/noise.py (philox.cuh). No torch headers.
#include "common.cuh"
#include "philox.cuh"
#include "rsd_kernels.h"

namespace rsd {
namespace {

constexpr int kVerifyThreads = 1024;

template <typename C>
struct Scratch {
  C v[32];
  int i[32];
};

// out[i] = softmax(logits / temperature)[i]; ends with a barrier.
template <typename T, typename C>
__device__ void softmax_row(const T* logits, C* out, int V, C temperature, Scratch<C>& s) {
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

// Lowest index of the largest logit (greedy target token).
template <typename T, typename C>
__device__ int argmax_row(const T* logits, int V, Scratch<C>& s) {
  C best = c_neg_inf<C>();
  int idx = INT_MAX;
  for_each_in_row(logits, V, [&](int i, T x) {
    const C y = static_cast<C>(widen(x));
    if (ranks_before(y, i, best, idx)) {
      best = y;
      idx = i;
    }
  });
  block_argmax(best, idx, s.v, s.i);
  return idx;
}

// Rejection of draft token x at the current node (SPEC 3):
//   p <- normalize(max(p - q, 0)) (p kept where that mass is 0), q <- q without x, / (1 - q(x)).
// Both updates use the old q, as in the reference. Ends with a barrier.
template <typename C>
__device__ void reject_update(C* p, C* q, int x, C qx, int V, Scratch<C>& s) {
  C mass = 0;
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const C r = p[i] - q[i];
    mass += r > 0 ? r : C(0);
  }
  mass = block_reduce(mass, SumOp(), s.v);
  const C mass_div = mass > c_tiny<C>() ? mass : c_tiny<C>();
  const C denom = C(1) - qx;
  const C denom_div = denom > c_tiny<C>() ? denom : c_tiny<C>();
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const C pi = p[i], qi = q[i];
    if (mass > 0) {
      const C r = pi - qi;
      p[i] = (r > 0 ? r : C(0)) / mass_div;
    }
    const C qk = i == x ? C(0) : qi;
    q[i] = denom > 0 ? qk / denom_div : C(0);
  }
  __syncthreads();
}

// argmax over tokens with positive weight of log(weight) + gumbel (the correction/bonus token).
template <typename C>
__device__ int sample_from_weights(const C* w, int V, const VerifyArgs& a, int b, Scratch<C>& s) {
  C best = c_neg_inf<C>();
  int idx = INT_MAX;
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const C wi = w[i];
    if (!(wi > 0)) continue;
    const float g = a.gumbel ? a.gumbel[static_cast<int64_t>(b) * a.V + i]
                             : token_gumbel(a.seed, a.offset, static_cast<uint32_t>(b), kStreamResidual, static_cast<uint32_t>(i));
    const C score = c_log(wi) + static_cast<C>(g);
    if (ranks_before(score, i, best, idx)) {
      best = score;
      idx = i;
    }
  }
  block_argmax(best, idx, s.v, s.i);
  return idx;
}

__device__ __forceinline__ float accept_uniform(const VerifyArgs& a, int b, int j) {
  return a.uniform ? a.uniform[static_cast<int64_t>(b) * a.T + j]
                   : rsd::accept_uniform(a.seed, a.offset, static_cast<uint32_t>(b), static_cast<uint32_t>(j));
}

// rrs: one pass over node indices; node j is tested iff its parent is the current node.
template <typename T, typename C>
__device__ void walk_rrs(const VerifyArgs& a, int b, int n, int& last, int& next, Scratch<C>& s) {
  const int64_t row_stride = static_cast<int64_t>(a.T) * a.V;
  const T* tl = static_cast<const T*>(a.target_logits) + b * row_stride;
  const T* dl = a.draft_logits ? static_cast<const T*>(a.draft_logits) + b * row_stride : nullptr;
  const int64_t* tokens = a.tokens + static_cast<int64_t>(b) * a.T;
  const int32_t* parents = a.parents + static_cast<int64_t>(b) * a.T;
  C* p = static_cast<C*>(a.p_work) + static_cast<int64_t>(b) * a.V;
  C* q = static_cast<C*>(a.q_work) + static_cast<int64_t>(b) * a.V;
  const C temp = static_cast<C>(a.temperature);
  int cur = 0;
  softmax_row(tl, p, a.V, temp, s);
  softmax_row(dl, q, a.V, temp, s);
  for (int j = 1; j < n; ++j) {
    if (parents[j] != cur) continue;
    const int x = static_cast<int>(tokens[j]);
    const C px = p[x], qx = q[x];
    const bool acc = static_cast<C>(accept_uniform(a, b, j)) * qx < px;
    if (!acc) {
      reject_update(p, q, x, qx, a.V, s);
    } else {
      softmax_row(tl + j * static_cast<int64_t>(a.V), p, a.V, temp, s);
      softmax_row(dl + j * static_cast<int64_t>(a.V), q, a.V, temp, s);
      cur = j;
    }
  }
  last = cur;
  next = sample_from_weights(p, a.V, a, b, s);
}

// greedy: the longest matching path, ties to the first in sampling order (the rule of
// reference.py). best[j]: the target argmax at node j, computed once when its first child is
// tested (-1 before); reach[j]: the depth of node j if its whole root path matches, else -1,
// then (backward pass) the deepest matching depth in j's subtree. Both live in shared memory;
// thread 0 writes them and the barriers publish them, so every thread takes the same branches.
template <typename T, typename C>
__device__ void walk_greedy(const VerifyArgs& a, int b, int n, int& last, int& next, Scratch<C>& s, int* best,
                            int* reach) {
  const T* tl = static_cast<const T*>(a.target_logits) + b * static_cast<int64_t>(a.T) * a.V;
  const int64_t* tokens = a.tokens + static_cast<int64_t>(b) * a.T;
  const int32_t* parents = a.parents + static_cast<int64_t>(b) * a.T;
  for (int j = threadIdx.x; j < a.T; j += blockDim.x) {
    best[j] = -1;
    reach[j] = j == 0 ? 0 : -1;
  }
  __syncthreads();
  for (int j = 1; j < n; ++j) {
    const int par = parents[j];
    const int rp = reach[par];
    if (rp < 0) continue;
    int bp = best[par];
    const bool fresh = bp < 0;
    if (fresh) bp = argmax_row<T, C>(tl + par * static_cast<int64_t>(a.V), a.V, s);  // ends with a barrier
    if (threadIdx.x == 0) {
      if (fresh) best[par] = bp;
      if (tokens[j] == bp) reach[j] = rp + 1;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    for (int j = n - 1; j > 0; --j) {
      const int par = parents[j];
      if (reach[j] > reach[par]) reach[par] = reach[j];  // only matched nodes have reach >= 0
    }
  }
  __syncthreads();
  const int h = reach[0];
  int cur = 0;
  for (int j = 1; j < n; ++j)
    if (parents[j] == cur && reach[j] == h) cur = j;
  last = cur;
  next = best[cur] >= 0 ? best[cur] : argmax_row<T, C>(tl + cur * static_cast<int64_t>(a.V), a.V, s);
}

// SpecTr rho* in [1, k] by RHO_ITERS = 40 bisection steps (midpoint), as spectr_rho().
template <typename C>
__device__ C spectr_rho(const C* p, const C* q, int k, int V, Scratch<C>& s) {
  if (k <= 1) return C(1);
  const C kf = static_cast<C>(k);
  C lo = 1, hi = kf;
  for (int it = 0; it < 40; ++it) {
    const C mid = C(0.5) * (lo + hi);
    C beta = 0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
      const C a = q[i], bb = p[i] / mid;
      beta += a < bb ? a : bb;
    }
    beta = block_reduce(beta, SumOp(), s.v);
    const C f = C(1) - c_pow(C(1) - beta, kf) - mid * beta;
    if (f > 0) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return C(0.5) * (lo + hi);
}

// kseq: level by level; the candidates are the children of every node of the current group.
template <typename T, typename C>
__device__ void walk_kseq(const VerifyArgs& a, int b, int n, int& last, int& next, Scratch<C>& s,
                          unsigned char* group, unsigned char* cand) {
  const int64_t row_stride = static_cast<int64_t>(a.T) * a.V;
  const T* tl = static_cast<const T*>(a.target_logits) + b * row_stride;
  const T* dl = static_cast<const T*>(a.draft_logits) + b * row_stride;
  const int64_t* tokens = a.tokens + static_cast<int64_t>(b) * a.T;
  const int32_t* parents = a.parents + static_cast<int64_t>(b) * a.T;
  C* p = static_cast<C*>(a.p_work) + static_cast<int64_t>(b) * a.V;
  C* q = static_cast<C*>(a.q_work) + static_cast<int64_t>(b) * a.V;
  const C temp = static_cast<C>(a.temperature);
  __shared__ int iscratch[32];
  for (int j = threadIdx.x; j < a.T; j += blockDim.x) group[j] = j == 0;
  __syncthreads();
  int rep = 0;
  last = 0;
  while (true) {
    int k = 0;
    for (int j = threadIdx.x; j < a.T; j += blockDim.x) {
      const int par = parents[j];
      const bool c = j < n && par >= 0 && group[par];
      cand[j] = c;
      k += c;
    }
    k = block_reduce(k, SumOp(), iscratch);  // its barriers also publish cand[]
    softmax_row(tl + rep * static_cast<int64_t>(a.V), p, a.V, temp, s);
    softmax_row(dl + rep * static_cast<int64_t>(a.V), q, a.V, temp, s);
    const C rho = spectr_rho(p, q, k, a.V, s);
    int acc_node = -1;
    for (int j = 1; j < a.T && acc_node < 0; ++j) {
      if (!cand[j]) continue;
      const int x = static_cast<int>(tokens[j]);
      if (static_cast<C>(accept_uniform(a, b, j)) * rho * q[x] < p[x]) acc_node = j;
    }
    if (acc_node < 0) {
      // residual normalize(max(p - rho q, 0)), p itself at a leaf or when that mass is 0;
      // left unnormalised (argmax of log w + g does not need it), as in the reference.
      C mass = 0;
      for (int i = threadIdx.x; i < a.V; i += blockDim.x) {
        const C r = k == 0 ? p[i] : p[i] - rho * q[i];
        mass += r > 0 ? r : C(0);
      }
      mass = block_reduce(mass, SumOp(), s.v);
      if (k != 0 && mass > 0) {
        for (int i = threadIdx.x; i < a.V; i += blockDim.x) {
          const C r = p[i] - rho * q[i];
          q[i] = r > 0 ? r : C(0);  // q is no longer needed: reuse it for the residual
        }
        __syncthreads();
        next = sample_from_weights(q, a.V, a, b, s);
      } else {
        next = sample_from_weights(p, a.V, a, b, s);
      }
      return;
    }
    const int64_t x_acc = tokens[acc_node];
    int first = INT_MAX;
    for (int j = threadIdx.x; j < a.T; j += blockDim.x) {
      const bool g = cand[j] && tokens[j] == x_acc;
      group[j] = g;
      if (g && j < first) first = j;
    }
    rep = block_reduce(first, MinOp(), iscratch);  // its barriers also publish group[]
    last = acc_node;
  }
}

template <typename T, typename C>
__global__ void __launch_bounds__(kVerifyThreads) verify_tree_kernel(VerifyArgs a) {
  __shared__ Scratch<C> s;
  // kseq: group[T], cand[T] flags; greedy: best[T], reach[T] ints
  extern __shared__ __align__(16) unsigned char node_smem[];
  const int b = blockIdx.x;
  const int n = a.num_nodes ? a.num_nodes[b] : a.T;
  int last = 0, next = 0;
  if (a.mode == VerifyMode::kKSeq) {
    walk_kseq<T, C>(a, b, n, last, next, s, node_smem, node_smem + a.T);
  } else if (a.mode == VerifyMode::kGreedy) {
    int* ints = reinterpret_cast<int*>(node_smem);
    walk_greedy<T, C>(a, b, n, last, next, s, ints, ints + a.T);
  } else {
    walk_rrs<T, C>(a, b, n, last, next, s);
  }
  if (threadIdx.x == 0) {
    const int32_t* parents = a.parents + static_cast<int64_t>(b) * a.T;
    int depth = 0;
    for (int node = last; node > 0 && depth < a.max_depth; node = parents[node]) ++depth;
    int64_t* path = a.path + static_cast<int64_t>(b) * (a.max_depth + 1);
    for (int d = depth + 1; d <= a.max_depth; ++d) path[d] = -1;
    int node = last;
    for (int d = depth; d >= 0; --d) {
      path[d] = node;
      node = node > 0 ? parents[node] : -1;
    }
    a.num_accepted[b] = depth;
    a.next_token[b] = next;
  }
}

template <typename T, typename C>
cudaError_t launch_typed(const VerifyArgs& a, cudaStream_t stream) {
  const size_t smem = a.mode == VerifyMode::kKSeq    ? 2 * static_cast<size_t>(a.T)
                      : a.mode == VerifyMode::kGreedy ? 2 * sizeof(int) * static_cast<size_t>(a.T)
                                                      : 0;
  verify_tree_kernel<T, C><<<a.B, kVerifyThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_verify_tree(const VerifyArgs& a, DType dtype, cudaStream_t stream) {
  if (a.B == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto types) {
    using P = decltype(types);
    return launch_typed<typename P::storage, typename P::compute>(a, stream);
  });
}

}  // namespace rsd
