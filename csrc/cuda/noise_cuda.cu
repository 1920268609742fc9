// CUDA kernels of the two inspection ops: fill_gumbel_noise (the noise for a
// seed at positions 0 .. numel-1) and philox_bits (the raw Philox words under
// it). Both evaluate csrc/gumbel_math.h, so they match the CPU kernels bit for bit.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "gumbel_math.h"
#include "st_softmax.h"

namespace fused_gumbel {
namespace {

constexpr int kThreads = 256;

// Enough blocks to fill the device; the kernels loop over the rest.
int grid_for(int64_t items) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<int>(std::min<int64_t>((items + kThreads - 1) / kThreads, sms * 16));
}

// Thread work item i: Philox counter counter + i, words w0..w3 to out[4i .. 4i+3].
// With `gumbel`, the four noise values instead (float32 bits), `n` the count.
__global__ void __launch_bounds__(kThreads)
    philox_groups_kernel(uint32_t* out, int64_t n, uint64_t seed, uint64_t counter,
                         bool gumbel, bool vec) {
  const int64_t groups = (n + 3) / 4;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < groups; i += stride) {
    const uint64_t ctr = counter + static_cast<uint64_t>(i);
    uint32_t w[4] = {static_cast<uint32_t>(ctr), static_cast<uint32_t>(ctr >> 32), 0, 0};
    philox4x32_10<ScalarOps>(w[0], w[1], w[2], w[3], static_cast<uint32_t>(seed),
                             static_cast<uint32_t>(seed >> 32));
    if (gumbel) {
#pragma unroll
      for (int j = 0; j < 4; ++j) w[j] = __float_as_uint(gumbel_from_bits<ScalarOps>(w[j]));
    }
    if (vec && 4 * i + 4 <= n) {
      reinterpret_cast<uint4*>(out)[i] = make_uint4(w[0], w[1], w[2], w[3]);
    } else {
      for (int j = 0; j < 4 && 4 * i + j < n; ++j) out[4 * i + j] = w[j];
    }
  }
}

void launch_groups(const at::Tensor& out, uint64_t seed, uint64_t counter, bool gumbel) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const c10::cuda::CUDAGuard guard(out.device());
  const bool vec = reinterpret_cast<uintptr_t>(out.data_ptr()) % 16 == 0;
  philox_groups_kernel<<<grid_for((n + 3) / 4), kThreads, 0,
                         at::cuda::getCurrentCUDAStream()>>>(
      static_cast<uint32_t*>(out.data_ptr()), n, seed, counter, gumbel, vec);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void fill_gumbel_noise_cuda(at::Tensor& out, int64_t seed) {
  TORCH_CHECK(out.scalar_type() == at::kFloat,
              "fused_gumbel: fill_gumbel_noise writes float32, got ",
              c10::toString(out.scalar_type()));
  TORCH_CHECK(out.is_contiguous(), "fused_gumbel: fill_gumbel_noise needs a contiguous out");
  // Position p uses counter p >> 2 (base 0), so work item i is counter i.
  launch_groups(out, seed_bits(seed), 0, /*gumbel=*/true);
}

void philox_bits_cuda(at::Tensor& out, int64_t seed, int64_t counter) {
  TORCH_CHECK(out.scalar_type() == at::kInt,
              "fused_gumbel: philox_bits writes int32, got ", c10::toString(out.scalar_type()));
  TORCH_CHECK(out.is_contiguous() && out.numel() % 4 == 0,
              "fused_gumbel: philox_bits needs a contiguous [n, 4] out, got ",
              number(out.numel()), " elements");
  launch_groups(out, seed_bits(seed), static_cast<uint64_t>(counter), /*gumbel=*/false);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_gumbel, CUDA, m) {
  m.impl("fill_gumbel_noise", &fill_gumbel_noise_cuda);
  m.impl("philox_bits", &philox_bits_cuda);
}

}  // namespace fused_gumbel
