// The math every backend shares: Philox4x32-10, the bits-to-Gumbel transform,
// the argmax tie rule and the online-softmax merge. No torch types, so the CPU
// kernel, the CUDA kernel and plain C++ users all compile the same code, and the
// CPU test suite exercises what the GPU runs.
//
// The noise must be bit-identical on every backend (the contract promises it for a
// given seed). So the transform uses only IEEE-754 correctly rounded float32
// operations (+, -, *, and the fused multiply-add fma(a, b, c) = a * b + c with
// one rounding) and integer bit manipulation: library log() differs between
// glibc, libdevice and NumPy, and an a * b + c that one compiler contracts into an
// FMA and another does not changes the last bit. So every FMA is written out
// (Ops::fma), no multiply-add is left for a compiler to contract ("never
// contract" operations on every target, see ScalarOps below), and the CPU
// kernels are compiled with -ffp-contract=off.
//
// The exact mapping, reproduced in the README in NumPy:
//   counter = base + (position >> 2)            (64-bit, base = 0 for a user seed)
//   (w0, w1, w2, w3) = Philox4x32-10(key = (seed_lo, seed_hi),
//                                    ctr = (counter_lo, counter_hi, 0, 0))
//   r = w[position & 3]
//   gumbel = gumbel_from_bits(r)
#pragma once

#include <stdint.h>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FG_HD __host__ __device__ __forceinline__
#else
#define FG_HD inline
#endif

namespace fused_gumbel {

// Philox4x32 constants (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC'11); the same ones as at::Philox4_32 and triton.language.philox.
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;
constexpr int kPhiloxRounds = 10;

// Largest attainable noise: r = 0xFFFFFFFF gives 1 - u = 2^-33, so
// g = -log(2^-33 * (1 + O(2^-33))) = 33 log 2 = 22.8739...
// Smallest: r = 0 gives u = 2^-33, g = -log(33 log 2) = -3.1299...

// Operations on one lane. A SIMD target supplies the same interface with vector
// types (csrc/cpu/avx2_ops.h, csrc/cpu/avx512_ops.h); the math below is written once against it.
struct ScalarOps {
  using U = uint32_t;  // 32 random bits, or an integer bit pattern
  using F = float;

  static FG_HD U splat(uint32_t v) { return v; }
  static FG_HD F splatf(float v) { return v; }
  static FG_HD U bxor(U a, U b) { return a ^ b; }
  static FG_HD U bxor3(U a, U b, U c) { return a ^ b ^ c; }
  static FG_HD U band(U a, U b) { return a & b; }
  static FG_HD U iadd(U a, U b) { return a + b; }
  static FG_HD U isub(U a, U b) { return a - b; }
  // Arithmetic right shifts of the pattern read as int32.
  static FG_HD U sra31(U a) { return static_cast<U>(static_cast<int32_t>(a) >> 31); }
  static FG_HD U sra23(U a) { return static_cast<U>(static_cast<int32_t>(a) >> 23); }
  static FG_HD void mulhilo(uint32_t m, U b, U& hi, U& lo) {
#if defined(__CUDA_ARCH__)
    hi = __umulhi(m, b);
    lo = m * b;
#else
    const uint64_t p = static_cast<uint64_t>(m) * b;
    hi = static_cast<U>(p >> 32);
    lo = static_cast<U>(p);
#endif
  }
  static FG_HD F as_float(U a) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(a);
#else
    F f;
    __builtin_memcpy(&f, &a, sizeof f);
    return f;
#endif
  }
  static FG_HD U as_bits(F a) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(a);
#else
    U u;
    __builtin_memcpy(&u, &a, sizeof u);
    return u;
#endif
  }
  // int32 -> float32, round to nearest even.
  static FG_HD F i2f(U a) {
#if defined(__CUDA_ARCH__)
    return __int2float_rn(static_cast<int32_t>(a));
#else
    return static_cast<F>(static_cast<int32_t>(a));
#endif
  }
  // The __f*_rn intrinsics are never contracted into FMAs by nvcc.
  static FG_HD F sub(F a, F b) {
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
  }
  static FG_HD F mul(F a, F b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
  }
  // a * b + c, rounded once. Compiled without -mfma this is a call to fmaf
  // (same bits, several times slower; csrc/cpu/noise_cpu.cpp's scalar step is
  // cloned for FMA hardware), and without FMA hardware glibc's exact software
  // fmaf.
  static FG_HD F fma(F a, F b, F c) {
#if defined(__CUDA_ARCH__)
    return __fmaf_rn(a, b, c);
#else
    return __builtin_fmaf(a, b, c);
#endif
  }
  static FG_HD F neg(F a) { return -a; }
  // All-ones where a <= b.
  static FG_HD U le(F a, F b) { return a <= b ? 0xFFFFFFFFu : 0u; }
  // a where mask is all-ones, b where it is zero (every mask here is one or
  // the other). A conditional, not bit operations: nvcc then selects on a
  // predicate and folds a negated operand into the FSEL, where the bitwise
  // form needed the negation computed (sm_90 SASS of the hard forward's loop:
  // 317 -> 309 instructions per float32 unit with split_log_argument_of_neg;
  // the same bits for all 2^32 inputs).
  static FG_HD F select(U mask, F a, F b) { return mask != 0 ? a : b; }
};

