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
#endif

#include "noise_step.h"

#if defined(FG_AVX512_NOISE)

#include "../gumbel_math.h"
#include "avx512_ops.h"
#include "pair_ops.h"

namespace fused_gumbel {
namespace {

using Ops = PairOps<Avx512Ops>;
constexpr int kLanes = 16;            // Philox counters per vector
constexpr int kGroups = 2 * kLanes;   // counters per step: two vectors (PairOps)
static_assert(4 * kGroups <= kMaxNoiseStep, "kMaxNoiseStep is too small");

// The 64-bit pairs of x and y that idx picks (_mm512_permutex2var_pd on floats).
__m512 pairs(__m512 x, __m512i idx, __m512 y) {
  return _mm512_castpd_ps(_mm512_permutex2var_pd(_mm512_castps_pd(x), idx, _mm512_castps_pd(y)));
}

// g_w[i] is the noise of position 4 i + w (word w of counter i); stores the 64
// values in position order. Pairs (g0, g1) and (g2, g3) are interleaved as
// floats, then the two results as float pairs.
void store_transposed(__m512 g0, __m512 g1, __m512 g2, __m512 g3, float* out) {
  const __m512i lo32 = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i hi32 = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
  const __m512 a = _mm512_permutex2var_ps(g0, lo32, g1);  // counters 0-7, words 0, 1
  const __m512 b = _mm512_permutex2var_ps(g0, hi32, g1);  // counters 8-15, words 0, 1
  const __m512 c = _mm512_permutex2var_ps(g2, lo32, g3);  // counters 0-7, words 2, 3
  const __m512 d = _mm512_permutex2var_ps(g2, hi32, g3);  // counters 8-15, words 2, 3
  const __m512i lo64 = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0);
  const __m512i hi64 = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
  _mm512_storeu_ps(out + 0, pairs(a, lo64, c));
  _mm512_storeu_ps(out + 16, pairs(a, hi64, c));
  _mm512_storeu_ps(out + 32, pairs(b, lo64, d));
  _mm512_storeu_ps(out + 48, pairs(b, hi64, d));
}

void noise_step(uint64_t seed, uint64_t base, uint64_t q, float* out) {
  const uint32_t k0 = static_cast<uint32_t>(seed);
  const uint32_t k1 = static_cast<uint32_t>(seed >> 32);
  alignas(64) uint32_t lo[kGroups], hi[kGroups];
  for (int i = 0; i < kGroups; ++i) {
    const uint64_t ctr = base + q + static_cast<uint64_t>(i);
    lo[i] = static_cast<uint32_t>(ctr);
    hi[i] = static_cast<uint32_t>(ctr >> 32);
  }
  Ops::U c0{_mm512_load_si512(lo), _mm512_load_si512(lo + kLanes)};
  Ops::U c1{_mm512_load_si512(hi), _mm512_load_si512(hi + kLanes)};
  Ops::U c2 = Ops::splat(0), c3 = Ops::splat(0);
  philox4x32_10<Ops>(c0, c1, c2, c3, k0, k1);
  const Ops::F g0 = gumbel_from_bits<Ops>(c0);
  const Ops::F g1 = gumbel_from_bits<Ops>(c1);
  const Ops::F g2 = gumbel_from_bits<Ops>(c2);
  const Ops::F g3 = gumbel_from_bits<Ops>(c3);
  store_transposed(g0.a, g1.a, g2.a, g3.a, out);
  store_transposed(g0.b, g1.b, g2.b, g3.b, out + 4 * kLanes);
}

}  // namespace

const NoiseStep kAvx512NoiseStep = {&noise_step, kGroups, "avx512"};

}  // namespace fused_gumbel

#else

namespace fused_gumbel {
const NoiseStep kAvx512NoiseStep = {nullptr, 0, nullptr};
}  // namespace fused_gumbel

#endif
