// CUDA kernels of gumbel_topk and gumbel_topk_backward (the math is in
// csrc/topk.h; the Triton kernels in triton_kernels/topk.py follow the same
// passes and are the tested model of this file).
//
// A block per row (grid-stride over rows), T threads (a power of two, 32 to
// 256): thread t takes the row's Philox groups t, t + T, ... (a group is four
// consecutive flat positions, one Philox call), so every noise word is used.
// When 4 * groups of the row fit in shared memory (about 11K float32 columns),
// the first pass caches s = x + g there and later passes read it back; longer
// rows regenerate s in every pass. Each thread reads back only the groups it
// wrote, so the cache needs no barrier.
//
// Forward:  1. s; every thread keeps its own top-k (a sorted insertion in
//              registers, unrolled to kMaxK), then k block-wide argmax rounds
//              take the row's k best (the winning thread pops its head);
//           2. step j: a_j replayed per element from s and steps < j, reduced
//              online to (m_j, rest_j) and merged over the block;
//           3. the k-hot, or y_soft = sum_j p_j replayed once more.
// Backward: pass t (j = k - 1 - t) gives d_j = sum(gp_j p_j) from the later
//           d_i by the forward-unrolled recursion, a last pass writes
//           ga_1 (triton_kernels/topk.py's docstring derives it).
//
// Random state as st_softmax_cuda.cu: with seed=None the Philox (seed, offset)
// comes from the device's default CUDA generator as a PhiloxCudaState unpacked
// in the kernel (CUDA-graph replays draw fresh noise); block 0 stores (seed,
// base) in rng_state, which the backward reads from device memory.
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
#include <type_traits>

#include "cuda/group_reduce.cuh"
#include "cuda/philox_state.cuh"
#include "gumbel_math.h"
#include "st_softmax.h"
#include "topk.h"

