// CUDA kernels of st_softmax and st_softmax_backward (the op semantics are in
// csrc/st_softmax.cpp): Gumbel noise, tempered softmax, argmax and the
// straight-through gradient, each fused into one pass over the logits.
//
// Work is cut into segments: a whole row, or a chunk of a row. G threads (a power
// of two) own a segment; thread t handles the segment's units t, t + G, ...
// (unit_io.cuh), so a warp moves consecutive 16-byte pieces and every Philox call
// feeds four consecutive positions. With U positions per unit (8 for 16-bit
// types, 4 otherwise):
//
//   <= 32 units        G = units rounded up to a power of two, one unit per
//                      thread, 128-thread blocks holding several rows (routers).
//   <= 128 units       a warp per row, four rows per block.
//   longer             a block per row, ~4 units per thread, up to 1024 threads
//                      (512 in the backward of a loaded y, and of a 16-bit or
//                      float64 recomputed one), while the row's cache fits in shared
//                      memory (about 56K float32 columns on an H100, forward and
//                      backward alike).
//   hard forward       rows of more than 128 units stream (no cache) in blocks of
//                      at most 256 threads: chunks of at most 32768 columns
//                      where the rows then give every SM four blocks, else
//                      split as below.
//   clusters (sm_90)   rows longer than 8192 columns, enough of them to fill the
//                      SMs: a thread-block cluster of 2, 4 or 8 blocks of 256
//                      threads per row, each caching a chunk of at most 8192
//                      columns (longer at 8 blocks, while two chunks' caches
//                      fit an SM's shared memory), the row's reductions
//                      exchanged through distributed shared memory; cached
//                      forward and backward alike.
//   split rows         when the cache does not fit, or when the rows would occupy
//                      fewer than all SMs (half of them if splitting evaluates the
//                      noise twice): chunks of at most 8192 columns (at least
//                      2048 where the chunks must fill the SMs), blocks of at
//                      most 256 threads.
//
// Forward, cached (forward_segments_kernel): s = x + g goes to shared memory, so
// logits are read once and the noise computed once; max and argmax, the sum of
// exponentials, then the output is written once. Split: the same kernel writes
// each chunk's SoftmaxState to a small workspace; forward_finalize_kernel merges a
// row's states and writes its chunk (s read back from the output where step 1
// stored it (float32, float64), or regenerated for 16-bit types).
// Forward, hard, rows of a block or more (forward_stream_kernel): no cache. One
// pass keeps a running (max, sum, argmax) and writes the one-hot's zeros; the
// 1 follows the block's reductions, or forward_finalize_kernel's merge when the
// row is split (kStreamChunkMax). The backward has the cached (or clustered) and
// split layouts; y_soft is read, or recomputed from the logits, the regenerated
// noise and the saved (max, sum).
// Its cached layout keeps only y on chip and reads the incoming gradient twice:
// the second read, right after the first by the same block, comes from L2, and
// a cache of one array (not two) keeps rows up to about 56K float32 columns out
// of the split layout, which reads both tensors twice from memory.
//
// Random state: with seed=None the Philox offset comes from the device's default
// CUDA generator as a PhiloxCudaState, unpacked inside the kernel (CUDA-graph
// replays draw fresh noise), and the first kernel stores (seed, base) in
// rng_state; the backward reads it from device memory.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/PhiloxUtils.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <utility>

#include "cuda/cluster_reduce.cuh"
#include "cuda/group_reduce.cuh"
#include "cuda/philox_state.cuh"
#include "cuda/segments.cuh"
#include "cuda/unit_io.cuh"
#include "gumbel_math.h"
#include "st_softmax.h"

