"""Autograd plumbing the Triton operators' registrations share: keeping tau for
the backward, and refusing a second derivative instead of returning a wrong
one. The C++ operators' autograd (csrc/autograd.cpp) does the same in C++."""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD


_TAU_GRAD = ("fused_gumbel: the fused operators take no gradient for tau (a tensor tau that requires grad); "
             "pass tau.detach(), or call fused_gumbel.gumbel_softmax, which runs such a tau on the reference "
             "backend")


def refuse_tau_grad(*args: object) -> None:
    """Raises where a tensor among args (tau) requires grad. Called where
    autograd is recording (the public functions in grad mode, the ops'
    setup_context): the backward returns no gradient for tau, which autograd
    would take as zero."""
    if any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        raise NotImplementedError(_TAU_GRAD)


def save_with_tau(ctx, tau: float | torch.Tensor, *tensors: torch.Tensor) -> None:
    """ctx.save_for_backward(*tensors), keeping tau for the backward: a tensor
    tau (the *_tau_tensor ops, under torch.compile) among the saved tensors, a
    float on ctx."""
    ctx.tau_is_tensor = isinstance(tau, torch.Tensor)
    ctx.tau = None if ctx.tau_is_tensor else tau
    ctx.save_for_backward(*tensors, *([tau] if ctx.tau_is_tensor else []))


def saved_with_tau(ctx, backward_op, backward_tau_tensor_op) -> tuple:
    """(the tensors, tau, the backward op that takes that tau) as
    save_with_tau kept them."""
    saved = ctx.saved_tensors
    if ctx.tau_is_tensor:
        return saved[:-1], saved[-1], backward_tau_tensor_op
    return saved, ctx.tau, backward_op


_DOUBLE_BACKWARD = ("fused_gumbel: the gradient of the gradient (double backward) is not implemented; "
                    "use backend='reference' for higher-order derivatives")


def first_order_only() -> None:
    """Called first in the operators' backward functions: raises under
    create_graph=True (grad mode on inside a backward), where a second
    derivative would be taken through backward kernels that have none:
    autograd would treat them as constants, a wrong second derivative with
    only a warning (or none, where the backward reads a saved tensor autograd
    does not track, the hard=True CPU sample). The Triton backward operators
    themselves get no autograd kernel: a Python one would cost every backward
    a few microseconds of dispatch (the C++ ones have a boxed C++ kernel,
    csrc/autograd.cpp's no_derivative, whose cost is within the noise of a
    5 us CPU backward call)."""
    if torch.is_grad_enabled():
        raise NotImplementedError(_DOUBLE_BACKWARD)


_NO_JVP = ("fused_gumbel: forward-mode AD (jvp) is not implemented for the fused backends; "
           "use backend='reference' for forward-mode derivatives")


def refuse_tangents(*args: object) -> None:
    """Called by the Triton ops (forward, backward, vocabulary shard) before
    they launch: raises where a tensor argument carries a forward-mode
    tangent. torch.library's Python autograd applies a forward op's
    autograd.Function (no jvp: it raises) only when an input requires grad,
    and the backward and shard ops have none; a dual tensor would run the
    kernel and come back without its tangent. (Under torch.func.jvp the op
    receives unwrapped tensors and cannot tell; the public functions refuse
    torch.func transforms before calling it.)"""
    if fwAD._current_level < 0:  # outside every dual_level: no tangent can exist
        return
    if any(isinstance(a, torch.Tensor) and fwAD.unpack_dual(a).tangent is not None for a in args):
        raise RuntimeError(_NO_JVP)
