// The schema of the forward-only sampler and its host-side preparation.
#include "sample.h"

#include <torch/library.h>

#include <vector>

#include "st_softmax.h"

namespace fused_gumbel {

SampleInputs prepare_sample(const at::Tensor& logits, double temperature, int64_t dim) {
  dim = check_inputs(logits, temperature, dim, "temperature");
  const at::Tensor x = logits.dim() == 0 ? logits.reshape({1}) : logits;
  std::vector<int64_t> index_sizes(x.sizes().begin(), x.sizes().end());
  const int64_t cols = index_sizes[dim];
  index_sizes.erase(index_sizes.begin() + dim);
  int64_t rows = 1;
  for (int64_t s : index_sizes) rows *= s;
  TORCH_CHECK_VALUE(cols > 0 || rows == 0, "fused_gumbel: cannot sample from dim ",
                    number(dim), ", which has size 0");

  SampleInputs in;
  in.rows_in = as_rows(x, dim);
  in.index = at::empty(index_sizes, x.options().dtype(at::kLong));
  SampleParams& p = in.params;
  p.logits = in.rows_in.data_ptr();
  p.logits_row_stride = in.rows_in.stride(0);
  p.index = in.index.data_ptr<int64_t>();
  p.rows = rows;
  p.cols = cols;
  p.seed = 0;
  p.base = 0;
  p.temperature = temperature;
  return in;
}

TORCH_LIBRARY_FRAGMENT(fused_gumbel, m) {
  // The int64 index of one class per row drawn from softmax(logits / temperature)
  // along dim (-1 for a row with no valid sample), with st_softmax's noise.
  m.def("sample(Tensor logits, float temperature, int dim, SymInt? seed) -> Tensor",
        {at::Tag::nondeterministic_seeded});
  // The temperature as a one-element CPU tensor: what fused_gumbel.sample passes
  // under torch.compile (a float would be a constant of the graph).
  m.def("sample_tau_tensor(Tensor logits, Tensor temperature, int dim, SymInt? seed) -> Tensor",
        {at::Tag::nondeterministic_seeded});
}

}  // namespace fused_gumbel