namespace fused_gumbel {
namespace {

constexpr int kMaxThreads = 1024;
// The cached backward's largest block, with registers for one block per SM. A
// y recomputed from the logits (hard=True) is bound by the noise arithmetic and
// wants every warp an SM holds: 1024 threads of 64 registers, which float32
// fits (on the H100 the 4096 x 32768 hard backward took about 0.2 ms longer at
// 512); a 16-bit or float64 unit's noise spills there on sm_80. A loaded y
// (hard=False) is bound by memory latency and wants registers for loads in
// flight (kBackwardBatch): 512.
template <class scalar_t, bool kFromLogits>
constexpr int kBackwardMaxThreads = kFromLogits && sizeof(scalar_t) == 4 ? 1024 : 512;
// Units whose loads the cached backward puts in flight before using the first
// (64 bytes of each loaded array per thread, 32 for 16-bit types and float64,
// whose wider units need more registers). One unit at a time, its one
// 512-thread block per SM (the row cache) kept about 16 KB of loads in flight
// per SM: 69% of the H100's memory bandwidth, 84% of issue cycles with no warp
// ready; batched, 87% (ncu, 4096 x 32768 float32: 0.76 -> 0.62 ms).
template <class scalar_t>
constexpr int kBackwardBatch = sizeof(scalar_t) == 4 ? 4 : 2;
constexpr int kSmallBlock = 128;  // block size when several segments share a block
// Units per thread: a whole row keeps each thread busy for several units; a split
// row's chunks are there to spread a few rows over the GPU, so fewer.
constexpr int64_t kUnitsPerThread = 4;
constexpr int64_t kUnitsPerThreadSplit = 2;
constexpr int64_t kChunkMin = 2048;  // columns: enough work to amortize a block
// Columns of a split row's longest chunk: 32 KB of float32 cache, 8 units per
// thread of a 256-thread block. At 2048 (2 units per thread) each block's setup
// and reductions weighed on every element: on the H100 the 1024 x 131072
// float32 hard forward took 1.03 ms, the same number of elements in
// 4096 x 32768 rows 0.71 ms (at 8192: 0.66 and 0.65 ms).
constexpr int64_t kSplitChunkMax = 8192;
// A streaming hard forward's chunks: at most kStreamChunkMax columns where
// the rows then give every SM kStreamBlocksPerSm blocks; fewer rows are split
// as the split layout's (kSplitChunkMax). Each block's setup, reductions and
// state store are paid once per chunk, per thread: on the H200 at 4096 x 32768
// float32 the kernel in 8192-column chunks (8 units per thread) executed 91
// instructions per element around a loop of 77, plus a finalize launch, and
// took 0.453 ms, where the Triton kernel, a 256-thread program per whole row,
// executed 79 around a loop of 73.5 and took 0.405 ms (ncu,
// bench/results/cuda_h200_ncu.txt).
constexpr int64_t kStreamChunkMax = 32768;
// Of 256 threads: 5 fit an SM at float32's 48 registers, 4 at the 50-64 of the
// other types.
constexpr int64_t kStreamBlocksPerSm = 4;
// Threads of a split row's block. Small blocks, several per SM, so that one
// block's reductions and global loads overlap another's arithmetic: a
// 1024-thread block takes a whole SM's registers and the SM idles at each of
// its barriers (H100: 1024 x 131072 float32 hard forward, 1.48 ms against the
// Triton kernel's 0.83 ms).
constexpr int kSplitThreads = 256;
// A soft row longer than kClusterChunkMax columns, on sm_90, is cached by a
// thread-block cluster of 2, 4 or 8 (the portable limit) blocks of at most
// kSplitThreads, one chunk each: a 128 KB cache (32768 float32 columns) in one
// 1024-thread block left the SM idle at each of its barriers, where 32 KB
// chunks let several blocks of different rows share an SM (H100, float32 soft
// forward: 4096 x 32768 0.65 -> 0.59 ms; 1024 x 131072, split before, 0.88 ->
// 0.60 ms).
constexpr int64_t kClusterChunkMax = 8192;
constexpr int64_t kMaxCluster = 8;
constexpr size_t kStaticSmem = 2048;  // reduction scratch, kept free of the row cache
constexpr size_t kDefaultSmem = 48 * 1024;

// exp((s - m) / tau) is evaluated as exp_scaled((s - m) * scale): in float32
// ex2.approx.ftz with scale = log2(e) / tau (one MUFU.EX2, against nine
// instructions for expf, in the loops that visit every element), in float64
// exp with scale = 1 / tau. ex2.approx is within 2 ulp and gives exp2f's bits
// wherever the result is normal; below 2^-126 it gives 0, where exp2f scales
// the argument into range and back (three more instructions per call, about 4
// of the hard forward's 97 per element on the H100): an absolute error under
// 1.2e-38 in a sum whose largest term is 1, and in a sample value. The scale's
// own rounding (2^-24 relative, where 1 / tau is exact for a power-of-two tau)
// adds about |x| * 2^-24 relative to exp(x): at most 3.5e-6, for results near
// float32's smallest normal. The forward's row sums and the backward's
// recomputed sample use the same function, so they agree.
__device__ __forceinline__ float exp_scaled(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ double exp_scaled(double x) { return exp(x); }

// The scale for exp_scaled, clamped as inverse_temperature clamps 1 / tau.
template <class acc_t>
acc_t exp_scale_for(double tau) {
  constexpr double kLn2 = 0.69314718055994530942;
  return inverse_temperature<acc_t>(std::is_same_v<acc_t, float> ? tau * kLn2 : tau,
                                    std::numeric_limits<acc_t>::max());
}

// exp((s - m) / tau) given scale, where an s of -inf (a masked logit, or a lane
// outside the segment) contributes exactly 0 even when m is -inf too (then
// s - m is NaN). In float32 the argument is selected (-inf, which ex2 maps to
// +0) and the exponential always evaluated: a branch around it costs more
// instructions than it saves. float64's exp is long enough to keep behind the
// branch (evaluated for every lane, four of them overflow the registers of a
// 1024-thread block).
__device__ __forceinline__ float tempered_exp(float s, float m, float scale) {
  return exp_scaled(s == neg_inf<float>() ? neg_inf<float>() : (s - m) * scale);
}
__device__ __forceinline__ double tempered_exp(double s, double m, double scale) {
  return s == neg_inf<double>() ? 0.0 : exp_scaled((s - m) * scale);
}

// Split rows, soft sample in the accumulation dtype (float32, float64): step 1
// stores s = x + g in the output, where forward_finalize_kernel reads it back
// instead of the logits and the noise, the same bits for a load instead of
// about 60 instructions per element (16-bit samples cannot hold s).
template <class scalar_t>
constexpr bool kStashScores = std::is_same_v<scalar_t, acc_type<scalar_t>>;

template <class acc_t>
struct FwdArgs {
  ForwardParams p;
  SegmentLayout s;
  at::PhiloxCudaState philox;
  acc_t exp_scale;  // see exp_scaled
  SoftmaxState<acc_t>* partials;  // [rows, nchunks] when rows are split, else null
};

template <class acc_t>
struct BwdArgs {
  BackwardParams p;
  SegmentLayout s;
  acc_t inv_tau;
  acc_t exp_scale;  // see exp_scaled
  acc_t* partials;  // [rows, nchunks] partial sums of grad * y_soft when split
};

// The launch's (seed, base), unpacked from its PhiloxCudaState; the grid's
// first thread records them in rng_state for the backward.
__device__ __forceinline__ std::pair<uint64_t, uint64_t> forward_seeds(
    const at::PhiloxCudaState& philox, int64_t* rng_state) {
  const auto [seed, base] = philox_seeds(philox);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    rng_state[0] = static_cast<int64_t>(seed);
    rng_state[1] = static_cast<int64_t>(base);
  }
  return {seed, base};
}

// s = logits + noise for the segment's i-th unit (lanes outside the segment hold
// noise only; callers mask them).
template <int U, bool kWhole = false, class scalar_t, class acc_t>
__device__ __forceinline__ void unit_scores(const scalar_t* row, const Segment& sg,
                                            int64_t i, bool vec, uint64_t seed,
                                            uint64_t base, acc_t (&s)[U]) {
  load_unit<U, kWhole>(row, unit_col0<U>(sg, i), sg.c0, sg.c1, vec, s);
  add_unit_noise<U>(seed, base, sg.unit0 + i, s);
}

// Forward over segments cached in shared memory. Writes the sample, index and
// stats, or with a.partials set (split rows) only each segment's SoftmaxState.
// kWhole: every unit lies inside its segment and moves as 16-byte accesses
// (whole_units), so the loops carry no bounds or alignment checks (sm_90 SASS
// per float32 unit: the first loop's hot path 307 -> 287 instructions, the
// output loop 71 -> 34). kCluster (sm_90): the blocks of a thread-block cluster
// hold one row's chunks, and combine their max, argmax and sum over distributed
// shared memory (cluster_reduce.cuh) between the phases; its blocks of
// kSplitThreads get the registers of one kMaxThreads block (without that
// bound ptxas gave the kernel 32 registers, and spilled).
template <class scalar_t, bool kWhole, bool kCluster>
__global__ void __launch_bounds__(kCluster ? kSplitThreads : kMaxThreads,
                                  kCluster ? kMaxThreads / kSplitThreads : 1)
    forward_segments_kernel(const FwdArgs<acc_type<scalar_t>> a) {
  using acc_t = acc_type<scalar_t>;
  constexpr int U = kUnit<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ acc_t red_m[kReduceSlots];
  __shared__ int64_t red_arg[kReduceSlots];
  __shared__ acc_t cluster_m, cluster_l;
  __shared__ int64_t cluster_arg;

  const ForwardParams& p = a.p;
  const auto [group, tig, slot, seg, active, sg, units] = segment_thread<U>(a.s, p.rows, p.cols);
  acc_t* cache = reinterpret_cast<acc_t*>(smem_raw) + slot * a.s.cache_stride;

  const auto [seed, base] = forward_seeds(a.philox, p.rng_state);

  // 1. s = x + g into the cache and this thread's max. Per element only a
  // NaN-propagating max; per unit one comparison, which keeps the first unit
  // holding the maximum; the argmax is found in that unit after the loop.
  const scalar_t* row_in =
      static_cast<const scalar_t*>(p.logits) + sg.row * p.logits_row_stride;
  acc_t m = neg_inf<acc_t>();
  int m_unit = -1;  // a segment has at most a shared memory's worth of units
  for (int64_t i = tig; i < units; i += group) {
    const int64_t col0 = unit_col0<U>(sg, i);
    acc_t x[U];
    load_unit<U, kWhole>(row_in, col0, sg.c0, sg.c1, a.s.vec, x);
    // Bit k: lane k lies inside the segment. A 32-bit mask rather than the
    // 64-bit column bounds is what stays live through the noise (registers).
    const uint32_t inside = kWhole ? ~0u : lanes_inside<U>(col0, sg.c0, sg.c1);
    acc_t unit_max = neg_inf<acc_t>();
    // One Philox group at a time, each finished and cached before the next, so
    // that a 16-bit type's eight-wide unit stays within 64 registers.
#pragma unroll
    for (int q = 0; q < U / 4; ++q) {
      acc_t s[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) s[j] = x[4 * q + j];
      add_group_noise(seed, base, (sg.unit0 + i) * (U / 4) + q, s);
      if (!kWhole) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          // Outside the segment: contributes 0 to the sum below, never the argmax.
          if (!((inside >> (4 * q + j)) & 1u)) s[j] = neg_inf<acc_t>();
        }
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) unit_max = max_nan(unit_max, s[j]);
      cache_store<4>(cache + i * U + 4 * q, s);
    }
    if (m_unit < 0 || max_beats(unit_max, m)) {
      m = unit_max;
      m_unit = static_cast<int>(i);
    }
  }
  // The first column holding m (the first NaN for a NaN), read back from this
  // thread's own cache writes.
  int64_t arg = std::numeric_limits<int64_t>::max();
  if (m_unit >= 0) {
    const int64_t col0 = unit_col0<U>(sg, m_unit);
    acc_t s[U];
    cache_load<U>(cache + m_unit * U, s);
    arg = first_col_of<U>(s, m, col0, sg.c0, sg.c1, arg);
  }
  group_argmax(m, arg, group, red_m, red_arg);
  if constexpr (kCluster) cluster_argmax(m, arg, &cluster_m, &cluster_arg);

