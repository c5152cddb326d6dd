// verify_tree (SPEC sections 3 and 4): the walk over each row's draft tree, its vocabulary-wide
// work spread over blocks.
//
// Grid (blocks, B): the `blocks` blocks of a row split its vocabulary into slices of `slice`
// tokens (verify_plan: as many blocks per row as stay resident together, at least 1024 tokens
// each). Every block runs the same scalar walk over the tree (the same decisions from the same
// merged numbers); each vocabulary-wide number the walk needs is one pass over the block's slice
// (four tokens per thread step, several steps' loads in flight), a block reduction, an exchange
// through a global workspace and a barrier of the row's blocks (blocks_barrier, in a cooperative
// launch), then a merge every block computes in the same order. The passes:
//   node statistics  max and sum of exp of the target and draft rows at a node (p and q are
//                    never materialised: p(x) = exp(l(x) / T - max) / sum where needed);
//   rrs rejection    the residual mass sum max(p_r - q_r, 0), with p_r and q_r recomputed per
//                    token from p, q and the stored scalars of the r rejections so far
//                    (successive divisions, in the order of verify/reference.py);
//   kseq rho*        one pass evaluates beta at all 31 midpoints of the next 5 bisection levels
//                    (the midpoints the reference's sequential bisection computes), so the 40
//                    steps take 8 passes;
//   sampling         argmax of log w + g over the slice (g: the RESIDUAL stream, one Philox call
//                    per 4 tokens, or the explicit tensor), merged to the row's argmax;
//   greedy           argmax of a target row, compared in float (double only for fp64 logits).
// Only the nodes the walk visits are read. Noise: philox.cuh. Shared memory is dynamic only
// (the CPU emulation runs a row's blocks concurrently). No torch headers.
#include "common.cuh"
#include "philox.cuh"
#include "ptx.cuh"
#include "rsd_kernels.h"

namespace rsd {
namespace {

constexpr int kVerifyThreads = 256;
constexpr int kMaxWarps = kVerifyThreads / 32;
constexpr int kRhoLevels = 5;                                   // bisection levels per pass
constexpr int kRhoPoints = (1 << kRhoLevels) - 1;               // their midpoints: 31
constexpr int kRhoIters = 40;                                   // RHO_ITERS of the reference
constexpr int kMinSlice = kVerifyThreads * 4;                   // tokens per block at least
constexpr int kQuadsInFlight = 2;                               // quads each thread loads before computing
static_assert(kVerifySlots >= kRhoPoints && kVerifySlots >= 4, "exchange slots");

// Shared memory of a block (all dynamic): reduction scratch, merged results, the walk's node arrays.
template <typename C>
struct Smem {
  C* red;      // [kMaxWarps * kVerifySlots]
  C* res;      // [kVerifySlots] merged values
  int* resi;   // [2] merged indices
  C* rej_mass; // rrs: [T] the residual mass of each rejection at the current node
  C* rej_den;  // rrs: [T] 1 - q_{r-1}(x_r)
  int* rej_x;  // rrs: [T] the rejected tokens
  int* ints;   // greedy: best [T], reach [T]; kseq: group [T], cand [T]

  static size_t bytes(int T) {
    return (kMaxWarps * kVerifySlots + kVerifySlots + 2 * static_cast<size_t>(T)) * sizeof(C) +
           (2 + 3 * static_cast<size_t>(T)) * sizeof(int);
  }
  __device__ __forceinline__ static Smem carve(unsigned char* base, int T) {
    Smem s;
    s.red = reinterpret_cast<C*>(base);
    s.res = s.red + kMaxWarps * kVerifySlots;
    s.rej_mass = s.res + kVerifySlots;
    s.rej_den = s.rej_mass + T;
    s.resi = reinterpret_cast<int*>(s.rej_den + T);
    s.rej_x = s.resi + 2;
    s.ints = s.rej_x + T;
    return s;
  }
};

// The row a block works on: its token slice and the exchange with the row's other blocks.
template <typename T, typename C>
struct Row {
  VerifyArgs a;
  int b, blk, begin, end;
  unsigned calls;  // exchanges so far (the barrier's generation)
  Smem<C> sm;
  C temp;

