// The fused CPU kernels of gumbel_topk and gumbel_topk_backward.
//
// Rows are walked as row_plan.h says: whole rows spread over the threads, one
// after another per thread with the row's buffers in cache; with fewer rows
// than threads, each row cut into segments over the threads, the segments'
// shares of every reduction combined per row (in segment order) between the
// sweeps. Per row (csrc/topk.h gives the math):
//   forward:  1. the noise pass: s = x + g tile by tile (row_plan.h's noise
//                source), kept in a row buffer, and the running top-k of s
//                (a tile is scanned only when its max can enter the list);
//             2. the k relaxation steps over the buffer, two sweeps each;
//             3. the k-hot (hard) or y_soft, and the per-step stats.
//   backward: s regenerated, the k steps replayed element by element from the
//             saved stats (bit-identical to the forward: same vector code on
//             the same lanes), every p_j kept, then the reverse sweep of
//             csrc/topk.h's recursion, two sweeps per step.
// The row buffers are padded to a multiple of the vector width with -inf
// (p = 0, a step leaves them at -inf), so every element runs the same vector
// code and no tail loop can round differently; segments start at multiples of
// the noise tile, so on vector boundaries too.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#include "../gumbel_math.h"
#include "../st_softmax.h"
#include "../topk.h"
#include "noise_cpu.h"
#include "row_plan.h"