  // 2. l = sum exp((s - m) / tau); the soft sample keeps the exponentials.
  const bool partial = a.partials != nullptr;
  const bool keep_exp = !partial && !p.hard;
  const bool stash = kStashScores<scalar_t> && partial && !p.hard;
  scalar_t* row_out = static_cast<scalar_t*>(p.out) + sg.row * p.cols;
  acc_t l = 0;
  for (int64_t i = tig; i < units; i += group) {
    acc_t e[U];
    cache_load<U>(cache + i * U, e);
    if (stash) store_unit<U, kWhole>(row_out, unit_col0<U>(sg, i), sg.c0, sg.c1, a.s.vec, e);
#pragma unroll
    for (int k = 0; k < U; ++k) {
      e[k] = tempered_exp(e[k], m, a.exp_scale);
      l += e[k];
    }
    if (keep_exp) cache_store<U>(cache + i * U, e);
  }
  l = group_sum(l, group, red_m);
  if constexpr (kCluster) {
    l = cluster_sum(l, &cluster_l);
    cluster_arrive();
  }

  if (!kCluster && partial) {
    if (active && tig == 0) a.partials[seg] = SoftmaxState<acc_t>{m, l, arg};
    return;
  }
  // A cluster's first block writes its row's results (the chunk is found
  // from blockIdx here: sg.c0 kept live through the loops spilled on sm_90).
  const bool first_chunk = !kCluster || blockIdx.x % static_cast<unsigned>(a.s.nchunks) == 0;
  if (active && tig == 0 && first_chunk) {
    acc_t* stats = static_cast<acc_t*>(p.stats) + 2 * sg.row;
    stats[0] = m;
    stats[1] = l;
    p.index[sg.row] = arg;
  }

  // 3. The output, written once.
  const bool valid = row_is_valid(m, l);
  const acc_t inv_l = acc_t(1) / l;
  for (int64_t i = tig; i < units; i += group) {
    const int64_t col0 = unit_col0<U>(sg, i);
    acc_t y[U];
    if (p.hard) {
      const int hot = lane_in_unit<U>(arg, col0);
#pragma unroll
      for (int k = 0; k < U; ++k) {
        y[k] = valid ? acc_t(k == hot ? 1 : 0) : std::numeric_limits<acc_t>::quiet_NaN();
      }
    } else {
      cache_load<U>(cache + i * U, y);
#pragma unroll
      for (int k = 0; k < U; ++k) y[k] *= inv_l;
    }
    store_unit<U, kWhole>(row_out, col0, sg.c0, sg.c1, a.s.vec, y);
  }
  if constexpr (kCluster) cluster_wait();
}