namespace fused_gumbel {
namespace {

constexpr int kMaxK = 8;             // per-thread top-k list length (registers)
constexpr int kMaxThreads = 256;
constexpr size_t kCacheBytes = 44 * 1024;  // of the 48 KB default, the rest static

template <class scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

__device__ __forceinline__ float exp_acc(float x) { return expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }
__device__ __forceinline__ float log_acc(float x) { return logf(x); }
__device__ __forceinline__ double log_acc(double x) { return log(x); }

template <class T>
__device__ __forceinline__ T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

template <class acc_t>
struct TopkFwdArgs {
  TopkForwardParams p;
  at::PhiloxCudaState philox;
  acc_t inv_tau;
  bool cached;  // s kept in dynamic shared memory
};

template <class acc_t>
struct TopkBwdArgs {
  TopkBackwardParams p;
  acc_t inv_tau;
  bool cached;
};

// The flat positions of row r start at row_pos = r * cols; its Philox groups
// are row_pos / 4 .. (row_pos + cols - 1) / 4.
__device__ __forceinline__ int64_t row_groups(int64_t row_pos, int64_t cols) {
  return ((row_pos + cols - 1) >> 2) - (row_pos >> 2) + 1;
}

// Column of lane 0 of the row's g-th group (negative before the row start).
__device__ __forceinline__ int64_t group_col0(int64_t row_pos, int64_t g) {
  return ((row_pos >> 2) + g) * 4 - row_pos;
}

// s = x + g for the four lanes of the row's g-th group, -inf outside the row:
// computed (and, with fill, cached) or read back from the cache.
template <class scalar_t, class acc_t>
__device__ __forceinline__ void group_scores(const scalar_t* x_row, int64_t row_pos, int64_t cols,
                                             int64_t g, uint64_t seed, uint64_t base,
                                             acc_t* cache, bool fill, acc_t (&s)[4]) {
  if (cache != nullptr && !fill) {
#pragma unroll
    for (int j = 0; j < 4; ++j) s[j] = cache[4 * g + j];
    return;
  }
  const uint64_t ctr = philox_counter(base, static_cast<uint64_t>((row_pos >> 2) + g) * 4);
  uint32_t w[4] = {static_cast<uint32_t>(ctr), static_cast<uint32_t>(ctr >> 32), 0, 0};
  philox4x32_10<ScalarOps>(w[0], w[1], w[2], w[3], static_cast<uint32_t>(seed),
                           static_cast<uint32_t>(seed >> 32));
  const int64_t col0 = group_col0(row_pos, g);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int64_t col = col0 + j;
    s[j] = col >= 0 && col < cols
               ? static_cast<acc_t>(x_row[col]) +
                     static_cast<acc_t>(gumbel_from_bits<ScalarOps>(w[j]))
               : neg_inf<acc_t>();
  }
  if (cache != nullptr) {
#pragma unroll
    for (int j = 0; j < 4; ++j) cache[4 * g + j] = s[j];
  }
}

// p_j and q_j = 1 - p_j (no cancellation) of one element from the step's (m, rest).
template <class acc_t>
__device__ __forceinline__ void step_probs(acc_t a, acc_t m, acc_t rest, acc_t inv_tau,
                                           acc_t& p, acc_t& q) {
  const acc_t inv_l = acc_t(1) / (acc_t(1) + rest);
  p = exp_acc((a - m) * inv_tau) * inv_l;
  q = p > acc_t(0.5) ? rest * inv_l : acc_t(1) - p;
}

template <class acc_t>
__device__ __forceinline__ acc_t step_next(acc_t a, acc_t q) {
  return a + log_acc(q > std::numeric_limits<acc_t>::min() ? q
                                                           : std::numeric_limits<acc_t>::min());
}

// a_{upto} of one element: s through steps [0, upto).
template <class acc_t>
__device__ __forceinline__ acc_t replay(acc_t s, int upto, const acc_t* sm, const acc_t* sr,
                                        acc_t inv_tau) {
  acc_t a = s;
  for (int i = 0; i < upto; ++i) {
    acc_t p, q;
    step_probs(a, sm[i], sr[i], inv_tau, p, q);
    a = step_next(a, q);
  }
  return a;
}

// Adds element a (> -inf) to a running (m, rest): rest is the sum of
// exp((a_i - m) / tau) over all but one maximum; empty is (-inf, -1).
template <class acc_t>
__device__ __forceinline__ void step_add(acc_t a, acc_t inv_tau, acc_t& m, acc_t& rest) {
  if (a > m) {
    rest = (acc_t(1) + rest) * (m == neg_inf<acc_t>() ? acc_t(0) : exp_acc((m - a) * inv_tau));
    m = a;
  } else if (a == m) {
    rest += acc_t(1);
  } else {
    rest += exp_acc((a - m) * inv_tau);
  }
}

// The (m, rest) of two pieces' union. Symmetric in its arguments, bit for bit,
// so the xor butterfly leaves every thread with the same result.
template <class acc_t>
__device__ __forceinline__ void step_merge(acc_t& m, acc_t& rest, acc_t om, acc_t orest,
                                           acc_t inv_tau) {
  if (m == om) {
    rest = (rest + orest) + acc_t(1);
  } else if (om > m) {
    rest = orest + (acc_t(1) + rest) * exp_acc((m - om) * inv_tau);
    m = om;
  } else if (m > om) {
    rest = rest + (acc_t(1) + orest) * exp_acc((om - m) * inv_tau);
  }
  // NaN (a row with no subset) falls through: its stats are replaced by NaN.
}

// step_merge over the block (blockDim.x threads, a power of two), like group_sum.
template <class acc_t>
__device__ __forceinline__ void block_step_merge(acc_t& m, acc_t& rest, acc_t inv_tau,
                                                 acc_t* scratch_m, acc_t* scratch_r) {
  const int threads = blockDim.x;
  for (int off = (threads < 32 ? threads : 32) / 2; off > 0; off >>= 1) {
    const acc_t om = __shfl_xor_sync(kFullWarp, m, off);
    const acc_t orest = __shfl_xor_sync(kFullWarp, rest, off);
    step_merge(m, rest, om, orest, inv_tau);
  }
  if (threads > 32) {
    const int warp = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) {
      scratch_m[warp] = m;
      scratch_r[warp] = rest;
    }
    __syncthreads();
    m = scratch_m[0];
    rest = scratch_r[0];
    for (int w = 1; w < threads / 32; ++w) step_merge(m, rest, scratch_m[w], scratch_r[w], inv_tau);
    __syncthreads();
  }
}

