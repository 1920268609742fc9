// The lane operations of gumbel_math.h on sixteen AVX-512 lanes. Only
// csrc/cpu/noise_avx512.cpp includes this, under its AVX-512 target pragma; it
// uses AVX-512F instructions only.
#pragma once

#include <immintrin.h>
#include <stdint.h>

namespace fused_gumbel {

struct Avx512Ops {
  using U = __m512i;
  using F = __m512;
  static constexpr int kLanes = 16;

  // vpternlogd truth tables: a ^ b ^ c, and (a & b) | (~a & c) (bit select).
  static constexpr int kXor3 = 0x96;
  static constexpr int kSelect = 0xCA;

  static U splat(uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }
  static F splatf(float v) { return _mm512_set1_ps(v); }
  static U bxor(U a, U b) { return _mm512_xor_si512(a, b); }
  static U bxor3(U a, U b, U c) { return _mm512_ternarylogic_epi32(a, b, c, kXor3); }
  static U band(U a, U b) { return _mm512_and_si512(a, b); }
  static U iadd(U a, U b) { return _mm512_add_epi32(a, b); }
  static U isub(U a, U b) { return _mm512_sub_epi32(a, b); }
  static U sra31(U a) { return _mm512_srai_epi32(a, 31); }
  static U sra23(U a) { return _mm512_srai_epi32(a, 23); }
  // vpmuludq multiplies the even 32-bit lanes to 64 bits: the odd lanes are
  // shifted down for a second multiply, and one two-source permute gathers the
  // high halves back in lane order. The low halves are a plain vpmulld.
  static void mulhilo(uint32_t m, U b, U& hi, U& lo) {
    const U mv = _mm512_set1_epi32(static_cast<int>(m));
    const U even = _mm512_mul_epu32(b, mv);
    const U odd = _mm512_mul_epu32(_mm512_srli_epi64(b, 32), mv);
    const U high_halves = _mm512_set_epi32(31, 15, 29, 13, 27, 11, 25, 9,
                                           23, 7, 21, 5, 19, 3, 17, 1);
    hi = _mm512_permutex2var_epi32(even, high_halves, odd);
    lo = _mm512_mullo_epi32(b, mv);
  }
  static F as_float(U a) { return _mm512_castsi512_ps(a); }
  static U as_bits(F a) { return _mm512_castps_si512(a); }
  static F i2f(U a) { return _mm512_cvtepi32_ps(a); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F neg(F a) { return as_float(bxor(as_bits(a), splat(0x80000000u))); }
  static U le(F a, F b) {
    return _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(a, b, _CMP_LE_OQ), splat(0xFFFFFFFFu));
  }
  static F select(U mask, F a, F b) {
    return as_float(_mm512_ternarylogic_epi32(mask, as_bits(a), as_bits(b), kSelect));
  }
  static U load(const uint32_t* p) { return _mm512_load_si512(p); }

  // The 64-bit pairs of x and y that idx picks (_mm512_permutex2var_pd on floats).
  static __m512 pairs(__m512 x, __m512i idx, __m512 y) {
    return _mm512_castpd_ps(_mm512_permutex2var_pd(_mm512_castps_pd(x), idx, _mm512_castps_pd(y)));
  }

  // g_w[i] is the noise of position 4 i + w (word w of counter i); stores the 64
  // values in position order. Pairs (g0, g1) and (g2, g3) are interleaved as
  // floats, then the two results as float pairs.
  static void store_transposed(__m512 g0, __m512 g1, __m512 g2, __m512 g3, float* out) {
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
};

}  // namespace fused_gumbel
