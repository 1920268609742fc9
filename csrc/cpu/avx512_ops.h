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
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F neg(F a) { return as_float(bxor(as_bits(a), splat(0x80000000u))); }
  static U le(F a, F b) {
    return _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(a, b, _CMP_LE_OQ), splat(0xFFFFFFFFu));
  }
  static F select(U mask, F a, F b) {
    return as_float(_mm512_ternarylogic_epi32(mask, as_bits(a), as_bits(b), kSelect));
  }
};

}  // namespace fused_gumbel