  __device__ __forceinline__ const T* target(int node) const {
    return static_cast<const T*>(a.target_logits) + (static_cast<int64_t>(b) * a.T + node) * a.V;
  }
  __device__ __forceinline__ const T* draft(int node) const {
    return static_cast<const T*>(a.draft_logits) + (static_cast<int64_t>(b) * a.T + node) * a.V;
  }
  __device__ __forceinline__ C scaled(T x) const { return static_cast<C>(widen(x)) / temp; }

  // Calls f(q, x[4], y[4]) for every quad (4 tokens) of the slice; x from row `xr`, y from `yr`
  // (or unused when null); tokens past the slice read as 0 and must be masked by the caller
  // (token 4q + e < end).
  template <typename F>
  __device__ __forceinline__ void for_quads(const T* xr, const T* yr, F&& f) const {
    const bool vec = a.V % 4 == 0 && reinterpret_cast<uintptr_t>(a.target_logits) % (4 * sizeof(T)) == 0 &&
                     (a.draft_logits == nullptr || reinterpret_cast<uintptr_t>(a.draft_logits) % (4 * sizeof(T)) == 0);
    const int q_end = (end + 3) / 4;
    for (int base = begin / 4 + threadIdx.x; base < q_end; base += kQuadsInFlight * blockDim.x) {
      T x[kQuadsInFlight][4], y[kQuadsInFlight][4];
#pragma unroll
      for (int j = 0; j < kQuadsInFlight; ++j) {
        const int q = base + j * blockDim.x;
        if (q >= q_end) break;
        load4(xr, 4 * q, vec, x[j]);
        if (yr) load4(yr, 4 * q, vec, y[j]);
      }
#pragma unroll
      for (int j = 0; j < kQuadsInFlight; ++j) {
        const int q = base + j * blockDim.x;
        if (q >= q_end) break;
        f(q, x[j], y[j]);
      }
    }
  }
  __device__ __forceinline__ void load4(const T* row, int t, bool vec, T (&x)[4]) const {
    if (vec && t + 4 <= end) {
      if constexpr (sizeof(T) == 2) {
        const uint2 raw = *reinterpret_cast<const uint2*>(row + t);
        memcpy(x, &raw, 8);
      } else if constexpr (sizeof(T) == 4) {
        const uint4 raw = *reinterpret_cast<const uint4*>(row + t);
        memcpy(x, &raw, 16);
      } else {
        const uint4 r0 = reinterpret_cast<const uint4*>(row + t)[0], r1 = reinterpret_cast<const uint4*>(row + t)[1];
        memcpy(x, &r0, 16);
        memcpy(x + 2, &r1, 16);
      }
    } else {
#pragma unroll
      for (int e = 0; e < 4; ++e) x[e] = t + e < end ? row[t + e] : T(0);
    }
  }

