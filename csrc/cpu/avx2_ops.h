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
  static U bxor3(U a, U b, U c) { return _mm256_xor_si256(_mm256_xor_si256(a, b), c); }
  static U band(U a, U b) { return _mm256_and_si256(a, b); }
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
};

}  // namespace fused_gumbel

#endif  // CPU_CAPABILITY_AVX2
