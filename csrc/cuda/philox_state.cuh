// The Philox key and counter base of one kernel call, as every CUDA op of the
// library draws them: an explicit seed with base 0, or (seed=None) the device's
// default CUDA generator, whose offset advances past the call's counters. The
// state is unpacked inside the kernel (at::cuda::philox::unpack), so CUDA-graph
// replays draw fresh noise.
#pragma once

#include <ATen/cuda/CUDAGeneratorImpl.h>

#include <mutex>
#include <optional>

#include "st_softmax.h"

namespace fused_gumbel {

// Philox counters for `numel` elements, as an increment of the generator's
// offset (which PyTorch keeps a multiple of 4).
inline uint64_t generator_increment(int64_t numel) {
  return (philox_counters(numel) + 3) / 4 * 4;
}

inline at::PhiloxCudaState philox_state(std::optional<int64_t> seed, const at::Device& device,
                                        int64_t numel) {
  if (seed.has_value()) return at::PhiloxCudaState(seed_bits(*seed), 0);
  auto* gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
      std::nullopt, at::cuda::detail::getDefaultCUDAGenerator(device.index()));
  // See Note [Acquire lock when using random generators].
  const std::lock_guard<std::mutex> lock(gen->mutex_);
  return gen->philox_cuda_state(generator_increment(numel));
}

}  // namespace fused_gumbel
