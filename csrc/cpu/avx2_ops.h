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
  static constexpr int kLanes = 8;

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
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F neg(F a) { return _mm256_xor_ps(a, _mm256_set1_ps(-0.0f)); }
  static U le(F a, F b) { return _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_LE_OQ)); }
  static F select(U mask, F a, F b) {
    return _mm256_blendv_ps(b, a, _mm256_castsi256_ps(mask));
  }
  static U load(const uint32_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }

  // Stores the noise of 32 positions given as g_w[i] = noise of position 4 i + w
  // (the four Philox words of eight counters), transposed to position order.
  static void store_transposed(__m256 g0, __m256 g1, __m256 g2, __m256 g3, float* out) {
    const __m256 t0 = _mm256_unpacklo_ps(g0, g1), t1 = _mm256_unpacklo_ps(g2, g3);
    const __m256 t2 = _mm256_unpackhi_ps(g0, g1), t3 = _mm256_unpackhi_ps(g2, g3);
    const __m256 a = _mm256_shuffle_ps(t0, t1, 0x44), b = _mm256_shuffle_ps(t0, t1, 0xEE);
    const __m256 c = _mm256_shuffle_ps(t2, t3, 0x44), d = _mm256_shuffle_ps(t2, t3, 0xEE);
    _mm256_storeu_ps(out + 0, _mm256_permute2f128_ps(a, b, 0x20));
    _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(c, d, 0x20));
    _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(a, b, 0x31));
    _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(c, d, 0x31));
  }
};

}  // namespace fused_gumbel

#endif  // CPU_CAPABILITY_AVX2
