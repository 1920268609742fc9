// Host-side pieces of gumbel_topk shared by every backend's wrapper: the kernel
// arguments, the check of k and the forward's and backward's tensors.
//
// The relaxation (Xie & Ermon 2019) and how the kernels evaluate it, per row of
// s = x + g (acc = float32, float64 for float64 logits):
//   a_1 = s
//   step j = 1..k:  m_j    = max_i a_j[i]
//                   rest_j = sum_i e_j[i] - 1,  e_j = exp((a_j - m_j) / tau)
//                            (summed over every element but one maximum: no
//                            cancellation, e = 1 exactly at the maximum)
//                   p_j    = e_j / (1 + rest_j)
//                   q_j    = rest_j / (1 + rest_j) where p_j > 1/2 (only the max
//                            can have it), else 1 - p_j:  q_j = 1 - p_j exactly,
//                            without the rounding of 1 - p_j near p_j = 1
//                   a_{j+1} = a_j + log(max(q_j, tiny))
//   y_soft = sum_j p_j
// stats[row, j] = (m_j, rest_j) is all the backward needs besides the logits and
// the Philox state: it regenerates s and then every p_j element by element.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>

#include "st_softmax.h"

namespace fused_gumbel {

struct TopkForwardParams {
  const void* logits;         // [rows, cols], row stride logits_row_stride, col stride 1
  int64_t logits_row_stride;  // in elements
  void* out;                  // [rows, cols] contiguous, the input dtype
  int64_t* index;             // [rows, k]: the chosen columns, best first
  void* stats;                // [rows, k, 2] of the accumulation type: (m_j, rest_j);
                              // NaN for a row with no subset
  int64_t* rng_state;         // [2]: (seed, counter base), written for the backward
  int64_t rows;
  int64_t cols;
  int64_t k;
  uint64_t seed;              // Philox key; ignored on CUDA when drawn on the device
  uint64_t base;              // Philox counter base
  double tau;
  bool hard;
};

struct TopkBackwardParams {
  const void* grad;           // [rows, cols], col stride 1
  int64_t grad_row_stride;
  const void* logits;         // [rows, cols], col stride 1
  int64_t logits_row_stride;
  const void* stats;          // [rows, k, 2] from the forward
  const int64_t* rng_state;   // [2] from the forward, on the kernel's device
  void* grad_logits;          // [rows, cols] contiguous
  int64_t rows;
  int64_t cols;
  int64_t k;
  double tau;
};

// ValueError naming k unless 1 <= k <= cols (the size of the sampled dim).
void check_k(int64_t k, int64_t cols);

struct TopkForwardOutputs {
  at::Tensor rows_in;    // the logits as [rows, cols]
  at::Tensor out;        // the sample, in the logits' shape
  at::Tensor index;      // int64, the logits' shape with dim of size k
  at::Tensor stats;      // [..., k, 2] of the accumulation type
  at::Tensor rng_state;  // int64 [2]
  TopkForwardParams params;
};

// Checks the inputs (the contract's errors, then k), allocates the outputs on
// logits' device and fills the kernel arguments but the random state.
TopkForwardOutputs prepare_topk_forward(const at::Tensor& logits, int64_t k, double tau,
                                        bool hard, int64_t dim);

struct TopkBackwardInputs {
  at::Tensor grad_rows, logits_rows, stats, rng_state;
  at::Tensor grad_logits;  // the logits' shape
  TopkBackwardParams params;
};

TopkBackwardInputs prepare_topk_backward(const at::Tensor& grad, const at::Tensor& logits,
                                         const at::Tensor& stats, const at::Tensor& rng_state,
                                         int64_t k, double tau, int64_t dim);

// Registers a backend's gumbel_topk_tau_tensor and gumbel_topk_backward_tau_tensor
// (tau a one-element CPU tensor: what torch.compile passes, see st_softmax.h's
// register_tau_tensor_siblings) as its gumbel_topk and gumbel_topk_backward
// kernels, Forward and Backward, called with tau as a double.
template <auto Forward, auto Backward>
void register_topk_tau_tensor_siblings(torch::Library& m) {
  m.impl("gumbel_topk_tau_tensor",
         [](const at::Tensor& logits, int64_t k, const at::Tensor& tau, bool hard, int64_t dim,
            std::optional<int64_t> seed) {
           return Forward(logits, k, tensor_tau(tau), hard, dim, seed);
         });
  m.impl("gumbel_topk_backward_tau_tensor",
         [](const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& stats,
            const at::Tensor& rng_state, int64_t k, const at::Tensor& tau, int64_t dim) {
           return Backward(grad, logits, stats, rng_state, k, tensor_tau(tau), dim);
         });
}

}  // namespace fused_gumbel