// Inserts (v, i) into the sorted list (best first under argmax_better), dropping
// the last entry; fully unrolled so the list stays in registers. From the end,
// slot t takes v (v beats slot t but not t - 1) or slot t - 1's old entry (v
// beats that too), which is still unmodified when read.
template <class acc_t>
__device__ __forceinline__ void list_insert(acc_t (&lv)[kMaxK], int64_t (&li)[kMaxK], acc_t v,
                                            int64_t i) {
  if (!argmax_better(v, i, lv[kMaxK - 1], li[kMaxK - 1])) return;  // most elements
#pragma unroll
  for (int t = kMaxK - 1; t > 0; --t) {
    if (argmax_better(v, i, lv[t - 1], li[t - 1])) {
      lv[t] = lv[t - 1];
      li[t] = li[t - 1];
    } else if (argmax_better(v, i, lv[t], li[t])) {
      lv[t] = v;
      li[t] = i;
    }
  }
  if (argmax_better(v, i, lv[0], li[0])) {
    lv[0] = v;
    li[0] = i;
  }
}

// At least one block per SM, not more: without that bound ptxas holds the
// double kernel to 80 registers (for occupancy) and spills.
template <class scalar_t>
__global__ void __launch_bounds__(kMaxThreads, 1)
    topk_forward_kernel(const TopkFwdArgs<acc_type<scalar_t>> a) {
  using acc_t = acc_type<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ acc_t red_m[kReduceSlots];
  __shared__ acc_t red_r[32];
  __shared__ int64_t red_arg[kReduceSlots];
  __shared__ acc_t step_m[kMaxK];
  __shared__ acc_t step_rest[kMaxK];
  __shared__ int64_t picks[kMaxK];

  const TopkForwardParams& p = a.p;
  const int T = blockDim.x;
  const int tid = threadIdx.x;
  const int k = static_cast<int>(p.k);
  const acc_t nan = std::numeric_limits<acc_t>::quiet_NaN();
  acc_t* cache = a.cached ? reinterpret_cast<acc_t*>(smem_raw) : nullptr;
  const auto [seed, base] = philox_seeds(a.philox);
  if (blockIdx.x == 0 && tid == 0) {
    p.rng_state[0] = static_cast<int64_t>(seed);
    p.rng_state[1] = static_cast<int64_t>(base);
  }

  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const int64_t row_pos = row * p.cols;
    const int64_t groups = row_groups(row_pos, p.cols);
    const scalar_t* x_row = static_cast<const scalar_t*>(p.logits) + row * p.logits_row_stride;

    // 1. s (cached if it fits) and this thread's top-k, then the row's k best.
    acc_t lv[kMaxK];
    int64_t li[kMaxK];
#pragma unroll
    for (int t = 0; t < kMaxK; ++t) {
      lv[t] = neg_inf<acc_t>();
      li[t] = std::numeric_limits<int64_t>::max();  // loses to every element
    }
    for (int64_t g = tid; g < groups; g += T) {
      acc_t s[4];
      group_scores(x_row, row_pos, p.cols, g, seed, base, cache, true, s);
      const int64_t col0 = group_col0(row_pos, g);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (col0 + j >= 0 && col0 + j < p.cols) list_insert(lv, li, s[j], col0 + j);
      }
    }
    acc_t best = 0, last = 0;
    for (int j = 0; j < k; ++j) {
      acc_t m = lv[0];
      int64_t arg = li[0];
      group_argmax(m, arg, T, red_m, red_arg);
      if (li[0] == arg) {  // this thread's head won: pop it
#pragma unroll
        for (int t = 0; t + 1 < kMaxK; ++t) {
          lv[t] = lv[t + 1];
          li[t] = li[t + 1];
        }
        lv[kMaxK - 1] = neg_inf<acc_t>();
        li[kMaxK - 1] = std::numeric_limits<int64_t>::max();
      }
      if (tid == 0) {
        p.index[row * k + j] = arg;
        picks[j] = arg;
      }
      if (j == 0) best = m;
      last = m;
    }
    // A NaN or +inf, or fewer than k entries above -inf: no subset.
    const bool valid = best == best && best > neg_inf<acc_t>() &&
                       best < std::numeric_limits<acc_t>::infinity() && last > neg_inf<acc_t>();

    // 2. The k steps' (m_j, rest_j).
    acc_t* stats = static_cast<acc_t*>(p.stats) + row * k * 2;
    for (int j = 0; j < k; ++j) {
      acc_t m = neg_inf<acc_t>(), rest = acc_t(-1);
      for (int64_t g = tid; g < groups; g += T) {
        acc_t s[4];
        group_scores(x_row, row_pos, p.cols, g, seed, base, cache, false, s);
#pragma unroll
        for (int l = 0; l < 4; ++l) {
          if (s[l] == neg_inf<acc_t>()) continue;  // masked, or outside the row: adds 0
          step_add(replay(s[l], j, step_m, step_rest, a.inv_tau), a.inv_tau, m, rest);
        }
      }
      block_step_merge(m, rest, a.inv_tau, red_m, red_r);
      if (tid == 0) {
        step_m[j] = m;
        step_rest[j] = rest;
        stats[2 * j] = valid ? m : nan;
        stats[2 * j + 1] = valid ? rest : nan;
      }
      __syncthreads();  // step j's statistics before step j + 1 replays it
    }

    // 3. The sample.
    scalar_t* out = static_cast<scalar_t*>(p.out) + row * p.cols;
    for (int64_t g = tid; g < groups; g += T) {
      const int64_t col0 = group_col0(row_pos, g);
      acc_t y[4];
      if (p.hard) {
#pragma unroll
        for (int l = 0; l < 4; ++l) {
          bool chosen = false;
          for (int j = 0; j < k; ++j) chosen = chosen || picks[j] == col0 + l;
          y[l] = chosen ? acc_t(1) : acc_t(0);
        }
      } else {
        acc_t s[4];
        group_scores(x_row, row_pos, p.cols, g, seed, base, cache, false, s);
#pragma unroll
        for (int l = 0; l < 4; ++l) {
          acc_t av = s[l], sum = 0;
          for (int j = 0; j < k; ++j) {
            acc_t pj, qj;
            step_probs(av, step_m[j], step_rest[j], a.inv_tau, pj, qj);
            sum += pj;
            av = step_next(av, qj);
          }
          y[l] = sum;
        }
      }
#pragma unroll
      for (int l = 0; l < 4; ++l) {
        if (col0 + l >= 0 && col0 + l < p.cols) out[col0 + l] = static_cast<scalar_t>(valid ? y[l] : nan);
      }
    }
    __syncthreads();  // picks, step_m and step_rest are rewritten for the next row
  }
}

