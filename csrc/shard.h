// One rank's part of vocabulary-parallel Gumbel-Softmax (fused_gumbel/distributed.py):
// the rows' columns [vocab_start, vocab_start + cols) of a vocabulary of
// vocab_size, with the noise of those global positions (row * vocab_size +
// vocab_start + col), so that the gathered shards equal the unsharded result.
#pragma once

#include <ATen/ATen.h>

#include "st_softmax.h"

namespace fused_gumbel {

// Checks the inputs and allocates the outputs of st_softmax_shard (the soft
// sample against the shard's own max and sum, the global index of the shard's
// argmax, the shard's (max, sum)); the kernel arguments carry the global
// noise positions.
ForwardOutputs prepare_shard(const at::Tensor& logits, double tau, int64_t seed,
                             int64_t vocab_start, int64_t vocab_size);

}  // namespace fused_gumbel