// Ten Philox4x32 rounds on the counter (c0, c1, c2, c3) under key (k0, k1).
template <class Ops>
FG_HD void philox4x32_10(typename Ops::U& c0, typename Ops::U& c1,
                         typename Ops::U& c2, typename Ops::U& c3, uint32_t k0,
                         uint32_t k1) {
  using U = typename Ops::U;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < kPhiloxRounds; ++round) {
    U hi0, lo0, hi1, lo1;
    Ops::mulhilo(kPhiloxM0, c0, hi0, lo0);
    Ops::mulhilo(kPhiloxM1, c2, hi1, lo1);
    c0 = Ops::bxor3(hi1, c1, Ops::splat(k0));
    c1 = lo1;
    c2 = Ops::bxor3(hi0, c3, Ops::splat(k1));
    c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
}

// log(2^k * (1 + f)) for f in [sqrt(1/2) - 1, sqrt(2) - 1], in float32:
// log1p(f) = f + f^2 P(f) with P a degree-8 polynomial (Horner, one FMA per
// coefficient), then + k ln 2 in one more FMA. No division and no table, so it
// costs ten FMAs and one multiply on every target. P is a weighted minimax fit
// of (log1p(f) - f) / f^2 with P(0) = -1/2, its coefficients rounded to float32
// one at a time (each rounding absorbed by refitting the rest): log1p(f) is
// within 0.78 ulp, and over all 2^32 inputs the noise is within 3.1e-7 of
// -log(-log u) in float64 (relative, or absolute below 1). The float32 ln 2 is
// off by 1.9e-9, under 0.07 ulp of any result here.
template <class Ops>
FG_HD typename Ops::F log_core(typename Ops::F dk, typename Ops::F f) {
  using F = typename Ops::F;
  // Written out, not a loop over a table: a table could land in local memory.
  F p = Ops::fma(Ops::splatf(-0x1.38c9dep-4f), f, Ops::splatf(0x1.055ec6p-3f));
  p = Ops::fma(p, f, Ops::splatf(-0x1.0d8242p-3f));
  p = Ops::fma(p, f, Ops::splatf(0x1.22d92ep-3f));
  p = Ops::fma(p, f, Ops::splatf(-0x1.54728ap-3f));
  p = Ops::fma(p, f, Ops::splatf(0x1.99a01cp-3f));
  p = Ops::fma(p, f, Ops::splatf(-0x1.000226p-2f));
  p = Ops::fma(p, f, Ops::splatf(0x1.555554p-2f));
  p = Ops::fma(p, f, Ops::splatf(-0x1.000000p-1f));
  const F log1p_f = Ops::fma(Ops::mul(f, f), p, f);
  return Ops::fma(dk, Ops::splatf(0x1.62e430p-1f), log1p_f);
}

