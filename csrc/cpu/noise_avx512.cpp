// The noise kernel on sixteen AVX-512 lanes: the same gumbel_math.h templates as
// every other backend, instantiated for Avx512Ops, so the bits are the ones the
// scalar definition gives.
//
// The whole file is compiled for AVX-512 (the pragma comes before any include)
// while the rest of the library is not, and fill_noise_cpu calls in only after
// checking the CPU. So this file must define nothing that other files also use:
// it includes no standard or torch header (whose inline functions, compiled
// here with AVX-512 instructions, the linker could pick for everyone) and
// instantiates the templates for its own types only.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FG_AVX512_NOISE 1
#pragma GCC target("avx512f")
// GCC 12 flags the intentionally undefined vectors inside its own
// avx512fintrin.h (_mm512_undefined_*) once these intrinsics are inlined.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "noise_step.h"

#if defined(FG_AVX512_NOISE)

#include "avx512_ops.h"
#include "pair_ops.h"

namespace fused_gumbel {
namespace {

constexpr int kGroups = 2 * Avx512Ops::kLanes;  // counters per step: two vectors (PairOps)
static_assert(4 * kGroups <= kMaxNoiseStep, "kMaxNoiseStep is too small");

void noise_step(uint64_t seed, uint64_t base, uint64_t q, float* out) {
  simd_noise_step<Avx512Ops>(seed, base, q, out);
}

}  // namespace

const NoiseStep kAvx512NoiseStep = {&noise_step, kGroups, "avx512"};

}  // namespace fused_gumbel

#else

namespace fused_gumbel {
const NoiseStep kAvx512NoiseStep = {nullptr, 0, nullptr};
}  // namespace fused_gumbel

#endif
