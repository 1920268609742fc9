// The SIMD noise kernels' common shape: one step writes the noise of the
// 4 * groups consecutive positions 4 q, 4 q + 1, ... (groups Philox counters
// from q) in position order. fill_noise_cpu (csrc/cpu/noise_cpu.cpp) picks the
// widest step this CPU runs.
#pragma once

#include <stdint.h>

namespace fused_gumbel {

using NoiseStepFn = void (*)(uint64_t seed, uint64_t base, uint64_t q, float* out);

struct NoiseStep {
  NoiseStepFn fn;    // nullptr when this build has no such kernel
  int64_t groups;    // Philox counters per step
  const char* isa;   // "avx512", "avx2" or "scalar"
};

constexpr int64_t kMaxNoiseStep = 128;  // positions per step, at most

// The AVX-512 kernel (csrc/cpu/noise_avx512.cpp). Data, not a function: the
// code of that file may only run once the CPU is known to have AVX-512.
extern const NoiseStep kAvx512NoiseStep;

}  // namespace fused_gumbel