  // Publishes this block's N values (the same in every thread of the block; thread 0 writes
  // them) and, with_index, two indices; waits for the row's blocks; returns all blocks' values,
  // [blocks][kVerifySlots] (read with __ldcg: other blocks wrote them, L1 may hold old lines).
  template <int N>
  __device__ __forceinline__ const C* exchange(const C (&v)[N], bool with_index = false, int i0 = 0, int i1 = 0) {
    static_assert(N <= kVerifySlots, "exchange slots");
    const int par = calls & 1;
    const size_t row_base = (static_cast<size_t>(b) * 2 + par) * a.blocks;
    if (threadIdx.x == 0) {
      C* dst = static_cast<C*>(a.xchg_v) + (row_base + blk) * kVerifySlots;
#pragma unroll
      for (int t = 0; t < N; ++t) dst[t] = v[t];
      if (with_index) {
        a.xchg_i[(row_base + blk) * 2] = i0;
        a.xchg_i[(row_base + blk) * 2 + 1] = i1;
      }
    }
    ++calls;
    if (a.blocks > 1) {
      blocks_barrier(a.counters + b, static_cast<unsigned>(a.blocks), calls);
    } else {
      __syncthreads();
    }
    return static_cast<const C*>(a.xchg_v) + row_base * kVerifySlots;
  }
  __device__ __forceinline__ const int* exchanged_index() const {
    const int par = (calls - 1) & 1;
    return a.xchg_i + (static_cast<size_t>(b) * 2 + par) * a.blocks * 2;
  }
};

// Block-wide reduction of N values per thread (op per value); every thread gets the results.
template <int N, typename C, typename Op>
__device__ __forceinline__ void block_reduce_n(C (&v)[N], Op op, C* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
#pragma unroll
  for (int n = 0; n < N; ++n) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v[n] = op(v[n], __shfl_xor_sync(0xffffffffu, v[n], off));
    if (lane == 0) scratch[warp * N + n] = v[n];
  }
  __syncthreads();
#pragma unroll
  for (int n = 0; n < N; ++n) {
    C acc = scratch[n];
    for (int w = 1; w < nwarps; ++w) acc = op(acc, scratch[w * N + n]);
    v[n] = acc;
  }
  __syncthreads();
}

// Block argmax of (v, i) with the (value desc, index asc) order; every thread gets the winner.
template <typename C>
__device__ __forceinline__ void block_argmax_into(C& v, int& i, Smem<C>& sm) {
  block_argmax(v, i, sm.red, reinterpret_cast<int*>(sm.red + kMaxWarps));
}

// Softmax statistics of a node: (max, sum exp(x - max)) of the target and the draft row.
template <typename C>
struct NodeStats {
  C mt, zt, md, zd;
};

template <typename C>
__device__ __forceinline__ void online_add(C& m, C& z, C x) {
  if (x > m) {
    z = (m == c_neg_inf<C>() ? C(0) : z * c_exp(m - x)) + C(1);
    m = x;
  } else {
    z += c_exp(x - m);
  }
}

template <typename T, typename C>
__device__ __forceinline__ NodeStats<C> node_stats(Row<T, C>& row, int node, bool draft) {
  const T* tl = row.target(node);
  const T* dl = draft ? row.draft(node) : nullptr;
  C m[2] = {c_neg_inf<C>(), c_neg_inf<C>()}, z[2] = {0, 0};
  row.for_quads(tl, dl, [&](int q, const T (&x)[4], const T (&y)[4]) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (4 * q + e >= row.end) break;
      online_add(m[0], z[0], row.scaled(x[e]));
      if (dl) online_add(m[1], z[1], row.scaled(y[e]));
    }
  });
  C bm[2] = {m[0], m[1]};
  block_reduce_n(bm, MaxOp(), row.sm.red);
  C bz[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) bz[h] = m[h] == c_neg_inf<C>() ? C(0) : z[h] * c_exp(m[h] - bm[h]);
  block_reduce_n(bz, SumOp(), row.sm.red);
  const C mine[4] = {bm[0], bz[0], bm[1], bz[1]};
  const C* all = row.exchange(mine);
  // every block merges the same numbers in the same order
  C out[4] = {c_neg_inf<C>(), 0, c_neg_inf<C>(), 0};
  for (int k = 0; k < row.a.blocks; ++k)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const C mk = __ldcg(all + k * kVerifySlots + 2 * h);
      out[2 * h] = mk > out[2 * h] ? mk : out[2 * h];
    }
  for (int k = 0; k < row.a.blocks; ++k)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const C mk = __ldcg(all + k * kVerifySlots + 2 * h);
      if (mk != c_neg_inf<C>()) out[2 * h + 1] += __ldcg(all + k * kVerifySlots + 2 * h + 1) * c_exp(mk - out[2 * h]);
    }
  return NodeStats<C>{out[0], out[1], out[2], out[3]};
}

// Block sums of N <= 32 per-thread values by a warp transpose-sum (31 shuffles, lane j gets
// value j's warp sum) and one pass over the warps; every thread gets the results.
template <int N, typename C>
__device__ __forceinline__ void block_sums_wide(C (&v)[N], C* scratch) {
  static_assert(N <= 32, "one value per lane");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  C w[32];
#pragma unroll
  for (int n = 0; n < 32; ++n) w[n] = n < N ? v[n] : C(0);
  const C mine = warp_transpose_sum(w, lane);
  if (lane < N) scratch[warp * 32 + lane] = mine;
  __syncthreads();
#pragma unroll
  for (int n = 0; n < N; ++n) {
    C acc = scratch[n];
    for (int k = 1; k < nwarps; ++k) acc += scratch[k * 32 + n];
    v[n] = acc;
  }
  __syncthreads();
}

