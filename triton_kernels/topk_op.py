"""Registration of the Triton gumbel_topk as torch.ops.fused_gumbel.gumbel_topk_triton
(same signature and outputs as fused_gumbel::gumbel_topk) and its backward,
with autograd on the op itself, as op.py does for st_softmax: triton_ops
launched through wrap_triton on a GPU, opaque custom_ops with a fake kernel
under TRITON_INTERPRET=1."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch

from .._autograd import first_order_only, refuse_tangents, refuse_tau_grad, save_with_tau, saved_with_tau
from .._checks import accumulation_dtype, check_k, empty_dim_last, normalize_seed, output_layouts
from . import topk as kernels
from .op import (_as_rows, _check_device, _check_op_inputs, _direct, _launcher, _on_device, _saved_state,
                 dispatcher_needed, register_ops)

FORWARD_OP = "fused_gumbel::gumbel_topk_triton"
BACKWARD_OP = "fused_gumbel::gumbel_topk_triton_backward"
# tau as a 0-d float64 tensor on the device, for torch.compile (see op.py).
FORWARD_TAU_TENSOR_OP = "fused_gumbel::gumbel_topk_triton_tau_tensor"
BACKWARD_TAU_TENSOR_OP = "fused_gumbel::gumbel_topk_triton_backward_tau_tensor"


def _forward(logits: torch.Tensor, k: int, tau: float | torch.Tensor, hard: bool, dim: int,
             seed: Optional[int], wrap: Optional[Callable]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Allocates the outputs and runs the forward kernel through wrap (see
    op._forward); wrap None: the fake kernel."""
    if wrap is not None:
        refuse_tangents(logits, tau)
    dim = _check_op_inputs(logits, tau, dim)
    _check_device(logits)
    moved, index_shape = output_layouts(logits, dim)
    rows, cols = math.prod(index_shape), moved[-1]
    k = check_k(k, cols)
    # The kernels write [rows, cols] and [rows, k] rows.
    y = empty_dim_last(logits, dim)
    index = empty_dim_last(logits, dim, k, torch.int64)
    stats = logits.new_empty(index_shape + [k, 2], dtype=accumulation_dtype(logits.dtype))
    if seed is None:
        # (seed, base) drawn on the device, as st_softmax_triton does.
        rng_state = torch.randint(-(2**63), 2**63 - 1, (2,), dtype=torch.int64, device=logits.device)
    else:
        rng_state = logits.new_empty((2,), dtype=torch.int64)  # written by the kernel
    if wrap is not None:
        with _on_device(logits):
            kernels.launch_forward(wrap, _as_rows(logits, dim, rows, cols), y, index,
                                   stats, rng_state, k, seed, tau, hard)
    return y, index, stats, rng_state


def _backward(grad: torch.Tensor, logits: torch.Tensor, stats: torch.Tensor, rng_state: torch.Tensor,
              k: int, tau: float | torch.Tensor, dim: int, wrap: Optional[Callable]) -> torch.Tensor:
    """Allocates grad_logits and runs the backward kernel through wrap, as
    _forward does."""
    if wrap is not None:
        refuse_tangents(grad, logits, tau)
    dim = _check_op_inputs(logits, tau, dim)
    _check_device(logits)
    if grad.shape != logits.shape:
        raise RuntimeError(f"fused_gumbel: grad has shape {tuple(grad.shape)} but the logits "
                           f"have shape {tuple(logits.shape)}")
    moved, index_shape = output_layouts(logits, dim)
    rows, cols = math.prod(index_shape), moved[-1]
    k = check_k(k, cols)
    stats, rng_state = _saved_state(stats, rng_state, logits, 2 * k * rows, "[..., k, 2] per-step statistics")
    out = empty_dim_last(logits, dim)
    if wrap is not None:
        with _on_device(logits):
            kernels.launch_backward(wrap, _as_rows(grad, dim, rows, cols),
                                    _as_rows(logits, dim, rows, cols), stats.reshape(rows, k, 2),
                                    rng_state, out, k, tau)
    return out