// Forward of a hard sample without a row cache: the one-hot needs only the
// argmax, and the backward only the row's (max, sum), so one pass keeps each
// thread's running max, sum and argmax unit and writes zeros as it goes. After
// the block's reductions one thread writes the 1 (a block whose row has no
// valid sample overwrites it with NaN); a split row leaves both to
// forward_finalize_kernel. Without shared memory several small blocks share an
// SM, so that one block's barriers and loads overlap another's arithmetic: the
// cached kernel's 128 KB row of 32768 float32 columns held a whole SM for one
// 1024-thread block (H100, 4096 x 32768 float32: 0.65 ms, 56% of copy
// bandwidth; streaming, 0.50 ms, 72%, issue-bound). Every segment is a whole
// block (group > 32): its __syncthreads order the zeros before the 1.
template <class scalar_t, bool kWhole>
__global__ void __launch_bounds__(kSplitThreads)
    forward_stream_kernel(const FwdArgs<acc_type<scalar_t>> a) {
  using acc_t = acc_type<scalar_t>;
  constexpr int U = kUnit<scalar_t>;
  __shared__ acc_t red_m[kReduceSlots];
  __shared__ int64_t red_arg[kReduceSlots];

  const ForwardParams& p = a.p;
  const auto [group, tig, slot, seg, active, sg, units] = segment_thread<U>(a.s, p.rows, p.cols);
  const auto [seed, base] = forward_seeds(a.philox, p.rng_state);

  const scalar_t* row_in =
      static_cast<const scalar_t*>(p.logits) + sg.row * p.logits_row_stride;
  scalar_t* row_out = static_cast<scalar_t*>(p.out) + sg.row * p.cols;
  // The running max as in forward_segments_kernel, the sum rescaled whenever it
  // grows, and the first unit holding the max kept in registers (U moves per
  // unit, against a cache).
  acc_t m = neg_inf<acc_t>(), l = 0;
  acc_t best[U];
  int64_t best_unit = -1;
  acc_t zeros[U];
#pragma unroll
  for (int k = 0; k < U; ++k) zeros[k] = 0;
  for (int64_t i = tig; i < units; i += group) {
    const int64_t col0 = unit_col0<U>(sg, i);
    acc_t s[U];
    unit_scores<U, kWhole>(row_in, sg, i, a.s.vec, seed, base, s);
    store_unit<U, kWhole>(row_out, col0, sg.c0, sg.c1, a.s.vec, zeros);
    if (!kWhole) mask_outside<U>(col0, sg.c0, sg.c1, s);
    acc_t unit_max = neg_inf<acc_t>();
#pragma unroll
    for (int k = 0; k < U; ++k) unit_max = max_nan(unit_max, s[k]);
    if (best_unit < 0 || max_beats(unit_max, m)) {
#pragma unroll
      for (int k = 0; k < U; ++k) best[k] = s[k];
      best_unit = i;
    }
    const acc_t m_new = max_nan(m, unit_max);
    l *= rescale_factor(m, m_new, a.exp_scale, [](acc_t x) { return exp_scaled(x); });
#pragma unroll
    for (int k = 0; k < U; ++k) l += tempered_exp(s[k], m_new, a.exp_scale);
    m = m_new;
  }
  int64_t arg = std::numeric_limits<int64_t>::max();
  if (best_unit >= 0) arg = first_col_of<U>(best, m, unit_col0<U>(sg, best_unit), sg.c0, sg.c1, arg);
  const acc_t thread_m = m;
  group_argmax(m, arg, group, red_m, red_arg);
  l *= rescale_factor(thread_m, m, a.exp_scale, [](acc_t x) { return exp_scaled(x); });
  l = group_sum(l, group, red_m);

  if (a.partials != nullptr) {
    if (active && tig == 0) a.partials[seg] = SoftmaxState<acc_t>{m, l, arg};
    return;
  }
  if (active && tig == 0) {
    acc_t* stats = static_cast<acc_t*>(p.stats) + 2 * sg.row;
    stats[0] = m;
    stats[1] = l;
    p.index[sg.row] = arg;
  }
  if (row_is_valid(m, l)) {
    if (active && tig == 0) row_out[arg] = scalar_t(1);
  } else {
    acc_t nan[U];
#pragma unroll
    for (int k = 0; k < U; ++k) nan[k] = std::numeric_limits<acc_t>::quiet_NaN();
    for (int64_t i = tig; i < units; i += group) {
      store_unit<U, kWhole>(row_out, unit_col0<U>(sg, i), sg.c0, sg.c1, a.s.vec, nan);
    }
  }
}

// Split rows, step 2: one block per (row, chunk) merges the row's chunk states
// and writes the chunk of the soft sample; of the hard one, whose zeros step 1
// wrote, the 1 (or NaN over a row without a valid sample).
template <class scalar_t>
__global__ void __launch_bounds__(kMaxThreads)
    forward_finalize_kernel(const FwdArgs<acc_type<scalar_t>> a) {
  using acc_t = acc_type<scalar_t>;
  using State = SoftmaxState<acc_t>;
  constexpr int U = kUnit<scalar_t>;
  __shared__ State row_state;

  const ForwardParams& p = a.p;
  const Segment sg = make_segment<U>(blockIdx.x, a.s, p.cols);
  const auto exp_fn = [](acc_t x) { return exp_scaled(x); };

  // The first warp merges the row's states in a fixed order; lane 0's result is
  // shared, so every block of the row uses the same bits.
  if (threadIdx.x < 32) {
    const State* parts = a.partials + sg.row * a.s.nchunks;
    State st{neg_inf<acc_t>(), acc_t(0), std::numeric_limits<int64_t>::max()};
    for (int64_t c = threadIdx.x; c < a.s.nchunks; c += 32) {
      st = softmax_merge(st, parts[c], a.exp_scale, exp_fn);
    }
    for (int off = 16; off > 0; off >>= 1) {
      State o;
      o.m = __shfl_xor_sync(kFullWarp, st.m, off);
      o.l = __shfl_xor_sync(kFullWarp, st.l, off);
      o.arg = __shfl_xor_sync(kFullWarp, st.arg, off);
      st = softmax_merge(st, o, a.exp_scale, exp_fn);
    }
    if (threadIdx.x == 0) row_state = st;
  }
  __syncthreads();
  const acc_t m = row_state.m, l = row_state.l;
  const int64_t arg = row_state.arg;

  if (sg.c0 == 0 && threadIdx.x == 0) {
    acc_t* stats = static_cast<acc_t*>(p.stats) + 2 * sg.row;
    stats[0] = m;
    stats[1] = l;
    p.index[sg.row] = arg;
  }

  scalar_t* row_out = static_cast<scalar_t*>(p.out) + sg.row * p.cols;
  const bool valid = row_is_valid(m, l);
  if (p.hard) {
    // forward_stream_kernel wrote the zeros.
    if (valid) {
      if (threadIdx.x == 0 && arg >= sg.c0 && arg < sg.c1) row_out[arg] = scalar_t(1);
      return;
    }
    acc_t nan[U];
#pragma unroll
    for (int k = 0; k < U; ++k) nan[k] = std::numeric_limits<acc_t>::quiet_NaN();
    for (int64_t i = threadIdx.x; i < sg.units; i += blockDim.x) {
      store_unit<U>(row_out, unit_col0<U>(sg, i), sg.c0, sg.c1, a.s.vec, nan);
    }
    return;
  }

  [[maybe_unused]] const auto [seed, base] = philox_seeds(a.philox);
  const acc_t inv_l = acc_t(1) / l;
  for (int64_t i = threadIdx.x; i < sg.units; i += blockDim.x) {
    const int64_t col0 = unit_col0<U>(sg, i);
    acc_t y[U];
    if constexpr (kStashScores<scalar_t>) {
      load_unit<U>(static_cast<const scalar_t*>(row_out), col0, sg.c0, sg.c1, a.s.vec, y);
    } else {
      unit_scores<U>(static_cast<const scalar_t*>(p.logits) + sg.row * p.logits_row_stride,
                     sg, i, a.s.vec, seed, base, y);
    }
#pragma unroll
    for (int k = 0; k < U; ++k) y[k] = tempered_exp(y[k], m, a.exp_scale) * inv_l;
    store_unit<U>(row_out, col0, sg.c0, sg.c1, a.s.vec, y);
  }
}

