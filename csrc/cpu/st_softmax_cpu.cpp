// The fused CPU kernels of st_softmax and st_softmax_backward.
//
// A row is processed in segments. Pass 1 of a segment reads the logits once,
// adds the noise tile by tile (csrc/cpu/noise_cpu.cpp), keeps s = x + g in a
// buffer that stays in cache, and reduces it to a SoftmaxState (max, argmax,
// sum). Pass 2 writes the output from that buffer. When there are at least as
// many rows as threads a segment is a whole row and both passes run back to
// back; with fewer rows, each row is split over the threads and the segment
// states are merged (softmax_merge, the same code the CUDA split-row path uses)
// before pass 2.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../gumbel_math.h"
#include "../shard.h"
#include "../st_softmax.h"
#include "huge_pages.h"
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
using cpu::row_grain;
using cpu::Segment;
using cpu::tiles;

template <typename A>
A exp_acc(A v) {
  return std::exp(v);
}

template <typename A>
A neg_inf() {
  return -std::numeric_limits<A>::infinity();
}

// s[j] = x[j] + noise[j] for j < n; returns max(s), NaN if any s[j] is NaN.
// float and double logits are read in place; reduced types are widened into s
// first.
template <typename T, typename A>
A add_noise(const T* x, const float* noise, A* s, int64_t n) {
  using Vec = Vectorized<A>;
  const A* xs = s;
  if constexpr (std::is_same_v<T, A>) {
    xs = x;
  } else {
    at::vec::convert(x, s, n);
  }
  Vec vmax(neg_inf<A>());
  int64_t j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) {
    Vec v;
    if constexpr (std::is_same_v<A, float>) {
      v = Vec::loadu(xs + j) + Vec::loadu(noise + j);
    } else {
      alignas(64) A g[Vec::size()];
      for (int k = 0; k < Vec::size(); ++k) g[k] = static_cast<A>(noise[j + k]);
      v = Vec::loadu(xs + j) + Vec::loadu(g);
    }
    v.store(s + j);
    vmax = at::vec::maximum(vmax, v);
  }
  A tile_max = at::vec::vec_reduce_all<A>(
      [](Vec a, Vec b) { return at::vec::maximum(a, b); }, vmax);
  for (; j < n; ++j) {
    s[j] = xs[j] + static_cast<A>(noise[j]);
    tile_max = std::isnan(s[j]) || s[j] > tile_max ? s[j] : tile_max;
  }
  return tile_max;
}

// The first k < n with s[k] == target (or NaN, for a NaN target); target must
// occur in s.
template <typename A>
int64_t first_index_of(const A* s, int64_t n, A target) {
  using Vec = Vectorized<A>;
  int64_t k = 0;
  if (!std::isnan(target)) {
    const Vec vt(target);
    for (; k + Vec::size() <= n; k += Vec::size()) {
      // zero_mask has a bit set for each lane of (s != target) that is zero.
      const int hits = (Vec::loadu(s + k) != vt).zero_mask();
      if (hits != 0) return k + __builtin_ctz(static_cast<unsigned>(hits));
    }
  }
  for (; k < n; ++k) {
    if (std::isnan(target) ? std::isnan(s[k]) : s[k] == target) return k;
  }
  return n;
}

// Pass 1 of the forward for columns [c0, c1) of a row, in one sweep of tiles
// that stay in L1: noise, s = x + g, running max and argmax, and the running
// sum rescaled to the running max (online softmax). buf gets
// exp((s - m_tile) / tau) and ref[t] the max m_tile that tile t was taken
// against, so pass 2 needs one multiply per element.
template <typename T, typename A>
SoftmaxState<A> segment_forward(const T* x, int64_t c0, int64_t c1,
                                uint64_t row_position, const NoiseSource& src,
                                A inv_tau, A* buf, A* ref) {
  using Vec = Vectorized<A>;
  alignas(64) float scratch[kTile];
  alignas(64) A s[kTile];
  SoftmaxState<A> st{neg_inf<A>(), A(0), c0};
  for (int64_t t = c0, tile = 0; t < c1; t += kTile, ++tile) {
    const int64_t n = std::min(kTile, c1 - t);
    const float* noise = src.get(row_position + static_cast<uint64_t>(t), n, scratch);
    const A tile_max = add_noise<T, A>(x + t, noise, s, n);
    // The scan for the first maximal index runs only when the tile improves
    // on the running max: a handful of times per row for random data.
    const A m_old = st.m;
    if (!std::isnan(st.m) && (std::isnan(tile_max) || tile_max > st.m)) {
      st.m = tile_max;
      st.arg = t + first_index_of(s, n, tile_max);
    }
    ref[tile] = st.m;
    if (st.m == neg_inf<A>()) {
      // All -inf so far: contributes 0, and merges as the identity.
      std::fill(buf + (t - c0), buf + (t - c0) + n, A(0));
      continue;
    }
    const Vec vm(st.m), vinv(inv_tau);
    Vec vsum(A(0));
    A* e = buf + (t - c0);
    int64_t j = 0;
    for (; j + Vec::size() <= n; j += Vec::size()) {
      const Vec ev = ((Vec::loadu(s + j) - vm) * vinv).exp();
      ev.store(e + j);
      vsum = vsum + ev;
    }
    A sum = at::vec::vec_reduce_all<A>([](Vec a, Vec b) { return a + b; }, vsum);
    for (; j < n; ++j) {
      const A ev = exp_acc((s[j] - st.m) * inv_tau);
      e[j] = ev;
      sum += ev;
    }
    st.l = st.l * rescale_factor(m_old, st.m, inv_tau, exp_acc<A>) + sum;
  }
  return st;
}

