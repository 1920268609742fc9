// The autograd of st_softmax and gumbel_topk (and their _tau_tensor siblings),
// registered at the Autograd key in C++ rather than with
// torch.library.register_autograd: at router sizes (16384 x 64) a call costs
// its host time, and the Python autograd wrapper cost more than the C++ ops
// (CPU, 4 x 8 bfloat16, forward+backward through the public functions:
// gumbel_softmax 41 -> 23 us, gumbel_topk 50 -> 27 us, F.gumbel_softmax 25-36
// us; python scripts/profile_host.py --device cpu).
// Each backward is another registered op, which torch.compile traces into its
// graph and opcheck checks.
//
// Only the sample goes through the autograd Function: the other outputs come
// back beside it (`rest`), never marked non-differentiable, because torch
// 2.14's compiled autograd asserts that a C++ Function's context has no
// non-differentiable outputs (custom_function.h, CppNode::compiled_args). They
// get no grad_fn and no gradient, and a kept soft sample no incoming tensor of
// zeros in every backward.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <type_traits>

#include "st_softmax.h"

namespace fused_gumbel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The same words as fused_gumbel/_autograd.py's, which the Triton operators
// raise.
constexpr const char* kDoubleBackward =
    "fused_gumbel: the gradient of the gradient (double backward) is not implemented; "
    "use backend='reference' for higher-order derivatives";

// Called first in every backward: under create_graph=True the backward op,
// which has no autograd, would be a constant to autograd, and the second
// derivative wrong (with a warning at best).
void first_order_only() {
  TORCH_CHECK_NOT_IMPLEMENTED(!at::GradMode::is_enabled(), kDoubleBackward);
}

// The same words as fused_gumbel/_autograd.py's _TAU_GRAD.
constexpr const char* kTauGrad =
    "fused_gumbel: the fused operators take no gradient for tau (a tensor tau that requires grad); "
    "pass tau.detach(), or call fused_gumbel.gumbel_softmax, which runs such a tau on the reference "
    "backend";

// Tau is a double, or for the _tau_tensor siblings (which torch.compile passes as
// a graph input, not a constant) a one-element CPU tensor.
template <class Tau>
constexpr bool kTauTensor = std::is_same_v<Tau, at::Tensor>;

template <class Tau>
using TauArg = std::conditional_t<kTauTensor<Tau>, const at::Tensor&, double>;

// The seed as the schemas declare it (SymInt?): under torch.compile a seed
// that changes between calls is a symbolic input of the graph, which an
// int64_t here would specialize (a new graph per seed, and fullgraph=True
// failing at the recompile limit).
using OptionalSeed = std::optional<c10::SymInt>;

template <class Signature>
c10::TypedOperatorHandle<Signature> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// tau kept for the backward: among the saved tensors when it is one (saved
// after the others), on the context when it is a double.
template <class Tau>
void save_with_tau(AutogradContext* ctx, TauArg<Tau> tau, variable_list saved) {
  if constexpr (kTauTensor<Tau>) {
    saved.push_back(tau);
  } else {
    ctx->saved_data["tau"] = tau;
  }
  ctx->save_for_backward(saved);
}

template <class Tau>
Tau saved_tau(AutogradContext* ctx, const variable_list& saved) {
  if constexpr (kTauTensor<Tau>) {
    return saved.back();
  } else {
    return ctx->saved_data["tau"].toDouble();
  }
}

// Called before the Function applies, where grad mode is the caller's: a
// tensor tau that autograd records is refused, the backward returning no
// gradient for it (which autograd would take as zero).
template <class Tau>
void refuse_tau_grad(TauArg<Tau> tau) {
  if constexpr (kTauTensor<Tau>) {
    TORCH_CHECK_NOT_IMPLEMENTED(!(at::GradMode::is_enabled() && tau.requires_grad()), kTauGrad);
  }
}

// The same words as fused_gumbel/_autograd.py's _NO_JVP, which the Triton
// operators raise.
constexpr const char* kNoJvp =
    "fused_gumbel: forward-mode AD (jvp) is not implemented for the fused backends; "
    "use backend='reference' for forward-mode derivatives";