// One backward pass on one element: replays the k steps from s and returns
// ga_{j+1} (accumulated forward from the d_i, i > j), p_j and 1/q_j (0 where
// the clamp is active). j = -1 gives ga_1, the gradient.
template <class acc_t>
__device__ __forceinline__ acc_t chain(acc_t s, acc_t gy, int k, int j, const acc_t* sm,
                                       const acc_t* sr, const acc_t* ds, acc_t inv_tau,
                                       acc_t& p_j, acc_t& r_j) {
  acc_t a = s, acc = 0, prod = 1;
  p_j = 0;
  r_j = 0;
  for (int i = 0; i < k; ++i) {
    acc_t p, q;
    step_probs(a, sm[i], sr[i], inv_tau, p, q);
    const acc_t r = q >= std::numeric_limits<acc_t>::min() ? acc_t(1) / q : acc_t(0);
    if (i == j) {
      p_j = p;
      r_j = r;
    } else if (i > j) {
      // beta = 0 adds nothing even where prod has overflowed (its exact term
      // vanishes with p), never inf * 0.
      const acc_t beta = inv_tau * p * (gy - ds[i]);
      if (beta != acc_t(0)) acc += prod * beta;
      prod *= acc_t(1) - inv_tau * p * r;
    }
    a = step_next(a, q);
  }
  return acc;
}

