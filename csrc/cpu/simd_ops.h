// The lane operations of gumbel_math.h on eight AVX2 lanes, so the CPU kernel
// evaluates the very same noise math eight positions at a time.
#pragma once

#if defined(CPU_CAPABILITY_AVX2)

#include <immintrin.h>
#include <stdint.h>

namespace fused_gumbel {

struct Avx2Ops {
  using U = __m256i;
  using F = __m256;

  static U splat(uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }
  static F splatf(float v) { return _mm256_set1_ps(v); }
  static U bxor(U a, U b) { return _mm256_xor_si256(a, b); }
  static U band(U a, U b) { return _mm256_and_si256(a, b); }
  static U bor(U a, U b) { return _mm256_or_si256(a, b); }
  static U bnot(U a) { return _mm256_xor_si256(a, _mm256_set1_epi32(-1)); }
  static U iadd(U a, U b) { return _mm256_add_epi32(a, b); }
  static U isub(U a, U b) { return _mm256_sub_epi32(a, b); }
  static U sra31(U a) { return _mm256_srai_epi32(a, 31); }
  static U sra23(U a) { return _mm256_srai_epi32(a, 23); }
  // AVX2 multiplies only the even 32-bit lanes to 64 bits: do the odd lanes
  // after shifting them down, then interleave the halves back.
  static void mulhilo(uint32_t m, U b, U& hi, U& lo) {
    const U mv = _mm256_set1_epi32(static_cast<int>(m));
    const U even = _mm256_mul_epu32(b, mv);
    const U odd = _mm256_mul_epu32(_mm256_srli_epi64(b, 32), mv);
    lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  }
  static F as_float(U a) { return _mm256_castsi256_ps(a); }
  static U as_bits(F a) { return _mm256_castps_si256(a); }
  static F i2f(U a) { return _mm256_cvtepi32_ps(a); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F neg(F a) { return _mm256_xor_ps(a, _mm256_set1_ps(-0.0f)); }
  static U le(F a, F b) { return _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_LE_OQ)); }
  static F select(U mask, F a, F b) {
    return _mm256_blendv_ps(b, a, _mm256_castsi256_ps(mask));
  }
  static U selectu(U mask, U a, U b) { return _mm256_blendv_epi8(b, a, mask); }
};

// Two independent lanes-of-Ops evaluated side by side. The noise math is one
// long dependency chain per value (ten Philox rounds of multiplies, then two
// logs); interleaving two chains keeps the vector units busy.
template <class Ops>
struct PairOps {
  struct U { typename Ops::U a, b; };
  struct F { typename Ops::F a, b; };

  static U splat(uint32_t v) { return {Ops::splat(v), Ops::splat(v)}; }
  static F splatf(float v) { return {Ops::splatf(v), Ops::splatf(v)}; }
  static U bxor(U x, U y) { return {Ops::bxor(x.a, y.a), Ops::bxor(x.b, y.b)}; }
  static U band(U x, U y) { return {Ops::band(x.a, y.a), Ops::band(x.b, y.b)}; }
  static U bor(U x, U y) { return {Ops::bor(x.a, y.a), Ops::bor(x.b, y.b)}; }
  static U bnot(U x) { return {Ops::bnot(x.a), Ops::bnot(x.b)}; }
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
  static F add(F x, F y) { return {Ops::add(x.a, y.a), Ops::add(x.b, y.b)}; }
  static F sub(F x, F y) { return {Ops::sub(x.a, y.a), Ops::sub(x.b, y.b)}; }
  static F mul(F x, F y) { return {Ops::mul(x.a, y.a), Ops::mul(x.b, y.b)}; }
  static F div(F x, F y) { return {Ops::div(x.a, y.a), Ops::div(x.b, y.b)}; }
  static F neg(F x) { return {Ops::neg(x.a), Ops::neg(x.b)}; }
  static U le(F x, F y) { return {Ops::le(x.a, y.a), Ops::le(x.b, y.b)}; }
  static F select(U m, F x, F y) { return {Ops::select(m.a, x.a, y.a), Ops::select(m.b, x.b, y.b)}; }
  static U selectu(U m, U x, U y) { return {Ops::selectu(m.a, x.a, y.a), Ops::selectu(m.b, x.b, y.b)}; }
};

}  // namespace fused_gumbel

#endif  // CPU_CAPABILITY_AVX2
