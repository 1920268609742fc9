"""Registration of the Triton gumbel_topk as torch.ops.fused_gumbel.gumbel_topk_triton
(same signature and outputs as fused_gumbel::gumbel_topk) and its backward,
with autograd on the op itself, as op.py does for st_softmax: triton_ops
launched through wrap_triton on a GPU, opaque custom_ops with a fake kernel
under TRITON_INTERPRET=1."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from .._checks import accumulation_dtype, check_inputs, check_k, normalize_seed, output_layouts
from . import topk as kernels
from .op import _as_rows, _check_device, _launcher, _on_device, interpreting

FORWARD_OP = "fused_gumbel::gumbel_topk_triton"
BACKWARD_OP = "fused_gumbel::gumbel_topk_triton_backward"


def _forward(logits: torch.Tensor, k: int, tau: float, hard: bool, dim: int, seed: Optional[int],
             launch: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Allocates the outputs and (if launch) runs the forward kernel."""
    dim = check_inputs(logits, tau, dim)
    _check_device(logits)
    moved, index_shape = output_layouts(logits, dim)
    rows, cols = math.prod(index_shape), moved[-1]
    k = check_k(k, cols)
    y_rows = logits.new_empty((rows, cols))
    index_rows = logits.new_empty((rows, k), dtype=torch.int64)
    stats = logits.new_empty(index_shape + [k, 2], dtype=accumulation_dtype(logits.dtype))
    if seed is None:
        # (seed, base) drawn on the device, as st_softmax_triton does.
        rng_state = torch.randint(-(2**63), 2**63 - 1, (2,), dtype=torch.int64, device=logits.device)
    else:
        rng_state = logits.new_empty((2,), dtype=torch.int64)  # written by the kernel
    if launch:
        with _on_device(logits):
            kernels.launch_forward(_launcher, _as_rows(logits, dim, rows, cols), y_rows, index_rows,
                                   stats, rng_state, k, seed, tau, hard)
    y = y_rows.view(moved).movedim(-1, dim)
    index = index_rows.view(index_shape + [k]).movedim(-1, dim)
    if logits.dim() == 0:
        y, index = y.reshape(()), index.reshape(())
    return y, index, stats, rng_state


def _backward(grad: torch.Tensor, logits: torch.Tensor, stats: torch.Tensor, rng_state: torch.Tensor,
              k: int, tau: float, dim: int, launch: bool) -> torch.Tensor:
    """Allocates grad_logits and (if launch) runs the backward kernel."""
    dim = check_inputs(logits, tau, dim)
    _check_device(logits)
    if grad.shape != logits.shape:
        raise RuntimeError(f"fused_gumbel: grad has shape {tuple(grad.shape)} but the logits "
                           f"have shape {tuple(logits.shape)}")
    moved, index_shape = output_layouts(logits, dim)
    rows, cols = math.prod(index_shape), moved[-1]
    k = check_k(k, cols)
    out_rows = logits.new_empty((rows, cols))
    if launch:
        with _on_device(logits):
            kernels.launch_backward(_launcher, _as_rows(grad, dim, rows, cols),
                                    _as_rows(logits, dim, rows, cols), stats.reshape(rows, k, 2),
                                    rng_state, out_rows, k, tau)
    out = out_rows.view(moved).movedim(-1, dim)
    return out.reshape(()) if logits.dim() == 0 else out


def gumbel_topk_triton_impl(
    logits: torch.Tensor, k: int, tau: float, hard: bool, dim: int, seed: Optional[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, index, stats, rng_state) = fused_gumbel::gumbel_topk on the Triton kernels."""
    return _forward(logits, k, tau, hard, dim, seed, launch=True)


def gumbel_topk_triton_backward_impl(
    grad: torch.Tensor, logits: torch.Tensor, stats: torch.Tensor, rng_state: torch.Tensor,
    k: int, tau: float, dim: int
) -> torch.Tensor:
    """grad_logits = fused_gumbel::gumbel_topk_backward on the Triton kernels."""
    return _backward(grad, logits, stats, rng_state, k, tau, dim, launch=True)


if interpreting():
    _forward_op = torch.library.custom_op(
        FORWARD_OP, mutates_args=(), tags=(torch.Tag.nondeterministic_seeded,))(gumbel_topk_triton_impl)
    _backward_op = torch.library.custom_op(BACKWARD_OP, mutates_args=())(gumbel_topk_triton_backward_impl)

    @_forward_op.register_fake
    def _forward_fake(logits, k, tau, hard, dim, seed):
        return _forward(logits, k, tau, hard, dim, seed, launch=False)

    @_backward_op.register_fake
    def _backward_fake(grad, logits, stats, rng_state, k, tau, dim):
        return _backward(grad, logits, stats, rng_state, k, tau, dim, launch=False)
else:
    _forward_op = torch.library.triton_op(FORWARD_OP, mutates_args=())(gumbel_topk_triton_impl)
    _backward_op = torch.library.triton_op(BACKWARD_OP, mutates_args=())(gumbel_topk_triton_backward_impl)


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    """Saves the logits, the per-step statistics and the Philox state."""
    logits, k, tau, _hard, dim, _seed = inputs
    _y, index, stats, rng_state = output
    ctx.save_for_backward(logits, stats, rng_state)
    ctx.k, ctx.tau, ctx.dim = k, tau, dim
    ctx.mark_non_differentiable(index, stats, rng_state)


def _autograd_backward(ctx: Any, grad_y: torch.Tensor, _grad_index: Any, _grad_stats: Any,
                       _grad_rng: Any) -> tuple:
    """d logits from d y through the relaxed subset (straight-through for hard=True)."""
    logits, stats, rng_state = ctx.saved_tensors
    grad = torch.ops.fused_gumbel.gumbel_topk_triton_backward(
        grad_y, logits, stats, rng_state, ctx.k, ctx.tau, ctx.dim)
    return grad, None, None, None, None, None


_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def gumbel_topk_triton(logits: torch.Tensor, k: int, tau: float, hard: bool, dim: int,
                       seed: Optional[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                     torch.Tensor]:
    """torch.ops.fused_gumbel.gumbel_topk_triton, any Python int seed (taken
    modulo 2**64). Returns (y, index, stats, rng_state)."""
    return torch.ops.fused_gumbel.gumbel_topk_triton(logits, k, tau, hard, dim, normalize_seed(seed))
