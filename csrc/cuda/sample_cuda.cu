// The CUDA kernel of the forward-only sampler (csrc/sample.h): the segments of
// st_softmax_cuda.cu without the row cache, since only the argmax is kept. Each
// group of threads walks its segment's units once: 16-byte loads, the noise,
// the score s of sample.h, a running first argmax; a group reduction, and for
// split rows (too few rows to fill the GPU) a small kernel merging the chunks.
// Only the int64 indices are written.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/PhiloxUtils.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <string>

#include "cuda/group_reduce.cuh"
#include "cuda/philox_state.cuh"
#include "cuda/segments.cuh"
#include "cuda/unit_io.cuh"
#include "gumbel_math.h"
#include "sample.h"
#include "st_softmax.h"

namespace fused_gumbel {
namespace {

// 512 threads a block, registers for one block per SM: at 1024 threads (64
// registers each) a 16-bit unit's noise spills on sm_80.
constexpr int kMaxThreads = 512;
constexpr int kSmallBlock = 128;  // block size when several segments share a block
constexpr int64_t kUnitsPerThread = 4;
constexpr int64_t kChunkMin = 4096;  // columns: enough work to amortize a block
constexpr int kMergeThreads = 128;

template <class acc_t>
struct Best {
  acc_t m;
  int64_t arg;
};

template <class acc_t>
struct SampleArgs {
  SampleParams p;
  SegmentLayout s;
  at::PhiloxCudaState philox;
  ScoreWeights<acc_t> weights;
  Best<acc_t>* partials;  // [rows, nchunks] when rows are split, else null
};

// x * w.x + w.g * g, each operation rounded (never contracted to an FMA): the
// CPU and Triton kernels compute the same bits.
__device__ __forceinline__ float score(float x, ScoreWeights<float> w, float g) {
  return __fadd_rn(__fmul_rn(x, w.x), __fmul_rn(w.g, g));
}
__device__ __forceinline__ double score(double x, ScoreWeights<double> w, double g) {
  return __dadd_rn(__dmul_rn(x, w.x), __dmul_rn(w.g, g));
}

template <class acc_t>
__device__ __forceinline__ int64_t sampled_index(acc_t m, int64_t arg) {
  return isfinite(m) ? arg : kNoSample;
}

template <class scalar_t>
__global__ void __launch_bounds__(kMaxThreads, 1)
    sample_segments_kernel(const SampleArgs<acc_type<scalar_t>> a) {
  using acc_t = acc_type<scalar_t>;
  constexpr int U = kUnit<scalar_t>;
  __shared__ acc_t red_m[kReduceSlots];
  __shared__ int64_t red_arg[kReduceSlots];

  const SampleParams& p = a.p;
  const auto [group, tig, slot, seg, active, sg, units] = segment_thread<U>(a.s, p.rows, p.cols);

  const auto [seed, base] = philox_seeds(a.philox);
  const scalar_t* row_in =
      static_cast<const scalar_t*>(p.logits) + sg.row * p.logits_row_stride;
  // Per element only a NaN-propagating max; the first column of a unit's max
  // is searched only when the unit beats this thread's running max (a few
  // times per row), and the first unit always sets it.
  acc_t m = neg_inf<acc_t>();
  int64_t arg = std::numeric_limits<int64_t>::max();
  for (int64_t i = tig; i < units; i += group) {
    const int64_t col0 = unit_col0<U>(sg, i);
    acc_t s[U];
    load_unit<U>(row_in, col0, sg.c0, sg.c1, a.s.vec, s);
#pragma unroll
    for (int q = 0; q < U / 4; ++q) {
      acc_t g[4];
      group_noise(seed, base, (sg.unit0 + i) * (U / 4) + q, g);
#pragma unroll
      for (int j = 0; j < 4; ++j) s[4 * q + j] = score(s[4 * q + j], a.weights, g[j]);
    }
    mask_outside<U>(col0, sg.c0, sg.c1, s);
    acc_t unit_max = s[0];
#pragma unroll
    for (int k = 1; k < U; ++k) unit_max = max_nan(unit_max, s[k]);
    if (arg == std::numeric_limits<int64_t>::max() || max_beats(unit_max, m)) {
      m = unit_max;
      arg = first_col_of<U>(s, m, col0, sg.c0, sg.c1, arg);
    }
  }
  group_argmax(m, arg, group, red_m, red_arg);
  if (!active || tig != 0) return;
  if (a.partials != nullptr) {
    a.partials[seg] = Best<acc_t>{m, arg};
  } else {
    p.index[sg.row] = sampled_index(m, arg);
  }
}

// Split rows: row r's index from its chunks' bests, merged in chunk order.
template <class acc_t>
__global__ void __launch_bounds__(kMergeThreads)
    sample_merge_kernel(const Best<acc_t>* partials, int64_t* index, int64_t rows,
                        int64_t nchunks) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  Best<acc_t> b = partials[r * nchunks];
  for (int64_t c = 1; c < nchunks; ++c) {
    const Best<acc_t> o = partials[r * nchunks + c];
    if (argmax_better(o.m, o.arg, b.m, b.arg)) b = o;
  }
  index[r] = sampled_index(b.m, b.arg);
}

int grid_size(int64_t blocks) {
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(),
              "fused_gumbel: too many rows for one launch (", number(blocks), " blocks)");
  return static_cast<int>(std::max<int64_t>(blocks, 1));
}