// Pass 2 of the forward for columns [c0, c1): the soft sample from the
// exponentials in buf (tile t relative to its max ref[t]) into `soft`, and with
// hard=True the one-hot into `out`. `soft` is `out` when hard=False, the kept
// soft sample (keeps_soft_sample) when hard=True.
template <typename T, typename A>
void segment_write(T* out, T* soft, int64_t c0, int64_t c1,
                   const SoftmaxState<A>& row, A inv_tau, const A* buf, const A* ref,
                   bool hard) {
  using Vec = Vectorized<A>;
  for (int64_t t = c0, tile = 0; t < c1; t += kTile, ++tile) {
    const int64_t n = std::min(kTile, c1 - t);
    const Vec scale(rescale_factor(ref[tile], row.m, inv_tau, exp_acc<A>) / row.l);
    at::vec::map([scale](Vec v) { return v * scale; }, soft + t, buf + (t - c0), n);
  }
  if (!hard) return;
  if (!row_is_valid(row.m, row.l)) {
    std::fill(out + c0, out + c1, T(std::numeric_limits<float>::quiet_NaN()));
    return;
  }
  std::fill(out + c0, out + c1, T(0));
  if (row.arg >= c0 && row.arg < c1) out[row.arg] = T(1);
}

template <typename T>
void forward_kernel(const ForwardParams& p) {
  using A = at::opmath_type<T>;
  const A inv_tau = inverse_temperature<A>(p.tau, std::numeric_limits<A>::max());
  const T* x = static_cast<const T*>(p.logits);
  T* out = static_cast<T*>(p.out);
  T* soft = p.hard ? static_cast<T*>(p.y_soft) : out;
  TORCH_INTERNAL_ASSERT(soft != nullptr, "the CPU kernel keeps the soft sample with hard=True");
  A* stats = static_cast<A*>(p.stats);
  const int64_t cols = p.cols;
  auto finish_row = [&](int64_t r, const SoftmaxState<A>& st) {
    p.index[r] = st.arg;
    stats[2 * r] = st.m;
    stats[2 * r + 1] = st.l;
  };

  const NoiseSource noise{p.seed, p.base, static_cast<uint64_t>(p.noise_row_stride),
                          static_cast<uint64_t>(p.noise_offset)};
  const Plan plan = plan_segments(p.rows, cols);
  if (plan.chunks == 1) {
    at::parallel_for(0, p.rows, row_grain(cols), [&](int64_t begin, int64_t end) {
      std::vector<A> buf(cols), ref(tiles(cols));
      for_rows_with_noise(noise, begin, end, cols, [&](int64_t r, const NoiseSource& src) {
        const SoftmaxState<A> st = segment_forward<T, A>(
            x + r * p.logits_row_stride, 0, cols, src.row_position(r),
            src, inv_tau, buf.data(), ref.data());
        segment_write<T, A>(out + r * cols, soft + r * cols, 0, cols,
                            st, inv_tau, buf.data(), ref.data(), p.hard);
        finish_row(r, st);
      });
    });
    return;
  }

  const int64_t segments = p.rows * plan.chunks;
  // Segment k's tiles start at tile k * tiles(chunk_len) of `ref`.
  const int64_t seg_tiles = tiles(plan.chunk_len);
  // Every element of buf is written before it is read.
  const at::Tensor buf_t = empty_output({p.rows * cols}, at::TensorOptions(c10::CppTypeToScalarType<A>::value));
  A* const buf = buf_t.data_ptr<A>();
  std::vector<A> ref(segments * seg_tiles);
  std::vector<SoftmaxState<A>> parts(segments);
  for_each_segment(plan, p.rows, cols, [&](int64_t k, Segment g) {
    parts[k] = segment_forward<T, A>(x + g.r * p.logits_row_stride, g.c0, g.c1,
                                     noise.row_position(g.r), noise,
                                     inv_tau, buf + g.r * cols + g.c0,
                                     ref.data() + k * seg_tiles);
  });
  std::vector<SoftmaxState<A>> rows_state(p.rows);
  for (int64_t r = 0; r < p.rows; ++r) {
    SoftmaxState<A> st = parts[r * plan.chunks];
    for (int64_t c = 1; c < plan.chunks; ++c) {
      st = softmax_merge(st, parts[r * plan.chunks + c], inv_tau, exp_acc<A>);
    }
    rows_state[r] = st;
    finish_row(r, st);
  }
  for_each_segment(plan, p.rows, cols, [&](int64_t k, Segment g) {
    segment_write<T, A>(out + g.r * cols, soft + g.r * cols, g.c0, g.c1, rows_state[g.r],
                        inv_tau, buf + g.r * cols + g.c0,
                        ref.data() + k * seg_tiles, p.hard);
  });
}