// The backward's inputs for one unit: the incoming gradient g and the soft
// sample y (read, or recomputed exactly as the forward computed it), both zero
// on lanes outside the segment. kWhole as in load_unit; kFromLogits: y is
// recomputed (the launch has no y_soft), a template argument so that a kernel
// holds the registers of one way only.
template <int U, bool kWhole, bool kFromLogits, class scalar_t, class acc_t>
__device__ __forceinline__ void unit_grad_and_y(const BwdArgs<acc_t>& a,
                                                const Segment& sg, int64_t i,
                                                uint64_t seed, uint64_t base, acc_t m,
                                                acc_t inv_l, acc_t (&g)[U],
                                                acc_t (&y)[U]) {
  const BackwardParams& p = a.p;
  const int64_t col0 = unit_col0<U>(sg, i);
  if constexpr (!kFromLogits) {
    load_unit<U, kWhole>(static_cast<const scalar_t*>(p.y_soft) + sg.row * p.y_soft_row_stride,
                         col0, sg.c0, sg.c1, a.s.vec, y);
  } else {
    unit_scores<U, kWhole>(static_cast<const scalar_t*>(p.logits) + sg.row * p.logits_row_stride,
                           sg, i, a.s.vec, seed, base, y);
#pragma unroll
    for (int k = 0; k < U; ++k) {
      const int64_t col = col0 + k;
      y[k] = (kWhole || (col >= sg.c0 && col < sg.c1))
                 ? tempered_exp(y[k], m, a.exp_scale) * inv_l
                 : acc_t(0);
    }
  }
  load_unit<U, kWhole>(static_cast<const scalar_t*>(p.grad) + sg.row * p.grad_row_stride,
                       col0, sg.c0, sg.c1, a.s.vec, g);
}

// Backward over segments whose y is cached in shared memory (a recomputed y
// costs one noise evaluation): grad_logits = inv_tau * y * (g - sum(g * y)).
// kWhole and kCluster as in forward_segments_kernel; kFromLogits: y is
// recomputed (the launch has no y_soft).
template <class scalar_t, bool kWhole, bool kFromLogits, bool kCluster>
__global__ void __launch_bounds__(
    kCluster ? kSplitThreads : kBackwardMaxThreads<scalar_t, kFromLogits>,
    kCluster ? kBackwardMaxThreads<scalar_t, kFromLogits> / kSplitThreads : 1)
    backward_segments_kernel(const BwdArgs<acc_type<scalar_t>> a) {
  using acc_t = acc_type<scalar_t>;
  constexpr int U = kUnit<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ acc_t red[kReduceSlots];
  __shared__ acc_t cluster_dot;

  const BackwardParams& p = a.p;
  const auto [group, tig, slot, seg, active, sg, units] = segment_thread<U>(a.s, p.rows, p.cols);
  acc_t* cache_y = reinterpret_cast<acc_t*>(smem_raw) + slot * a.s.cache_stride;
  const scalar_t* grad_row = static_cast<const scalar_t*>(p.grad) + sg.row * p.grad_row_stride;

  const uint64_t seed = static_cast<uint64_t>(p.rng_state[0]);
  const uint64_t base = static_cast<uint64_t>(p.rng_state[1]);
  const acc_t* stats = static_cast<const acc_t*>(p.stats) + 2 * sg.row;
  const acc_t m = stats[0], inv_l = acc_t(1) / stats[1];

  constexpr int B = kBackwardBatch<scalar_t>;
  acc_t dot = 0;
  const auto accumulate = [&](int64_t i, const acc_t(&g)[U], const acc_t(&y)[U]) {
#pragma unroll
    for (int k = 0; k < U; ++k) dot += g[k] * y[k];
    cache_store<U>(cache_y + i * U, y);
  };
  int64_t i = tig;
  if constexpr (!kFromLogits) {
    for (; i + (B - 1) * group < units; i += B * group) {
      acc_t g[B][U], y[B][U];
#pragma unroll
      for (int b = 0; b < B; ++b) {
        unit_grad_and_y<U, kWhole, kFromLogits, scalar_t>(a, sg, i + b * group, seed, base, m,
                                                          inv_l, g[b], y[b]);
      }
#pragma unroll
      for (int b = 0; b < B; ++b) accumulate(i + b * group, g[b], y[b]);
    }
  }
  // The rest, and a y recomputed from the logits (compute-bound: one unit at a
  // time keeps the noise within the registers).
  for (; i < units; i += group) {
    acc_t g[U], y[U];
    unit_grad_and_y<U, kWhole, kFromLogits, scalar_t>(a, sg, i, seed, base, m, inv_l, g, y);
    accumulate(i, g, y);
  }
  dot = group_sum(dot, group, red);
  if constexpr (kCluster) {
    dot = cluster_sum(dot, &cluster_dot);
    cluster_arrive();
  }

  scalar_t* row_out = static_cast<scalar_t*>(p.grad_logits) + sg.row * p.cols;
  const auto write = [&](int64_t i, const acc_t(&g)[U]) {
    acc_t y[U];
    cache_load<U>(cache_y + i * U, y);
#pragma unroll
    for (int k = 0; k < U; ++k) y[k] = a.inv_tau * y[k] * (g[k] - dot);
    store_unit<U, kWhole>(row_out, unit_col0<U>(sg, i), sg.c0, sg.c1, a.s.vec, y);
  };
  for (i = tig; i + (B - 1) * group < units; i += B * group) {
    acc_t g[B][U];
#pragma unroll
    for (int b = 0; b < B; ++b) {
      load_unit<U, kWhole>(grad_row, unit_col0<U>(sg, i + b * group), sg.c0, sg.c1, a.s.vec,
                           g[b]);
    }
#pragma unroll
    for (int b = 0; b < B; ++b) write(i + b * group, g[b]);
  }
  for (; i < units; i += group) {
    acc_t g[U];
    load_unit<U, kWhole>(grad_row, unit_col0<U>(sg, i), sg.c0, sg.c1, a.s.vec, g);
    write(i, g);
  }
  if constexpr (kCluster) cluster_wait();
}