// The row-wide sums of N per-thread partial sums (fixed merge order: identical in every block).
template <int N, typename T, typename C>
__device__ __forceinline__ void row_sums(Row<T, C>& row, C (&v)[N]) {
  if constexpr (N > 4) {
    block_sums_wide(v, row.sm.red);
  } else {
    block_reduce_n(v, SumOp(), row.sm.red);
  }
  const C* all = row.exchange(v);
#pragma unroll
  for (int n = 0; n < N; ++n) {
    C acc = 0;
    for (int k = 0; k < row.a.blocks; ++k) acc += __ldcg(all + k * kVerifySlots + n);
    v[n] = acc;
  }
}

// The row-wide argmax of per-thread (v, i) candidates.
template <typename T, typename C>
__device__ __forceinline__ void row_argmax(Row<T, C>& row, C& v, int& i) {
  block_argmax_into(v, i, row.sm);
  const C mine[1] = {v};
  const C* all = row.exchange(mine, true, i);
  const int* alli = row.exchanged_index();
  v = c_neg_inf<C>();
  i = INT_MAX;
  for (int k = 0; k < row.a.blocks; ++k) {
    const C vk = __ldcg(all + k * kVerifySlots);
    const int ik = __ldcg(alli + 2 * k);
    if (ranks_before(vk, ik, v, i)) {
      v = vk;
      i = ik;
    }
  }
}

// The Gumbel noise of the four tokens of quad q (RESIDUAL stream or the explicit tensor),
// drawn only where `need` (one Philox call for the quad).
template <typename T, typename C>
__device__ __forceinline__ void residual_noise(const Row<T, C>& row, int q, const bool (&need)[4], float (&g)[4]) {
  const VerifyArgs& a = row.a;
  if (!(need[0] || need[1] || need[2] || need[3])) return;
  if (a.gumbel) {
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (need[e]) g[e] = a.gumbel[static_cast<int64_t>(row.b) * a.V + 4 * q + e];
    return;
  }
  const Philox4 bits = token_bits(a.seed, a.offset, static_cast<uint32_t>(row.b), kStreamResidual, static_cast<uint32_t>(q));
#pragma unroll
  for (int e = 0; e < 4; ++e)
    if (need[e]) g[e] = gumbel_from_uniform(uniform_from_bits(bits.x[e]));
}

template <typename T, typename C>
__device__ __forceinline__ C accept_u(const Row<T, C>& row, int node) {
  const VerifyArgs& a = row.a;
  return static_cast<C>(a.uniform ? a.uniform[static_cast<int64_t>(row.b) * a.T + node]
                                  : accept_uniform(a.seed, a.offset, static_cast<uint32_t>(row.b),
                                                   static_cast<uint32_t>(node)));
}

// ---- rrs -------------------------------------------------------------------------------------

// p_r(y), q_r(y) after the r rejections stored in sm, from p(y), q(y) (reference.py:
// _residual and _reject_draft_token, both from the old q).
template <typename C>
__device__ __forceinline__ void residual_chain(const Smem<C>& sm, int r, int y, C& p, C& q) {
  for (int i = 0; i < r; ++i) {
    const C mass = sm.rej_mass[i], den = sm.rej_den[i];
    const C d = p - q;
    const C pn = mass > 0 ? (d > 0 ? d : C(0)) / (mass > c_tiny<C>() ? mass : c_tiny<C>()) : p;
    const C qn = den > 0 ? (y == sm.rej_x[i] ? C(0) : q) / (den > c_tiny<C>() ? den : c_tiny<C>()) : C(0);
    p = pn;
    q = qn;
  }
}

