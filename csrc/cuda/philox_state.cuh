// The Philox key and counter base of one kernel call, as every CUDA op of the
// library draws them: an explicit seed with base 0, or (seed=None) the device's
// default CUDA generator, whose offset advances past the call's counters. The
// state is unpacked inside the kernel (at::cuda::philox::unpack), so CUDA-graph
// replays draw fresh noise.
//
// PyTorch counts the generator's offset in 32-bit draws: its random kernels
// (curand_init(seed, thread, offset)) start thread t at counter offset / 4 of
// subsequence t. This library's counters are subsequence 0's, so they start at
// offset / 4 and the call reserves 4 draws per counter: taken as a counter, the
// offset would run this call's counters into the ones thread 0 of a later
// torch.rand or dropout draws.
#pragma once

#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/PhiloxUtils.cuh>

#include <mutex>
#include <optional>
#include <tuple>
#include <utility>

#include "st_softmax.h"

namespace fused_gumbel {

// The generator's offset increment for `numel` elements: 4 draws per counter.
inline uint64_t generator_increment(int64_t numel) { return 4 * philox_counters(numel); }

inline at::PhiloxCudaState philox_state(std::optional<int64_t> seed, const at::Device& device,
                                        int64_t numel) {
  if (seed.has_value()) return at::PhiloxCudaState(seed_bits(*seed), 0);
  auto* gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
      std::nullopt, at::cuda::detail::getDefaultCUDAGenerator(device.index()));
  // See Note [Acquire lock when using random generators].
  const std::lock_guard<std::mutex> lock(gen->mutex_);
  return gen->philox_cuda_state(generator_increment(numel));
}

// The (key, counter base) a kernel draws with, unpacked from its state on the
// device.
__device__ __forceinline__ std::pair<uint64_t, uint64_t> philox_seeds(const at::PhiloxCudaState& philox) {
  const auto seeds = at::cuda::philox::unpack(philox);
  return {std::get<0>(seeds), std::get<1>(seeds) / 4};
}

}  // namespace fused_gumbel
