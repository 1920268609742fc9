// Host-side pieces every backend's wrapper shares: the contract's input checks,
// the view of any `dim` as [rows, cols] rows, and the forward's outputs.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <string>

#include "kernel_params.h"

namespace fused_gumbel {

// The temperature of st_softmax_tau_tensor and its backward (a one-element
// CPU tensor) as a double; check_inputs checks its range. tau_name is how the
// caller's API spells the temperature.
double tensor_tau(const at::Tensor& tau, const char* tau_name = "tau");

// Numbers in error messages go through these (snprintf, std::to_string), never
// std::ostream: on a toolchain that links its own libstdc++ statically (the GPU
// check machine's /opt/gcc does), an extension's ostream << number meets the
// process's locale facets from another libstdc++ and crashes instead of raising.
std::string number(double v);
std::string number(int64_t v);

// Raises the contract's errors (TypeError for the dtype, ValueError for tau,
// IndexError for dim) before any work is done; returns dim wrapped to [0, ndim).
// tau_name is how the caller's API spells the temperature.
int64_t check_inputs(const at::Tensor& logits, double tau, int64_t dim,
                     const char* tau_name = "tau");

// float64 logits accumulate in float64 (gradcheck needs it); all others in float32.
at::ScalarType accumulation_type(at::ScalarType dtype);

// `t` with `dim` moved last, as a 2-D [rows, cols] tensor whose last stride is 1.
// A copy is made only when the moved layout cannot be viewed that way.
at::Tensor as_rows(const at::Tensor& t, int64_t dim);

// A fresh tensor of `sizes` whose dim `dim` is last in memory and contiguous:
// its storage is the [rows, cols] rows the kernels write (see rows_of). Not a
// view of such a tensor: autograd forbids in-place writes into a custom op's
// outputs that are views, and users write into samples (y[mask] = 0) as they
// do into F.gumbel_softmax's.
at::Tensor empty_dim_last(at::IntArrayRef sizes, int64_t dim, const at::TensorOptions& options);

// The [rows, cols] view of a tensor made by empty_dim_last.
at::Tensor rows_of(const at::Tensor& t, int64_t dim);

struct ForwardOutputs {
  at::Tensor rows_in;   // the logits as [rows, cols]
  at::Tensor out;       // the sample, in the logits' shape
  at::Tensor out_rows;  // the same storage as [rows, cols] contiguous
  at::Tensor index;     // int64, the logits' shape without dim
  at::Tensor stats;     // [..., 2] of accumulation_type: max and sum per row
  at::Tensor rng_state; // int64 [2]: (seed, counter base)
  at::Tensor y_soft;    // the soft sample kept for the backward, or empty
  ForwardParams params;
};

// With hard=True, whether the forward also writes the soft sample for the
// backward (instead of the backward regenerating it). On the CPU the noise
// arithmetic dominates, so regenerating would double the backward's cost. On
// CUDA, keeping it would cost an extra tensor of memory and a write of every
// element in the forward; the backward reads the logits instead, so it saves only
// per-row statistics and regenerates the noise. The Python fake kernel
// (fused_gumbel/ops.py) mirrors this rule.
inline bool keeps_soft_sample(const at::Tensor& logits, bool hard) {
  return hard && logits.device().is_cpu();
}

// Checks the inputs, allocates every output on logits' device and fills the
// kernel arguments but the random state.
ForwardOutputs prepare_forward(const at::Tensor& logits, double tau, bool hard,
                               int64_t dim);

struct BackwardInputs {
  at::Tensor grad_rows, y_soft_rows, logits_rows, stats, rng_state;
  at::Tensor grad_logits;       // the logits' shape
  at::Tensor grad_logits_rows;  // its storage as [rows, cols] contiguous
  BackwardParams params;
};

BackwardInputs prepare_backward(const at::Tensor& grad,
                                const std::optional<at::Tensor>& y_soft,
                                const std::optional<at::Tensor>& logits,
                                const at::Tensor& stats,
                                const at::Tensor& rng_state, double tau,
                                int64_t dim);

// Registers a backend's st_softmax_tau_tensor and st_softmax_backward_tau_tensor
// (tau a one-element CPU tensor) as its st_softmax and st_softmax_backward
// kernels, Forward and Backward, called with tau as a double.
template <auto Forward, auto Backward>
void register_tau_tensor_siblings(torch::Library& m) {
  m.impl("st_softmax_tau_tensor",
         [](const at::Tensor& logits, const at::Tensor& tau, bool hard, int64_t dim,
            std::optional<int64_t> seed) {
           return Forward(logits, tensor_tau(tau), hard, dim, seed);
         });
  m.impl("st_softmax_backward_tau_tensor",
         [](const at::Tensor& grad, const std::optional<at::Tensor>& y_soft,
            const std::optional<at::Tensor>& logits, const at::Tensor& stats,
            const at::Tensor& rng_state, const at::Tensor& tau, int64_t dim) {
           return Backward(grad, y_soft, logits, stats, rng_state, tensor_tau(tau), dim);
         });
}

// Seeds are 64-bit; the schema carries them as int64, so negative values are the
// upper half of the range.
inline uint64_t seed_bits(int64_t seed) { return static_cast<uint64_t>(seed); }

// Philox counters one call consumes: one per group of four elements.
inline uint64_t philox_counters(int64_t numel) {
  return (static_cast<uint64_t>(numel) + 3) / 4;
}

}  // namespace fused_gumbel