namespace fused_gumbel {
namespace {

using at::vec::Vectorized;

using cpu::for_each_segment;
using cpu::for_rows_with_noise;
using cpu::kTile;
using cpu::NoiseSource;
using cpu::Plan;
using cpu::plan_segments;
using cpu::Segment;

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

template <typename A>
A neg_inf() {
  return -std::numeric_limits<A>::infinity();
}

// The buffer range a segment's vector sweeps cover: its columns, and the
// padding after the last column for the row's last segment. Segments start at
// multiples of kTile, so every range starts on a vector boundary.
inline int64_t sweep_end(int64_t c1, int64_t cols, int64_t width) {
  return c1 == cols ? width : c1;
}

// Pass 1 of the forward on columns [c0, c1) of a row: s = x + g into
// s[c0, c1) (and -inf into the padding if c1 is the row's end), the
// segment's top-k of s into `top`. Returns the segment's max (NaN if it holds one).
template <typename T, typename A>
A noise_pass(const T* x, int64_t c0, int64_t c1, int64_t cols, int64_t width,
             uint64_t row_position, const NoiseSource& src, A* s, TopK<A>& top) {
  using Vec = Vectorized<A>;
  alignas(64) float scratch[kTile];
  A seg_max = neg_inf<A>();
  for (int64_t t = c0; t < c1; t += kTile) {
    const int64_t n = std::min(kTile, c1 - t);
    const float* noise = src.get(row_position + static_cast<uint64_t>(t), n, scratch);
    A* st = s + t;
    at::vec::convert(x + t, st, n);
    for (int64_t j = 0; j < n; ++j) st[j] += static_cast<A>(noise[j]);
    const A tile_max = at::vec::reduce_all<A>(
        [](Vec a, Vec b) { return at::vec::maximum(a, b); }, st, n);
    seg_max = std::isnan(seg_max) || std::isnan(tile_max) ? std::numeric_limits<A>::quiet_NaN()
                                                          : std::max(seg_max, tile_max);
    if (!top.may_enter(tile_max)) continue;
    for (int64_t j = 0; j < n; ++j) top.offer(st[j], t + j);
  }
  std::fill(s + c1, s + sweep_end(c1, cols, width), neg_inf<A>());
  return seg_max;
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

template <typename A>
A vec_sum(Vectorized<A> v) {
  return at::vec::vec_reduce_all<A>([](Vectorized<A> x, Vectorized<A> y) { return x + y; }, v);
}

template <typename A>
A vec_max(Vectorized<A> v) {
  return at::vec::vec_reduce_all<A>(
      [](Vectorized<A> x, Vectorized<A> y) { return at::vec::maximum(x, y); }, v);
}

// A step's first sweep over a[i0, i1): e = exp((a - m) / tau) into e, and the
// range's share of rest: the sum of e off the maxima and the number of maxima
// (each has e = 1). rest = sum + count - 1 over the row.
template <typename A>
std::pair<A, A> rest_sweep(const A* a, A* e, int64_t i0, int64_t i1, const Step<A>& step) {
  using Vec = Vectorized<A>;
  Vec sum(A(0)), count(A(0));
  for (int64_t i = i0; i < i1; i += Vec::size()) {
    const Vec av = Vec::loadu(a + i);
    const Vec ev = step.exps(av);
    ev.store(e + i);
    const Vec is_max = av == step.m;
    sum = sum + Vec::blendv(ev, Vec(A(0)), is_max);
    count = count + Vec::blendv(Vec(A(0)), Vec(A(1)), is_max);
  }
  return {vec_sum(sum), vec_sum(count)};
}

// A step's second sweep over [i0, i1): y += p (y is null for the k-hot) and,
// unless it is the last step, a <- a + log(max(q, tiny)). Returns the max of
// the new a (-inf if last).
template <typename A>
A update_sweep(A* a, const A* e, A* y, int64_t i0, int64_t i1, const Step<A>& step, bool last) {
  using Vec = Vectorized<A>;
  Vec vmax(neg_inf<A>());
  for (int64_t i = i0; i < i1; i += Vec::size()) {
    const Vec pv = step.prob(Vec::loadu(e + i));
    if (y != nullptr) (Vec::loadu(y + i) + pv).store(y + i);
    if (last) continue;
    const Vec an = step.next(Vec::loadu(a + i), pv);
    an.store(a + i);
    vmax = at::vec::maximum(vmax, an);
  }
  return vec_max(vmax);
}

// The row's k best of its segments' lists, best first.
template <typename A>
std::vector<Candidate<A>> merge_lists(const TopK<A>* tops, int64_t n, int64_t k) {
  std::vector<Candidate<A>> all;
  for (int64_t c = 0; c < n; ++c) all.insert(all.end(), tops[c].best.begin(), tops[c].best.end());
  std::sort(all.begin(), all.end(), [](const Candidate<A>& u, const Candidate<A>& v) {
    return argmax_better(u.value, u.index, v.value, v.index);
  });
  all.resize(k);
  return all;
}

// A NaN or +inf (row max not finite), or fewer than k entries above -inf: no subset.
template <typename A>
bool has_subset(A row_max, const std::vector<Candidate<A>>& best) {
  return std::isfinite(row_max) && best.back().value > neg_inf<A>();
}

// The forward's output on columns [c0, c1): the k-hot, y_soft, or NaN.
template <typename T, typename A>
void write_sample(T* out, const A* y, int64_t c0, int64_t c1, bool valid, bool hard,
                  const std::vector<Candidate<A>>& best) {
  if (!valid) {
    std::fill(out + c0, out + c1, T(std::numeric_limits<A>::quiet_NaN()));
  } else if (hard) {
    std::fill(out + c0, out + c1, T(0));
    for (const auto& c : best) {
      if (c.index >= c0 && c.index < c1) out[c.index] = T(1);
    }
  } else {
    at::vec::convert(y + c0, out + c0, c1 - c0);
  }
}

template <typename T>
void topk_forward_kernel(const TopkForwardParams& p) {
  using A = at::opmath_type<T>;
  const A inv_tau = inverse_temperature<A>(p.tau, std::numeric_limits<A>::max());
  const A nan = std::numeric_limits<A>::quiet_NaN();
  const T* x = static_cast<const T*>(p.logits);
  T* out = static_cast<T*>(p.out);
  A* stats = static_cast<A*>(p.stats);
  const int64_t cols = p.cols, k = p.k, width = padded<A>(cols);
  const NoiseSource noise{p.seed, p.base, static_cast<uint64_t>(cols)};
  auto finish_selection = [&](int64_t r, const std::vector<Candidate<A>>& best, bool valid) {
    for (int64_t j = 0; j < k; ++j) p.index[r * k + j] = best[j].index;
    if (!valid) std::fill(stats + r * k * 2, stats + (r + 1) * k * 2, nan);
  };
  const Plan plan = plan_segments(p.rows, cols);
  if (plan.chunks == 1) {
    // Whole rows, one after another per thread, their buffers in cache.
    at::parallel_for(0, p.rows, cpu::row_grain(cols * k), [&](int64_t begin, int64_t end) {
      std::vector<A> a(width), e(width), y(width);
      TopK<A> top;
      for_rows_with_noise(noise, begin, end, cols, [&](int64_t r, const NoiseSource& src) {
        // 1. s = x + g and the top-k.
        top.reset(k);
        A m = noise_pass<T, A>(x + r * p.logits_row_stride, 0, cols, cols, width,
                               src.row_position(r), src, a.data(), top);
        const bool valid = has_subset(m, top.best);
        finish_selection(r, top.best, valid);
        // 2. The k relaxation steps: y += p_j, a <- a + log(max(q_j, tiny)).
        A* y_soft = p.hard ? nullptr : y.data();
        if (!p.hard) std::fill(y.begin(), y.end(), A(0));
        for (int64_t j = 0; valid && j < k; ++j) {
          const auto [sum, count] = rest_sweep<A>(a.data(), e.data(), 0, width, Step<A>(m, 0, inv_tau));
          const A rest = sum + count - A(1);
          stats[(r * k + j) * 2] = m;
          stats[(r * k + j) * 2 + 1] = rest;
          m = update_sweep<A>(a.data(), e.data(), y_soft, 0, width, Step<A>(m, rest, inv_tau),
                              j + 1 == k);
        }
        // 3. The sample.
        write_sample<T, A>(out + r * cols, y.data(), 0, cols, valid, p.hard, top.best);
      });
    });
    return;
  }

  // Fewer rows than threads: each row in segments over the threads, the
  // segments' shares combined per row between the sweeps (in segment order).
  const int64_t rows = p.rows, chunks = plan.chunks, segments = rows * chunks;
  std::vector<A> a(rows * width), e(rows * width), y(p.hard ? 0 : rows * width, A(0));
  std::vector<TopK<A>> tops(segments);
  std::vector<A> part_a(segments), part_b(segments), m(rows);
  std::vector<std::vector<Candidate<A>>> best(rows);
  std::vector<char> valid(rows);
  for_each_segment(plan, rows, cols, [&](int64_t s, Segment g) {
    tops[s].reset(k);
    part_a[s] = noise_pass<T, A>(x + g.r * p.logits_row_stride, g.c0, g.c1, cols, width,
                                 noise.row_position(g.r), noise, a.data() + g.r * width, tops[s]);
  });
  for (int64_t r = 0; r < rows; ++r) {
    m[r] = part_a[r * chunks];
    for (int64_t c = 1; c < chunks; ++c) {
      const A v = part_a[r * chunks + c];
      m[r] = std::isnan(m[r]) || std::isnan(v) ? nan : std::max(m[r], v);
    }
    best[r] = merge_lists(tops.data() + r * chunks, chunks, k);
    valid[r] = has_subset(m[r], best[r]);
    finish_selection(r, best[r], valid[r]);
  }
  for (int64_t j = 0; j < k; ++j) {
    for_each_segment(plan, rows, cols, [&](int64_t s, Segment g) {
      if (!valid[g.r]) return;
      const int64_t o = g.r * width;
      std::tie(part_a[s], part_b[s]) = rest_sweep<A>(a.data() + o, e.data() + o, g.c0,
                                                      sweep_end(g.c1, cols, width),
                                                      Step<A>(m[g.r], 0, inv_tau));
    });
    for (int64_t r = 0; r < rows; ++r) {
      A sum = 0, count = 0;
      for (int64_t c = 0; c < chunks; ++c) {
        sum += part_a[r * chunks + c];
        count += part_b[r * chunks + c];
      }
      stats[(r * k + j) * 2] = m[r];
      if (valid[r]) stats[(r * k + j) * 2 + 1] = sum + count - A(1);
    }
    for_each_segment(plan, rows, cols, [&](int64_t s, Segment g) {
      if (!valid[g.r]) return;
      const int64_t o = g.r * width;
      const Step<A> step(m[g.r], stats[(g.r * k + j) * 2 + 1], inv_tau);
      part_a[s] = update_sweep<A>(a.data() + o, e.data() + o, p.hard ? nullptr : y.data() + o,
                                  g.c0, sweep_end(g.c1, cols, width), step, j + 1 == k);
    });
    for (int64_t r = 0; r < rows; ++r) {
      m[r] = part_a[r * chunks];
      for (int64_t c = 1; c < chunks; ++c) m[r] = std::max(m[r], part_a[r * chunks + c]);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    if (!valid[r]) std::fill(stats + r * k * 2, stats + (r + 1) * k * 2, nan);
  }
  for_each_segment(plan, rows, cols, [&](int64_t, Segment g) {
    write_sample<T, A>(out + g.r * cols, p.hard ? nullptr : y.data() + g.r * width, g.c0, g.c1,
                       valid[g.r], p.hard, best[g.r]);
  });
}

// The backward's buffers for one row: s (then gp), the incoming gradient, ga,
// and every step's p_j (k rows of `width`).
template <typename A>
struct RowGrad {
  A* a;
  A* gy;
  A* ga;
  A* probs;
};

// Backward, first pass on columns [c0, c1): s = x + g, the incoming gradient,
// and the k steps replayed from the saved statistics, keeping every p_j.
template <typename T, typename A>
void replay_segment(const TopkBackwardParams& p, int64_t r, int64_t c0, int64_t c1,
                    int64_t width, const NoiseSource& src, A inv_tau, const RowGrad<A>& b) {
  using Vec = Vectorized<A>;
  const int64_t cols = p.cols, k = p.k, i1 = sweep_end(c1, cols, width);
  const A* stats = static_cast<const A*>(p.stats) + r * k * 2;
  const T* x = static_cast<const T*>(p.logits) + r * p.logits_row_stride;
  alignas(64) float scratch[kTile];
  for (int64_t t = c0; t < c1; t += kTile) {
    const int64_t n = std::min(kTile, c1 - t);
    const float* g = src.get(src.row_position(r) + static_cast<uint64_t>(t), n, scratch);
    at::vec::convert(x + t, b.a + t, n);
    for (int64_t j = 0; j < n; ++j) b.a[t + j] += static_cast<A>(g[j]);
  }
  std::fill(b.a + c1, b.a + i1, neg_inf<A>());
  at::vec::convert(static_cast<const T*>(p.grad) + r * p.grad_row_stride + c0, b.gy + c0, c1 - c0);
  std::fill(b.gy + c1, b.gy + i1, A(0));
  std::fill(b.ga + c0, b.ga + i1, A(0));
  for (int64_t j = 0; j < k; ++j) {
    const Step<A> step(stats[2 * j], stats[2 * j + 1], inv_tau);
    A* pj = b.probs + j * width;
    for (int64_t i = c0; i < i1; i += Vec::size()) {
      const Vec av = Vec::loadu(b.a + i);
      const Vec pv = step.prob(step.exps(av));
      pv.store(pj + i);
      if (j + 1 < k) step.next(av, pv).store(b.a + i);
    }
  }
}

// Step j of the reverse sweep, first half on [i0, i1): gp_j = gy - ga_{j+1} / q_j
// into b.a; returns the range's share of d_j = sum(gp_j * p_j).
template <typename A>
A gp_sweep(const RowGrad<A>& b, int64_t j, int64_t width, int64_t i0, int64_t i1,
           const Step<A>& step) {
  using Vec = Vectorized<A>;
  const A* pj = b.probs + j * width;
  Vec dot(A(0));
  for (int64_t i = i0; i < i1; i += Vec::size()) {
    const Vec pv = Vec::loadu(pj + i);
    const Vec gp = Vec::loadu(b.gy + i) - Vec::loadu(b.ga + i) * step.inv_q(pv);
    gp.store(b.a + i);
    dot = dot + gp * pv;
  }
  return vec_sum(dot);
}

// Second half: ga_j = ga_{j+1} + p_j (gp_j - d_j) / tau.
template <typename A>
void ga_sweep(const RowGrad<A>& b, int64_t j, int64_t width, int64_t i0, int64_t i1, A d,
              A inv_tau) {
  using Vec = Vectorized<A>;
  const A* pj = b.probs + j * width;
  const Vec vd(d), vinv(inv_tau);
  for (int64_t i = i0; i < i1; i += Vec::size()) {
    const Vec pv = Vec::loadu(pj + i);
    (Vec::loadu(b.ga + i) + vinv * pv * (Vec::loadu(b.a + i) - vd)).store(b.ga + i);
  }
}

template <typename T>
void topk_backward_kernel(const TopkBackwardParams& p) {
  using A = at::opmath_type<T>;
  const A inv_tau = inverse_temperature<A>(p.tau, std::numeric_limits<A>::max());
  T* out = static_cast<T*>(p.grad_logits);
  const A* stats = static_cast<const A*>(p.stats);
  const int64_t cols = p.cols, k = p.k, width = padded<A>(cols);
  const NoiseSource noise{static_cast<uint64_t>(p.rng_state[0]),
                          static_cast<uint64_t>(p.rng_state[1]), static_cast<uint64_t>(cols)};
  // The forward found no subset: the row's gradient is NaN.
  auto no_subset = [&](int64_t r) { return std::isnan(stats[r * k * 2]); };
  const Plan plan = plan_segments(p.rows, cols);
  if (plan.chunks == 1) {
    at::parallel_for(0, p.rows, cpu::row_grain(cols * k), [&](int64_t begin, int64_t end) {
      std::vector<A> a(width), gy(width), ga(width), probs(k * width);
      const RowGrad<A> b{a.data(), gy.data(), ga.data(), probs.data()};
      for_rows_with_noise(noise, begin, end, cols, [&](int64_t r, const NoiseSource& src) {
        T* out_r = out + r * cols;
        if (no_subset(r)) {
          std::fill(out_r, out_r + cols, T(std::numeric_limits<A>::quiet_NaN()));
          return;
        }
        replay_segment<T, A>(p, r, 0, cols, width, src, inv_tau, b);
        for (int64_t j = k - 1; j >= 0; --j) {
          const Step<A> step(stats[(r * k + j) * 2], stats[(r * k + j) * 2 + 1], inv_tau);
          const A d = gp_sweep<A>(b, j, width, 0, width, step);
          ga_sweep<A>(b, j, width, 0, width, d, inv_tau);
        }
        at::vec::convert(ga.data(), out_r, cols);
      });
    });
    return;
  }

  const int64_t rows = p.rows, chunks = plan.chunks;
  std::vector<A> a(rows * width), gy(rows * width), ga(rows * width), probs(rows * k * width);
  std::vector<A> part(rows * chunks);
  auto bufs = [&](int64_t r) {
    return RowGrad<A>{a.data() + r * width, gy.data() + r * width, ga.data() + r * width,
                      probs.data() + r * k * width};
  };
  for_each_segment(plan, rows, cols, [&](int64_t, Segment g) {
    if (!no_subset(g.r)) replay_segment<T, A>(p, g.r, g.c0, g.c1, width, noise, inv_tau, bufs(g.r));
  });
  for (int64_t j = k - 1; j >= 0; --j) {
    for_each_segment(plan, rows, cols, [&](int64_t s, Segment g) {
      if (no_subset(g.r)) return;
      const Step<A> step(stats[(g.r * k + j) * 2], stats[(g.r * k + j) * 2 + 1], inv_tau);
      part[s] = gp_sweep<A>(bufs(g.r), j, width, g.c0, sweep_end(g.c1, cols, width), step);
    });
    for_each_segment(plan, rows, cols, [&](int64_t, Segment g) {
      if (no_subset(g.r)) return;
      A d = 0;
      for (int64_t c = 0; c < chunks; ++c) d += part[g.r * chunks + c];
      ga_sweep<A>(bufs(g.r), j, width, g.c0, sweep_end(g.c1, cols, width), d, inv_tau);
    });
  }
  for_each_segment(plan, rows, cols, [&](int64_t, Segment g) {
    T* out_r = out + g.r * cols;
    if (no_subset(g.r)) {
      std::fill(out_r + g.c0, out_r + g.c1, T(std::numeric_limits<A>::quiet_NaN()));
    } else {
      at::vec::convert(ga.data() + g.r * width + g.c0, out_r + g.c0, g.c1 - g.c0);
    }
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
  register_topk_tau_tensor_siblings<&gumbel_topk_cpu, &gumbel_topk_backward_cpu>(m);
}

}  // namespace fused_gumbel