// Whole rows, or (fewer rows than two blocks per SM, long rows) chunks of at
// least kChunkMin columns, enough for about two blocks per SM.
SegmentLayout sample_layout(const SampleParams& p, int unit, int64_t sms) {
  SegmentLayout l{};
  l.nchunks = 1;
  l.chunk_len = p.cols;
  if (p.rows < 2 * sms && p.cols >= 2 * kChunkMin) {
    const int64_t want = std::min((2 * sms + p.rows - 1) / p.rows, p.cols / kChunkMin);
    const int64_t len = (p.cols + want - 1) / want;
    l.chunk_len = (len + unit - 1) / unit * unit;
    l.nchunks = (p.cols + l.chunk_len - 1) / l.chunk_len;
  }
  const int64_t units = (l.chunk_len + unit - 1) / unit + (p.cols % unit != 0 ? 1 : 0);
  l.group_log2 = group_log2_for(units, kUnitsPerThread, log2_ceil(kMaxThreads));
  return l;
}

template <class scalar_t>
void launch_sample(const SampleParams& p, const at::PhiloxCudaState& philox,
                   const at::TensorOptions& options) {
  using acc_t = acc_type<scalar_t>;
  constexpr int U = kUnit<scalar_t>;
  SampleArgs<acc_t> a{};
  a.p = p;
  a.philox = philox;
  a.weights = sample_score_weights<acc_t>(p.temperature, std::numeric_limits<acc_t>::max());
  a.s = sample_layout(p, U, at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
  a.s.vec = rows_keep_alignment(p.logits, p.logits_row_stride, p.rows, p.cols,
                                sizeof(scalar_t));
  at::Tensor workspace;
  if (a.s.nchunks > 1) {
    workspace = at::empty({static_cast<int64_t>(p.rows * a.s.nchunks * sizeof(Best<acc_t>))},
                          options.dtype(at::kByte));
    a.partials = reinterpret_cast<Best<acc_t>*>(workspace.data_ptr());
  }
  const int group = 1 << a.s.group_log2;
  const int threads = group <= 32 ? kSmallBlock : group;
  const int64_t per_block = threads / group;
  const int64_t blocks = (p.rows * a.s.nchunks + per_block - 1) / per_block;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  sample_segments_kernel<scalar_t><<<grid_size(blocks), threads, 0, stream>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (a.partials != nullptr) {
    sample_merge_kernel<acc_t>
        <<<grid_size((p.rows + kMergeThreads - 1) / kMergeThreads), kMergeThreads, 0,
           stream>>>(a.partials, p.index, p.rows, a.s.nchunks);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

at::Tensor sample_cuda(const at::Tensor& logits, double temperature, int64_t dim,
                       std::optional<int64_t> seed) {
  const c10::cuda::CUDAGuard guard(logits.device());
  SampleInputs in = prepare_sample(logits, temperature, dim);
  const SampleParams& p = in.params;
  if (p.rows == 0) return in.index;
  const at::PhiloxCudaState philox = philox_state(seed, logits.device(), p.rows * p.cols);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, logits.scalar_type(), "fused_gumbel_sample_cuda",
      [&] { launch_sample<scalar_t>(p, philox, logits.options()); });
  return in.index;
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_gumbel, CUDA, m) {
  m.impl("sample", &sample_cuda);
  register_sample_tau_tensor_sibling<&sample_cuda>(m);
}

}  // namespace fused_gumbel
