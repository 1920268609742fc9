// The operator schemas (once, for every backend) and the host-side checks and
// layout handling that every backend's wrapper shares.
#include "st_softmax.h"

#include <torch/library.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cpu/huge_pages.h"

namespace fused_gumbel {

namespace {

// The dtype as Python users spell it (at::ScalarType prints "Long").
std::string python_dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBool: return "torch.bool";
    case at::kByte: return "torch.uint8";
    case at::kChar: return "torch.int8";
    case at::kShort: return "torch.int16";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kComplexHalf: return "torch.complex32";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: return std::string("torch.") + c10::toString(dtype);
  }
}

std::string shape(at::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + number(sizes[i]);
  return out + "]";
}

}  // namespace

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string number(int64_t v) { return std::to_string(v); }

double tensor_tau(const at::Tensor& tau, const char* tau_name) {
  TORCH_CHECK_VALUE(tau.numel() == 1 && tau.device().is_cpu() && tau.is_floating_point(),
                    "fused_gumbel: ", tau_name,
                    " as a tensor must be one floating-point element on the CPU, got ",
                    number(tau.numel()), " element(s) of ", c10::toString(tau.scalar_type()),
                    " on ", tau.device().str());
  return tau.item<double>();
}

int64_t check_inputs(const at::Tensor& logits, double tau, int64_t dim,
                     const char* tau_name) {
  const auto dtype = logits.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kHalf || dtype == at::kBFloat16 ||
                       dtype == at::kFloat || dtype == at::kDouble,
                   "fused_gumbel: logits must be float16, bfloat16, float32 or "
                   "float64, got ", python_dtype_name(dtype));
  TORCH_CHECK_VALUE(std::isfinite(tau) && tau > 0.0, "fused_gumbel: ", tau_name,
                    " must be a positive finite number, got ", tau_name, "=",
                    number(tau));
  const int64_t ndim = std::max<int64_t>(logits.dim(), 1);
  TORCH_CHECK_INDEX(dim >= -ndim && dim < ndim,
                    "fused_gumbel: dim out of range (expected to be in range of [",
                    number(-ndim), ", ", number(ndim - 1), "], but got ", number(dim), ")");
  return dim < 0 ? dim + ndim : dim;
}

