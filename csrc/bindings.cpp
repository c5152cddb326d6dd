// Torch bindings of the rsd_kernels CUDA kernels (module rsd_kernels._C, or the JIT-built
// module of rsd_kernels.cuda_backend): argument checks with clear messages, workspaces from
// torch's caching allocator, launches on the current CUDA stream. The device code is in the
// .cu files, which include no torch headers.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "rsd_kernels.h"

namespace {

rsd::DType float_dtype(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kHalf: return rsd::DType::kFloat16;
    case at::kBFloat16: return rsd::DType::kBFloat16;
    case at::kFloat: return rsd::DType::kFloat32;
    case at::kDouble: return rsd::DType::kFloat64;
    default: break;
  }
  TORCH_CHECK_TYPE(false, name, " must have dtype float16, bfloat16, float32 or float64; got ", t.scalar_type());
  return rsd::DType::kFloat32;
}

at::ScalarType compute_dtype(const at::Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

void check_tensor(const at::Tensor& t, const char* name, const at::Device& device, int64_t ndim) {
  TORCH_CHECK_VALUE(t.is_cuda(), name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK_VALUE(t.device() == device, name, " is on ", t.device(), " but the other inputs are on ", device);
  TORCH_CHECK_VALUE(t.dim() == ndim, name, " must have ", ndim, " dimensions, got ", t.sizes());
  TORCH_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous");
}

void check_dtype(const at::Tensor& t, const char* name, at::ScalarType want) {
  TORCH_CHECK_TYPE(t.scalar_type() == want, name, " must have dtype ", want, ", got ", t.scalar_type());
}

void check_shape(const at::Tensor& t, const char* name, at::IntArrayRef want) {
  TORCH_CHECK_VALUE(t.sizes() == want, name, " must have shape ", want, ", got ", t.sizes());
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, ": CUDA launch failed: ", cudaGetErrorString(err));
}

uint32_t checked_offset(int64_t offset) {
  TORCH_CHECK_VALUE(offset >= 0 && offset < (int64_t(1) << 32), "offset must be in [0, 2**32), got ", offset);
  return static_cast<uint32_t>(offset);
}

uint64_t checked_seed(const std::optional<int64_t>& seed, bool needed) {
  TORCH_CHECK_VALUE(!needed || seed.has_value(), "either explicit noise tensors or seed= must be given");
  TORCH_CHECK_VALUE(!seed.has_value() || *seed >= 0, "seed must be in [0, 2**63), got ", seed.value_or(0));
  return static_cast<uint64_t>(seed.value_or(0));
}

int multiprocessor_count(const at::Device& dev);
int device_attribute(const at::Device& dev, cudaDeviceAttr attr);

// verify_tree: returns (path [B, max_depth+1] int64, num_accepted [B] int64, next_token [B] int64).
std::tuple<at::Tensor, at::Tensor, at::Tensor> verify_tree(
    const at::Tensor& target_logits, const std::optional<at::Tensor>& draft_logits, const at::Tensor& tokens,
    const at::Tensor& parents, const at::Tensor& num_nodes, int64_t mode, double temperature, int64_t max_depth,
    const std::optional<at::Tensor>& uniform, const std::optional<at::Tensor>& gumbel, std::optional<int64_t> seed,
    int64_t offset) {
  const at::Device dev = target_logits.device();
  check_tensor(target_logits, "target_logits", dev, 3);
  const rsd::DType dtype = float_dtype(target_logits, "target_logits");
  const int64_t B = target_logits.size(0), T = target_logits.size(1), V = target_logits.size(2);
  TORCH_CHECK_VALUE(mode >= 0 && mode <= 3, "mode must be 0 (rrs), 1 (kseq), 2 (greedy) or 3 (traversal), got ", mode);
  const bool greedy = mode == 2;
  TORCH_CHECK_VALUE(T >= 1 && T < (int64_t(1) << 24), "the tree must have between 1 and 2**24 nodes, got T=", T);
  TORCH_CHECK_VALUE(V >= 1 && V < (int64_t(1) << 31), "the vocabulary must have between 1 and 2**31 - 1 tokens, got ", V);
  TORCH_CHECK_VALUE(B < (int64_t(1) << 31), "batch too large: ", B);
  TORCH_CHECK_VALUE(max_depth >= 0 && max_depth < T, "max_depth must be in [0, T), got ", max_depth);
  if (draft_logits.has_value()) {
    check_tensor(*draft_logits, "draft_logits", dev, 3);
    check_dtype(*draft_logits, "draft_logits", target_logits.scalar_type());
    check_shape(*draft_logits, "draft_logits", target_logits.sizes());
  } else {
    TORCH_CHECK_VALUE(greedy, "draft_logits is required for the rrs, kseq and traversal modes");
  }
  check_tensor(tokens, "tokens", dev, 2);
  check_dtype(tokens, "tokens", at::kLong);
  check_shape(tokens, "tokens", {B, T});
  check_tensor(parents, "parents", dev, 2);
  check_dtype(parents, "parents", at::kInt);
  check_shape(parents, "parents", {B, T});
  check_tensor(num_nodes, "num_nodes", dev, 1);
  check_dtype(num_nodes, "num_nodes", at::kInt);
  check_shape(num_nodes, "num_nodes", {B});
  TORCH_CHECK_VALUE(uniform.has_value() == gumbel.has_value(), "uniform and gumbel must be given together");
  if (uniform.has_value()) {
    check_tensor(*uniform, "uniform", dev, 2);
    check_dtype(*uniform, "uniform", at::kFloat);
    check_shape(*uniform, "uniform", {B, T});
    check_tensor(*gumbel, "gumbel", dev, 2);
    check_dtype(*gumbel, "gumbel", at::kFloat);
    check_shape(*gumbel, "gumbel", {B, V});
  }
  TORCH_CHECK_VALUE(greedy || temperature > 0, "temperature must be > 0 for the rrs, kseq and traversal modes, got ",
                    temperature);
  const uint64_t seed_bits = checked_seed(seed, !greedy && !uniform.has_value());

  const c10::cuda::CUDAGuard guard(dev);
  const auto long_opts = tokens.options();
  at::Tensor path = at::empty({B, max_depth + 1}, long_opts);
  at::Tensor num_accepted = at::empty({B}, long_opts);
  at::Tensor next_token = at::empty({B}, long_opts);
  const bool traversal = mode == 3;  // its own kernel: one block per row, one law vector per depth of the path
  const rsd::VerifyPlan plan = traversal ? rsd::VerifyPlan{1, static_cast<int>((V + 3) / 4 * 4)}
                                         : rsd::verify_plan(static_cast<int>(B), static_cast<int>(V), static_cast<int>(T),
                                                            static_cast<rsd::VerifyMode>(mode), dtype,
                                                            multiprocessor_count(dev));
  if (!traversal) {
    const size_t smem = rsd::verify_smem_bytes(static_cast<int>(T), dtype);
    TORCH_CHECK_VALUE(smem <= static_cast<size_t>(device_attribute(dev, cudaDevAttrMaxSharedMemoryPerBlockOptin)),
                      "the CUDA verify_tree keeps per-node arrays in shared memory: T=", T, " nodes need ", smem,
                      " bytes, more than this GPU has per block");
  }
  const auto work_opts = target_logits.options().dtype(compute_dtype(target_logits));
  at::Tensor xchg_v = at::empty({traversal ? 0 : B, 2, plan.blocks, rsd::kVerifySlots}, work_opts);
  at::Tensor xchg_i = at::empty({traversal ? 0 : B, 2, plan.blocks, 2}, long_opts.dtype(at::kInt));
  at::Tensor counters = at::empty({traversal ? 0 : B}, long_opts.dtype(at::kInt));
  at::Tensor p_work = at::empty({traversal ? B : 0, max_depth + 1, V}, work_opts);
  at::Tensor q_work = at::empty_like(p_work);

  rsd::VerifyArgs a{};
  a.target_logits = target_logits.data_ptr();
  a.draft_logits = draft_logits.has_value() ? draft_logits->data_ptr() : nullptr;
  a.tokens = tokens.data_ptr<int64_t>();
  a.parents = parents.data_ptr<int32_t>();
  a.num_nodes = num_nodes.data_ptr<int32_t>();
  a.uniform = uniform.has_value() ? uniform->data_ptr<float>() : nullptr;
  a.gumbel = gumbel.has_value() ? gumbel->data_ptr<float>() : nullptr;
  a.seed = seed_bits;
  a.offset = checked_offset(offset);
  a.B = static_cast<int>(B);
  a.T = static_cast<int>(T);
  a.V = static_cast<int>(V);
  a.max_depth = static_cast<int>(max_depth);
  a.mode = static_cast<rsd::VerifyMode>(mode);
  a.temperature = temperature;
  a.blocks = plan.blocks;
  a.slice = plan.slice;
  a.xchg_v = xchg_v.data_ptr();
  a.xchg_i = xchg_i.data_ptr<int32_t>();
  a.counters = reinterpret_cast<uint32_t*>(counters.data_ptr<int32_t>());
  a.p_work = p_work.data_ptr();
  a.q_work = q_work.data_ptr();
  a.path = path.data_ptr<int64_t>();
  a.num_accepted = num_accepted.data_ptr<int64_t>();
  a.next_token = next_token.data_ptr<int64_t>();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  check_launch(traversal ? rsd::launch_verify_traversal(a, dtype, stream) : rsd::launch_verify_tree(a, dtype, stream),
               "verify_tree");
  return {path, num_accepted, next_token};
}

// Gumbel-top-k: returns (tokens [R, kmax] int64, logprobs [R, kmax] compute dtype,
// noise [R, kmax] float32 (the Gumbel of each selected token), num [R] int32).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sample_topk(
    const at::Tensor& logits, const at::Tensor& k, int64_t kmax, double temperature,
    const std::optional<at::Tensor>& gumbel, std::optional<int64_t> seed, int64_t offset) {
  const at::Device dev = logits.device();
  check_tensor(logits, "logits", dev, 2);
  const rsd::DType dtype = float_dtype(logits, "logits");
  const int64_t R = logits.size(0), V = logits.size(1);
  TORCH_CHECK_VALUE(V >= 1 && V < (int64_t(1) << 31), "the vocabulary must have between 1 and 2**31 - 1 tokens, got ", V);
  TORCH_CHECK_VALUE(R < (int64_t(1) << 31), "too many rows: ", R);
  TORCH_CHECK_VALUE(kmax >= 1 && kmax <= V, "kmax must be in [1, V=", V, "], got ", kmax);
  TORCH_CHECK_VALUE(kmax <= rsd::kMaxSampleK, "the CUDA backend samples at most k=", rsd::kMaxSampleK,
                    " tokens per row (register top-k), got k=", kmax);
  check_tensor(k, "k", dev, 1);
  check_dtype(k, "k", at::kInt);
  check_shape(k, "k", {R});
  TORCH_CHECK_VALUE(temperature >= 0, "temperature must be >= 0, got ", temperature);
  const bool noisy = temperature > 0;
  if (gumbel.has_value()) {
    check_tensor(*gumbel, "gumbel", dev, 2);
    check_dtype(*gumbel, "gumbel", at::kFloat);
    check_shape(*gumbel, "gumbel", {R, V});
  }
  const uint64_t seed_bits = checked_seed(seed, noisy && !gumbel.has_value());

  const c10::cuda::CUDAGuard guard(dev);
  at::Tensor tokens = at::empty({R, kmax}, logits.options().dtype(at::kLong));
  at::Tensor logprobs = at::empty({R, kmax}, logits.options().dtype(compute_dtype(logits)));
  at::Tensor noise = at::empty({R, kmax}, logits.options().dtype(at::kFloat));
  at::Tensor num = at::empty({R}, logits.options().dtype(at::kInt));
  const rsd::SamplePlan plan = rsd::sample_plan(static_cast<int>(R), static_cast<int>(V), multiprocessor_count(dev));
  at::Tensor part_stats = at::empty({R, plan.blocks, 2}, logits.options().dtype(compute_dtype(logits)));
  at::Tensor part_support = at::empty({R, plan.blocks}, logits.options().dtype(at::kInt));
  at::Tensor part_score = at::empty({R, plan.blocks, kmax}, logits.options().dtype(compute_dtype(logits)));
  at::Tensor part_token = at::empty({R, plan.blocks, kmax}, logits.options().dtype(at::kInt));

  rsd::SampleArgs a{};
  a.logits = logits.data_ptr();
  a.k = k.data_ptr<int32_t>();
  a.gumbel = gumbel.has_value() ? gumbel->data_ptr<float>() : nullptr;
  a.seed = seed_bits;
  a.offset = checked_offset(offset);
  a.R = static_cast<int>(R);
  a.V = static_cast<int>(V);
  a.kmax = static_cast<int>(kmax);
  a.temperature = temperature;
  a.tokens = tokens.data_ptr<int64_t>();
  a.logprobs = logprobs.data_ptr();
  a.noise = noise.data_ptr<float>();
  a.num = num.data_ptr<int32_t>();
  a.blocks = plan.blocks;
  a.block_tokens = plan.block_tokens;
  a.part_stats = part_stats.data_ptr();
  a.part_support = part_support.data_ptr<int32_t>();
  a.part_score = part_score.data_ptr();
  a.part_token = part_token.data_ptr<int32_t>();
  check_launch(rsd::launch_sample_topk(a, dtype, c10::cuda::getCurrentCUDAStream().stream()), "sample_topk");
  return {tokens, logprobs, noise, num};
}

