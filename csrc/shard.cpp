// The schema of st_softmax_shard and its host-side preparation.
#include "shard.h"

#include <torch/library.h>

#include "st_softmax.h"

namespace fused_gumbel {

ForwardOutputs prepare_shard(const at::Tensor& logits, double tau, int64_t seed,
                             int64_t vocab_start, int64_t vocab_size) {
  TORCH_CHECK_VALUE(logits.dim() >= 1, "fused_gumbel: a vocabulary shard needs at "
                    "least one dimension (the vocabulary, last)");
  const int64_t cols = logits.size(-1);
  TORCH_CHECK_VALUE(vocab_start >= 0 && cols >= 1 && vocab_start + cols <= vocab_size,
                    "fused_gumbel: the shard's columns [vocab_start, vocab_start + ",
                    number(cols), ") = [", number(vocab_start), ", ", number(vocab_start + cols),
                    ") must lie inside the vocabulary [0, vocab_size = ", number(vocab_size), ")");
  ForwardOutputs o = prepare_forward(logits, tau, /*hard=*/false, /*dim=*/-1);
  o.params.seed = seed_bits(seed);
  o.params.base = 0;
  o.params.noise_row_stride = vocab_size;
  o.params.noise_offset = vocab_start;
  return o;
}

TORCH_LIBRARY_FRAGMENT(fused_gumbel, m) {
  // Returns (y_local, index, stats) for a shard of the vocabulary along the last
  // dim: y_local = exp((s - m) / tau) / l with the shard's own (m, l) = stats,
  // index the global column of the shard's argmax. Forward only: the
  // distributed autograd (fused_gumbel/distributed.py) needs the global sums.
  m.def(
      "st_softmax_shard(Tensor logits, float tau, SymInt seed, int vocab_start, "
      "int vocab_size) -> (Tensor, Tensor, Tensor)");
}

}  // namespace fused_gumbel