template <typename T, typename C>
__device__ __forceinline__ void walk_rrs(Row<T, C>& row, int n, int& last, int& next) {
  const VerifyArgs& a = row.a;
  const int64_t* tokens = a.tokens + static_cast<int64_t>(row.b) * a.T;
  const int32_t* parents = a.parents + static_cast<int64_t>(row.b) * a.T;
  int cur = 0, r = 0;
  NodeStats<C> st = node_stats(row, 0, true);
  auto pq = [&](int y, T xt, T xd, C& p, C& q) {
    p = c_exp(row.scaled(xt) - st.mt) / st.zt;
    q = c_exp(row.scaled(xd) - st.md) / st.zd;
    residual_chain(row.sm, r, y, p, q);
  };
  for (int j = 1; j < n; ++j) {
    if (parents[j] != cur) continue;
    const int x = static_cast<int>(tokens[j]);
    const T* tl = row.target(cur);
    const T* dl = row.draft(cur);
    C px, qx;
    pq(x, tl[x], dl[x], px, qx);
    if (accept_u(row, j) * qx < px) {
      cur = j;
      r = 0;
      st = node_stats(row, j, true);
      continue;
    }
    // rejected: the residual mass of (p_r, q_r), a pass over the vocabulary
    C mass[1] = {0};
    row.for_quads(tl, dl, [&](int q, const T (&xt)[4], const T (&xd)[4]) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int y = 4 * q + e;
        if (y >= row.end) break;
        C p, qq;
        pq(y, xt[e], xd[e], p, qq);
        const C d = p - qq;
        mass[0] += d > 0 ? d : C(0);
      }
    });
    row_sums(row, mass);
    if (threadIdx.x == 0) {
      row.sm.rej_mass[r] = mass[0];
      row.sm.rej_den[r] = C(1) - qx;
      row.sm.rej_x[r] = x;
    }
    __syncthreads();
    ++r;
  }
  last = cur;
  // the correction/bonus token: argmax over p_r > 0 of log p_r + g
  const T* tl = row.target(cur);
  const T* dl = row.draft(cur);
  C best = c_neg_inf<C>();
  int idx = INT_MAX;
  row.for_quads(tl, dl, [&](int q, const T (&xt)[4], const T (&xd)[4]) {
    C w[4];
    bool need[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int y = 4 * q + e;
      C qq;
      w[e] = 0;
      if (y < row.end) pq(y, xt[e], xd[e], w[e], qq);
      need[e] = w[e] > 0;
    }
    float g[4] = {0, 0, 0, 0};
    residual_noise(row, q, need, g);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (!need[e]) continue;
      const C score = c_log(w[e]) + static_cast<C>(g[e]);
      if (ranks_before(score, 4 * q + e, best, idx)) {
        best = score;
        idx = 4 * q + e;
      }
    }
  });
  row_argmax(row, best, idx);
  next = idx;
}

// ---- kseq ------------------------------------------------------------------------------------

// rho* in [1, k]: the reference's 40 midpoint steps, kRhoLevels per pass (all 31 midpoints the
// next 5 steps can visit, computed as the sequential bisection computes them).
template <typename T, typename C>
__device__ __forceinline__ C spectr_rho(Row<T, C>& row, int rep, const NodeStats<C>& st, int k) {
  if (k <= 1) return C(1);
  const C kf = static_cast<C>(k);
  C lo = 1, hi = kf;
  const T* tl = row.target(rep);
  const T* dl = row.draft(rep);
  for (int pass = 0; pass * kRhoLevels < kRhoIters; ++pass) {
    const int levels = kRhoIters - pass * kRhoLevels < kRhoLevels ? kRhoIters - pass * kRhoLevels : kRhoLevels;
    // the reciprocals of the heap-ordered midpoints the next `levels` steps can visit: node h
    // holds interval (nlo, nhi) and midpoint 0.5 (nlo + nhi), its children 2h (f <= 0: hi = mid)
    // and 2h + 1 (f > 0: lo = mid); static indices only, so everything stays in registers
    C inv[kRhoPoints + 1], nlo[kRhoPoints + 1], nhi[kRhoPoints + 1];
    nlo[1] = lo;
    nhi[1] = hi;
#pragma unroll
    for (int h = 1; h <= kRhoPoints; ++h) {
      const C mid = C(0.5) * (nlo[h] + nhi[h]);
      inv[h] = C(1) / mid;
      if (2 * h + 1 <= kRhoPoints) {
        nlo[2 * h] = nlo[h], nhi[2 * h] = mid;
        nlo[2 * h + 1] = mid, nhi[2 * h + 1] = nhi[h];
      }
    }
    C beta[kRhoPoints];
#pragma unroll
    for (int h = 0; h < kRhoPoints; ++h) beta[h] = 0;
    row.for_quads(tl, dl, [&](int q, const T (&xt)[4], const T (&xd)[4]) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (4 * q + e >= row.end) break;
        const C p = c_exp(row.scaled(xt[e]) - st.mt) / st.zt;
        const C qq = c_exp(row.scaled(xd[e]) - st.md) / st.zd;
#pragma unroll
        for (int h = 0; h < kRhoPoints; ++h) {
          const C pr = p * inv[h + 1];
          beta[h] += qq < pr ? qq : pr;
        }
      }
    });
    row_sums(row, beta);
    __syncthreads();  // everyone is past the last read of sm.res
    if (threadIdx.x == 0)
