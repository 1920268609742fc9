// The fused CPU kernels of gumbel_topk and gumbel_topk_backward.
//
// One row per task (rows are spread over the threads; a row is never split:
// every relaxation step is a reduction over the whole row). Per row, with the
// row's buffers in cache (csrc/topk.h gives the math):
//   forward:  1. the noise pass: s = x + g tile by tile (row_plan.h's noise
//                source), kept in a row buffer, and the running top-k of s
//                (a tile is scanned only when its max can enter the list);
//             2. the k relaxation steps over the buffer, two sweeps each;
//             3. the k-hot (hard) or y_soft, and the per-step stats.
//   backward: s regenerated, the k steps replayed element by element from the
//             saved stats (bit-identical to the forward: same vector code on
//             the same lanes), every p_j kept, then the reverse sweep of
//             csrc/topk.h's recursion, one reduction per step.
// The row buffers are padded to a multiple of the vector width with -inf
// (p = 0, a step leaves them at -inf), so every element runs the same vector
// code and no tail loop can round differently.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../gumbel_math.h"
#include "../st_softmax.h"
#include "../topk.h"
#include "noise_cpu.h"
#include "row_plan.h"

namespace fused_gumbel {
namespace {

using at::vec::Vectorized;

using cpu::for_rows_with_noise;
using cpu::kTile;
using cpu::NoiseSource;

template <typename A>
struct Candidate {
  A value;
  int64_t index;
};

// The k best (value, index) of a row so far under argmax_better (larger value,
// NaN first, ties to the lower index), best first. Elements arrive in index
// order, so a later element equal to the worst kept one never enters.
template <typename A>
struct TopK {
  std::vector<Candidate<A>> best;
  int64_t k;

  void reset(int64_t k_) {
    k = k_;
    best.clear();
  }

  // Whether a tile whose max is tile_max (NaN if it holds one) can change the
  // list: a later NaN loses to a kept NaN, no number beats one.
  bool may_enter(A tile_max) const {
    if (static_cast<int64_t>(best.size()) < k) return true;
    const A worst = best.back().value;
    return std::isnan(tile_max) ? !std::isnan(worst) : tile_max > worst;
  }

  void offer(A v, int64_t i) {
    const bool full = static_cast<int64_t>(best.size()) == k;
    if (full && !argmax_better(v, i, best.back().value, best.back().index)) return;
    if (full) best.pop_back();
    auto pos = best.end();
    while (pos != best.begin() && argmax_better(v, i, (pos - 1)->value, (pos - 1)->index)) --pos;
    best.insert(pos, Candidate<A>{v, i});
  }
};

template <typename A>
int64_t padded(int64_t cols) {
  const int64_t w = Vectorized<A>::size();
  return (cols + w - 1) / w * w;
}

// Pass 1 of the forward: s = x + g into s[0, cols) (-inf up to the padding)
// and the row's top-k of s. Returns the row's max (NaN if it holds one).
template <typename T, typename A>
A noise_pass(const T* x, int64_t cols, uint64_t row_position, const NoiseSource& src,
             A* s, TopK<A>& top) {
  using Vec = Vectorized<A>;
  alignas(64) float scratch[kTile];
  A row_max = -std::numeric_limits<A>::infinity();
  for (int64_t t = 0; t < cols; t += kTile) {
    const int64_t n = std::min(kTile, cols - t);
    const float* noise = src.get(row_position + static_cast<uint64_t>(t), n, scratch);
    A* st = s + t;
    at::vec::convert(x + t, st, n);
    for (int64_t j = 0; j < n; ++j) st[j] += static_cast<A>(noise[j]);
    const A tile_max = at::vec::reduce_all<A>(
        [](Vec a, Vec b) { return at::vec::maximum(a, b); }, st, n);
    row_max = std::isnan(row_max) || std::isnan(tile_max) ? std::numeric_limits<A>::quiet_NaN()
                                                          : std::max(row_max, tile_max);
    if (!top.may_enter(tile_max)) continue;
    for (int64_t j = 0; j < n; ++j) top.offer(st[j], t + j);
  }
  std::fill(s + cols, s + padded<A>(cols), -std::numeric_limits<A>::infinity());
  return row_max;
}

// The vector body of one relaxation step, shared by the forward and the
// backward so both get the same bits: e = exp((a - m) / tau), p = e / l.
template <typename A>
struct Step {
  using Vec = Vectorized<A>;
  Vec m, inv_tau, inv_l, rest_over_l, tiny;

  Step(A m_, A rest, A inv_tau_)
      : m(m_), inv_tau(inv_tau_), inv_l(A(1) / (A(1) + rest)),
        rest_over_l(rest * (A(1) / (A(1) + rest))), tiny(std::numeric_limits<A>::min()) {}

