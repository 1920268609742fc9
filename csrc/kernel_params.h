// Kernel arguments shared by the CPU and CUDA kernels: plain pointers, sizes and
// strides, no torch types. The host wrappers (csrc/st_softmax.cpp) have already
// turned any `dim` into rows of `cols` contiguous elements.
#pragma once

#include <stdint.h>

namespace fused_gumbel {

struct ForwardParams {
  const void* logits;         // [rows, cols], row stride logits_row_stride, col stride 1
  int64_t logits_row_stride;  // in elements
  void* out;                  // [rows, cols] contiguous, the input dtype
  void* y_soft;               // [rows, cols] contiguous soft sample, or nullptr (see keeps_soft_sample)
  int64_t* index;             // [rows]
  void* stats;                // [rows, 2] of the accumulation type: (max, sum)
  int64_t* rng_state;         // [2]: (seed, counter base) written for the backward
  int64_t rows;
  int64_t cols;
  uint64_t seed;              // Philox key; ignored on CUDA when philox_from_generator
  uint64_t base;              // Philox counter base
  // Row r's column c draws the noise of flat position
  // r * noise_row_stride + noise_offset + c: (cols, 0) but for a vocabulary shard.
  int64_t noise_row_stride;
  int64_t noise_offset;
  double tau;
  bool hard;
};

struct BackwardParams {
  const void* grad;           // [rows, cols], col stride 1
  int64_t grad_row_stride;
  const void* y_soft;         // the soft sample (hard=False), or nullptr
  int64_t y_soft_row_stride;
  const void* logits;         // the logits (hard=True: the soft sample is recomputed)
  int64_t logits_row_stride;
  const void* stats;          // [rows, 2] from the forward
  const int64_t* rng_state;   // [2] from the forward, on the kernel's device
  void* grad_logits;          // [rows, cols] contiguous
  int64_t rows;
  int64_t cols;
  double tau;
};

}  // namespace fused_gumbel