#pragma unroll
      for (int h = 0; h < kRhoPoints; ++h) row.sm.res[h] = beta[h];
    __syncthreads();
    // the sequential steps, with the midpoints recomputed exactly as above
    int h = 1;
    for (int l = 0; l < levels; ++l) {
      const C mid = C(0.5) * (lo + hi);
      const C b = row.sm.res[h - 1];
      const C f = C(1) - c_pow(C(1) - b, kf) - mid * b;
      if (f > 0) {
        lo = mid;
        h = 2 * h + 1;
      } else {
        hi = mid;
        h = 2 * h;
      }
    }
  }
  return C(0.5) * (lo + hi);
}

template <typename T, typename C>
__device__ __forceinline__ void walk_kseq(Row<T, C>& row, int n, int& last, int& next) {
  const VerifyArgs& a = row.a;
  const int64_t* tokens = a.tokens + static_cast<int64_t>(row.b) * a.T;
  const int32_t* parents = a.parents + static_cast<int64_t>(row.b) * a.T;
  int* group = row.sm.ints;
  int* cand = row.sm.ints + a.T;
  for (int j = threadIdx.x; j < a.T; j += blockDim.x) group[j] = j == 0;
  __syncthreads();
  int rep = 0;
  last = 0;
  while (true) {
    int k = 0;
    for (int j = 0; j < a.T; ++j) {  // every thread: the same k; thread 0 writes the flags
      const int par = parents[j];
      const bool c = j < n && par >= 0 && group[par];
      k += c;
      if (threadIdx.x == 0) cand[j] = c;
    }
    __syncthreads();
    const NodeStats<C> st = node_stats(row, rep, true);
    const C rho = spectr_rho(row, rep, st, k);
    const T* tl = row.target(rep);
    const T* dl = row.draft(rep);
    int acc_node = -1;
    for (int j = 1; j < a.T && acc_node < 0; ++j) {
      if (!cand[j]) continue;
      const int x = static_cast<int>(tokens[j]);
      const C p = c_exp(row.scaled(tl[x]) - st.mt) / st.zt;
      const C q = c_exp(row.scaled(dl[x]) - st.md) / st.zd;
      if (accept_u(row, j) * rho * q < p) acc_node = j;
    }
    if (acc_node < 0) {
      // residual max(p - rho q, 0) (p itself at a leaf or when its mass is 0): one pass gives the
      // mass and both candidates' argmax of log w + g
      C mass = 0, best_r = c_neg_inf<C>(), best_p = c_neg_inf<C>();
      int idx_r = INT_MAX, idx_p = INT_MAX;
      row.for_quads(tl, dl, [&](int q, const T (&xt)[4], const T (&xd)[4]) {
        C p[4], res[4];
        bool need[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          p[e] = res[e] = 0;
          if (4 * q + e < row.end) {
            p[e] = c_exp(row.scaled(xt[e]) - st.mt) / st.zt;
            const C qq = c_exp(row.scaled(xd[e]) - st.md) / st.zd;
            const C d = p[e] - rho * qq;
            res[e] = d > 0 ? d : C(0);
          }
          mass += res[e];
          need[e] = p[e] > 0 || res[e] > 0;
        }
        float g[4] = {0, 0, 0, 0};
        residual_noise(row, q, need, g);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int y = 4 * q + e;
          if (res[e] > 0) {
            const C s = c_log(res[e]) + static_cast<C>(g[e]);
            if (ranks_before(s, y, best_r, idx_r)) best_r = s, idx_r = y;
          }
          if (p[e] > 0) {
            const C s = c_log(p[e]) + static_cast<C>(g[e]);
            if (ranks_before(s, y, best_p, idx_p)) best_p = s, idx_p = y;
          }
        }
      });
      C sums[1] = {mass};
      row_sums(row, sums);
      row_argmax(row, best_r, idx_r);
      row_argmax(row, best_p, idx_p);
      next = k != 0 && sums[0] > 0 ? idx_r : idx_p;
      return;
    }
    const int64_t x_acc = tokens[acc_node];
    __syncthreads();  // everyone has read cand[] and group[] of this level
    if (threadIdx.x == 0) {
      rep = -1;
      for (int j = 0; j < a.T; ++j) {
        group[j] = cand[j] && tokens[j] == x_acc;
        if (group[j] && rep < 0) rep = j;
      }
      row.sm.resi[0] = rep;
    }
    __syncthreads();
    rep = row.sm.resi[0];
    last = acc_node;
  }
}