// Backward of split rows, one block per (row, chunk). First launch (finalize =
// false): each chunk's sum of g * y into a.partials. Second launch: every block
// adds its row's partial sums in a fixed order and writes its chunk.
template <class scalar_t>
__global__ void __launch_bounds__(kMaxThreads)
    backward_split_kernel(const BwdArgs<acc_type<scalar_t>> a, bool finalize) {
  using acc_t = acc_type<scalar_t>;
  constexpr int U = kUnit<scalar_t>;
  __shared__ acc_t red[kReduceSlots];
  __shared__ acc_t row_dot;

  const BackwardParams& p = a.p;
  const Segment sg = make_segment<U>(blockIdx.x, a.s, p.cols);
  const uint64_t seed = static_cast<uint64_t>(p.rng_state[0]);
  const uint64_t base = static_cast<uint64_t>(p.rng_state[1]);
  const acc_t* stats = static_cast<const acc_t*>(p.stats) + 2 * sg.row;
  const acc_t m = stats[0], inv_l = acc_t(1) / stats[1];

  acc_t dot = 0;
  if (finalize) {
    if (threadIdx.x < 32) {
      const acc_t* parts = a.partials + sg.row * a.s.nchunks;
      acc_t v = 0;
      for (int64_t c = threadIdx.x; c < a.s.nchunks; c += 32) v += parts[c];
      v = group_sum(v, 32, red);
      if (threadIdx.x == 0) row_dot = v;
    }
    __syncthreads();
    dot = row_dot;
  }

  scalar_t* row_out = static_cast<scalar_t*>(p.grad_logits) + sg.row * p.cols;
  acc_t part = 0;
  for (int64_t i = threadIdx.x; i < sg.units; i += blockDim.x) {
    acc_t g[U], y[U];
    if (p.y_soft != nullptr) {
      unit_grad_and_y<U, false, false, scalar_t>(a, sg, i, seed, base, m, inv_l, g, y);
    } else {
      unit_grad_and_y<U, false, true, scalar_t>(a, sg, i, seed, base, m, inv_l, g, y);
    }
    if (finalize) {
#pragma unroll
      for (int k = 0; k < U; ++k) y[k] = a.inv_tau * y[k] * (g[k] - dot);
      store_unit<U>(row_out, unit_col0<U>(sg, i), sg.c0, sg.c1, a.s.vec, y);
    } else {
#pragma unroll
      for (int k = 0; k < U; ++k) part += g[k] * y[k];
    }
  }
  if (!finalize) {
    part = group_sum(part, static_cast<int>(blockDim.x), red);
    if (threadIdx.x == 0) a.partials[blockIdx.x] = part;
  }
}

// ---------------------------------------------------------------------------
// Host side: choosing the layout and launching.

struct Plan {
  SegmentLayout layout;
  int threads;    // block size
  int64_t blocks;
  size_t smem;    // dynamic shared memory of the cached kernel
};

// Segments of `len` columns (nchunks per row), cached in shared memory with
// `arrays` values per element (1 for the cached kernels, 0 for the streaming
// split backward).
Plan segment_plan(int64_t rows, int64_t cols, int64_t nchunks, int64_t len, int unit,
                  int arrays, size_t acc_size, int max_threads = kMaxThreads) {
  // A row that does not start at a multiple of the unit straddles one more unit.
  const int64_t units = (len + unit - 1) / unit + (cols % unit != 0 ? 1 : 0);
  Plan plan;
  plan.layout.nchunks = nchunks;
  plan.layout.chunk_len = len;
  plan.layout.cache_stride = units * unit;
  plan.layout.group_log2 =
      group_log2_for(units, nchunks > 1 ? kUnitsPerThreadSplit : kUnitsPerThread,
                     log2_ceil(max_threads));
  const int group = 1 << plan.layout.group_log2;
  // A group wider than a warp reduces through __syncthreads: it is the block.
  plan.threads = group <= 32 ? kSmallBlock : group;
  const int64_t per_block = plan.threads / group;
  plan.blocks = (rows * nchunks + per_block - 1) / per_block;
  plan.smem = static_cast<size_t>(per_block * arrays * plan.layout.cache_stride) * acc_size;
  return plan;
}

// Columns per chunk of a split row: at most max_len, enough chunks for about two
// blocks per SM, none shorter than kChunkMin; a multiple of the unit.
int64_t split_chunk_len(int64_t rows, int64_t cols, int unit, int64_t max_len,
                        int64_t sms) {
  const int64_t by_size = (cols + max_len - 1) / max_len;
  const int64_t by_fill = std::min((2 * sms + rows - 1) / rows, cols / kChunkMin);
  const int64_t nchunks = std::max<int64_t>({by_size, by_fill, 1});
  const int64_t len = (cols + nchunks - 1) / nchunks;
  return (len + unit - 1) / unit * unit;
}

// The longest chunk of a split row: kSplitChunkMax columns, or less where a
// kernel caching cache_bytes per element (0: none) would not fit its cache in
// `smem` bytes.
int64_t max_chunk_len(int unit, size_t cache_bytes, size_t smem) {
  int64_t len = kSplitChunkMax;
  if (cache_bytes > 0) {
    len = std::min(len, static_cast<int64_t>(smem / cache_bytes) - 2 * unit);
  }
  return len / unit * unit;
}

// Whether every unit of every segment lies inside it and moves as 16-byte
// accesses: rows and chunks a whole number of units long, rows aligned.
bool whole_units(const SegmentLayout& layout, int64_t cols, int unit) {
  return layout.vec && cols % unit == 0 && layout.chunk_len % unit == 0;
}

struct DeviceLimits {
  int64_t sms;
  size_t smem;    // dynamic shared memory a block may use
  bool clusters;  // thread-block clusters (sm_90 and later)
};

DeviceLimits device_limits() {
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  return {prop->multiProcessorCount, prop->sharedMemPerBlockOptin - kStaticSmem,
          prop->major >= 9 && prop->clusterLaunch != 0};
}

// Columns per chunk when a row is cut into `blocks` chunks: a multiple of the unit.
int64_t even_chunk_len(int64_t cols, int64_t blocks, int unit) {
  const int64_t len = (cols + blocks - 1) / blocks;
  return (len + unit - 1) / unit * unit;
}

// Blocks per row of a clustered cached kernel (forward or backward), or 1 for
// none: rows longer than kClusterChunkMax columns that take a block each, cut
// into the fewest chunks (a power of two, at most kMaxCluster) of at most
// kClusterChunkMax columns or, at kMaxCluster, whose cache fits; enough rows
// for the blocks to fill the SMs.
int64_t cluster_blocks(const Plan& whole, int64_t rows, int64_t cols, int unit,
                       size_t acc_size, const DeviceLimits& dev) {
  if (!dev.clusters || cols <= kClusterChunkMax || (1 << whole.layout.group_log2) <= 32) {
    return 1;
  }
  int64_t blocks = 2;
  while (blocks < kMaxCluster && (cols + blocks - 1) / blocks > kClusterChunkMax) blocks *= 2;
  const int64_t len = even_chunk_len(cols, blocks, unit);
  // About two blocks per SM at least (a float64 row of 131072 columns would
  // hold an SM with one: it stays split).
  const bool fits = static_cast<size_t>(len + 2 * unit) * acc_size <= dev.smem / 2;
  const bool all_chunks = (cols + len - 1) / len == blocks;
  return fits && all_chunks && rows * blocks >= dev.sms ? blocks : 1;
}

