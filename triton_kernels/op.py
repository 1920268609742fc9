"""Registration of the Triton backend as torch.ops.fused_gumbel.st_softmax_triton
(same signature and outputs as fused_gumbel::st_softmax) and its backward,
with autograd on the op itself.

On a GPU both ops are ``torch.library.triton_op``s whose launches go through
``wrap_triton``, so torch.compile traces into the kernels. In eager mode the
public function skips the op (see dispatcher_needed). Under
TRITON_INTERPRET=1 ``@triton.jit`` gives interpreted functions that cannot be
traced with fake tensors, so the same functions are registered as opaque
``custom_op``s with a fake kernel instead: eager, autograd, opcheck and
torch.compile(fullgraph=True) then behave alike on the CPU interpreter.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Optional

import torch

from .._autograd import first_order_only, refuse_tangents, refuse_tau_grad, save_with_tau, saved_with_tau
from .._checks import (accumulation_dtype, check_inputs, check_nonempty_dim, empty_dim_last, normalize_seed,
                       output_layouts)
from . import noise
from . import st_softmax as kernels

FORWARD_OP = "fused_gumbel::st_softmax_triton"
BACKWARD_OP = "fused_gumbel::st_softmax_triton_backward"
# Siblings taking tau as a 0-d float64 tensor on the logits' device, for
# torch.compile: a float argument of an op is a constant of the compiled graph
# (one graph per temperature of an annealing schedule), a tensor is an input.
FORWARD_TAU_TENSOR_OP = "fused_gumbel::st_softmax_triton_tau_tensor"
BACKWARD_TAU_TENSOR_OP = "fused_gumbel::st_softmax_triton_backward_tau_tensor"


def interpreting() -> bool:
    """Whether the kernels run in Triton's CPU interpreter (TRITON_INTERPRET
    set when they were defined)."""
    return bool(noise.INTERPRETED)


def is_available() -> tuple[bool, str]:
    """(True, "") if the Triton kernels can run here, else (False, why)."""
    if interpreting() or torch.cuda.is_available():
        return True, ""
    return False, ("no CUDA device is available (set TRITON_INTERPRET=1 before importing "
                   "fused_gumbel to run the Triton kernels in the CPU interpreter)")


def _launcher(fn: Callable) -> Callable:
    """wrap_triton on a GPU (traceable launches); the interpreted kernel as is."""
    return fn if interpreting() else torch.library.wrap_triton(fn)


def _direct(fn: Callable) -> Callable:
    """The kernel as is: the launches of the eager path (see dispatcher_needed),
    which nothing traces. Called outside a triton_op, wrap_triton would
    dispatch each launch as a higher-order op."""
    return fn


_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def _only_default_device_modes() -> bool:
    """Whether every active torch-function mode sets the default device
    (torch.set_default_device, `with torch.device(...)`): none of them needs
    to see the op, and the eager path passes its devices explicitly."""
    from torch.utils._device import DeviceContext

    return all(isinstance(m, DeviceContext) for m in torch.overrides._get_current_function_mode_stack())


def dispatcher_needed(*args: Any) -> bool:
    """Whether a call must go through the registered op: under torch.compile
    or torch.jit.trace, while a dispatch mode (make_fx, export,
    FakeTensorMode, operator recorders) or a torch-function mode other than a
    default device is active, under a torch.func transform, or for a tensor
    subclass or meta tensors (the op's fake kernel). Everywhere else the
    public functions run the same _forward and _backward (st_softmax and
    gumbel_topk as an autograd.Function of their own), launching the kernels
    directly: torch.library's Python dispatch of a custom op (its autograd
    wrapper, default filling, the backend redispatch) costs host time, and
    router-sized calls are host-bound (forward+backward at 4 x 8 bfloat16
    with Triton's launches stubbed, python scripts/triton_host_time.py on
    this project's 2-core CPU: 176-204 us through the op, 116-128 us on this
    path)."""
    return (torch.compiler.is_compiling() or torch._C._get_tracing_state() is not None
            or torch._C._len_torch_dispatch_stack() > 0
            or (torch._C._is_torch_function_mode_enabled() and not _only_default_device_modes())
            or torch._C._are_functorch_transforms_active()
            or any(isinstance(a, torch.Tensor) and (type(a) not in _PLAIN_TENSORS or a.is_meta)
                   for a in args))


def _check_device(t: torch.Tensor) -> None:
    """CPU tensors only run in the interpreter."""
    if t.device.type != "cuda" and not interpreting():
        raise RuntimeError(
            "fused_gumbel: backend 'triton' runs CUDA tensors (or CPU tensors under "
            f"TRITON_INTERPRET=1), got a tensor on {t.device}")


def _on_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it t's."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def _as_rows(t: torch.Tensor, dim: int, rows: int, cols: int) -> torch.Tensor:
    """t with dim moved last as [rows, cols] with column stride 1 (a copy only
    when no such view exists), as csrc/st_softmax.cpp's as_rows (and, as
    there, without the movedim op where dim is already last: host time)."""
    x = t.reshape(1) if t.dim() == 0 else t
    r = (x if dim % x.dim() == x.dim() - 1 else x.movedim(dim, -1)).reshape(rows, cols)
    return r.contiguous() if cols > 1 and r.stride(1) != 1 else r


def _check_op_inputs(t: torch.Tensor, tau: float | torch.Tensor, dim: int, tau_name: str = "tau") -> int:
    """check_inputs; a tensor tau (the *_tau_tensor ops) must be a 0-d float64
    tensor on t's device, its value having been checked where it was made
    (fused_gumbel::checked_tau, see _checks.op_tau)."""
    if not isinstance(tau, torch.Tensor):
        return check_inputs(t, tau, dim, tau_name)
    if tau.dim() != 0 or tau.dtype != torch.float64 or tau.device != t.device:
        raise RuntimeError(
            f"fused_gumbel: a tensor {tau_name} must be a 0-d float64 tensor on the logits' device "
            f"({t.device}), got shape {tuple(tau.shape)}, {tau.dtype} on {tau.device}")
    return check_inputs(t, 1.0, dim, tau_name)


def _forward(logits: torch.Tensor, tau: float | torch.Tensor, hard: bool, dim: int,
             seed: Optional[int], wrap: Optional[Callable]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Allocates the outputs and runs the forward kernels, each launched
    through wrap (_launcher or _direct); wrap None: the fake kernel."""
    if wrap is not None:
        refuse_tangents(logits, tau)
    dim = _check_op_inputs(logits, tau, dim)
    _check_device(logits)
    moved, index_shape = output_layouts(logits, dim)
    rows, cols = math.prod(index_shape), moved[-1]
    check_nonempty_dim(logits, dim)
    y = empty_dim_last(logits, dim)  # the kernels write its [rows, cols] rows
    index = logits.new_empty(index_shape, dtype=torch.int64)
    stats = logits.new_empty(index_shape + [2], dtype=accumulation_dtype(logits.dtype))
    if seed is None:
        # (seed, base) drawn on the device from PyTorch's generator: no host
        # sync, and a CUDA-graph replay draws fresh values. (randint, not
        # random_(from, to): FX cannot print the aten.random.from overload.)
        rng_state = torch.randint(-(2**63), 2**63 - 1, (2,), dtype=torch.int64,
                                  device=logits.device)
    else:
        rng_state = logits.new_empty((2,), dtype=torch.int64)  # written by the kernel
    if wrap is not None:
        with _on_device(logits):
            kernels.launch_forward(wrap, _as_rows(logits, dim, rows, cols), y, index,
                                   stats, rng_state, seed, tau, hard)
    return y, index, stats, rng_state


