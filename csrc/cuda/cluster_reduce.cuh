// Reductions over the blocks of a thread-block cluster (sm_90 and later), each
// block holding one chunk of a row in its shared memory: after its own group
// reduction every block publishes its result in one shared slot, and every
// thread reads all the cluster's slots through distributed shared memory in
// rank order, so that every block of the row gets the same bits without a
// round trip through global memory or a second kernel.
//
// Every thread of every block of the cluster must call them, in the same order.
// A block may not exit while another still reads its slots: the last reduction
// is followed by cluster_arrive(), and the block calls cluster_wait() before it
// exits (the wait overlaps the block's output pass).
#pragma once

#include <stdint.h>

#include "gumbel_math.h"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#include <cooperative_groups.h>
#define FUSED_GUMBEL_CLUSTERS 1
#endif

namespace fused_gumbel {

// The first argmax (under argmax_better, a total order) over the cluster's blocks.
template <class T>
__device__ __forceinline__ void cluster_argmax(T& m, int64_t& arg, T* slot_m,
                                               int64_t* slot_arg) {
#ifdef FUSED_GUMBEL_CLUSTERS
  namespace cg = cooperative_groups;
  const cg::cluster_group cluster = cg::this_cluster();
  if (threadIdx.x == 0) {
    *slot_m = m;
    *slot_arg = arg;
  }
  cluster.sync();
  const int blocks = static_cast<int>(cluster.num_blocks());
  m = *cluster.map_shared_rank(slot_m, 0);
  arg = *cluster.map_shared_rank(slot_arg, 0);
  for (int r = 1; r < blocks; ++r) {
    const T om = *cluster.map_shared_rank(slot_m, r);
    const int64_t oa = *cluster.map_shared_rank(slot_arg, r);
    if (argmax_better(om, oa, m, arg)) {
      m = om;
      arg = oa;
    }
  }
#else
  __trap();
#endif
}

// The sum over the cluster's blocks, added in rank order. Then cluster_arrive.
template <class T>
__device__ __forceinline__ T cluster_sum(T v, T* slot) {
#ifdef FUSED_GUMBEL_CLUSTERS
  namespace cg = cooperative_groups;
  const cg::cluster_group cluster = cg::this_cluster();
  if (threadIdx.x == 0) *slot = v;
  cluster.sync();
  const int blocks = static_cast<int>(cluster.num_blocks());
  v = *cluster.map_shared_rank(slot, 0);
  for (int r = 1; r < blocks; ++r) v += *cluster.map_shared_rank(slot, r);
  return v;
#else
  __trap();
  return v;
#endif
}

// After this block's last read of another block's slots.
__device__ __forceinline__ void cluster_arrive() {
#ifdef FUSED_GUMBEL_CLUSTERS
  cooperative_groups::this_cluster().barrier_arrive();
#else
  __trap();
#endif
}

// Before this block exits: every block of the cluster has read its slots.
__device__ __forceinline__ void cluster_wait() {
#ifdef FUSED_GUMBEL_CLUSTERS
  cooperative_groups::this_cluster().barrier_wait();
#else
  __trap();
#endif
}

}  // namespace fused_gumbel
