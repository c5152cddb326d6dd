// Philox4x32-10 on the CPU: the numbers of rsd_kernels/noise.py's philox4x32, bit for bit
// (the same key schedule and rounds; every product of two 32-bit words is exact in 64 bits).
//
// philox4x32(key0, key1, c0, c1, c2, c3) -> [x0, x1, x2, x3]: the key words are the seed's low and
// high 32 bits (rsd_kernels.noise: seed & 0xFFFFFFFF, seed >> 32); each counter is an int64 tensor of n
// elements or of one element (broadcast), values taken modulo 2^32; each output lane is an int64
// tensor of n elements with values in [0, 2^32). Large inputs are split over torch's intra-op
// threads (at::parallel_for). JIT-built by rsd_kernels/cpu_philox.py.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

constexpr uint32_t kRoundA = 0xD2511F53u, kRoundB = 0xCD9E8D57u;
constexpr uint32_t kKeyA = 0x9E3779B9u, kKeyB = 0xBB67AE85u;

inline void philox10(uint32_t k0, uint32_t k1, uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3) {
  for (int r = 0; r < 10; ++r) {
    const uint64_t pb = static_cast<uint64_t>(kRoundB) * c2;
    const uint64_t pa = static_cast<uint64_t>(kRoundA) * c0;
    const uint32_t n0 = static_cast<uint32_t>(pb >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(pa >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(pb);
    c3 = static_cast<uint32_t>(pa);
    c0 = n0;
    c2 = n2;
    k0 += kKeyA;
    k1 += kKeyB;
  }
}

// One block of counters in place (the loop the compiler vectorises; an AVX2 clone where the CPU has it).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void philox_block(uint32_t k0, uint32_t k1, int64_t m, uint32_t* __restrict__ x0, uint32_t* __restrict__ x1,
                  uint32_t* __restrict__ x2, uint32_t* __restrict__ x3) {
  for (int64_t j = 0; j < m; ++j) philox10(k0, k1, x0[j], x1[j], x2[j], x3[j]);
}

std::vector<at::Tensor> philox4x32(int64_t key0, int64_t key1, const at::Tensor& c0, const at::Tensor& c1, const at::Tensor& c2,
                                   const at::Tensor& c3) {
  const at::Tensor* cs[4] = {&c0, &c1, &c2, &c3};
  int64_t n = 1;
  for (auto* c : cs) {
    TORCH_CHECK(c->device().is_cpu() && c->scalar_type() == at::kLong && c->is_contiguous(),
                "philox4x32: counters must be contiguous int64 CPU tensors");
    if (c->numel() != 1) {
      TORCH_CHECK(n == 1 || n == c->numel(), "philox4x32: counters of ", n, " and ", c->numel(), " elements");
      n = c->numel();
    }
  }
  const int64_t* p[4];
  bool full[4];
  for (int i = 0; i < 4; ++i) {
    p[i] = cs[i]->data_ptr<int64_t>();
    full[i] = cs[i]->numel() != 1;
  }
  auto out = at::empty({4, n}, c0.options());
  int64_t* o = out.data_ptr<int64_t>();
  const uint32_t k0 = static_cast<uint32_t>(key0), k1 = static_cast<uint32_t>(key1);
  at::parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
    constexpr int64_t kBlock = 256;  // counters gathered into uint32 buffers: a branch-free, vectorisable loop
    uint32_t x[4][kBlock];
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t m = std::min(kBlock, end - b);
      for (int k = 0; k < 4; ++k) {
        if (full[k]) {
          for (int64_t j = 0; j < m; ++j) x[k][j] = static_cast<uint32_t>(p[k][b + j]);
        } else {
          const uint32_t v = static_cast<uint32_t>(p[k][0]);
          for (int64_t j = 0; j < m; ++j) x[k][j] = v;
        }
      }
      philox_block(k0, k1, m, x[0], x[1], x[2], x[3]);
      for (int k = 0; k < 4; ++k) {
        int64_t* dst = o + k * n + b;
        for (int64_t j = 0; j < m; ++j) dst[j] = x[k][j];
      }
    }
  });
  return {out[0], out[1], out[2], out[3]};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("philox4x32", &philox4x32, "Philox4x32-10 with key (key0, key1) on int64 counters (rsd_kernels.noise.philox4x32)");
}
