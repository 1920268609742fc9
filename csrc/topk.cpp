// The gumbel_topk operator schemas and the host side every backend's wrapper
// shares: the checks (the contract's, via check_inputs, and k's) and the
// [rows, cols] views of any dim.
#include "topk.h"

#include <torch/library.h>

#include <string>
#include <vector>

#include "cpu/huge_pages.h"
#include "st_softmax.h"

namespace fused_gumbel {

void check_k(int64_t k, int64_t cols) {
  TORCH_CHECK_VALUE(k >= 1 && k <= cols, "fused_gumbel: k must be an int in [1, ",
                    number(cols), "] (the size of dim), got k=", number(k));
}

namespace {

// The logits' sizes with dim moved last (a 0-d tensor as [1]).
std::vector<int64_t> moved_sizes(const at::Tensor& x, int64_t dim) {
  std::vector<int64_t> sizes(x.sizes().begin(), x.sizes().end());
  if (sizes.empty()) return {1};
  const int64_t cols = sizes[dim];
  sizes.erase(sizes.begin() + dim);
  sizes.push_back(cols);
  return sizes;
}

}  // namespace

TopkForwardOutputs prepare_topk_forward(const at::Tensor& logits, int64_t k, double tau,
                                        bool hard, int64_t dim) {
  dim = check_inputs(logits, tau, dim);
  auto sizes = moved_sizes(logits, dim);
  const int64_t cols = sizes.back();
  check_k(k, cols);
  const int64_t rows = cols > 0 ? logits.numel() / cols : 0;
  const at::Tensor x = logits.dim() == 0 ? logits.reshape({1}) : logits;

  TopkForwardOutputs o;
  o.rows_in = as_rows(x, dim);
  o.out = empty_dim_last(logits.sizes(), dim, x.options());
  const at::Tensor out_rows = rows_of(o.out, dim);
  std::vector<int64_t> index_sizes(logits.sizes().begin(), logits.sizes().end());
  if (logits.dim() > 0) index_sizes[dim] = k;
  o.index = empty_dim_last(index_sizes, dim, x.options().dtype(at::kLong));
  const at::Tensor index_rows = rows_of(o.index, dim);
  sizes.back() = 2;
  sizes.insert(sizes.end() - 1, k);
  o.stats = at::empty(sizes, x.options().dtype(accumulation_type(x.scalar_type())));
  o.rng_state = at::empty({2}, x.options().dtype(at::kLong));

  TopkForwardParams& p = o.params;
  p.logits = o.rows_in.data_ptr();
  p.logits_row_stride = o.rows_in.stride(0);
  p.out = out_rows.data_ptr();
  p.index = index_rows.data_ptr<int64_t>();
  p.stats = o.stats.data_ptr();
  p.rng_state = o.rng_state.data_ptr<int64_t>();
  p.rows = rows;
  p.cols = cols;
  p.k = k;
  p.seed = 0;
  p.base = 0;
  p.tau = tau;
  p.hard = hard;
  return o;
}

TopkBackwardInputs prepare_topk_backward(const at::Tensor& grad, const at::Tensor& logits,
                                         const at::Tensor& stats, const at::Tensor& rng_state,
                                         int64_t k, double tau, int64_t dim) {
  dim = check_inputs(logits, tau, dim);
  const auto sizes = moved_sizes(logits, dim);
  const int64_t cols = sizes.back();
  check_k(k, cols);
  TORCH_CHECK(grad.sizes() == logits.sizes(),
              "fused_gumbel: gumbel_topk_backward: grad and logits differ in shape");
  TORCH_CHECK(rng_state.scalar_type() == at::kLong && rng_state.numel() == 2,
              "fused_gumbel: rng_state must be the int64 [2] tensor of the forward");
  const at::Tensor x = logits.dim() == 0 ? logits.reshape({1}) : logits;
  const int64_t rows = cols > 0 ? logits.numel() / cols : 0;

  TopkBackwardInputs b;
  b.grad_rows = as_rows(grad.dim() == 0 ? grad.reshape({1}) : grad, dim).to(x.scalar_type());
  b.logits_rows = as_rows(x, dim);
  b.stats = stats.contiguous();
  b.rng_state = rng_state.contiguous();
  TORCH_CHECK(b.stats.numel() == 2 * k * rows &&
                  b.stats.scalar_type() == accumulation_type(x.scalar_type()),
              "fused_gumbel: stats must be the forward's [..., k, 2] per-step statistics");
  b.grad_logits = empty_dim_last(logits.sizes(), dim, x.options());
  const at::Tensor out_rows = rows_of(b.grad_logits, dim);

  TopkBackwardParams& p = b.params;
  p.grad = b.grad_rows.data_ptr();
  p.grad_row_stride = b.grad_rows.stride(0);
  p.logits = b.logits_rows.data_ptr();
  p.logits_row_stride = b.logits_rows.stride(0);
  p.stats = b.stats.data_ptr();
  p.rng_state = b.rng_state.data_ptr<int64_t>();
  p.grad_logits = out_rows.data_ptr();
  p.rows = rows;
  p.cols = cols;
  p.k = k;
  p.tau = tau;
  return b;
}

TORCH_LIBRARY_FRAGMENT(fused_gumbel, m) {
  // Returns (y, index, stats, rng_state): the k-hot (hard) or the relaxed
  // subset, the chosen classes best first (the logits' shape, dim of size k),
  // the per-step (max, rest-sum) [..., k, 2] and the Philox (seed, counter
  // base) from which the backward regenerates the noise.
  m.def(
      "gumbel_topk(Tensor logits, int k, float tau, bool hard, int dim, SymInt? seed) -> "
      "(Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::nondeterministic_seeded});
  m.def(
      "gumbel_topk_backward(Tensor grad, Tensor logits, Tensor stats, Tensor rng_state, "
      "int k, float tau, int dim) -> Tensor");
  // The same with tau a one-element CPU tensor: under torch.compile a float
  // argument is a constant of the graph, a tensor an input (see st_softmax.cpp).
  m.def(
      "gumbel_topk_tau_tensor(Tensor logits, int k, Tensor tau, bool hard, int dim, "
      "SymInt? seed) -> (Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::nondeterministic_seeded});
  m.def(
      "gumbel_topk_backward_tau_tensor(Tensor grad, Tensor logits, Tensor stats, "
      "Tensor rng_state, int k, Tensor tau, int dim) -> Tensor");
}

}  // namespace fused_gumbel
