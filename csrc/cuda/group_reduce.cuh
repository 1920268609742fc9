// Reductions over the G threads that process one segment together. G is a power
// of two: either a sub-warp (G <= 32, the group's lanes contiguous and aligned
// inside one warp, several groups per warp) or the whole block (G == blockDim.x).
// Every thread of the block must call them: they use full-warp shuffles and, for
// G > 32, __syncthreads. Each thread of a group gets the same bits (xor butterflies
// of commutative operations, then every thread folds the per-warp results in the
// same order), so no broadcast step is needed.
#pragma once

#include <stdint.h>

#include "gumbel_math.h"

namespace fused_gumbel {

constexpr unsigned kFullWarp = 0xffffffffu;

// Sum over the group. `scratch` holds 32 values in shared memory.
template <class T>
__device__ __forceinline__ T group_sum(T v, int group, T* scratch) {
  for (int off = (group < 32 ? group : 32) / 2; off > 0; off >>= 1) {
    v += __shfl_xor_sync(kFullWarp, v, off);
  }
  if (group > 32) {
    const int warp = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) scratch[warp] = v;
    __syncthreads();
    v = scratch[0];
    for (int w = 1; w < group / 32; ++w) v += scratch[w];
    __syncthreads();  // scratch may be reused by the next reduction
  }
  return v;
}

// Argmax (value, index) over the group under argmax_better's order, which is
// total, so the result does not depend on the reduction tree.
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
    const int warp = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) {
      scratch_m[warp] = m;
      scratch_arg[warp] = arg;
    }
    __syncthreads();
    for (int w = 0; w < group / 32; ++w) {
      if (argmax_better(scratch_m[w], scratch_arg[w], m, arg)) {
        m = scratch_m[w];
        arg = scratch_arg[w];
      }
    }
    __syncthreads();
  }
}

}  // namespace fused_gumbel
