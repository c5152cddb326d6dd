// Host launch functions of the rsd_kernels CUDA kernels: raw pointers and a cudaStream_t,
// no torch types, so the device code compiles with plain nvcc. The torch bindings
// (shape/dtype checks, current stream, workspaces) live in bindings.cpp.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace rsd {

enum class DType : int { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2, kFloat64 = 3 };

// ---- verify_tree (verify.cu) ------------------------------------------------------------
enum class VerifyMode : int { kRRS = 0, kKSeq = 1, kGreedy = 2, kTraversal = 3 };

constexpr int kVerifySlots = 32;  // values a block exchanges with its row per step

struct VerifyArgs {
  const void* target_logits;  // [B, T, V] of `dtype`
  const void* draft_logits;   // [B, T, V] of `dtype`; may be null for greedy
  const int64_t* tokens;      // [B, T]
  const int32_t* parents;     // [B, T], -1 at the root
  const int32_t* num_nodes;   // [B]
  const float* uniform;       // [B, T] explicit noise, or null: Philox ACCEPT stream
  const float* gumbel;        // [B, V] explicit noise, or null: Philox RESIDUAL stream
  uint64_t seed;
  uint32_t offset;
  int B, T, V, max_depth;
  VerifyMode mode;
  double temperature;
  // the vocabulary split (verify_plan) and the exchange between a row's blocks:
  int blocks;             // blocks per row (a cooperative launch when > 1)
  int slice;              // tokens per block, a multiple of 4; (blocks - 1) * slice < V <= blocks * slice
  void* xchg_v;           // [B, 2, blocks, kVerifySlots] of the compute type (double for fp64 logits, else float)
  int32_t* xchg_i;        // [B, 2, blocks, 2]
  uint32_t* counters;     // [B] the rows' barrier counters (the launcher zeroes them)
  void* p_work;           // mode kTraversal only: [B, max_depth + 1, V] of the compute type each
  void* q_work;
  int64_t* path;          // [B, max_depth + 1] out, -1 padded
  int64_t* num_accepted;  // [B] out
  int64_t* next_token;    // [B] out
  float temperature_f;    // set by the launcher
};
struct VerifyPlan {
  int blocks, slice;
};
// Blocks per row and tokens per block for B rows of V tokens (T nodes) on num_sms SMs: as many
// blocks per row as can all be resident at once, at least 1024 tokens each.
VerifyPlan verify_plan(int B, int V, int T, VerifyMode mode, DType dtype, int num_sms);
// Dynamic shared memory of a verify block (the node arrays grow with T).
size_t verify_smem_bytes(int T, DType dtype);
cudaError_t launch_verify_tree(const VerifyArgs& args, DType dtype, cudaStream_t stream);
// mode kTraversal (verify_traversal.cu): p_work / q_work hold [B, max_depth + 1, V] each (the
// target and draft laws of the nodes on the current root path, one vector per depth).
cudaError_t launch_verify_traversal(const VerifyArgs& args, DType dtype, cudaStream_t stream);

// ---- Gumbel-top-k without replacement (sampling.cu) --------------------------------------
constexpr int kMaxSampleK = 64;  // largest k the register top-k supports

struct SampleArgs {
  const void* logits;    // [R, V] of `dtype`
  const int32_t* k;      // [R], 1 <= k <= kmax
  const float* gumbel;   // [R, V] explicit noise, or null: Philox GUMBEL stream (row r)
  uint64_t seed;
  uint32_t offset;
  int R, V, kmax;
  double temperature;    // 0: the k largest logits, no noise
  int64_t* tokens;       // [R, kmax] out, -1 past num
  void* logprobs;        // [R, kmax] out, compute type (double for fp64 logits, else float)
  float* noise;          // [R, kmax] out, the Gumbel noise of each selected token (0 if temperature 0)
  int32_t* num;          // [R] out, min(k, support)
  // The vocabulary split (sample_plan) and its workspaces (compute type = double for fp64 logits, else float):
  int blocks;            // vocabulary blocks per row
  int block_tokens;      // tokens per block, a multiple of 4; blocks * block_tokens >= V
  void* part_stats;      // [R, blocks, 2] compute type: block max of x / T, sum of exp(x / T - max)
  int32_t* part_support; // [R, blocks] finite logits per block
  void* part_score;      // [R, blocks, kmax] compute type: the block's top-kmax perturbed scores, descending
  int32_t* part_token;   // [R, blocks, kmax] their tokens (INT_MAX past the block's support)
  float temperature_f;   // set by the launcher
};
struct SamplePlan {
  int blocks, block_tokens;
};
// The vocabulary split for R rows of V tokens on a device with num_sms SMs.
SamplePlan sample_plan(int R, int V, int num_sms);
cudaError_t launch_sample_topk(const SampleArgs& args, DType dtype, cudaStream_t stream);

// ---- tree attention (tree_attention.cu) --------------------------------------------------
struct TreeAttentionArgs {
  const void* q;              // [B, Hq, T, D], strides q_stride (elements; batch, head, node), last dim contiguous
  const void* k;              // [B, Hkv, S, D], strides k_stride (batch, head, key), last dim contiguous
  const void* v;              // [B, Hkv, S, D], strides v_stride
  int64_t q_stride[3], k_stride[3], v_stride[3];
  const int32_t* mask_bits;   // [B, T, ceil(T/32)] contiguous
  const int64_t* prefix_lens; // [B]
  void* out;                  // [B, Hq, T, D] contiguous, of the input dtype
  float* partial_o;           // [splits, B, Hq, T, D] float workspace (tensor-core path, splits > 1)
  float* partial_ml;          // [splits, B, Hq, T, 2] float workspace: running max (log2 units), sum
  int B, Hq, Hkv, T, S, D, splits;
  double scale;
  int sm_arch;    // compute capability of the device, e.g. 90 (the tensor-core path needs >= 80)
  int kv_align;   // largest power of two <= 16 dividing the K/V pointers and byte strides (and q's, for
                  // the tensor-core path, which needs 16)
  int max_smem;   // the device's opt-in shared memory per block, bytes
  float scale_log2e;  // set by the launcher
};
// Whether the tensor-core (mma.sync) kernel handles this case: fp16/bf16, D in {64, 128}, sm_80+.
bool tree_attention_uses_tensor_cores(int D, DType dtype, int sm_arch);
// KV splits for `ctas` CTAs over `S` keys with `slots` resident CTAs on the device: as many as
// fill one wave (floor, never a partial second wave), at least 256 keys each, at least 1.
int plan_kv_splits(int64_t ctas, int64_t S, int64_t slots);
// Number of KV splits the launcher will use (the bindings size the workspaces with it).
int tree_attention_splits(int B, int Hq, int Hkv, int T, int S, int D, DType dtype, int num_sms, int sm_arch);
cudaError_t launch_tree_attention(const TreeAttentionArgs& args, DType dtype, cudaStream_t stream);

}  // namespace rsd
