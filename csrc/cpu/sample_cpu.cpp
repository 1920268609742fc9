// The CPU kernel of the forward-only sampler (csrc/sample.h): one sweep of
// noise tiles per row, the score s of sample.h, and the first maximal index.
// Few long rows are split over the threads like st_softmax's, and the pieces'
// (max, argmax) merged in argmax_better's order.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "../gumbel_math.h"
#include "../sample.h"
#include "../st_softmax.h"
#include "noise_cpu.h"
#include "row_plan.h"

namespace fused_gumbel {
namespace {

using at::vec::Vectorized;
using cpu::kTile;
using cpu::NoiseSource;

template <typename A>
struct Best {
  A m;
  int64_t arg;
};

// The first maximal s = x * w.x + w.g * g over columns [c0, c1) of a row.
template <typename T, typename A>
Best<A> segment_argmax(const T* x, int64_t c0, int64_t c1, uint64_t row_position,
                       const NoiseSource& src, ScoreWeights<A> w) {
  using Vec = Vectorized<A>;
  alignas(64) float scratch[kTile];
  alignas(64) A s[kTile];
  Best<A> best{-std::numeric_limits<A>::infinity(), c0};
  const Vec vwx(w.x), vwg(w.g);
  for (int64_t t = c0; t < c1; t += kTile) {
    const int64_t n = std::min(kTile, c1 - t);
    const float* noise = src.get(row_position + static_cast<uint64_t>(t), n, scratch);
    at::vec::convert(x + t, s, n);
    Vec vmax(-std::numeric_limits<A>::infinity());
    int64_t j = 0;
    for (; j + Vec::size() <= n; j += Vec::size()) {
      Vec g;
      if constexpr (std::is_same_v<A, float>) {
        g = Vec::loadu(noise + j);
      } else {
        alignas(64) A gd[Vec::size()];
        for (int k = 0; k < Vec::size(); ++k) gd[k] = static_cast<A>(noise[j + k]);
        g = Vec::loadu(gd);
      }
      const Vec v = Vec::loadu(s + j) * vwx + vwg * g;
      v.store(s + j);
      vmax = at::vec::maximum(vmax, v);
    }
    A tile_max = at::vec::vec_reduce_all<A>(
        [](Vec a, Vec b) { return at::vec::maximum(a, b); }, vmax);
    for (; j < n; ++j) {
      s[j] = s[j] * w.x + w.g * static_cast<A>(noise[j]);
      tile_max = std::isnan(s[j]) || s[j] > tile_max ? s[j] : tile_max;
    }
    // Scanned for its first maximal index only when the tile beats the running
    // max: a handful of tiles per row for random data.
    if (!std::isnan(best.m) && (std::isnan(tile_max) || tile_max > best.m)) {
      for (int64_t k = 0; k < n; ++k) {
        if (std::isnan(tile_max) ? std::isnan(s[k]) : s[k] == tile_max) {
          best = {s[k], t + k};
          break;
        }
      }
    }
  }
  return best;
}

template <typename A>
int64_t sampled_index(const Best<A>& b) {
  return std::isfinite(b.m) ? b.arg : kNoSample;
}

template <typename T>
void sample_kernel(const SampleParams& p) {
  using A = at::opmath_type<T>;
  const ScoreWeights<A> w = sample_score_weights<A>(p.temperature, std::numeric_limits<A>::max());
  const T* x = static_cast<const T*>(p.logits);
  const int64_t cols = p.cols;
  const NoiseSource noise{p.seed, p.base, static_cast<uint64_t>(cols)};
  const cpu::Plan plan = cpu::plan_segments(p.rows, cols);
  if (plan.chunks == 1) {
    at::parallel_for(0, p.rows, cpu::row_grain(cols), [&](int64_t begin, int64_t end) {
      cpu::for_rows_with_noise(noise, begin, end, cols, [&](int64_t r, const NoiseSource& src) {
        p.index[r] = sampled_index(segment_argmax<T, A>(
            x + r * p.logits_row_stride, 0, cols, src.row_position(r), src, w));
      });
    });
    return;
  }
  std::vector<Best<A>> parts(p.rows * plan.chunks);
  cpu::for_each_segment(plan, p.rows, cols, [&](int64_t k, cpu::Segment g) {
    parts[k] = segment_argmax<T, A>(x + g.r * p.logits_row_stride, g.c0, g.c1,
                                    noise.row_position(g.r), noise, w);
  });
  for (int64_t r = 0; r < p.rows; ++r) {
    Best<A> b = parts[r * plan.chunks];
    for (int64_t c = 1; c < plan.chunks; ++c) {
      const Best<A>& o = parts[r * plan.chunks + c];
      if (argmax_better(o.m, o.arg, b.m, b.arg)) b = o;
    }
    p.index[r] = sampled_index(b);
  }
}

at::Tensor sample_cpu(const at::Tensor& logits, double temperature, int64_t dim,
                      std::optional<int64_t> seed) {
  SampleInputs in = prepare_sample(logits, temperature, dim);
  in.params.seed = seed.has_value() ? seed_bits(*seed) : draw_seed_cpu();
  if (in.params.rows > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(),
                                    "sample_cpu", [&] { sample_kernel<scalar_t>(in.params); });
  }
  return in.index;
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_gumbel, CPU, m) {
  m.impl("sample", &sample_cpu);
  register_sample_tau_tensor_sibling<&sample_cpu>(m);
}

}  // namespace fused_gumbel
