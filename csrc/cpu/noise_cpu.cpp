// Noise generation on the CPU: the widest noise step this CPU runs (AVX-512,
// else AVX2, else scalar; all give the same bits), and the CPU kernels of the
// fill_gumbel_noise and philox_bits operators.
#include "noise_cpu.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>

#include "../gumbel_math.h"
#include "avx2_ops.h"
#include "noise_step.h"
#include "pair_ops.h"

namespace fused_gumbel {
namespace {

#if defined(CPU_CAPABILITY_AVX2)
constexpr int kLanes = Avx2Ops::kLanes;    // Philox counters per AVX2 vector
constexpr int kChains = 2;                 // vectors in flight (PairOps)
#else
constexpr int kLanes = 1;
constexpr int kChains = 8;
#endif
constexpr int kGroups = kLanes * kChains;  // Philox counters per step
constexpr int kStep = 4 * kGroups;         // positions per step

// The scalar step's FMAs are calls to fmaf unless the compiler may use the
// instruction: a second copy compiled for FMA hardware, chosen at load time
// (7x faster per value; the same bits either way).
#if !defined(CPU_CAPABILITY_AVX2) && defined(__x86_64__) && defined(__GNUC__) && \
    defined(__linux__)
#define FG_SCALAR_CLONES __attribute__((target_clones("fma", "default")))
#else
#define FG_SCALAR_CLONES
#endif

// The noise of the kStep positions 4 q .. 4 q + kStep - 1, in position order,
// with the instruction set of the build (AVX2, or scalar code).
FG_SCALAR_CLONES
void build_noise_step(uint64_t seed, uint64_t base, uint64_t q, float* out) {
#if defined(CPU_CAPABILITY_AVX2)
  simd_noise_step<Avx2Ops>(seed, base, q, out);
#else
  const uint32_t k0 = static_cast<uint32_t>(seed);
  const uint32_t k1 = static_cast<uint32_t>(seed >> 32);
  for (int i = 0; i < kGroups; ++i) {
    const uint64_t ctr = base + q + static_cast<uint64_t>(i);
    uint32_t c0 = static_cast<uint32_t>(ctr), c1 = static_cast<uint32_t>(ctr >> 32);
    uint32_t c2 = 0, c3 = 0;
    philox4x32_10<ScalarOps>(c0, c1, c2, c3, k0, k1);
    out[4 * i + 0] = gumbel_from_bits<ScalarOps>(c0);
    out[4 * i + 1] = gumbel_from_bits<ScalarOps>(c1);
    out[4 * i + 2] = gumbel_from_bits<ScalarOps>(c2);
    out[4 * i + 3] = gumbel_from_bits<ScalarOps>(c3);
  }
#endif
}

#if defined(CPU_CAPABILITY_AVX2)
constexpr const char* kBuildIsa = "avx2";
#else
constexpr const char* kBuildIsa = "scalar";
#endif
static_assert(kStep <= kMaxNoiseStep, "kMaxNoiseStep is too small");

// AVX-512 when this build has it, the CPU runs it and PyTorch's own CPU
// capability allows it (so ATEN_CPU_CAPABILITY=avx2 turns it off for both).
bool use_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  return kAvx512NoiseStep.fn != nullptr && __builtin_cpu_supports("avx512f") &&
         at::get_cpu_capability() == "AVX512";
#else
  return false;
#endif
}

const NoiseStep& noise_kernel() {
  static const NoiseStep kernel =
      use_avx512() ? kAvx512NoiseStep : NoiseStep{&build_noise_step, kGroups, kBuildIsa};
  return kernel;
}

std::string cpu_noise_isa() { return noise_kernel().isa; }

void fill_gumbel_noise_cpu(at::Tensor& out, int64_t seed) {
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous(),
              "fill_gumbel_noise: out must be a contiguous float32 tensor");
  float* data = out.data_ptr<float>();
  at::parallel_for(0, out.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
    fill_noise_cpu(static_cast<uint64_t>(seed), 0, static_cast<uint64_t>(begin),
                   end - begin, data + begin);
  });
}

void philox_bits_cpu(at::Tensor& out, int64_t seed, int64_t counter) {
  TORCH_CHECK(out.scalar_type() == at::kInt && out.is_contiguous() &&
                  out.dim() == 2 && out.size(1) == 4,
              "philox_bits: out must be a contiguous int32 [n, 4] tensor");
  auto* data = reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>());
  const uint64_t key = static_cast<uint64_t>(seed);
  for (int64_t i = 0; i < out.size(0); ++i) {
    const uint64_t ctr = static_cast<uint64_t>(counter) + static_cast<uint64_t>(i);
    uint32_t c[4] = {static_cast<uint32_t>(ctr), static_cast<uint32_t>(ctr >> 32), 0, 0};
    philox4x32_10<ScalarOps>(c[0], c[1], c[2], c[3], static_cast<uint32_t>(key),
                             static_cast<uint32_t>(key >> 32));
    std::copy(c, c + 4, data + 4 * i);
  }
}

}  // namespace

void fill_noise_cpu(uint64_t seed, uint64_t base, uint64_t first, int64_t n,
                    float* out) {
  const NoiseStep& kernel = noise_kernel();
  const int64_t step_len = 4 * kernel.groups;
  alignas(64) float step[kMaxNoiseStep];
  uint64_t q = first >> 2;
  int64_t skip = static_cast<int64_t>(first & 3);
  int64_t done = 0;
  while (done < n) {
    const int64_t take = std::min<int64_t>(step_len - skip, n - done);
    if (skip == 0 && take == step_len) {
      kernel.fn(seed, base, q, out + done);
    } else {
      kernel.fn(seed, base, q, step);
      std::memcpy(out + done, step + skip, take * sizeof(float));
    }
    done += take;
    skip = 0;
    q += static_cast<uint64_t>(kernel.groups);
  }
}

uint64_t draw_seed_cpu() {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(
      std::nullopt, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return gen->random64();
}

TORCH_LIBRARY_FRAGMENT(fused_gumbel, m) {
  m.def("cpu_noise_isa() -> str", &cpu_noise_isa);
}

TORCH_LIBRARY_IMPL(fused_gumbel, CPU, m) {
  m.impl("fill_gumbel_noise", &fill_gumbel_noise_cpu);
  m.impl("philox_bits", &philox_bits_cpu);
}

}  // namespace fused_gumbel