// ---- greedy ----------------------------------------------------------------------------------

template <typename T, typename C>
__device__ __forceinline__ int target_argmax(Row<T, C>& row, int node) {
  C best = c_neg_inf<C>();
  int idx = INT_MAX;
  row.for_quads(row.target(node), nullptr, [&](int q, const T (&x)[4], const T (&)[4]) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int y = 4 * q + e;
      if (y >= row.end) break;
      const C v = static_cast<C>(widen(x[e]));
      if (ranks_before(v, y, best, idx)) best = v, idx = y;
    }
  });
  row_argmax(row, best, idx);
  return idx;
}

// The longest matching path, ties to the first in sampling order (reference.py). best[j]: the
// target argmax at node j, computed once when its first child is tested (-1 before); reach[j]:
// the depth of node j if its whole root path matches, else -1, then (backward pass) the deepest
// matching depth in j's subtree. Thread 0 writes them; the barriers publish them.
template <typename T, typename C>
__device__ __forceinline__ void walk_greedy(Row<T, C>& row, int n, int& last, int& next) {
  const VerifyArgs& a = row.a;
  const int64_t* tokens = a.tokens + static_cast<int64_t>(row.b) * a.T;
  const int32_t* parents = a.parents + static_cast<int64_t>(row.b) * a.T;
  int* best = row.sm.ints;
  int* reach = row.sm.ints + a.T;
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
    if (fresh) bp = target_argmax(row, par);
    __syncthreads();
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
  next = best[cur] >= 0 ? best[cur] : target_argmax(row, cur);
}

// One instance per mode: kseq's 31 bisection accumulators need registers the others do not
// (rrs/greedy: 2 blocks of 256 threads per SM; kseq: 1).
template <VerifyMode MODE>
struct ModeBlocks {
  static constexpr int value = MODE == VerifyMode::kKSeq ? 1 : 2;
};

template <typename T, typename C, VerifyMode MODE>
__global__ void __launch_bounds__(kVerifyThreads, ModeBlocks<MODE>::value) verify_tree_kernel(VerifyArgs a) {
  extern __shared__ __align__(16) unsigned char node_smem[];
  Row<T, C> row;
  row.a = a;
  row.blk = blockIdx.x;
  row.b = blockIdx.y;
  row.begin = row.blk * a.slice;
  row.end = row.begin + a.slice < a.V ? row.begin + a.slice : a.V;
  row.calls = 0;
  row.sm = Smem<C>::carve(node_smem, a.T);
  if constexpr (sizeof(C) == 8) {
    row.temp = a.temperature;
  } else {
    row.temp = a.temperature_f;
  }
  const int n = a.num_nodes ? a.num_nodes[row.b] : a.T;
  int last = 0, next = 0;
  if constexpr (MODE == VerifyMode::kKSeq) {
    walk_kseq(row, n, last, next);
  } else if constexpr (MODE == VerifyMode::kGreedy) {
    walk_greedy(row, n, last, next);
  } else {
    walk_rrs(row, n, last, next);
  }
  if (row.blk == 0 && threadIdx.x == 0) {
    const int32_t* parents = a.parents + static_cast<int64_t>(row.b) * a.T;
    int depth = 0;
    for (int node = last; node > 0 && depth < a.max_depth; node = parents[node]) ++depth;
    int64_t* path = a.path + static_cast<int64_t>(row.b) * (a.max_depth + 1);
    for (int d = depth + 1; d <= a.max_depth; ++d) path[d] = -1;
    int node = last;
    for (int d = depth; d >= 0; --d) {
      path[d] = node;
      node = node > 0 ? parents[node] : -1;
    }
    a.num_accepted[row.b] = depth;
    a.next_token[row.b] = next;
  }
}

