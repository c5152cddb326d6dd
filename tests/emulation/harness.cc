// C entry points over the emulated kernels (see host_shim.h), called through ctypes by
// tests/test_cuda_emulated.py. Pointers are CPU tensors' data.
#include <cstring>
#include <vector>

#include "rsd_kernels.h"

// The launchers end with cudaGetLastError(); no CUDA runtime is linked here.
extern "C" cudaError_t CUDARTAPI cudaGetLastError(void) { return cudaSuccess; }
extern "C" cudaError_t CUDARTAPI cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
extern "C" cudaError_t CUDARTAPI cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, const void*, int, size_t) {
  *n = 2;
  return cudaSuccess;
}

extern "C" {

void emu_set_block_threads(unsigned threads) { emu::block_threads_override = threads; }
void emu_set_async_copy_eager(int eager) { emu::async_copy_eager = eager != 0; }

// blocks: blocks per row (0: verify_plan for a 2-SM device); the exchange workspace lives here.
int emu_verify_tree(const void* target, const void* draft, const int64_t* tokens, const int32_t* parents,
                    const int32_t* num_nodes, const float* uniform, const float* gumbel, uint64_t seed, uint32_t offset,
                    int B, int T, int V, int max_depth, int mode, double temperature, int64_t* path,
                    int64_t* num_accepted, int64_t* next_token, int dtype, int blocks) {
  rsd::VerifyArgs a{};
  a.target_logits = target;
  a.draft_logits = draft;
  a.tokens = tokens;
  a.parents = parents;
  a.num_nodes = num_nodes;
  a.uniform = uniform;
  a.gumbel = gumbel;
  a.seed = seed;
  a.offset = offset;
  a.B = B;
  a.T = T;
  a.V = V;
  a.max_depth = max_depth;
  a.mode = static_cast<rsd::VerifyMode>(mode);
  a.temperature = temperature;
  a.path = path;
  a.num_accepted = num_accepted;
  a.next_token = next_token;
  const size_t csize = dtype == 3 ? sizeof(double) : sizeof(float);
  if (a.mode == rsd::VerifyMode::kTraversal) {  // p_work / q_work: [B, max_depth + 1, V] each
    std::vector<unsigned char> wp(static_cast<size_t>(B) * (max_depth + 1) * V * csize), wq(wp.size());
    a.p_work = wp.data();
    a.q_work = wq.data();
    return rsd::launch_verify_traversal(a, static_cast<rsd::DType>(dtype), nullptr) == cudaSuccess ? 0 : 1;
  }
  rsd::VerifyPlan plan = rsd::verify_plan(B, V, T, a.mode, static_cast<rsd::DType>(dtype), 2);
  if (blocks > 0) {
    const int slice = ((V + blocks - 1) / blocks + 3) / 4 * 4;
    plan = rsd::VerifyPlan{(V + slice - 1) / slice, slice};
  }
  a.blocks = plan.blocks;
  a.slice = plan.slice;
  std::vector<unsigned char> xv(static_cast<size_t>(B) * 2 * plan.blocks * rsd::kVerifySlots * csize);
  std::vector<int32_t> xi(static_cast<size_t>(B) * 2 * plan.blocks * 2);
  std::vector<uint32_t> counters(B, 12345u);  // the launcher must zero them
  a.xchg_v = xv.data();
  a.xchg_i = xi.data();
  a.counters = counters.data();
  return rsd::launch_verify_tree(a, static_cast<rsd::DType>(dtype), nullptr) == cudaSuccess ? 0 : 1;
}

int emu_verify_plan(int B, int V, int T, int mode, int dtype, int num_sms, int* blocks, int* slice) {
  const rsd::VerifyPlan p =
      rsd::verify_plan(B, V, T, static_cast<rsd::VerifyMode>(mode), static_cast<rsd::DType>(dtype), num_sms);
  *blocks = p.blocks;
  *slice = p.slice;
  return 0;
}

// block_tokens: the vocabulary split (0: sample_plan for a 4-SM device); the workspaces live here.
int emu_sample_topk(const void* logits, const int32_t* k, const float* gumbel, uint64_t seed, uint32_t offset, int R,
                    int V, int kmax, double temperature, int64_t* tokens, void* logprobs, float* noise, int32_t* num,
                    int dtype, int block_tokens) {
  rsd::SampleArgs a{};
  a.logits = logits;
  a.k = k;
  a.gumbel = gumbel;
  a.seed = seed;
  a.offset = offset;
  a.R = R;
  a.V = V;
  a.kmax = kmax;
  a.temperature = temperature;
  a.tokens = tokens;
  a.logprobs = logprobs;
  a.noise = noise;
  a.num = num;
  const rsd::SamplePlan plan = block_tokens > 0 ? rsd::SamplePlan{(V + block_tokens - 1) / block_tokens, block_tokens}
                                                : rsd::sample_plan(R, V, 4);
  a.blocks = plan.blocks;
  a.block_tokens = plan.block_tokens;
  const size_t csize = dtype == 3 ? sizeof(double) : sizeof(float), slots = static_cast<size_t>(R) * plan.blocks;
  std::vector<unsigned char> stats(slots * 2 * csize), score(slots * kmax * csize);
  std::vector<int32_t> support(slots), token(slots * kmax);
  a.part_stats = stats.data();
  a.part_support = support.data();
  a.part_score = score.data();
  a.part_token = token.data();
  return rsd::launch_sample_topk(a, static_cast<rsd::DType>(dtype), nullptr) == cudaSuccess ? 0 : 1;
}

int emu_sample_plan(int R, int V, int num_sms, int* blocks, int* block_tokens) {
  const rsd::SamplePlan p = rsd::sample_plan(R, V, num_sms);
  *blocks = p.blocks;
  *block_tokens = p.block_tokens;
  return 0;
}

int emu_tree_attention(const void* q, const void* k, const void* v, const int64_t* q_stride, const int64_t* k_stride,
                       const int64_t* v_stride, const int32_t* mask_bits, const int64_t* prefix_lens, void* out,
                       float* partial_o, float* partial_ml, int B, int Hq, int Hkv, int T, int S, int D, int splits,
                       double scale, int dtype, int kv_align) {
  rsd::TreeAttentionArgs a{};
  a.q = q;
  a.k = k;
  a.v = v;
  for (int i = 0; i < 3; ++i) {
    a.q_stride[i] = q_stride[i];
    a.k_stride[i] = k_stride[i];
    a.v_stride[i] = v_stride[i];
  }
  a.mask_bits = mask_bits;
  a.prefix_lens = prefix_lens;
  a.out = out;
  a.partial_o = partial_o;
  a.partial_ml = partial_ml;
  a.B = B;
  a.Hq = Hq;
  a.Hkv = Hkv;
  a.T = T;
  a.S = S;
  a.D = D;
  a.splits = splits;
  a.scale = scale;
  a.sm_arch = 90;
  a.kv_align = kv_align;
  a.max_smem = 227 * 1024;
  return rsd::launch_tree_attention(a, static_cast<rsd::DType>(dtype), nullptr) == cudaSuccess ? 0 : 1;
}

int emu_tree_attention_uses_tensor_cores(int D, int dtype) {
  return rsd::tree_attention_uses_tensor_cores(D, static_cast<rsd::DType>(dtype), 90);
}

int emu_plan_kv_splits(int64_t ctas, int64_t S, int64_t slots) { return rsd::plan_kv_splits(ctas, S, slots); }
}