// The bits of float32 sqrt(1/2).
constexpr uint32_t kSqrtHalfBits = 0x3F3504F3u;

// split_log_argument from ix = bits(x) - bits(sqrt(1/2)) (mod 2^32).
template <class Ops>
FG_HD void split_log_bits(typename Ops::U ix, typename Ops::F& dk, typename Ops::F& f) {
  dk = Ops::i2f(Ops::sra23(ix));
  const typename Ops::U mbits =
      Ops::iadd(Ops::band(ix, Ops::splat(0x007FFFFFu)), Ops::splat(kSqrtHalfBits));
  f = Ops::sub(Ops::as_float(mbits), Ops::splatf(1.0f));
}

// Splits a positive normal float x into 2^k * m with m in [sqrt(1/2), sqrt(2)):
// returns k as float in dk and m - 1 (exact) in f.
template <class Ops>
FG_HD void split_log_argument(typename Ops::F x, typename Ops::F& dk,
                              typename Ops::F& f) {
  split_log_bits<Ops>(Ops::isub(Ops::as_bits(x), Ops::splat(kSqrtHalfBits)), dk, f);
}

// split_log_argument(-x) for a negative normal x: the sign flip and the
// subtraction are one integer addition (mod 2^32), so -x is never computed
// (the compiler kept it as a floating-point negation: one instruction per
// value).
template <class Ops>
FG_HD void split_log_argument_of_neg(typename Ops::F x, typename Ops::F& dk,
                                     typename Ops::F& f) {
  split_log_bits<Ops>(Ops::iadd(Ops::as_bits(x), Ops::splat(0x80000000u - kSqrtHalfBits)), dk, f);
}

// 32 random bits -> Gumbel(0, 1) noise, g = -log(-log u) with
// u = (r + 1/2) / 2^32 strictly inside (0, 1).
//
// Both tails are resolved: a = (t + 1/2) / 2^32 with t = r or ~r is the
// distance of u from the nearer end, so it is never rounded to 0 or 1 and small
// values keep their relative precision. For u >= 3/4 (the upper tail of g),
// -log u = -log1p(-a) is evaluated from a directly, which is what carries the
// tail out to 33 log 2 = 22.87 instead of stopping where float32(u) hits 1.
template <class Ops>
FG_HD typename Ops::F gumbel_from_bits(typename Ops::U r) {
  using U = typename Ops::U;
  using F = typename Ops::F;
  const U upper = Ops::sra31(r);     // all-ones when u >= 1/2
  const U t = Ops::bxor(r, upper);   // r or ~r, below 2^31
  // (t + 1/2) / 2^32, in (0, 1/2]: the scaling by 2^-32 is exact.
  const F a = Ops::fma(Ops::i2f(t), Ops::splatf(0x1.0p-32f), Ops::splatf(0x1.0p-33f));
  // -log u: log(a) below 1/2, log(1 - a) between 1/2 and 3/4, log1p(-a) above.
  const F w = Ops::select(upper, Ops::sub(Ops::splatf(1.0f), a), a);
  F dk, f;
  split_log_argument<Ops>(w, dk, f);
  const U near_one = Ops::band(upper, Ops::le(a, Ops::splatf(0.25f)));
  dk = Ops::select(near_one, Ops::splatf(0.0f), dk);
  f = Ops::select(near_one, Ops::neg(a), f);
  const F log_u = log_core<Ops>(dk, f);
  split_log_argument_of_neg<Ops>(log_u, dk, f);
  return Ops::neg(log_core<Ops>(dk, f));
}

// The Philox counter for the 4-element group holding `position`.
FG_HD uint64_t philox_counter(uint64_t base, uint64_t position) {
  return base + (position >> 2);
}

// The noise at one position: the scalar definition every backend must match.
FG_HD float gumbel_at(uint64_t seed, uint64_t base, uint64_t position) {
  const uint64_t ctr = philox_counter(base, position);
  uint32_t c0 = static_cast<uint32_t>(ctr), c1 = static_cast<uint32_t>(ctr >> 32);
  uint32_t c2 = 0, c3 = 0;
  philox4x32_10<ScalarOps>(c0, c1, c2, c3, static_cast<uint32_t>(seed),
                           static_cast<uint32_t>(seed >> 32));
  const uint32_t lane = static_cast<uint32_t>(position & 3);
  const uint32_t r = lane == 0 ? c0 : lane == 1 ? c1 : lane == 2 ? c2 : c3;
  return gumbel_from_bits<ScalarOps>(r);
}