def gumbel_topk_triton_impl(
    logits: torch.Tensor, k: int, tau: float, hard: bool, dim: int, seed: Optional[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, index, stats, rng_state) = fused_gumbel::gumbel_topk on the Triton kernels."""
    return _forward(logits, k, tau, hard, dim, seed, _launcher)


def gumbel_topk_triton_tau_tensor_impl(
    logits: torch.Tensor, k: int, tau: torch.Tensor, hard: bool, dim: int, seed: Optional[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """gumbel_topk_triton with tau a 0-d float64 tensor on the logits' device."""
    return _forward(logits, k, tau, hard, dim, seed, _launcher)


def gumbel_topk_triton_backward_impl(
    grad: torch.Tensor, logits: torch.Tensor, stats: torch.Tensor, rng_state: torch.Tensor,
    k: int, tau: float, dim: int
) -> torch.Tensor:
    """grad_logits = fused_gumbel::gumbel_topk_backward on the Triton kernels."""
    return _backward(grad, logits, stats, rng_state, k, tau, dim, _launcher)


def gumbel_topk_triton_backward_tau_tensor_impl(
    grad: torch.Tensor, logits: torch.Tensor, stats: torch.Tensor, rng_state: torch.Tensor,
    k: int, tau: torch.Tensor, dim: int
) -> torch.Tensor:
    """gumbel_topk_triton_backward with tau a 0-d float64 tensor on the device."""
    return _backward(grad, logits, stats, rng_state, k, tau, dim, _launcher)


def _forward_fake(logits, k, tau, hard, dim, seed):
    return _forward(logits, k, tau, hard, dim, seed, None)


def _backward_fake(grad, logits, stats, rng_state, k, tau, dim):
    return _backward(grad, logits, stats, rng_state, k, tau, dim, None)


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    """Saves the logits, the per-step statistics, the Philox state (and a
    tensor tau)."""
    logits, k, tau, _hard, dim, _seed = inputs
    _y, index, stats, rng_state = output
    save_with_tau(ctx, tau, logits, stats, rng_state)
    ctx.k, ctx.dim = k, dim
    ctx.mark_non_differentiable(index, stats, rng_state)
    # Their gradients would be zeros made for nothing: 3 allocations and
    # fill kernels per backward.
    ctx.set_materialize_grads(False)


def _grad_logits(ctx: Any, grad_y: Optional[torch.Tensor], through_op: bool) -> tuple:
    """d logits from d y through the relaxed subset (straight-through for
    hard=True), by the backward op or (the eager path) its kernel directly."""
    first_order_only()
    if grad_y is None:  # set_materialize_grads(False)
        return (None, None, None, None, None, None)
    (logits, stats, rng_state), tau, op = saved_with_tau(
        ctx, torch.ops.fused_gumbel.gumbel_topk_triton_backward,
        torch.ops.fused_gumbel.gumbel_topk_triton_backward_tau_tensor)
    if through_op:
        grad = op(grad_y, logits, stats, rng_state, ctx.k, tau, ctx.dim)
    else:
        grad = _backward(grad_y, logits, stats, rng_state, ctx.k, tau, ctx.dim, _direct)
    return grad, None, None, None, None, None


def _autograd_backward(ctx: Any, grad_y: Optional[torch.Tensor], *_no_grads: Any) -> tuple:
    return _grad_logits(ctx, grad_y, through_op=True)


register_ops({FORWARD_OP: gumbel_topk_triton_impl,
              FORWARD_TAU_TENSOR_OP: gumbel_topk_triton_tau_tensor_impl},
             {BACKWARD_OP: gumbel_topk_triton_backward_impl,
              BACKWARD_TAU_TENSOR_OP: gumbel_topk_triton_backward_tau_tensor_impl},
             _forward_fake, _backward_fake, _setup_context, _autograd_backward)


class _GumbelTopkTriton(torch.autograd.Function):
    """The eager path of gumbel_topk_triton (see op.dispatcher_needed)."""

    # forward(ctx, ...) rather than a separate setup_context: host time (see
    # op._StSoftmaxTriton).
    @staticmethod
    def forward(ctx, logits, k, tau, hard, dim, seed):
        outputs = _forward(logits, k, tau, hard, dim, seed, _direct)
        _setup_context(ctx, (logits, k, tau, hard, dim, seed), outputs)
        return outputs

    @staticmethod
    def backward(ctx, grad_y, *_no_grads):
        # The op where the backward is traced or watched (compiled autograd,
        # a dispatch mode), as for the forward.
        return _grad_logits(ctx, grad_y, through_op=dispatcher_needed(grad_y))


def gumbel_topk_triton(logits: torch.Tensor, k: int, tau: float | torch.Tensor, hard: bool,
                       dim: int, seed: Optional[int]) -> tuple[torch.Tensor, torch.Tensor,
                                                              torch.Tensor, torch.Tensor]:
    """torch.ops.fused_gumbel.gumbel_topk_triton (or, for a tensor tau, its
    *_tau_tensor sibling), any Python int seed (taken modulo 2**64). Returns
    (y, index, stats, rng_state)."""
    seed = normalize_seed(seed)
    if not dispatcher_needed(logits, tau):
        if torch.is_grad_enabled():  # (the op checks in its setup_context)
            refuse_tau_grad(tau)
        return _GumbelTopkTriton.apply(logits, k, tau, hard, dim, seed)
    op = (torch.ops.fused_gumbel.gumbel_topk_triton_tau_tensor if isinstance(tau, torch.Tensor)
          else torch.ops.fused_gumbel.gumbel_topk_triton)
    return op(logits, k, tau, hard, dim, seed)