// Pass 1 of the backward for columns [c0, c1): the partial sum(grad * y_soft).
// A saved soft sample is read in place; otherwise the soft sample is
// recomputed from logits, noise and the row's stats into buf, for pass 2.
template <typename T, typename A>
A segment_backward_dot(const BackwardParams& p, int64_t r, int64_t c0, int64_t c1,
                       const NoiseSource& src, A inv_tau, A* buf) {
  using Vec = Vectorized<A>;
  const auto mul = [](Vec a, Vec b) { return a * b; };
  const auto add = [](Vec a, Vec b) { return a + b; };
  const T* grad = static_cast<const T*>(p.grad) + r * p.grad_row_stride;
  if (p.y_soft != nullptr) {
    const T* y = static_cast<const T*>(p.y_soft) + r * p.y_soft_row_stride;
    return at::vec::map2_reduce_all<T>(mul, add, grad + c0, y + c0, c1 - c0);
  }
  const A* stats = static_cast<const A*>(p.stats);
  const A m = stats[2 * r], inv_l = A(1) / stats[2 * r + 1];
  const T* x = static_cast<const T*>(p.logits) + r * p.logits_row_stride;
  alignas(64) float scratch[kTile];
  alignas(64) A g[kTile];
  A dot = 0;
  for (int64_t t = c0; t < c1; t += kTile) {
    const int64_t n = std::min(kTile, c1 - t);
    A* y = buf + (t - c0);
    const float* noise = src.get(src.row_position(r) + static_cast<uint64_t>(t), n, scratch);
    at::vec::convert(x + t, y, n);
    if constexpr (std::is_same_v<A, float>) {
      at::vec::map2(
          [m, inv_tau, inv_l](Vec a, Vec e) {
            return ((a + e - Vec(m)) * Vec(inv_tau)).exp() * Vec(inv_l);
          },
          y, y, noise, n);
    } else {
      for (int64_t j = 0; j < n; ++j) {
        y[j] = std::exp((y[j] + static_cast<A>(noise[j]) - m) * inv_tau) * inv_l;
      }
    }
    at::vec::convert(grad + t, g, n);
    dot += at::vec::map2_reduce_all<A>(mul, add, g, y, n);
  }
  return dot;
}

// Pass 2: grad_logits = inv_tau * y_soft * (grad - dot), y_soft saved or in buf.
template <typename T, typename A>
void segment_backward_write(const BackwardParams& p, int64_t r, int64_t c0,
                            int64_t c1, A dot, A inv_tau, A* buf) {
  using Vec = Vectorized<A>;
  const auto grad_logits = [dot, inv_tau](Vec y, Vec g) {
    return Vec(inv_tau) * y * (g - Vec(dot));
  };
  const T* grad = static_cast<const T*>(p.grad) + r * p.grad_row_stride;
  T* out = static_cast<T*>(p.grad_logits) + r * p.cols;
  if (p.y_soft != nullptr) {
    const T* y = static_cast<const T*>(p.y_soft) + r * p.y_soft_row_stride;
    at::vec::map2(grad_logits, out + c0, y + c0, grad + c0, c1 - c0);
    return;
  }
  alignas(64) A g[kTile];
  for (int64_t t = c0; t < c1; t += kTile) {
    const int64_t n = std::min(kTile, c1 - t);
    A* y = buf + (t - c0);
    at::vec::convert(grad + t, g, n);
    at::vec::map2(grad_logits, y, y, g, n);
    at::vec::convert(y, out + t, n);
  }
}

