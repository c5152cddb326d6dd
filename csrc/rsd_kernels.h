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
  void* p_work;  // [B, V] workspace of the compute type (double for fp64 logits, else float)
  void* q_work;  // [B, V] workspace of the compute type
  int64_t* path;          // [B, max_depth + 1] out, -1 padded
  int64_t* num_accepted;  // [B] out
  int64_t* next_token;    // [B] out
};
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
};
cudaError_t launch_sample_topk(const SampleArgs& args, DType dtype, cudaStream_t stream);

// ---- tree attention (tree_attention.cu) --------------------------------------------------
struct TreeAttentionArgs {
  const void* q;              // [B, Hq, T, D]
  const void* k;              // [B, Hkv, S, D]
  const void* v;              // [B, Hkv, S, D]
  const int32_t* mask_bits;   // [B, T, ceil(T/32)]
  const int64_t* prefix_lens; // [B]
  void* out;                  // [B, Hq, T, D] of the input dtype
  float* partial_o;           // [splits, B, Hq, T, D] float workspace (tensor-core path only)
  float* partial_ml;          // [splits, B, Hq, T, 2] float workspace: running max, sum
  int B, Hq, Hkv, T, S, D, splits;
  double scale;
};
// Number of KV splits the launcher will use (the bindings size the workspaces with it).
int tree_attention_splits(int B, int Hq, int Hkv, int T, int S, int D, DType dtype, int num_sms);
// Whether the tensor-core (WMMA) kernel handles this case: fp16/bf16 and D in {64, 128}.
bool tree_attention_uses_tensor_cores(int D, DType dtype);
cudaError_t launch_tree_attention(const TreeAttentionArgs& args, DType dtype, cudaStream_t stream);

}  // namespace rsd