int device_attribute(const at::Device& dev, cudaDeviceAttr attr) {
  int value = 0;
  check_launch(cudaDeviceGetAttribute(&value, attr, dev.index()), "cudaDeviceGetAttribute");
  return value;
}

int multiprocessor_count(const at::Device& dev) { return device_attribute(dev, cudaDevAttrMultiProcessorCount); }

int sm_arch(const at::Device& dev) {
  return 10 * device_attribute(dev, cudaDevAttrComputeCapabilityMajor) +
         device_attribute(dev, cudaDevAttrComputeCapabilityMinor);
}

// Largest power of two <= 16 dividing t's pointer and its byte strides over dims 0..2 (the
// row starts the kernels copy from).
int row_alignment(const at::Tensor& t) {
  uint64_t bits = reinterpret_cast<uintptr_t>(t.data_ptr());
  for (int64_t d = 0; d < 3; ++d)
    if (t.size(d) > 1) bits |= static_cast<uint64_t>(t.stride(d) * t.element_size());
  int align = 16;
  while (align > 1 && bits % align) align /= 2;
  return align;
}

// q, k and v are read where they lie (strided views of a KV cache, no copy); only a last
// dimension that is not contiguous, or (tensor-core path) rows not 16-byte aligned, are copied.
at::Tensor rows_readable(const at::Tensor& t, bool need_16_bytes) {
  const at::Tensor r = t.size(3) == 1 || t.stride(3) == 1 ? t : t.contiguous();
  return need_16_bytes && row_alignment(r) < 16 ? r.clone(at::MemoryFormat::Contiguous) : r;
}

