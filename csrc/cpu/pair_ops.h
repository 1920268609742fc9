// Two independent lanes-of-Ops evaluated side by side, with the same interface.
// The noise math is one long dependency chain per value (ten Philox rounds of
// multiplies, then two logs); interleaving two chains keeps the vector units
// busy. Used by the SIMD noise kernels (AVX2 and AVX-512), whose one step
// (simd_noise_step, below) is written once for both.
#pragma once

#include <stdint.h>

#include "../gumbel_math.h"

namespace fused_gumbel {

template <class Ops>
struct PairOps {
  struct U { typename Ops::U a, b; };
  struct F { typename Ops::F a, b; };

  static U splat(uint32_t v) { return {Ops::splat(v), Ops::splat(v)}; }
  static F splatf(float v) { return {Ops::splatf(v), Ops::splatf(v)}; }
  static U bxor(U x, U y) { return {Ops::bxor(x.a, y.a), Ops::bxor(x.b, y.b)}; }
  static U bxor3(U x, U y, U z) { return {Ops::bxor3(x.a, y.a, z.a), Ops::bxor3(x.b, y.b, z.b)}; }
  static U band(U x, U y) { return {Ops::band(x.a, y.a), Ops::band(x.b, y.b)}; }
  static U iadd(U x, U y) { return {Ops::iadd(x.a, y.a), Ops::iadd(x.b, y.b)}; }
  static U isub(U x, U y) { return {Ops::isub(x.a, y.a), Ops::isub(x.b, y.b)}; }
  static U sra31(U x) { return {Ops::sra31(x.a), Ops::sra31(x.b)}; }
  static U sra23(U x) { return {Ops::sra23(x.a), Ops::sra23(x.b)}; }
  static void mulhilo(uint32_t m, U x, U& hi, U& lo) {
    Ops::mulhilo(m, x.a, hi.a, lo.a);
    Ops::mulhilo(m, x.b, hi.b, lo.b);
  }
  static F as_float(U x) { return {Ops::as_float(x.a), Ops::as_float(x.b)}; }
  static U as_bits(F x) { return {Ops::as_bits(x.a), Ops::as_bits(x.b)}; }
  static F i2f(U x) { return {Ops::i2f(x.a), Ops::i2f(x.b)}; }
  static F sub(F x, F y) { return {Ops::sub(x.a, y.a), Ops::sub(x.b, y.b)}; }
  static F mul(F x, F y) { return {Ops::mul(x.a, y.a), Ops::mul(x.b, y.b)}; }
  static F fma(F x, F y, F z) { return {Ops::fma(x.a, y.a, z.a), Ops::fma(x.b, y.b, z.b)}; }
  static F neg(F x) { return {Ops::neg(x.a), Ops::neg(x.b)}; }
  static U le(F x, F y) { return {Ops::le(x.a, y.a), Ops::le(x.b, y.b)}; }
  static F select(U m, F x, F y) { return {Ops::select(m.a, x.a, y.a), Ops::select(m.b, x.b, y.b)}; }
};

// One step of a SIMD noise kernel on lanes of VecOps (kLanes Philox counters
// per vector, load of counter words, store_transposed of the four words' noise
// in position order): the noise of the 8 * kLanes positions from 4 q, two
// vectors of counters q .. q + 2 kLanes - 1 at a time.
template <class VecOps>
inline void simd_noise_step(uint64_t seed, uint64_t base, uint64_t q, float* out) {
  using Ops = PairOps<VecOps>;
  constexpr int kLanes = VecOps::kLanes;
  alignas(64) uint32_t lo[2 * kLanes], hi[2 * kLanes];
  for (int i = 0; i < 2 * kLanes; ++i) {
    const uint64_t ctr = base + q + static_cast<uint64_t>(i);
    lo[i] = static_cast<uint32_t>(ctr);
    hi[i] = static_cast<uint32_t>(ctr >> 32);
  }
  typename Ops::U c0{VecOps::load(lo), VecOps::load(lo + kLanes)};
  typename Ops::U c1{VecOps::load(hi), VecOps::load(hi + kLanes)};
  typename Ops::U c2 = Ops::splat(0), c3 = Ops::splat(0);
  philox4x32_10<Ops>(c0, c1, c2, c3, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  const typename Ops::F g0 = gumbel_from_bits<Ops>(c0);
  const typename Ops::F g1 = gumbel_from_bits<Ops>(c1);
  const typename Ops::F g2 = gumbel_from_bits<Ops>(c2);
  const typename Ops::F g3 = gumbel_from_bits<Ops>(c3);
  VecOps::store_transposed(g0.a, g1.a, g2.a, g3.a, out);
  VecOps::store_transposed(g0.b, g1.b, g2.b, g3.b, out + 4 * kLanes);
}

}  // namespace fused_gumbel
