// C entry points over the emulated kernels (see host_shim.h), called through ctypes by
// tests/test_cuda_emulated.py. Pointers are CPU tensors' data.
#include "rsd_kernels.h"

// The launchers end with cudaGetLastError(); no CUDA runtime is linked here.
extern "C" cudaError_t CUDARTAPI cudaGetLastError(void) { return cudaSuccess; }

extern "C" {

void emu_set_block_threads(unsigned threads) { emu::block_threads_override = threads; }

int emu_verify_tree(const void* target, const void* draft, const int64_t* tokens, const int32_t* parents,
                    const int32_t* num_nodes, const float* uniform, const float* gumbel, uint64_t seed, uint32_t offset,
                    int B, int T, int V, int max_depth, int mode, double temperature, void* p_work, void* q_work,
                    int64_t* path, int64_t* num_accepted, int64_t* next_token, int dtype) {
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
  a.p_work = p_work;
  a.q_work = q_work;
  a.path = path;
  a.num_accepted = num_accepted;
  a.next_token = next_token;
  if (a.mode == rsd::VerifyMode::kTraversal) {  // p_work / q_work: [B, max_depth + 1, V] each
    rsd::launch_verify_traversal(a, static_cast<rsd::DType>(dtype), nullptr);
  } else {
    rsd::launch_verify_tree(a, static_cast<rsd::DType>(dtype), nullptr);
  }
  return 0;
}

int emu_sample_topk(const void* logits, const int32_t* k, const float* gumbel, uint64_t seed, uint32_t offset, int R,
                    int V, int kmax, double temperature, int64_t* tokens, void* logprobs, float* noise, int32_t* num,
                    int dtype) {
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
  rsd::launch_sample_topk(a, static_cast<rsd::DType>(dtype), nullptr);
  return 0;
}

int emu_tree_attention(const void* q, const void* k, const void* v, const int32_t* mask_bits, const int64_t* prefix_lens,
                       void* out, float* partial_o, float* partial_ml, int B, int Hq, int Hkv, int T, int S, int D,
                       int splits, double scale, int dtype) {
  rsd::TreeAttentionArgs a{};
  a.q = q;
  a.k = k;
  a.v = v;
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
  rsd::launch_tree_attention(a, static_cast<rsd::DType>(dtype), nullptr);
  return 0;
}

int emu_tree_attention_uses_tensor_cores(int D, int dtype) {
  return rsd::tree_attention_uses_tensor_cores(D, static_cast<rsd::DType>(dtype));
}
}