// The Autograd kernel of the operators with no derivative of their own: the
// backward operators, and the vocabulary shard (differentiated by
// fused_gumbel/distributed.py, which needs the global sums). Without one,
// autograd's fallback would drop a forward-mode tangent on an input without a
// word; in grad mode an input that requires grad (a second derivative through
// a backward op, which first_order_only already refuses on the way in) is
// refused too, rather than return an output autograd does not track.
void no_derivative(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  bool records = false;
  for (const c10::IValue& v : torch::jit::last(*stack, op.schema().arguments().size())) {
    if (!v.isTensor()) continue;
    const at::Tensor& t = v.toTensor();
    // Level 0: forward-mode AD's only level (as ATen's generated kernels check).
    TORCH_CHECK(!t.defined() || !t._fw_grad(/*level=*/0).defined(), kNoJvp);
    records = records || (t.defined() && t.requires_grad());
  }
  TORCH_CHECK_NOT_IMPLEMENTED(
      !(records && at::GradMode::is_enabled()), "fused_gumbel: the operator ", op.schema().name(),
      " has no derivative of its own (a backward operator: double backward is not implemented, "
      "use backend='reference' for higher-order derivatives; a vocabulary shard: call "
      "fused_gumbel.distributed.gumbel_softmax, which differentiates it)");
  const at::AutoDispatchBelowADInplaceOrView below;
  op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
}

using SoftmaxOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using TopkOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

}  // namespace

// Outside the anonymous namespace: autograd names a node after its Function
// (grad_fn, profiler rows, the in-place modification error), here
// "torch::autograd::CppNode<fused_gumbel::StSoftmaxAutograd<double> >".
template <class Tau>
struct StSoftmaxAutograd : public torch::autograd::Function<StSoftmaxAutograd<Tau>> {
  static const auto& forward_op() {
    static const auto op =
        typed_op<SoftmaxOutputs(const at::Tensor&, TauArg<Tau>, bool, int64_t, OptionalSeed)>(
            kTauTensor<Tau> ? "fused_gumbel::st_softmax_tau_tensor" : "fused_gumbel::st_softmax");
    return op;
  }

  static const auto& backward_op() {
    static const auto op =
        typed_op<at::Tensor(const at::Tensor&, const std::optional<at::Tensor>&,
                            const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
                            TauArg<Tau>, int64_t)>(
            kTauTensor<Tau> ? "fused_gumbel::st_softmax_backward_tau_tensor"
                            : "fused_gumbel::st_softmax_backward");
    return op;
  }

  static variable_list forward(AutogradContext* ctx, const at::Tensor& logits, TauArg<Tau> tau,
                               bool hard, int64_t dim, OptionalSeed seed,
                               variable_list* rest) {
    SoftmaxOutputs out;
    {
      const at::AutoDispatchBelowADInplaceOrView below;
      out = forward_op().call(logits, tau, hard, dim, seed);
    }
    auto& [y, index, stats, rng_state, y_soft] = out;
    // hard=False saves the output itself (no extra memory). hard=True saves
    // the kept soft sample where the kernel wrote one, else the logits, from
    // which the backward regenerates it (as FlashAttention does).
    const bool recompute = hard && !keeps_soft_sample(logits, hard);
    save_with_tau<Tau>(ctx, tau, {recompute ? logits : (hard ? y_soft : y), stats, rng_state});
    ctx->saved_data["recompute"] = recompute;
    ctx->saved_data["dim"] = dim;
    *rest = {index, stats, rng_state, y_soft};
    ctx->set_materialize_grads(false);
    return {y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    first_order_only();
    variable_list grad_inputs(6);
    if (!grads[0].defined()) return grad_inputs;
    const variable_list saved = ctx->get_saved_variables();
    const bool recompute = ctx->saved_data["recompute"].toBool();
    grad_inputs[0] = backward_op().call(
        grads[0], recompute ? std::nullopt : std::optional<at::Tensor>(saved[0]),
        recompute ? std::optional<at::Tensor>(saved[0]) : std::nullopt, saved[1], saved[2],
        saved_tau<Tau>(ctx, saved), ctx->saved_data["dim"].toInt());
    return grad_inputs;
  }
};

template <class Tau>
struct GumbelTopkAutograd : public torch::autograd::Function<GumbelTopkAutograd<Tau>> {
  static const auto& forward_op() {
    static const auto op =
        typed_op<TopkOutputs(const at::Tensor&, int64_t, TauArg<Tau>, bool, int64_t, OptionalSeed)>(
            kTauTensor<Tau> ? "fused_gumbel::gumbel_topk_tau_tensor" : "fused_gumbel::gumbel_topk");
    return op;
  }