def _saved_state(stats: torch.Tensor, rng_state: torch.Tensor, saved: torch.Tensor, numel: int,
                 what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward's statistics and rng_state checked as the C++ backward
    checks them (and on the saved tensor's device), contiguous as the kernels
    read them: a backward op called directly gets an error, not a read out of
    bounds."""
    if stats.numel() != numel or stats.dtype != accumulation_dtype(saved.dtype) or stats.device != saved.device:
        raise RuntimeError(f"fused_gumbel: stats must be the forward's {what}")
    if rng_state.dtype != torch.int64 or rng_state.numel() != 2 or rng_state.device != saved.device:
        raise RuntimeError("fused_gumbel: rng_state must be the int64 [2] tensor of the forward")
    return stats.contiguous(), rng_state.contiguous()


def _backward(grad: torch.Tensor, y_soft: Optional[torch.Tensor], logits: Optional[torch.Tensor],
              stats: torch.Tensor, rng_state: torch.Tensor, tau: float | torch.Tensor, dim: int,
              wrap: Optional[Callable]) -> torch.Tensor:
    """Allocates grad_logits and runs the backward kernels through wrap, as
    _forward does."""
    if wrap is not None:
        refuse_tangents(grad, y_soft, logits, tau)
    if (y_soft is None) == (logits is None):
        raise RuntimeError("fused_gumbel: st_softmax_triton_backward takes exactly one of "
                           "y_soft (hard=False) and logits (hard=True)")
    saved = y_soft if y_soft is not None else logits
    dim = _check_op_inputs(saved, tau, dim)
    _check_device(saved)
    if grad.shape != saved.shape:
        raise RuntimeError(f"fused_gumbel: grad has shape {tuple(grad.shape)} but the sample "
                           f"has shape {tuple(saved.shape)}")
    moved, index_shape = output_layouts(saved, dim)
    rows, cols = math.prod(index_shape), moved[-1]
    stats, rng_state = _saved_state(stats, rng_state, saved, 2 * rows, "per-row statistics")
    out = empty_dim_last(saved, dim)
    if wrap is not None:
        with _on_device(saved):
            kernels.launch_backward(
                wrap, _as_rows(grad, dim, rows, cols),
                None if y_soft is None else _as_rows(y_soft, dim, rows, cols),
                None if logits is None else _as_rows(logits, dim, rows, cols),
                stats.reshape(rows, 2), rng_state, out, tau)
    return out


def st_softmax_triton_impl(
    logits: torch.Tensor, tau: float, hard: bool, dim: int, seed: Optional[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, index, stats, rng_state) = fused_gumbel::st_softmax on the Triton kernels."""
    return _forward(logits, tau, hard, dim, seed, _launcher)


def st_softmax_triton_tau_tensor_impl(
    logits: torch.Tensor, tau: torch.Tensor, hard: bool, dim: int, seed: Optional[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """st_softmax_triton with tau a 0-d float64 tensor on the logits' device."""
    return _forward(logits, tau, hard, dim, seed, _launcher)


def st_softmax_triton_backward_impl(
    grad: torch.Tensor, y_soft: Optional[torch.Tensor], logits: Optional[torch.Tensor],
    stats: torch.Tensor, rng_state: torch.Tensor, tau: float, dim: int
) -> torch.Tensor:
    """grad_logits = fused_gumbel::st_softmax_backward on the Triton kernels."""
    return _backward(grad, y_soft, logits, stats, rng_state, tau, dim, _launcher)


def st_softmax_triton_backward_tau_tensor_impl(
    grad: torch.Tensor, y_soft: Optional[torch.Tensor], logits: Optional[torch.Tensor],
    stats: torch.Tensor, rng_state: torch.Tensor, tau: torch.Tensor, dim: int
) -> torch.Tensor:
    """st_softmax_triton_backward with tau a 0-d float64 tensor on the device."""
    return _backward(grad, y_soft, logits, stats, rng_state, tau, dim, _launcher)


def _register(name: str, impl: Callable, fake: Callable, tags: tuple = ()) -> Any:
    """A triton_op on a GPU (the function is its own fake kernel: its
    wrap_triton launches are traced, not run, on fake tensors). Under
    TRITON_INTERPRET=1 an opaque custom_op with `fake` as its fake kernel."""
    if not interpreting():
        return torch.library.triton_op(name, mutates_args=())(impl)
    op = torch.library.custom_op(name, mutates_args=(), tags=tags)(impl)
    op.register_fake(fake)
    return op


def register_ops(forward: dict[str, Callable], backward: dict[str, Callable],
                 forward_fake: Callable, backward_fake: Callable, setup_context: Callable,
                 autograd_backward: Callable) -> None:
    """Registers the backward ops, then the forward ops with their autograd;
    name -> implementation. The forward ops draw random numbers: the
    interpreter's custom_ops are tagged nondeterministic_seeded, while a
    triton_op takes no tags (there the traced torch.randint carries it)."""
    for name, impl in backward.items():
        _register(name, impl, backward_fake)

    def checked_setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        # Called only where autograd records the call: a tau (the one tensor
        # input beside the logits) that requires grad would get none.
        refuse_tau_grad(*inputs[1:])
        setup_context(ctx, inputs, output)

    for name, impl in forward.items():
        op = _register(name, impl, forward_fake, (torch.Tag.nondeterministic_seeded,))
        op.register_autograd(autograd_backward, setup_context=checked_setup_context)


def _forward_fake(logits, tau, hard, dim, seed):
    return _forward(logits, tau, hard, dim, seed, None)


def _backward_fake(grad, y_soft, logits, stats, rng_state, tau, dim):
    return _backward(grad, y_soft, logits, stats, rng_state, tau, dim, None)


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    """Saves what the backward needs; index, stats and rng_state have no gradient."""
    logits, tau, hard, dim, _seed = inputs
    y, index, stats, rng_state = output
    # hard=False saves the sample (it is y_soft); hard=True the logits, the
    # noise being regenerated from rng_state in the backward.
    save_with_tau(ctx, tau, logits if hard else y, stats, rng_state)
    ctx.hard, ctx.dim = hard, dim
    ctx.mark_non_differentiable(index, stats, rng_state)
    # Their gradients would be zeros made for nothing: 3 allocations and
    # fill kernels per backward.
    ctx.set_materialize_grads(False)


def _grad_logits(ctx: Any, grad_y: Optional[torch.Tensor], through_op: bool) -> tuple:
    """d logits from d y through the soft sample (straight-through for
    hard=True), by the backward op or (the eager path) its kernels directly."""
    first_order_only()
    if grad_y is None:  # set_materialize_grads(False)
        return (None, None, None, None, None)
    (saved, stats, rng_state), tau, op = saved_with_tau(
        ctx, torch.ops.fused_gumbel.st_softmax_triton_backward,
        torch.ops.fused_gumbel.st_softmax_triton_backward_tau_tensor)
    y_soft, logits = (None, saved) if ctx.hard else (saved, None)
    if through_op:
        grad = op(grad_y, y_soft, logits, stats, rng_state, tau, ctx.dim)
    else:
        grad = _backward(grad_y, y_soft, logits, stats, rng_state, tau, ctx.dim, _direct)
    return grad, None, None, None, None


def _autograd_backward(ctx: Any, grad_y: Optional[torch.Tensor], *_no_grads: Any) -> tuple:
    return _grad_logits(ctx, grad_y, through_op=True)


register_ops({FORWARD_OP: st_softmax_triton_impl,
              FORWARD_TAU_TENSOR_OP: st_softmax_triton_tau_tensor_impl},
             {BACKWARD_OP: st_softmax_triton_backward_impl,
              BACKWARD_TAU_TENSOR_OP: st_softmax_triton_backward_tau_tensor_impl},
             _forward_fake, _backward_fake, _setup_context, _autograd_backward)


class _StSoftmaxTriton(torch.autograd.Function):
    """The eager path of st_softmax_triton (see dispatcher_needed): the op's
    forward, saved tensors and backward kernels, without the dispatcher."""

    # forward(ctx, ...) rather than a separate setup_context: apply binds the
    # latter's arguments with inspect.signature (a forward took 84-97 us
    # that way, 42-47 this way, launches stubbed, this project's 2-core CPU).
    @staticmethod
    def forward(ctx, logits, tau, hard, dim, seed):
        outputs = _forward(logits, tau, hard, dim, seed, _direct)
        _setup_context(ctx, (logits, tau, hard, dim, seed), outputs)
        return outputs

    @staticmethod
    def backward(ctx, grad_y, *_no_grads):
        # The op where the backward is traced or watched (compiled autograd,
        # a dispatch mode), as for the forward.
        return _grad_logits(ctx, grad_y, through_op=dispatcher_needed(grad_y))


def st_softmax_triton(logits: torch.Tensor, tau: float | torch.Tensor, hard: bool, dim: int,
                      seed: Optional[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                    torch.Tensor]:
    """torch.ops.fused_gumbel.st_softmax_triton (or, for a tensor tau, its
    st_softmax_triton_tau_tensor sibling), any Python int seed (taken modulo
    2**64, as the other backends do).

    Returns (y, index, stats, rng_state): the sample (logits' shape and dtype),
    the int64 argmax (logits' shape without dim), per-row (max, sum) [..., 2]
    in the accumulation dtype and the int64 [2] (seed, base) of the noise.
    """
    seed = normalize_seed(seed)
    if not dispatcher_needed(logits, tau):
        if torch.is_grad_enabled():  # (the op checks in its setup_context)
            refuse_tau_grad(tau)
        return _StSoftmaxTriton.apply(logits, tau, hard, dim, seed)
    op = (torch.ops.fused_gumbel.st_softmax_triton_tau_tensor if isinstance(tau, torch.Tensor)
          else torch.ops.fused_gumbel.st_softmax_triton)
    return op(logits, tau, hard, dim, seed)