at::ScalarType accumulation_type(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

namespace {

std::vector<int64_t> moved_sizes(const at::Tensor& t, int64_t dim) {
  std::vector<int64_t> sizes(t.sizes().begin(), t.sizes().end());
  const int64_t cols = sizes[dim];
  sizes.erase(sizes.begin() + dim);
  sizes.push_back(cols);
  return sizes;
}

int64_t leading_numel(const std::vector<int64_t>& sizes) {
  int64_t n = 1;
  for (size_t i = 0; i + 1 < sizes.size(); ++i) n *= sizes[i];
  return n;
}

// x.movedim(dim, -1), without the op where dim is already last: at router
// sizes a call is host-bound, and the two or three a forward made cost about
// 2.5 us of 11 (CPU, scripts/profile_host.py).
at::Tensor dim_last(const at::Tensor& x, int64_t dim) {
  return dim == x.dim() - 1 ? x : x.movedim(dim, -1);
}

}  // namespace

at::Tensor as_rows(const at::Tensor& t, int64_t dim) {
  const at::Tensor x = t.dim() == 0 ? t.reshape({1}) : t;
  const auto sizes = moved_sizes(x, dim);
  const int64_t cols = sizes.back();
  at::Tensor rows = dim_last(x, dim).reshape({leading_numel(sizes), cols});
  if (cols > 1 && rows.stride(1) != 1) rows = rows.contiguous();
  return rows;
}

at::Tensor empty_dim_last(at::IntArrayRef sizes, int64_t dim, const at::TensorOptions& options) {
  const int64_t n = static_cast<int64_t>(sizes.size());
  std::vector<int64_t> strides(n);
  int64_t stride = 1;
  if (n > 0) {
    strides[dim] = 1;
    stride = std::max<int64_t>(sizes[dim], 1);
  }
  for (int64_t d = n - 1; d >= 0; --d) {
    if (d == dim) continue;
    strides[d] = stride;
    stride *= std::max<int64_t>(sizes[d], 1);
  }
  return empty_output(sizes, strides, options);
}

at::Tensor rows_of(const at::Tensor& t, int64_t dim) {
  const at::Tensor x = t.dim() == 0 ? t.reshape({1}) : t;
  const int64_t cols = x.size(dim);
  return dim_last(x, dim).view({cols > 0 ? x.numel() / cols : 0, cols});
}

ForwardOutputs prepare_forward(const at::Tensor& logits, double tau, bool hard,
                               int64_t dim) {
  dim = check_inputs(logits, tau, dim);
  const at::Tensor x = logits.dim() == 0 ? logits.reshape({1}) : logits;
  const auto sizes = moved_sizes(x, dim);
  const int64_t cols = sizes.back();
  const int64_t rows = leading_numel(sizes);
  TORCH_CHECK_VALUE(cols > 0 || rows == 0,
                    "fused_gumbel: cannot sample from dim ", number(dim),
                    ", which has size 0");

  ForwardOutputs o;
  o.rows_in = as_rows(x, dim);
  o.out = empty_dim_last(logits.sizes(), dim, x.options());
  o.out_rows = rows_of(o.out, dim);
  std::vector<int64_t> index_sizes(sizes.begin(), sizes.end() - 1);
  o.index = at::empty(index_sizes, x.options().dtype(at::kLong));
  index_sizes.push_back(2);
  o.stats = at::empty(index_sizes, x.options().dtype(accumulation_type(x.scalar_type())));
  o.rng_state = at::empty({2}, x.options().dtype(at::kLong));
  at::Tensor soft_rows;
  if (keeps_soft_sample(logits, hard)) {
    o.y_soft = empty_dim_last(logits.sizes(), dim, x.options());
    soft_rows = rows_of(o.y_soft, dim);
  } else {
    o.y_soft = at::empty({0}, x.options());
  }

  ForwardParams& p = o.params;
  p.logits = o.rows_in.data_ptr();
  p.logits_row_stride = o.rows_in.stride(0);
  p.out = o.out_rows.data_ptr();
  p.y_soft = soft_rows.defined() ? soft_rows.data_ptr() : nullptr;
  p.index = o.index.data_ptr<int64_t>();
  p.stats = o.stats.data_ptr();
  p.rng_state = o.rng_state.data_ptr<int64_t>();
  p.rows = rows;
  p.cols = cols;
  p.seed = 0;
  p.base = 0;
  p.noise_row_stride = cols;
  p.noise_offset = 0;
  p.tau = tau;
  p.hard = hard;
  return o;
}

BackwardInputs prepare_backward(const at::Tensor& grad,
                                const std::optional<at::Tensor>& y_soft,
                                const std::optional<at::Tensor>& logits,
                                const at::Tensor& stats,
                                const at::Tensor& rng_state, double tau,
                                int64_t dim) {
  TORCH_CHECK(y_soft.has_value() != logits.has_value(),
              "fused_gumbel: st_softmax_backward takes exactly one of y_soft "
              "(hard=False) and logits (hard=True)");
  const at::Tensor& saved = y_soft.has_value() ? *y_soft : *logits;
  dim = check_inputs(saved, tau, dim);
  TORCH_CHECK(grad.sizes() == saved.sizes(), "fused_gumbel: grad has shape ",
              shape(grad.sizes()), " but the sample has shape ", shape(saved.sizes()));
  TORCH_CHECK(rng_state.scalar_type() == at::kLong && rng_state.numel() == 2,
              "fused_gumbel: rng_state must be the int64 [2] tensor of the forward");

  BackwardInputs b;
  b.grad_rows = as_rows(grad.to(saved.scalar_type()), dim);
  const int64_t rows = b.grad_rows.size(0), cols = b.grad_rows.size(1);
  if (y_soft.has_value()) b.y_soft_rows = as_rows(*y_soft, dim);
  if (logits.has_value()) b.logits_rows = as_rows(*logits, dim);
  b.grad_logits = empty_dim_last(saved.sizes(), dim, saved.options());
  b.grad_logits_rows = rows_of(b.grad_logits, dim);
  b.stats = stats.contiguous();
  b.rng_state = rng_state.contiguous();
  TORCH_CHECK(b.stats.numel() == 2 * rows &&
                  b.stats.scalar_type() == accumulation_type(saved.scalar_type()),
              "fused_gumbel: stats must be the forward's per-row statistics");

  BackwardParams& p = b.params;
  p.grad = b.grad_rows.data_ptr();
  p.grad_row_stride = b.grad_rows.stride(0);
  p.y_soft = y_soft.has_value() ? b.y_soft_rows.data_ptr() : nullptr;
  p.y_soft_row_stride = y_soft.has_value() ? b.y_soft_rows.stride(0) : 0;
  p.logits = logits.has_value() ? b.logits_rows.data_ptr() : nullptr;
  p.logits_row_stride = logits.has_value() ? b.logits_rows.stride(0) : 0;
  p.stats = b.stats.data_ptr();
  p.rng_state = b.rng_state.data_ptr<int64_t>();
  p.grad_logits = b.grad_logits_rows.data_ptr();
  p.rows = rows;
  p.cols = cols;
  p.tau = tau;
  return b;
}

TORCH_LIBRARY(fused_gumbel, m) {
  // Returns (sample, index, stats, rng_state, y_soft). stats holds each row's
  // max and sum of the noisy logits; rng_state the Philox (seed, counter base)
  // the noise came from, so the backward can regenerate it; y_soft the soft
  // sample when keeps_soft_sample() says the backward reads it, else empty.
  // Seeds are SymInt, here and in every op that takes one: under
  // torch.compile a seed that changes between calls (seed=step) is then an
  // input of one graph, where an int would be a constant of a graph per seed.
  m.def(
      "st_softmax(Tensor logits, float tau, bool hard, int dim, SymInt? seed) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::nondeterministic_seeded});
  m.def(
      "st_softmax_backward(Tensor grad, Tensor? y_soft, Tensor? logits, "
      "Tensor stats, Tensor rng_state, float tau, int dim) -> Tensor");
  // The same two with tau as a one-element CPU tensor. fg.gumbel_softmax calls
  // these under torch.compile, which turns a custom op's float argument into a
  // constant of the graph (a new graph for every temperature of an annealing
  // schedule) but passes a tensor through as a graph input. Sibling ops, not
  // overloads: torch.library.opcheck takes only operators without overloads.
  m.def(
      "st_softmax_tau_tensor(Tensor logits, Tensor tau, bool hard, int dim, SymInt? seed) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::nondeterministic_seeded});
  m.def(
      "st_softmax_backward_tau_tensor(Tensor grad, Tensor? y_soft, Tensor? logits, "
      "Tensor stats, Tensor rng_state, Tensor tau, int dim) -> Tensor");
  // Fills a float32 tensor with the noise of positions 0..numel-1 for `seed`.
  m.def("fill_gumbel_noise(Tensor(a!) out, SymInt seed) -> ()");
  // Raw Philox4x32-10 output words for counters counter, counter+1, ... into an
  // int32 [n, 4] tensor: the bits under the noise, for cross-checks.
  m.def("philox_bits(Tensor(a!) out, int seed, int counter) -> ()");
}

}  // namespace fused_gumbel