  static const auto& backward_op() {
    static const auto op =
        typed_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const at::Tensor&, int64_t, TauArg<Tau>, int64_t)>(
            kTauTensor<Tau> ? "fused_gumbel::gumbel_topk_backward_tau_tensor"
                            : "fused_gumbel::gumbel_topk_backward");
    return op;
  }

  static variable_list forward(AutogradContext* ctx, const at::Tensor& logits, int64_t k,
                               TauArg<Tau> tau, bool hard, int64_t dim,
                               OptionalSeed seed, variable_list* rest) {
    TopkOutputs out;
    {
      const at::AutoDispatchBelowADInplaceOrView below;
      out = forward_op().call(logits, k, tau, hard, dim, seed);
    }
    auto& [y, index, stats, rng_state] = out;
    // The logits (kept by the caller anyway), the k per-step (max, rest-sum)
    // per row and the Philox state: the backward regenerates the noise and
    // every step's softmax from them, as FlashAttention does.
    save_with_tau<Tau>(ctx, tau, {logits, stats, rng_state});
    ctx->saved_data["k"] = k;
    ctx->saved_data["dim"] = dim;
    *rest = {index, stats, rng_state};
    ctx->set_materialize_grads(false);
    return {y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    first_order_only();
    variable_list grad_inputs(7);
    if (!grads[0].defined()) return grad_inputs;
    const variable_list saved = ctx->get_saved_variables();
    grad_inputs[0] = backward_op().call(grads[0], saved[0], saved[1], saved[2],
                                        ctx->saved_data["k"].toInt(), saved_tau<Tau>(ctx, saved),
                                        ctx->saved_data["dim"].toInt());
    return grad_inputs;
  }
};

namespace {

template <class Tau>
SoftmaxOutputs st_softmax_autograd(const at::Tensor& logits, TauArg<Tau> tau, bool hard,
                                   int64_t dim, OptionalSeed seed) {
  refuse_tau_grad<Tau>(tau);
  variable_list rest;
  const variable_list out = StSoftmaxAutograd<Tau>::apply(logits, tau, hard, dim, seed, &rest);
  return {out[0], rest[0], rest[1], rest[2], rest[3]};
}

template <class Tau>
TopkOutputs gumbel_topk_autograd(const at::Tensor& logits, int64_t k, TauArg<Tau> tau, bool hard,
                                 int64_t dim, OptionalSeed seed) {
  refuse_tau_grad<Tau>(tau);
  variable_list rest;
  const variable_list out = GumbelTopkAutograd<Tau>::apply(logits, k, tau, hard, dim, seed, &rest);
  return {out[0], rest[0], rest[1], rest[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_gumbel, Autograd, m) {
  m.impl("st_softmax", &st_softmax_autograd<double>);
  m.impl("st_softmax_tau_tensor", &st_softmax_autograd<at::Tensor>);
  m.impl("gumbel_topk", &gumbel_topk_autograd<double>);
  m.impl("gumbel_topk_tau_tensor", &gumbel_topk_autograd<at::Tensor>);
  for (const char* name : {"st_softmax_backward", "st_softmax_backward_tau_tensor",
                           "gumbel_topk_backward", "gumbel_topk_backward_tau_tensor",
                           "st_softmax_shard"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&no_derivative>());
  }
}

}  // namespace fused_gumbel