// Whether to split rows into chunks: a row's cache does not fit in shared
// memory, or too few rows to give the SMs work (a long row then takes several
// blocks). When the split path evaluates the noise twice (the soft sample, or
// the backward recomputing it), splitting pays only below half the SMs.
bool should_split(const Plan& whole, int64_t cols, const DeviceLimits& dev,
                  bool noise_twice) {
  const int64_t busy = noise_twice ? dev.sms / 2 : dev.sms;
  return whole.smem > dev.smem || (whole.blocks < busy && cols >= 2 * kChunkMin);
}

// Without the opt-in a kernel's dynamic shared memory may not exceed 48 KB less
// its static shared memory (the reduction scratch, at most kStaticSmem): a
// 48 KB row cache (12288 float32 columns) would fail to launch.
template <class Kernel>
void allow_smem(Kernel kernel, size_t smem) {
  if (smem + kStaticSmem > kDefaultSmem) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
}

int grid_size(int64_t blocks) {
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(),
              "fused_gumbel: too many rows for one launch (", number(blocks), " blocks)");
  return static_cast<int>(blocks);
}

// Whether `kernel` was compiled with cluster support (from PTX of compute_90 or
// later). A build for older architectures runs on an H100 from their PTX,
// where the cluster instantiations trap.
template <class Args>
bool compiled_for_clusters(void (*kernel)(Args)) {
  cudaFuncAttributes attr;
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  return attr.ptxVersion >= 90;
}