template <class scalar_t>
__global__ void __launch_bounds__(kMaxThreads)
    topk_backward_kernel(const TopkBwdArgs<acc_type<scalar_t>> a) {
  using acc_t = acc_type<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ acc_t red[kReduceSlots];
  __shared__ acc_t step_m[kMaxK];
  __shared__ acc_t step_rest[kMaxK];
  __shared__ acc_t ds[kMaxK];

  const TopkBackwardParams& p = a.p;
  const int T = blockDim.x;
  const int tid = threadIdx.x;
  const int k = static_cast<int>(p.k);
  acc_t* cache = a.cached ? reinterpret_cast<acc_t*>(smem_raw) : nullptr;
  const uint64_t seed = static_cast<uint64_t>(p.rng_state[0]);
  const uint64_t base = static_cast<uint64_t>(p.rng_state[1]);

  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const int64_t row_pos = row * p.cols;
    const int64_t groups = row_groups(row_pos, p.cols);
    const scalar_t* x_row = static_cast<const scalar_t*>(p.logits) + row * p.logits_row_stride;
    const scalar_t* g_row = static_cast<const scalar_t*>(p.grad) + row * p.grad_row_stride;
    scalar_t* out = static_cast<scalar_t*>(p.grad_logits) + row * p.cols;
    const acc_t* stats = static_cast<const acc_t*>(p.stats) + row * k * 2;
    if (tid < k) {
      step_m[tid] = stats[2 * tid];
      step_rest[tid] = stats[2 * tid + 1];
    }
    __syncthreads();
    if (step_m[0] != step_m[0]) {  // the forward found no subset (uniform over the block)
      for (int64_t c = tid; c < p.cols; c += T) {
        out[c] = static_cast<scalar_t>(std::numeric_limits<acc_t>::quiet_NaN());
      }
      __syncthreads();
      continue;
    }
    // 1. d_j for j = k-1 .. 0, each from the later ones.
    for (int t = 0; t < k; ++t) {
      const int j = k - 1 - t;
      acc_t d = 0;
      for (int64_t g = tid; g < groups; g += T) {
        acc_t s[4];
        group_scores(x_row, row_pos, p.cols, g, seed, base, cache, t == 0, s);
        const int64_t col0 = group_col0(row_pos, g);
#pragma unroll
        for (int l = 0; l < 4; ++l) {
          if (col0 + l < 0 || col0 + l >= p.cols) continue;
          const acc_t gy = static_cast<acc_t>(g_row[col0 + l]);
          acc_t p_j, r_j;
          const acc_t ga_next = chain(s[l], gy, k, j, step_m, step_rest, ds, a.inv_tau, p_j, r_j);
          d += (gy - ga_next * r_j) * p_j;
        }
      }
      d = group_sum(d, T, red);
      if (tid == 0) ds[j] = d;
      __syncthreads();  // d_j before the next pass reads it
    }
    // 2. The gradient ga_1.
    for (int64_t g = tid; g < groups; g += T) {
      acc_t s[4];
      group_scores(x_row, row_pos, p.cols, g, seed, base, cache, false, s);
      const int64_t col0 = group_col0(row_pos, g);
#pragma unroll
      for (int l = 0; l < 4; ++l) {
        if (col0 + l < 0 || col0 + l >= p.cols) continue;
        const acc_t gy = static_cast<acc_t>(g_row[col0 + l]);
        acc_t p_j, r_j;
        out[col0 + l] = static_cast<scalar_t>(
            chain(s[l], gy, k, -1, step_m, step_rest, ds, a.inv_tau, p_j, r_j));
      }
    }
    __syncthreads();  // step_m, step_rest and ds are rewritten for the next row
  }
}

// Threads per block: the row's groups rounded up to a power of two, 32 to kMaxThreads.
int block_threads(int64_t cols) {
  const int64_t groups = cols / 4 + 2;
  int t = 32;
  while (t < kMaxThreads && t < groups) t *= 2;
  return t;
}