template <typename T, typename C, VerifyMode MODE>
int blocks_per_sm(size_t smem) {
  int n = 0;
  if (cudaFuncSetAttribute(verify_tree_kernel<T, C, MODE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(smem)) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, reinterpret_cast<const void*>(verify_tree_kernel<T, C, MODE>),
                                                    kVerifyThreads, smem) != cudaSuccess ||
      n < 1) {
    (void)cudaGetLastError();
    return 1;
  }
  return n;
}

template <typename T, typename C>
int blocks_per_sm(VerifyMode mode, size_t smem) {
  switch (mode) {
    case VerifyMode::kKSeq: return blocks_per_sm<T, C, VerifyMode::kKSeq>(smem);
    case VerifyMode::kGreedy: return blocks_per_sm<T, C, VerifyMode::kGreedy>(smem);
    default: return blocks_per_sm<T, C, VerifyMode::kRRS>(smem);
  }
}

template <typename T, typename C, VerifyMode MODE>
cudaError_t launch_mode(const VerifyArgs& a, cudaStream_t stream) {
  const size_t smem = Smem<C>::bytes(a.T);
  cudaError_t err = cudaFuncSetAttribute(verify_tree_kernel<T, C, MODE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  const dim3 grid(a.blocks, a.B, 1);
  if (a.blocks == 1) {
    verify_tree_kernel<T, C, MODE><<<grid, kVerifyThreads, smem, stream>>>(a);
    return cudaGetLastError();
  }
  err = cudaMemsetAsync(a.counters, 0, sizeof(uint32_t) * a.B, stream);
  if (err != cudaSuccess) return err;
  return launch_cooperative(verify_tree_kernel<T, C, MODE>, grid, kVerifyThreads, smem, a, stream);
}

template <typename T, typename C>
cudaError_t launch_typed(const VerifyArgs& a, cudaStream_t stream) {
  switch (a.mode) {
    case VerifyMode::kKSeq: return launch_mode<T, C, VerifyMode::kKSeq>(a, stream);
    case VerifyMode::kGreedy: return launch_mode<T, C, VerifyMode::kGreedy>(a, stream);
    default: return launch_mode<T, C, VerifyMode::kRRS>(a, stream);
  }
}

}  // namespace

size_t verify_smem_bytes(int T, DType dtype) {
  return dtype == DType::kFloat64 ? Smem<double>::bytes(T) : Smem<float>::bytes(T);
}

VerifyPlan verify_plan(int B, int V, int T, VerifyMode mode, DType dtype, int num_sms) {
  const size_t smem = verify_smem_bytes(T, dtype);
  int per_sm = 1;
  switch (dtype) {
    case DType::kFloat16: per_sm = blocks_per_sm<__half, float>(mode, smem); break;
    case DType::kBFloat16: per_sm = blocks_per_sm<__nv_bfloat16, float>(mode, smem); break;
    case DType::kFloat32: per_sm = blocks_per_sm<float, float>(mode, smem); break;
    case DType::kFloat64: per_sm = blocks_per_sm<double, double>(mode, smem); break;
  }
  const int64_t slots = static_cast<int64_t>(num_sms) * per_sm;
  int64_t blocks = B > 0 ? slots / B : 1;  // all of a row's blocks resident together (cooperative launch)
  const int64_t most = V >= 2 * kMinSlice ? V / kMinSlice : 1;  // a split gives every block >= kMinSlice tokens
  blocks = blocks < 1 ? 1 : (blocks > most ? most : blocks);
  const int64_t slice = ((V + blocks - 1) / blocks + 3) / 4 * 4;
  return VerifyPlan{static_cast<int>((V + slice - 1) / slice), static_cast<int>(slice)};
}

cudaError_t launch_verify_tree(const VerifyArgs& args, DType dtype, cudaStream_t stream) {
  if (args.B == 0) return cudaSuccess;
  if (args.blocks < 1 || args.slice < 4 || args.slice % 4 || static_cast<int64_t>(args.blocks) * args.slice < args.V ||
      static_cast<int64_t>(args.blocks - 1) * args.slice >= args.V)
    return cudaErrorInvalidValue;
  VerifyArgs a = args;
  a.temperature_f = static_cast<float>(a.temperature);
  return dispatch_dtype(dtype, [&](auto types) {
    using P = decltype(types);
    return launch_typed<typename P::storage, typename P::compute>(a, stream);
  });
}

}  // namespace rsd