// A segment kernel's launch: plain, or with `cluster` blocks per thread-block
// cluster (consecutive blocks: one row's chunks).
template <class Args>
void launch_cached(void (*kernel)(Args), const Plan& plan, int64_t cluster,
                   cudaStream_t stream, const Args& a) {
  allow_smem(kernel, plan.smem);
  if (cluster > 1) {
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(grid_size(plan.blocks));
    config.blockDim = dim3(plan.threads);
    config.dynamicSmemBytes = plan.smem;
    config.stream = stream;
    cudaLaunchAttribute attr = {};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = static_cast<unsigned>(cluster);
    attr.val.clusterDim.y = 1;
    attr.val.clusterDim.z = 1;
    config.attrs = &attr;
    config.numAttrs = 1;
    C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, a));
  } else {
    kernel<<<grid_size(plan.blocks), plan.threads, plan.smem, stream>>>(a);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <class scalar_t>
void launch_forward(const ForwardParams& p, const at::PhiloxCudaState& philox,
                    const at::TensorOptions& options) {
  using acc_t = acc_type<scalar_t>;
  constexpr int U = kUnit<scalar_t>;
  // Positions here are the memory layout's: vocabulary shards run on the CPU
  // kernel or the Triton one.
  TORCH_INTERNAL_ASSERT(p.noise_row_stride == p.cols && p.noise_offset == 0);
  const DeviceLimits dev = device_limits();
  FwdArgs<acc_t> a{};
  a.p = p;
  a.philox = philox;
  a.exp_scale = exp_scale_for<acc_t>(p.tau);

  Plan plan = segment_plan(p.rows, p.cols, 1, p.cols, U, 1, sizeof(acc_t));
  // A hard sample of rows that take a block each streams (forward_stream_kernel),
  // in chunks split as the cached kernel's: its blocks hold no row cache.
  const bool stream = p.hard && (1 << plan.layout.group_log2) > 32;
  int64_t cluster = stream ? 1 : cluster_blocks(plan, p.rows, p.cols, U, sizeof(acc_t), dev);
  if (cluster > 1 && !compiled_for_clusters(forward_segments_kernel<scalar_t, false, true>)) {
    cluster = 1;
  }
  if (cluster > 1) {
    plan = segment_plan(p.rows, p.cols, cluster, even_chunk_len(p.cols, cluster, U), U, 1,
                        sizeof(acc_t), kSplitThreads);
  } else if (stream || should_split(plan, p.cols, dev, /*noise_twice=*/!p.hard)) {
    const int64_t long_chunks = (p.cols + kStreamChunkMax - 1) / kStreamChunkMax;
    const int64_t len =
        stream && p.rows * long_chunks >= kStreamBlocksPerSm * dev.sms
            ? even_chunk_len(p.cols, long_chunks, U)
            : split_chunk_len(p.rows, p.cols, U,
                              max_chunk_len(U, stream ? 0 : sizeof(acc_t), dev.smem), dev.sms);
    const int64_t nchunks = (p.cols + len - 1) / len;
    if (stream || nchunks > 1) {
      plan = segment_plan(p.rows, p.cols, nchunks, len, U, stream ? 0 : 1, sizeof(acc_t),
                          kSplitThreads);
    }
  }
  TORCH_INTERNAL_ASSERT((!stream && cluster == 1) ||
                        (1 << plan.layout.group_log2) == plan.threads);
  at::Tensor workspace;
  if (plan.layout.nchunks > 1 && cluster == 1) {
    // forward_finalize_kernel writes a hard sample's 1 only: its zeros come
    // from forward_stream_kernel.
    TORCH_INTERNAL_ASSERT(!p.hard || stream);
    workspace = at::empty(
        {p.rows * plan.layout.nchunks * static_cast<int64_t>(sizeof(SoftmaxState<acc_t>))},
        options.dtype(at::kByte));
    a.partials = reinterpret_cast<SoftmaxState<acc_t>*>(workspace.data_ptr());
  }
  TORCH_CHECK(plan.smem <= dev.smem, "fused_gumbel: internal error, a row cache of ",
              number(static_cast<int64_t>(plan.smem)), " bytes exceeds the device's ",
              number(static_cast<int64_t>(dev.smem)));
  a.s = plan.layout;
  a.s.vec = rows_keep_alignment(p.logits, p.logits_row_stride, p.rows, p.cols,
                                sizeof(scalar_t)) &&
            rows_keep_alignment(p.out, p.cols, p.rows, p.cols, sizeof(scalar_t));

  const cudaStream_t cuda_stream = at::cuda::getCurrentCUDAStream();
  const bool whole = whole_units(a.s, p.cols, U);
  const auto kernel =
      stream ? (whole ? forward_stream_kernel<scalar_t, true> : forward_stream_kernel<scalar_t, false>)
      : cluster > 1 ? (whole ? forward_segments_kernel<scalar_t, true, true>
                             : forward_segments_kernel<scalar_t, false, true>)
                    : (whole ? forward_segments_kernel<scalar_t, true, false>
                             : forward_segments_kernel<scalar_t, false, false>);
  launch_cached(kernel, plan, cluster, cuda_stream, a);
  if (a.partials != nullptr) {
    // One block per chunk: as wide as step 1's for the soft sample, a warp for
    // the hard one's single store.
    forward_finalize_kernel<scalar_t><<<grid_size(p.rows * a.s.nchunks),
                                        p.hard ? 32 : plan.threads, 0, cuda_stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <class scalar_t>
void launch_backward(const BackwardParams& p, const at::TensorOptions& options) {
  using acc_t = acc_type<scalar_t>;
  constexpr int U = kUnit<scalar_t>;
  const DeviceLimits dev = device_limits();
  BwdArgs<acc_t> a{};
  a.p = p;
  a.inv_tau = inverse_temperature<acc_t>(p.tau, std::numeric_limits<acc_t>::max());
  a.exp_scale = exp_scale_for<acc_t>(p.tau);

  const auto aligned = [&](const void* ptr, int64_t stride) {
    return ptr == nullptr ||
           rows_keep_alignment(ptr, stride, p.rows, p.cols, sizeof(scalar_t));
  };
  const bool vec = aligned(p.grad, p.grad_row_stride) &&
                   aligned(p.y_soft, p.y_soft_row_stride) &&
                   aligned(p.logits, p.logits_row_stride) &&
                   aligned(p.grad_logits, p.cols);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  const bool from_logits = p.y_soft == nullptr;
  Plan whole = segment_plan(p.rows, p.cols, 1, p.cols, U, 1, sizeof(acc_t),
                            from_logits ? kBackwardMaxThreads<scalar_t, true>
                                        : kBackwardMaxThreads<scalar_t, false>);
  int64_t cluster = cluster_blocks(whole, p.rows, p.cols, U, sizeof(acc_t), dev);
  if (cluster > 1 && !compiled_for_clusters(backward_segments_kernel<scalar_t, false, false, true>)) {
    cluster = 1;
  }
  if (cluster > 1) {
    whole = segment_plan(p.rows, p.cols, cluster, even_chunk_len(p.cols, cluster, U), U, 1,
                         sizeof(acc_t), kSplitThreads);
  } else if (should_split(whole, p.cols, dev, /*noise_twice=*/from_logits)) {
    // The split kernels stream (no cache): kSplitChunkMax bounds a chunk.
    const int64_t len = split_chunk_len(p.rows, p.cols, U,
                                        max_chunk_len(U, 0, dev.smem), dev.sms);
    const int64_t nchunks = (p.cols + len - 1) / len;
    if (nchunks > 1 || whole.smem > dev.smem) {
      const Plan plan =
          segment_plan(p.rows, p.cols, nchunks, len, U, 0, sizeof(acc_t), kSplitThreads);
      a.s = plan.layout;
      a.s.vec = vec;
      const at::Tensor workspace = at::empty(
          {p.rows * nchunks}, options.dtype(c10::CppTypeToScalarType<acc_t>::value));
      a.partials = workspace.data_ptr<acc_t>();
      const int blocks = grid_size(p.rows * nchunks);
      backward_split_kernel<scalar_t><<<blocks, plan.threads, 0, stream>>>(a, false);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      backward_split_kernel<scalar_t><<<blocks, plan.threads, 0, stream>>>(a, true);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
  }
  a.s = whole.layout;
  a.s.vec = vec;
  const bool whole_unit = whole_units(a.s, p.cols, U);
  const auto pick = [&](auto from_logits_c, auto cluster_c) {
    constexpr bool kFromLogits = decltype(from_logits_c)::value;
    constexpr bool kCluster = decltype(cluster_c)::value;
    return whole_unit ? backward_segments_kernel<scalar_t, true, kFromLogits, kCluster>
                      : backward_segments_kernel<scalar_t, false, kFromLogits, kCluster>;
  };
  using True = std::true_type;
  using False = std::false_type;
  const auto kernel = from_logits ? (cluster > 1 ? pick(True{}, True{}) : pick(True{}, False{}))
                                  : (cluster > 1 ? pick(False{}, True{}) : pick(False{}, False{}));
  launch_cached(kernel, whole, cluster, stream, a);
}


std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> st_softmax_cuda(
    const at::Tensor& logits, double tau, bool hard, int64_t dim,
    std::optional<int64_t> seed) {
  const c10::cuda::CUDAGuard guard(logits.device());
  ForwardOutputs o = prepare_forward(logits, tau, hard, dim);
  const ForwardParams& p = o.params;
  TORCH_CHECK(p.y_soft == nullptr, "fused_gumbel: internal error: the CUDA forward "
              "keeps no soft sample (see keeps_soft_sample)");
  if (p.rows == 0) {
    o.rng_state.zero_();  // nothing drawn; keeps the output defined
    return {o.out, o.index, o.stats, o.rng_state, o.y_soft};
  }
  const at::PhiloxCudaState philox = philox_state(seed, logits.device(), p.rows * p.cols);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, logits.scalar_type(), "fused_gumbel_st_softmax_cuda",
      [&] { launch_forward<scalar_t>(p, philox, logits.options()); });
  return {o.out, o.index, o.stats, o.rng_state, o.y_soft};
}

at::Tensor st_softmax_backward_cuda(const at::Tensor& grad,
                                    const std::optional<at::Tensor>& y_soft,
                                    const std::optional<at::Tensor>& logits,
                                    const at::Tensor& stats, const at::Tensor& rng_state,
                                    double tau, int64_t dim) {
  const c10::cuda::CUDAGuard guard(grad.device());
  const auto same_device = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.device() == grad.device(), "fused_gumbel: ", name, " is on ",
                t.device().str(), " but grad is on ", grad.device().str());
  };
  if (y_soft.has_value()) same_device(*y_soft, "y_soft");
  if (logits.has_value()) same_device(*logits, "logits");
  same_device(stats, "stats");
  same_device(rng_state, "rng_state");
  BackwardInputs b = prepare_backward(grad, y_soft, logits, stats, rng_state, tau, dim);
  if (b.params.rows == 0 || b.params.cols == 0) return b.grad_logits;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, b.grad_logits.scalar_type(),
      "fused_gumbel_st_softmax_backward_cuda",
      [&] { launch_backward<scalar_t>(b.params, grad.options()); });
  return b.grad_logits;
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_gumbel, CUDA, m) {
  m.impl("st_softmax", &st_softmax_cuda);
  m.impl("st_softmax_backward", &st_softmax_backward_cuda);
  register_tau_tensor_siblings<&st_softmax_cuda, &st_softmax_backward_cuda>(m);
}

}  // namespace fused_gumbel