// Argmax order: larger value wins; NaN beats any number (as torch.argmax);
// among equals (or NaNs) the smaller index wins. `a` is the challenger.
template <class T>
FG_HD bool argmax_better(T a, int64_t ia, T b, int64_t ib) {
  const bool a_nan = a != a, b_nan = b != b;
  if (a_nan || b_nan) return a_nan && (!b_nan || ia < ib);
  return a > b || (a == b && ia < ib);
}

// Online-softmax state of a piece of a row, in the untempered scale: m is the
// max of s = logits + noise, l = sum exp((s - m) / tau). Merging two pieces
// rescales each sum to the common max (Milakov & Gimelshein, "Online normalizer
// calculation for softmax", 2018). A piece that is all -inf has l = 0 and merges
// as the identity; NaN propagates to the row.
template <class T>
struct SoftmaxState {
  T m;
  T l;
  int64_t arg;
};

template <class T, class ExpFn>
FG_HD T rescale_factor(T m_from, T m_to, T inv_tau, ExpFn exp_fn) {
  return m_from == m_to ? T(1) : exp_fn((m_from - m_to) * inv_tau);
}

template <class T, class ExpFn>
FG_HD SoftmaxState<T> softmax_merge(SoftmaxState<T> a, SoftmaxState<T> b,
                                    T inv_tau, ExpFn exp_fn) {
  const bool b_wins = argmax_better(b.m, b.arg, a.m, a.arg);
  SoftmaxState<T> out;
  out.m = b_wins ? b.m : a.m;
  out.arg = b_wins ? b.arg : a.arg;
  out.l = a.l * rescale_factor(a.m, out.m, inv_tau, exp_fn) +
          b.l * rescale_factor(b.m, out.m, inv_tau, exp_fn);
  return out;
}

// A row whose max is not finite (all -inf, a NaN, a +inf) or whose sum is not a
// positive finite number has no valid sample: the contract asks for NaN there.
template <class T>
FG_HD bool row_is_valid(T m, T l) {
  const T inf = T(1) / T(0);
  return m == m && m > -inf && m < inf && l > T(0) && l < inf;
}

// 1/tau, clamped to [the smallest normal, the largest finite value]: a tiny
// tau gives 0 * inv_tau = 0 at the max, never NaN, and a huge one (float32's
// 1/tau rounds to 0 above about 1.4e45) a positive inv_tau, so that a masked
// -inf still maps to -inf, not -inf * 0 = NaN: the sample is uniform to rounding.
template <class T>
FG_HD T inverse_temperature(double tau, T max_finite) {
  const double min_normal = sizeof(T) == sizeof(float) ? 0x1p-126 : 0x1p-1022;
  const double inv = 1.0 / tau;
  if (inv > static_cast<double>(max_finite)) return max_finite;
  return static_cast<T>(inv < min_normal ? min_normal : inv);
}

// The sampler's score s = x * weights.x + weights.g * g, the products and the
// sum each rounded: (1, T) for a temperature T <= 1, (inverse_temperature(T),
// 1) above. Both are argmax(x + T g) up to rounding, but x + T g overflows to
// inf once T g passes the largest finite value (in float32 for T above about
// 1.5e37), and every row would have no sample; x / T + g cannot overflow. A
// weight of 1 is an exact product, so T = 1 is st_softmax's x + g.
template <class T>
struct ScoreWeights {
  T x;
  T g;
};

template <class T>
FG_HD ScoreWeights<T> sample_score_weights(double temperature, T max_finite) {
  if (temperature <= 1.0) return {T(1), static_cast<T>(temperature)};
  return {inverse_temperature<T>(temperature, max_finite), T(1)};
}

}  // namespace fused_gumbel