// Dynamic shared memory for the cache of s (0: regenerate it in every pass).
template <class acc_t>
size_t cache_bytes(int64_t cols) {
  const size_t bytes = static_cast<size_t>(cols / 4 + 2) * 4 * sizeof(acc_t);
  return bytes <= kCacheBytes ? bytes : 0;
}

// Blocks: one per row, capped (rows are grid-strided).
unsigned grid_blocks(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>(rows, 1 << 20));
}


template <class scalar_t>
void launch_forward(const TopkForwardParams& p, const at::PhiloxCudaState& philox) {
  using acc_t = acc_type<scalar_t>;
  TopkFwdArgs<acc_t> a;
  a.p = p;
  a.philox = philox;
  a.inv_tau = inverse_temperature<acc_t>(p.tau, std::numeric_limits<acc_t>::max());
  const size_t smem = cache_bytes<acc_t>(p.cols);
  a.cached = smem > 0;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  topk_forward_kernel<scalar_t><<<grid_blocks(p.rows), block_threads(p.cols), smem, stream>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <class scalar_t>
void launch_backward(const TopkBackwardParams& p) {
  using acc_t = acc_type<scalar_t>;
  TopkBwdArgs<acc_t> a;
  a.p = p;
  a.inv_tau = inverse_temperature<acc_t>(p.tau, std::numeric_limits<acc_t>::max());
  const size_t smem = cache_bytes<acc_t>(p.cols);
  a.cached = smem > 0;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  topk_backward_kernel<scalar_t><<<grid_blocks(p.rows), block_threads(p.cols), smem, stream>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void check_cuda_k(int64_t k) {
  TORCH_CHECK_VALUE(k <= kMaxK, "fused_gumbel: the CUDA gumbel_topk takes k up to ",
                    number(static_cast<int64_t>(kMaxK)), ", got k=", number(k),
                    "; use backend='triton' (any k)");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gumbel_topk_cuda(
    const at::Tensor& logits, int64_t k, double tau, bool hard, int64_t dim,
    std::optional<int64_t> seed) {
  const c10::cuda::CUDAGuard guard(logits.device());
  TopkForwardOutputs o = prepare_topk_forward(logits, k, tau, hard, dim);
  check_cuda_k(k);
  const TopkForwardParams& p = o.params;
  if (p.rows == 0) {
    o.rng_state.zero_();  // nothing drawn; keeps the output defined
    return {o.out, o.index, o.stats, o.rng_state};
  }
  const at::PhiloxCudaState philox = philox_state(seed, logits.device(), p.rows * p.cols);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(),
                                  "fused_gumbel_gumbel_topk_cuda",
                                  [&] { launch_forward<scalar_t>(p, philox); });
  return {o.out, o.index, o.stats, o.rng_state};
}

at::Tensor gumbel_topk_backward_cuda(const at::Tensor& grad, const at::Tensor& logits,
                                     const at::Tensor& stats, const at::Tensor& rng_state,
                                     int64_t k, double tau, int64_t dim) {
  const c10::cuda::CUDAGuard guard(logits.device());
  for (const at::Tensor* t : {&grad, &stats, &rng_state}) {
    TORCH_CHECK(t->device() == logits.device(), "fused_gumbel: gumbel_topk_backward's tensors "
                "must be on ", logits.device().str(), ", got one on ", t->device().str());
  }
  TopkBackwardInputs b = prepare_topk_backward(grad, logits, stats, rng_state, k, tau, dim);
  check_cuda_k(k);
  if (b.params.rows == 0) return b.grad_logits;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(),
                                  "fused_gumbel_gumbel_topk_backward_cuda",
                                  [&] { launch_backward<scalar_t>(b.params); });
  return b.grad_logits;
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_gumbel, CUDA, m) {
  m.impl("gumbel_topk", &gumbel_topk_cuda);
  m.impl("gumbel_topk_backward", &gumbel_topk_backward_cuda);
  register_topk_tau_tensor_siblings<&gumbel_topk_cuda, &gumbel_topk_backward_cuda>(m);
}

}  // namespace fused_gumbel