template <typename T>
void backward_kernel(const BackwardParams& p) {
  using A = at::opmath_type<T>;
  const A inv_tau = inverse_temperature<A>(p.tau, std::numeric_limits<A>::max());
  const uint64_t seed = static_cast<uint64_t>(p.rng_state[0]);
  const uint64_t base = static_cast<uint64_t>(p.rng_state[1]);
  const int64_t cols = p.cols;
  const bool recompute = p.y_soft == nullptr;
  const NoiseSource noise{seed, base, static_cast<uint64_t>(cols)};
  const Plan plan = plan_segments(p.rows, cols);
  if (plan.chunks == 1) {
    at::parallel_for(0, p.rows, row_grain(cols), [&](int64_t begin, int64_t end) {
      std::vector<A> buf(recompute ? cols : 0);
      auto row = [&](int64_t r, const NoiseSource& src) {
        const A dot = segment_backward_dot<T, A>(p, r, 0, cols, src, inv_tau, buf.data());
        segment_backward_write<T, A>(p, r, 0, cols, dot, inv_tau, buf.data());
      };
      if (recompute) {
        for_rows_with_noise(noise, begin, end, cols, row);
      } else {
        for (int64_t r = begin; r < end; ++r) row(r, noise);
      }
    });
    return;
  }
  const int64_t segments = p.rows * plan.chunks;
  const at::Tensor buf_t = empty_output({recompute ? p.rows * cols : 0},
                                        at::TensorOptions(c10::CppTypeToScalarType<A>::value));
  A* const buf = buf_t.data_ptr<A>();
  const auto seg_buf = [&](Segment g) { return recompute ? buf + g.r * cols + g.c0 : nullptr; };
  std::vector<A> dots(segments);
  for_each_segment(plan, p.rows, cols, [&](int64_t k, Segment g) {
    dots[k] = segment_backward_dot<T, A>(p, g.r, g.c0, g.c1, noise, inv_tau, seg_buf(g));
  });
  std::vector<A> row_dot(p.rows, A(0));
  for (int64_t k = 0; k < segments; ++k) row_dot[k / plan.chunks] += dots[k];
  for_each_segment(plan, p.rows, cols, [&](int64_t, Segment g) {
    segment_backward_write<T, A>(p, g.r, g.c0, g.c1, row_dot[g.r], inv_tau, seg_buf(g));
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> st_softmax_cpu(
    const at::Tensor& logits, double tau, bool hard, int64_t dim,
    std::optional<int64_t> seed) {
  ForwardOutputs o = prepare_forward(logits, tau, hard, dim);
  o.params.seed = seed.has_value() ? seed_bits(*seed) : draw_seed_cpu();
  o.params.base = 0;
  o.params.rng_state[0] = static_cast<int64_t>(o.params.seed);
  o.params.rng_state[1] = static_cast<int64_t>(o.params.base);
  if (o.params.rows > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(),
                                    "st_softmax_cpu",
                                    [&] { forward_kernel<scalar_t>(o.params); });
  }
  return {o.out, o.index, o.stats, o.rng_state, o.y_soft};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> st_softmax_shard_cpu(
    const at::Tensor& logits, double tau, int64_t seed, int64_t vocab_start,
    int64_t vocab_size) {
  ForwardOutputs o = prepare_shard(logits, tau, seed, vocab_start, vocab_size);
  o.params.rng_state[0] = static_cast<int64_t>(o.params.seed);
  o.params.rng_state[1] = 0;
  if (o.params.rows > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(),
                                    "st_softmax_shard_cpu",
                                    [&] { forward_kernel<scalar_t>(o.params); });
  }
  return {o.out, o.index.add_(vocab_start), o.stats};
}

at::Tensor st_softmax_backward_cpu(const at::Tensor& grad,
                                   const std::optional<at::Tensor>& y_soft,
                                   const std::optional<at::Tensor>& logits,
                                   const at::Tensor& stats,
                                   const at::Tensor& rng_state, double tau,
                                   int64_t dim) {
  BackwardInputs b = prepare_backward(grad, y_soft, logits, stats, rng_state, tau, dim);
  if (b.params.rows > 0 && b.params.cols > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.grad_logits.scalar_type(),
                                    "st_softmax_backward_cpu",
                                    [&] { backward_kernel<scalar_t>(b.params); });
  }
  return b.grad_logits;
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_gumbel, CPU, m) {
  m.impl("st_softmax", &st_softmax_cpu);
  m.impl("st_softmax_backward", &st_softmax_backward_cpu);
  register_tau_tensor_siblings<&st_softmax_cpu, &st_softmax_backward_cpu>(m);
  m.impl("st_softmax_shard", &st_softmax_shard_cpu);
}

}  // namespace fused_gumbel
