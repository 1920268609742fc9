// The forward-only sampler: one class per row from softmax(logits / temperature)
// by Gumbel-max, with the noise of st_softmax. It reads the logits once and
// writes only the indices.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <stdint.h>

#include "st_softmax.h"

namespace fused_gumbel {

// Kernel arguments, shared by the CPU and CUDA kernels.
struct SampleParams {
  const void* logits;         // [rows, cols], col stride 1
  int64_t logits_row_stride;  // in elements
  int64_t* index;             // [rows]
  int64_t rows;
  int64_t cols;
  uint64_t seed;              // Philox key; ignored on CUDA when drawn from the generator
  uint64_t base;              // Philox counter base
  double temperature;
};

// Row r's sample is the first c maximizing s = x[c] * w.x + w.g * g[c], w =
// sample_score_weights(temperature) (gumbel_math.h: x + T g for T <= 1, x / T +
// g above; the weights and the arithmetic in float32, float64 for float64
// logits): argmax(x / T + g) up to rounding, with temperature 1 exactly the
// index of st_softmax, and no overflow for any finite temperature. A row whose
// max s is NaN or infinite (a NaN, all -inf, a +inf logit) has no sample: -1.
constexpr int64_t kNoSample = -1;

struct SampleInputs {
  at::Tensor rows_in;  // the logits as [rows, cols]
  at::Tensor index;    // int64, the logits' shape without dim
  SampleParams params;
};

// Checks the inputs (the contract's errors; ValueError names `temperature`) and
// allocates the index; the random state is the caller's.
SampleInputs prepare_sample(const at::Tensor& logits, double temperature, int64_t dim);

// Registers a backend's sample_tau_tensor (the temperature a one-element CPU
// tensor: what fused_gumbel.sample passes under torch.compile, where a float
// argument would be a constant of the graph, one graph per temperature) as its
// sample kernel Sample, called with the temperature as a double.
template <auto Sample>
void register_sample_tau_tensor_sibling(torch::Library& m) {
  m.impl("sample_tau_tensor", [](const at::Tensor& logits, const at::Tensor& temperature,
                                 int64_t dim, std::optional<int64_t> seed) {
    return Sample(logits, tensor_tau(temperature, "temperature"), dim, seed);
  });
}

}  // namespace fused_gumbel