  Vec exps(Vec a) const { return ((a - m) * inv_tau).exp(); }
  Vec prob(Vec e) const { return e * inv_l; }
  // q = 1 - p without cancellation (csrc/topk.h), before the clamp.
  Vec one_minus(Vec p) const {
    return Vec::blendv(Vec(A(1)) - p, rest_over_l, p > Vec(A(0.5)));
  }
  Vec next(Vec a, Vec p) const { return a + at::vec::maximum(one_minus(p), tiny).log(); }
  // d log(max(q, tiny)) / dq: 1 / q, 0 where the clamp is active.
  Vec inv_q(Vec p) const {
    const Vec q = one_minus(p);
    return Vec::blendv(Vec(A(0)), Vec(A(1)) / q, q >= tiny);
  }
};

// rest = sum over every element but one maximum of e (the maxima have e = 1).
template <typename A>
A rest_sum(const A* a, A* e, int64_t n, const Step<A>& step) {
  using Vec = Vectorized<A>;
  Vec sum(A(0)), count(A(0));
  for (int64_t j = 0; j < n; j += Vec::size()) {
    const Vec av = Vec::loadu(a + j);
    const Vec ev = step.exps(av);
    ev.store(e + j);
    const Vec is_max = av == step.m;
    sum = sum + Vec::blendv(ev, Vec(A(0)), is_max);
    count = count + Vec::blendv(Vec(A(0)), Vec(A(1)), is_max);
  }
  auto add = [](Vec x, Vec y) { return x + y; };
  return at::vec::vec_reduce_all<A>(add, sum) + at::vec::vec_reduce_all<A>(add, count) - A(1);
}

template <typename A>
A vec_max(const A* a, int64_t n) {
  return at::vec::reduce_all<A>([](Vectorized<A> x, Vectorized<A> y) { return at::vec::maximum(x, y); },
                                a, n);
}

template <typename T>
void topk_forward_kernel(const TopkForwardParams& p) {
  using A = at::opmath_type<T>;
  using Vec = Vectorized<A>;
  const A inv_tau = inverse_temperature<A>(p.tau, std::numeric_limits<A>::max());
  const A nan = std::numeric_limits<A>::quiet_NaN();
  const T* x = static_cast<const T*>(p.logits);
  T* out = static_cast<T*>(p.out);
  A* stats = static_cast<A*>(p.stats);
  const int64_t cols = p.cols, k = p.k, width = padded<A>(cols);
  const NoiseSource noise{p.seed, p.base, static_cast<uint64_t>(cols)};
  at::parallel_for(0, p.rows, cpu::row_grain(cols * k), [&](int64_t begin, int64_t end) {
    std::vector<A> a(width), e(width), y(width);
    TopK<A> top;
    for_rows_with_noise(noise, begin, end, cols, [&](int64_t r, const NoiseSource& src) {
      // 1. s = x + g and the top-k.
      top.reset(k);
      const A row_max = noise_pass<T, A>(x + r * p.logits_row_stride, cols,
                                         src.row_position(r), src, a.data(), top);
      for (int64_t j = 0; j < k; ++j) p.index[r * k + j] = top.best[j].index;
      T* out_r = out + r * cols;
      A* stats_r = stats + r * k * 2;
      // A NaN or +inf, or fewer than k entries above -inf: no subset.
      const bool valid = std::isfinite(row_max) &&
                         top.best.back().value > -std::numeric_limits<A>::infinity();
      if (!valid) {
        std::fill(stats_r, stats_r + 2 * k, nan);
        std::fill(out_r, out_r + cols, T(nan));
        return;
      }
      // 2. The k relaxation steps: y += p_j, a <- a + log(max(q_j, tiny)).
      std::fill(y.begin(), y.end(), A(0));
      A m = row_max;
      for (int64_t j = 0; j < k; ++j) {
        const A rest = rest_sum<A>(a.data(), e.data(), width, Step<A>(m, A(0), inv_tau));
        const Step<A> step(m, rest, inv_tau);
        stats_r[2 * j] = m;
        stats_r[2 * j + 1] = rest;
        const bool last = j + 1 == k;
        Vec vmax(-std::numeric_limits<A>::infinity());
        for (int64_t i = 0; i < width; i += Vec::size()) {
          const Vec pv = step.prob(Vec::loadu(e.data() + i));
          (Vec::loadu(y.data() + i) + pv).store(y.data() + i);
          if (last) continue;
          const Vec an = step.next(Vec::loadu(a.data() + i), pv);
          an.store(a.data() + i);
          vmax = at::vec::maximum(vmax, an);
        }
        m = at::vec::vec_reduce_all<A>([](Vec u, Vec v) { return at::vec::maximum(u, v); }, vmax);
      }
      // 3. The sample.
      if (p.hard) {
        std::fill(out_r, out_r + cols, T(0));
        for (int64_t j = 0; j < k; ++j) out_r[top.best[j].index] = T(1);
      } else {
        at::vec::convert(y.data(), out_r, cols);
      }
    });
  });
}

template <typename T>
void topk_backward_kernel(const TopkBackwardParams& p) {
  using A = at::opmath_type<T>;
  using Vec = Vectorized<A>;
  const A inv_tau = inverse_temperature<A>(p.tau, std::numeric_limits<A>::max());
  const T* x = static_cast<const T*>(p.logits);
  const T* grad = static_cast<const T*>(p.grad);
  T* out = static_cast<T*>(p.grad_logits);
  const A* stats = static_cast<const A*>(p.stats);
  const int64_t cols = p.cols, k = p.k, width = padded<A>(cols);
  const NoiseSource noise{static_cast<uint64_t>(p.rng_state[0]),
                          static_cast<uint64_t>(p.rng_state[1]), static_cast<uint64_t>(cols)};
  at::parallel_for(0, p.rows, cpu::row_grain(cols * k), [&](int64_t begin, int64_t end) {
    std::vector<A> a(width), gy(width, A(0)), ga(width), probs(k * width);
    alignas(64) float scratch[kTile];
    for_rows_with_noise(noise, begin, end, cols, [&](int64_t r, const NoiseSource& src) {
      const A* stats_r = stats + r * k * 2;
      T* out_r = out + r * cols;
      if (std::isnan(stats_r[0])) {  // the forward found no subset
        std::fill(out_r, out_r + cols, T(std::numeric_limits<A>::quiet_NaN()));
        return;
      }
      // 1. s = x + g, as in the forward.
      const T* x_r = x + r * p.logits_row_stride;
      for (int64_t t = 0; t < cols; t += kTile) {
        const int64_t n = std::min(kTile, cols - t);
        const float* g = src.get(src.row_position(r) + static_cast<uint64_t>(t), n, scratch);
        at::vec::convert(x_r + t, a.data() + t, n);
        for (int64_t j = 0; j < n; ++j) a[t + j] += static_cast<A>(g[j]);
      }
      std::fill(a.begin() + cols, a.end(), -std::numeric_limits<A>::infinity());
      at::vec::convert(grad + r * p.grad_row_stride, gy.data(), cols);
      // 2. Replay the steps: every p_j.
      for (int64_t j = 0; j < k; ++j) {
        const Step<A> step(stats_r[2 * j], stats_r[2 * j + 1], inv_tau);
        A* pj = probs.data() + j * width;
        for (int64_t i = 0; i < width; i += Vec::size()) {
          const Vec av = Vec::loadu(a.data() + i);
          const Vec pv = step.prob(step.exps(av));
          pv.store(pj + i);
          if (j + 1 < k) step.next(av, pv).store(a.data() + i);
        }
      }
      // 3. Reverse: gp_j = gy - ga_{j+1} / q_j, ga_j = ga_{j+1} + p_j (gp_j - <gp_j, p_j>) / tau.
      std::fill(ga.begin(), ga.end(), A(0));
      for (int64_t j = k - 1; j >= 0; --j) {
        const Step<A> step(stats_r[2 * j], stats_r[2 * j + 1], inv_tau);
        const A* pj = probs.data() + j * width;
        Vec dot(A(0));
        for (int64_t i = 0; i < width; i += Vec::size()) {
          const Vec pv = Vec::loadu(pj + i);
          const Vec gp = Vec::loadu(gy.data() + i) - Vec::loadu(ga.data() + i) * step.inv_q(pv);
          gp.store(a.data() + i);
          dot = dot + gp * pv;
        }
        const Vec d(at::vec::vec_reduce_all<A>([](Vec u, Vec v) { return u + v; }, dot));
        const Vec vinv(inv_tau);
        for (int64_t i = 0; i < width; i += Vec::size()) {
          const Vec pv = Vec::loadu(pj + i);
          const Vec gav = Vec::loadu(ga.data() + i) + vinv * pv * (Vec::loadu(a.data() + i) - d);
          gav.store(ga.data() + i);
        }
      }
      at::vec::convert(ga.data(), out_r, cols);
    });
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gumbel_topk_cpu(
    const at::Tensor& logits, int64_t k, double tau, bool hard, int64_t dim,
    std::optional<int64_t> seed) {
  TopkForwardOutputs o = prepare_topk_forward(logits, k, tau, hard, dim);
  o.params.seed = seed.has_value() ? seed_bits(*seed) : draw_seed_cpu();
  o.params.base = 0;
  o.params.rng_state[0] = static_cast<int64_t>(o.params.seed);
  o.params.rng_state[1] = 0;
  if (o.params.rows > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(),
                                    "gumbel_topk_cpu",
                                    [&] { topk_forward_kernel<scalar_t>(o.params); });
  }
  return {o.out, o.index, o.stats, o.rng_state};
}

at::Tensor gumbel_topk_backward_cpu(const at::Tensor& grad, const at::Tensor& logits,
                                    const at::Tensor& stats, const at::Tensor& rng_state,
                                    int64_t k, double tau, int64_t dim) {
  TopkBackwardInputs b = prepare_topk_backward(grad, logits, stats, rng_state, k, tau, dim);
  if (b.params.rows > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(),
                                    "gumbel_topk_backward_cpu",
                                    [&] { topk_backward_kernel<scalar_t>(b.params); });
  }
  return b.grad_logits;
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_gumbel, CPU, m) {
  m.impl("gumbel_topk", &gumbel_topk_cpu);
  m.impl("gumbel_topk_backward", &gumbel_topk_backward_cpu);
}

}  // namespace fused_gumbel