void check_strided(const at::Tensor& t, const char* name, const at::Device& device) {
  TORCH_CHECK_VALUE(t.is_cuda(), name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK_VALUE(t.device() == device, name, " is on ", t.device(), " but the other inputs are on ", device);
  TORCH_CHECK_VALUE(t.dim() == 4, name, " must have 4 dimensions, got ", t.sizes());
}

at::Tensor tree_attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                          const at::Tensor& mask_bits, const at::Tensor& prefix_lens, double scale) {
  const at::Device dev = q_in.device();
  check_strided(q_in, "q", dev);
  check_strided(k_in, "k", dev);
  check_strided(v_in, "v", dev);
  const rsd::DType dtype = float_dtype(q_in, "q");
  check_dtype(k_in, "k", q_in.scalar_type());
  check_dtype(v_in, "v", q_in.scalar_type());
  const int64_t B = q_in.size(0), Hq = q_in.size(1), T = q_in.size(2), D = q_in.size(3);
  const int64_t Hkv = k_in.size(1), S = k_in.size(2);
  check_shape(k_in, "k", {B, Hkv, S, D});
  check_shape(v_in, "v", {B, Hkv, S, D});
  TORCH_CHECK_VALUE(Hkv >= 1 && Hq % Hkv == 0, "the number of query heads (", Hq, ") must be a multiple of the KV heads (",
                    Hkv, ")");
  TORCH_CHECK_VALUE(D >= 1 && D <= 256, "the CUDA tree attention supports head sizes up to 256, got D=", D);
  TORCH_CHECK_VALUE(B * Hq * T < (int64_t(1) << 31) && S < (int64_t(1) << 31) && B * Hkv < 65536,
                    "problem too large for the CUDA tree attention's grid (B*Hkv < 65536, B*Hq*T < 2**31)");
  check_tensor(mask_bits, "mask_bits", dev, 3);
  check_dtype(mask_bits, "mask_bits", at::kInt);
  check_shape(mask_bits, "mask_bits", {B, T, (T + 31) / 32});
  check_tensor(prefix_lens, "prefix_lens", dev, 1);
  check_dtype(prefix_lens, "prefix_lens", at::kLong);
  check_shape(prefix_lens, "prefix_lens", {B});

  const c10::cuda::CUDAGuard guard(dev);
  const int arch = sm_arch(dev);
  const bool tensor_cores = rsd::tree_attention_uses_tensor_cores(static_cast<int>(D), dtype, arch);
  const at::Tensor q = rows_readable(q_in, tensor_cores), k = rows_readable(k_in, tensor_cores),
                   v = rows_readable(v_in, tensor_cores);
  at::Tensor out = at::empty({B, Hq, T, D}, q.options());
  const int splits = rsd::tree_attention_splits(static_cast<int>(B), static_cast<int>(Hq), static_cast<int>(Hkv),
                                                static_cast<int>(T), static_cast<int>(S), static_cast<int>(D), dtype,
                                                multiprocessor_count(dev), arch);
  const bool partials = tensor_cores && splits > 1;
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor partial_o = at::empty({partials ? splits : 0, B, Hq, T, D}, f32);
  at::Tensor partial_ml = at::empty({partials ? splits : 0, B, Hq, T, 2}, f32);

  rsd::TreeAttentionArgs a{};
  a.q = q.data_ptr();
  a.k = k.data_ptr();
  a.v = v.data_ptr();
  for (int64_t d = 0; d < 3; ++d) {
    a.q_stride[d] = q.stride(d);
    a.k_stride[d] = k.stride(d);
    a.v_stride[d] = v.stride(d);
  }
  a.mask_bits = mask_bits.data_ptr<int32_t>();
  a.prefix_lens = prefix_lens.data_ptr<int64_t>();
  a.out = out.data_ptr();
  a.partial_o = partial_o.data_ptr<float>();
  a.partial_ml = partial_ml.data_ptr<float>();
  a.B = static_cast<int>(B);
  a.Hq = static_cast<int>(Hq);
  a.Hkv = static_cast<int>(Hkv);
  a.T = static_cast<int>(T);
  a.S = static_cast<int>(S);
  a.D = static_cast<int>(D);
  a.splits = splits;
  a.scale = scale;
  a.sm_arch = arch;
  a.kv_align = std::min(row_alignment(k), row_alignment(v));
  a.max_smem = device_attribute(dev, cudaDevAttrMaxSharedMemoryPerBlockOptin);
  check_launch(rsd::launch_tree_attention(a, dtype, c10::cuda::getCurrentCUDAStream().stream()), "tree_attention");
  return out;
}

