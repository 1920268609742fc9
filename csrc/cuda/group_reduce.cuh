// Reductions over the G threads that process one segment together. G is a power
// of two: either a sub-warp (G <= 32, the group's lanes contiguous and aligned
// inside one warp, several groups per warp) or the whole block (G == blockDim.x).
// Every thread of the block must call them: they use full-warp shuffles and, for
// G > 32, __syncthreads. Each thread of a group gets the same bits: xor
// butterflies of commutative operations inside a warp, and for G > 32 one warp's
// fold of the per-warp results, read back by all.
#pragma once

#include <stdint.h>

#include "gumbel_math.h"

namespace fused_gumbel {

constexpr unsigned kFullWarp = 0xffffffffu;

// Shared-memory slots a reduction's scratch needs: one per warp, and one for
// the block's result.
constexpr int kReduceSlots = 33;

// Sum over the group. `scratch` holds kReduceSlots values in shared memory.
template <class T>
__device__ __forceinline__ T group_sum(T v, int group, T* scratch) {
  for (int off = (group < 32 ? group : 32) / 2; off > 0; off >>= 1) {
    v += __shfl_xor_sync(kFullWarp, v, off);
  }
  if (group > 32) {
    // The first warp folds the per-warp sums and shares the result: when every
    // warp folded all of them, the fold was about a tenth of a 1024-thread
    // forward's instructions. Two barriers: the next reduction writes the
    // per-warp slots, never the result slot, before its first barrier.
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = group / 32;
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
      v = scratch[lane < warps ? lane : 0];
      for (int off = warps / 2; off > 0; off >>= 1) v += __shfl_xor_sync(kFullWarp, v, off);
      if (lane == 0) scratch[32] = v;
    }
    __syncthreads();
    v = scratch[32];
  }
  return v;
}

// Argmax (value, index) over the group under argmax_better's order, which is
// total, so the result does not depend on the reduction tree. Scratch as
// group_sum's.
template <class T>
__device__ __forceinline__ void group_argmax(T& m, int64_t& arg, int group,
                                             T* scratch_m, int64_t* scratch_arg) {
  for (int off = (group < 32 ? group : 32) / 2; off > 0; off >>= 1) {
    const T om = __shfl_xor_sync(kFullWarp, m, off);
    const int64_t oa = __shfl_xor_sync(kFullWarp, arg, off);
    if (argmax_better(om, oa, m, arg)) {
      m = om;
      arg = oa;
    }
  }
  if (group > 32) {
    // As group_sum: the first warp folds, every thread reads its result.
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = group / 32;
    if (lane == 0) {
      scratch_m[warp] = m;
      scratch_arg[warp] = arg;
    }
    __syncthreads();
    if (warp == 0) {
      m = scratch_m[lane < warps ? lane : 0];
      arg = scratch_arg[lane < warps ? lane : 0];
      for (int off = warps / 2; off > 0; off >>= 1) {
        const T om = __shfl_xor_sync(kFullWarp, m, off);
        const int64_t oa = __shfl_xor_sync(kFullWarp, arg, off);
        if (argmax_better(om, oa, m, arg)) {
          m = om;
          arg = oa;
        }
      }
      if (lane == 0) {
        scratch_m[32] = m;
        scratch_arg[32] = arg;
      }
    }
    __syncthreads();
    m = scratch_m[32];
    arg = scratch_arg[32];
  }
}

}  // namespace fused_gumbel