int64_t attention_splits(int64_t B, int64_t Hq, int64_t Hkv, int64_t T, int64_t S, int64_t D, const at::Tensor& like) {
  TORCH_CHECK_VALUE(like.is_cuda(), "like must be a CUDA tensor, got device ", like.device());
  return rsd::tree_attention_splits(static_cast<int>(B), static_cast<int>(Hq), static_cast<int>(Hkv), static_cast<int>(T),
                                    static_cast<int>(S), static_cast<int>(D), float_dtype(like, "like"),
                                    multiprocessor_count(like.device()), sm_arch(like.device()));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rsd_kernels CUDA kernels: verify_tree, sample_topk (Gumbel-top-k), tree_attention";
  m.def("verify_tree", &verify_tree,
        "Verify draft trees (each row's vocabulary split over blocks; traversal: one block per row); mode 0 rrs, "
        "1 kseq, 2 greedy, 3 traversal",
        py::arg("target_logits"), py::arg("draft_logits"), py::arg("tokens"), py::arg("parents"), py::arg("num_nodes"),
        py::arg("mode"), py::arg("temperature"), py::arg("max_depth"), py::arg("uniform"), py::arg("gumbel"),
        py::arg("seed"), py::arg("offset"));
  m.def("sample_topk", &sample_topk, "Gumbel-top-k sampling without replacement over [R, V]", py::arg("logits"),
        py::arg("k"), py::arg("kmax"), py::arg("temperature"), py::arg("gumbel"), py::arg("seed"), py::arg("offset"));
  m.def("tree_attention", &tree_attention,
        "Tree attention over a KV cache (strided [B, Hkv, S, D] views, read in place) with a packed ancestor bitmask",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask_bits"), py::arg("prefix_lens"), py::arg("scale"));
  m.def("attention_splits", &attention_splits, "KV splits the tree attention launcher uses for a shape",
        py::arg("B"), py::arg("Hq"), py::arg("Hkv"), py::arg("T"), py::arg("S"), py::arg("D"), py::arg("like"));
  m.attr("max_sample_k") = rsd::kMaxSampleK;
}
