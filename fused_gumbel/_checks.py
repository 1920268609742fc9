"""The contract's input checks in Python, raising the same exception types and
messages as the C++ TORCH_CHECK_* of csrc/st_softmax.cpp. The fake kernels, the
reference backend and the Triton backend use them, so every path fails alike."""

from __future__ import annotations

import math
import operator
import sys
import warnings

import torch
import torch.autograd.forward_ad as fwAD

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def as_tau(tau: float | torch.Tensor, tau_name: str = "tau") -> float | torch.Tensor:
    """tau as the functions take it: a Python number, or (as F.gumbel_softmax
    allows) a one-element real tensor, returned 0-d; TypeError otherwise."""
    if not isinstance(tau, torch.Tensor):
        # float() would read "0.5" and b"0.5"; F.gumbel_softmax would not.
        if isinstance(tau, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"fused_gumbel: {tau_name} must be a number or a one-element real tensor, "
                            f"got {type(tau).__name__} {tau!r}")
        if not torch.compiler.is_compiling() and is_bool_scalar(tau):
            # F.gumbel_softmax(x, True) runs at tau = 1 (a drop-in must too); it is
            # most often `hard` passed by position.
            hint = "; hard is the third argument" if tau_name == "tau" else ""
            warnings.warn(f"fused_gumbel: {tau_name}={tau!r} is taken as the number {int(tau)}, as PyTorch "
                          f"takes it{hint}", stacklevel=3)
        if not torch.compiler.is_compiling():  # (float() of a symbolic tau would specialize it)
            try:
                float(tau)
            except TypeError:
                raise TypeError(f"fused_gumbel: {tau_name} must be a number or a one-element real tensor, "
                                f"got {type(tau).__name__}") from None
        return tau
    if tau.numel() != 1 or tau.dtype.is_complex or tau.dtype == torch.bool:
        raise TypeError(f"fused_gumbel: {tau_name} must be a number or a one-element real tensor, "
                        f"got a tensor of shape {tuple(tau.shape)} and dtype {tau.dtype}")
    return tau.reshape(())


def is_bool_scalar(x: object) -> bool:
    """A Python or NumPy bool (NumPy's is not a bool subclass)."""
    return isinstance(x, bool) or getattr(getattr(x, "dtype", None), "kind", None) == "b"


def tau_is_differentiated(tau: float | torch.Tensor) -> bool:
    """Whether a derivative may flow through tau, which only the reference
    backend's plain ops carry (read as a float, tau would drop it): a tensor
    autograd records (it requires grad, in grad mode), a dual tensor of
    forward-mode AD, or any tensor under a torch.func transform (jvp and
    jacfwd hand it over as a wrapper whose tangent only tensor ops see)."""
    if not isinstance(tau, torch.Tensor):
        return False
    if (tau.requires_grad and torch.is_grad_enabled()) or torch._C._are_functorch_transforms_active():
        return True
    return carries_tangent(tau)


def carries_tangent(t: object) -> bool:
    """Whether t is a dual tensor of forward-mode AD (torch.autograd.forward_ad)."""
    return isinstance(t, torch.Tensor) and fwAD._current_level >= 0 and fwAD.unpack_dual(t).tangent is not None


def check_tau(tau: float | torch.Tensor, tau_name: str = "tau") -> None:
    """Raises the contract's ValueError unless tau is a positive finite number.
    A tensor tau (see as_tau) is read on the host, except under torch.compile,
    where op_tau's tensor is checked at run time instead, and on the meta
    device, which holds no value."""
    if isinstance(tau, torch.Tensor):
        tau = as_tau(tau, tau_name)
        if torch.compiler.is_compiling() or tau.is_meta:
            return
        tau = float(tau.detach())
    if torch.compiler.is_compiling():
        # tau may be symbolic (a temperature that changes between calls):
        # comparisons, which dynamo turns into guards rather than a
        # specialization on the value, so a new temperature does not recompile.
        # The upper bound is the largest finite float, not inf: a symbolic
        # float is assumed finite, so `tau < inf` would hold without a guard.
        if not 0.0 < tau <= sys.float_info.max:
            raise ValueError(f"fused_gumbel: {tau_name} must be a positive finite number")
    else:
        tau = float(tau)
        if not (math.isfinite(tau) and tau > 0.0):
            raise ValueError(f"fused_gumbel: {tau_name} must be a positive finite number, got {tau_name}={tau}")


def check_tau_tensor(tau: torch.Tensor, tau_name: str = "tau") -> None:
    """What csrc/st_softmax.cpp's tensor_tau asks of the C++ *_tau_tensor
    ops' temperature (one floating-point element on the CPU; the kernel checks
    its value), raised alike by their fake kernels: a meta tau would otherwise
    take the fake kernel for CPU logits and return uninitialized memory."""
    if not (tau.numel() == 1 and tau.device.type == "cpu" and tau.is_floating_point()):
        raise ValueError(f"fused_gumbel: {tau_name} as a tensor must be one floating-point element on the CPU, "
                         f"got {tau.numel()} element(s) of {tau.dtype} on {tau.device}")


def check_inputs(logits: torch.Tensor, tau: float, dim: int, tau_name: str = "tau") -> int:
    """Validates (logits, tau, dim); returns dim wrapped into [0, ndim).
    `tau_name` is how the caller's API spells the temperature."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"fused_gumbel: logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dtype not in FLOAT_DTYPES:
        raise TypeError(
            "fused_gumbel: logits must be float16, bfloat16, float32 or float64, "
            f"got {logits.dtype}"
        )
    check_tau(tau, tau_name)
    dim = as_dim(dim)
    ndim = max(logits.dim(), 1)
    if not (-ndim <= dim < ndim):
        raise IndexError(
            f"fused_gumbel: dim out of range (expected to be in range of [{-ndim}, {ndim - 1}], "
            f"but got {dim})"
        )
    return dim % ndim


def _is_bool(v: object) -> bool:
    """A bool, or a bool tensor: operator.index accepts both as 0 or 1."""
    return isinstance(v, bool) or (isinstance(v, torch.Tensor) and v.dtype == torch.bool)


def as_dim(dim: int) -> int:
    """dim as an int: a TypeError for a float or a bool, as torch's ops raise
    (int() would truncate 1.5 to 1)."""
    if _is_bool(dim):
        raise TypeError(f"fused_gumbel: dim must be an int, got {dim!r}")
    try:
        return operator.index(dim)
    except TypeError:
        raise TypeError(f"fused_gumbel: dim must be an int, got {type(dim).__name__}") from None


def op_tau(tau: float | torch.Tensor, device: torch.device | str | None = None,
           tau_name: str = "tau") -> float | torch.Tensor:
    """The temperature as the operators take it: a Python float, or under
    torch.compile a 0-d float64 tensor, for the ops' *_tau_tensor siblings. A
    float argument of a custom op becomes a constant of the compiled graph, so
    every new temperature of an annealing schedule would compile a new graph; a
    tensor made from it is a graph input. (torch.scalar_tensor(tau) would be a
    constant again: dynamo specializes that float.)

    device None: a CPU tensor, which the C++ kernels read and check on the
    host. A device: the tensor on it, for the Triton kernels (which read it
    there and cannot raise), checked first at run time by checked_tau, so a
    bad value raises the contract's ValueError (naming `tau_name`) from the
    compiled graph as it does in eager mode. (Checks while tracing could only
    be guards, and an error raised while tracing reaches the caller wrapped by
    dynamo.)"""
    if torch.compiler.is_compiling():
        if isinstance(tau, torch.Tensor):
            cpu = tau.detach().to(device="cpu", dtype=torch.float64).reshape(())
        else:
            cpu = torch.ones((), dtype=torch.float64) * tau
        return cpu if device is None else torch.ops.fused_gumbel.checked_tau(cpu, torch.device(device), tau_name)
    return float(tau.detach()) if isinstance(tau, torch.Tensor) else float(tau)


@torch.library.custom_op("fused_gumbel::checked_tau", mutates_args=())
def checked_tau(tau: torch.Tensor, device: torch.device, tau_name: str = "tau") -> torch.Tensor:
    """tau, a 0-d float64 CPU tensor, checked (the contract's ValueError,
    naming `tau_name`, unless positive and finite) and copied to `device`.
    Reading a CPU tensor needs no device synchronization."""
    check_tau(float(tau), tau_name)
    return torch.full((), float(tau), dtype=torch.float64, device=device)


@checked_tau.register_fake
def _checked_tau_fake(tau: torch.Tensor, device: torch.device, tau_name: str = "tau") -> torch.Tensor:
    return torch.empty((), dtype=torch.float64, device=device)


@checked_tau.register_vmap
def _checked_tau_vmap(info, in_dims: tuple, tau: torch.Tensor, device: torch.device, tau_name: str = "tau"
                      ) -> tuple[torch.Tensor, int]:
    """A batch of temperatures (torch.func.vmap over tau): each member checked,
    one call per member, which torch.compile traces for the batch size it sees
    (reading the values at once would be data dependent there)."""
    taus = tau.movedim(in_dims[0], 0)
    if taus.shape[0] == 0:
        return torch.empty((0,), dtype=torch.float64, device=device), 0
    return torch.stack([checked_tau(t, device, tau_name) for t in taus.unbind(0)]), 0


def checked_tensor_tau(tau: torch.Tensor, device: torch.device | str, tau_name: str = "tau") -> torch.Tensor:
    """A tensor tau checked by checked_tau, eager or compiled (at run time),
    one member at a time under vmap, that keeps tau's derivative: the value is
    the checked float64 copy, the gradient and forward-mode tangent those of
    tau (+ tau - tau.detach(), which is 0). A meta tau has no value to check."""
    if tau.is_meta:
        return tau
    cpu = tau.detach().to(device="cpu", dtype=torch.float64).reshape(())
    return checked_tau(cpu, torch.device(device), tau_name) + (tau - tau.detach())


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 logits accumulate in float64, every other dtype in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def normalize_seed(seed: int | None) -> int | None:
    """Seeds are 64-bit: any Python int is taken modulo 2**64 and carried as the
    int64 with the same bits (the operator schema's int is int64)."""
    if seed is None:
        return None
    if _is_bool(seed):
        raise TypeError(f"fused_gumbel: seed must be an int or None, got {seed!r}")
    if not isinstance(seed, int):
        try:
            seed = operator.index(seed)
        except TypeError:
            raise TypeError(f"fused_gumbel: seed must be an int or None, got {type(seed).__name__}") from None
    if -(1 << 63) <= seed < (1 << 63):
        # Already an int64: under torch.compile a symbolic seed then reaches the
        # op as the graph input it is (guarded by these comparisons), with no
        # mask in the graph that Inductor's C++ wrapper cannot spell in int64.
        return seed
    seed &= (1 << 64) - 1
    return seed - (1 << 64) if seed >= (1 << 63) else seed


def output_layouts(logits: torch.Tensor, dim: int):
    """Shapes of the operator's outputs: the sample is allocated with `dim`
    last and contiguous, then viewed back (as the C++ wrapper does)."""
    moved = list(logits.shape) or [1]
    moved.append(moved.pop(dim))
    return moved, moved[:-1]


def empty_dim_last(logits: torch.Tensor, dim: int, size: int | None = None,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """An empty tensor in the logits' shape (`dim` of `size` if given) laid out
    as the kernels write their outputs, `dim` last and contiguous (row r of the
    [rows, size] rows at r * size): a tensor of its own, not a view of one, as
    csrc/st_softmax.h's empty_dim_last. Autograd refuses in-place writes into
    views a custom op returns, and users write into samples as into
    F.gumbel_softmax's."""
    moved, _ = output_layouts(logits, dim)
    if size is not None:
        moved[-1] = size
    dtype = logits.dtype if dtype is None else dtype
    if logits.dim() == 0:
        return logits.new_empty((), dtype=dtype)
    if dim % logits.dim() == logits.dim() - 1:  # the usual case, at less host time
        return logits.new_empty(moved, dtype=dtype)
    # Contiguous strides of the dim-last shape (torch's rule: a dim of size 0
    # counts as 1; sym_max adds no guard on a symbolic size, and max() costs
    # less host time on a plain int), then dim put back in its place.
    strides = [1] * len(moved)
    for i in range(len(moved) - 2, -1, -1):
        size = moved[i + 1]
        strides[i] = strides[i + 1] * (max(size, 1) if isinstance(size, int) else torch.sym_max(size, 1))
    dim = dim % logits.dim()
    order = [d for d in range(logits.dim()) if d != dim] + [dim]
    shape, stride = [0] * len(order), [0] * len(order)
    for position, d in enumerate(order):
        shape[d], stride[d] = moved[position], strides[position]
    return torch.empty_strided(shape, stride, dtype=dtype, device=logits.device)


def check_nonempty_dim(logits: torch.Tensor, dim: int, index: bool = False) -> None:
    """ValueError when the sampled dim has size 0 but other dims do not (rows
    with no class to sample; zero rows are fine), as the C++ checks; `index`:
    the caller asked for the rows' argmax (return_index=True)."""
    moved, index_shape = output_layouts(logits, dim)
    if moved[-1] == 0 and math.prod(index_shape) > 0:
        if index:
            raise ValueError(f"fused_gumbel: dim {dim} has size 0, so its rows have no argmax for "
                             "return_index=True to return")
        raise ValueError(f"fused_gumbel: cannot sample from dim {dim}, which has size 0")


def check_k(k: int, cols: int) -> int:
    """Validates the subset size of gumbel_topk: an int in [1, cols] (the size
    of the sampled dim), as csrc/topk.cpp's check_k."""
    if isinstance(k, bool):
        raise ValueError(f"fused_gumbel: k must be an int in [1, {cols}], got k={k!r}")
    try:
        k = operator.index(k)
    except TypeError:
        raise ValueError(f"fused_gumbel: k must be an int in [1, {cols}], got k={k!r}") from None
    if not 1 <= k <= cols:
        raise ValueError(f"fused_gumbel: k must be an int in [1, {cols}] (the size of dim), got k={k}")
    return k


def check_shard(logits: torch.Tensor, tau: float, vocab_start: int, vocab_size: int) -> None:
    """A vocabulary shard: the contract's checks along the last dim, and its
    columns [vocab_start, vocab_start + width) inside [0, vocab_size) (the
    message of csrc/shard.cpp's check)."""
    check_inputs(logits, tau, -1)
    if logits.dim() < 1:
        raise ValueError("fused_gumbel: a vocabulary shard needs at least one dimension (the vocabulary, last)")
    cols = logits.shape[-1]
    if not (0 <= vocab_start and cols >= 1 and vocab_start + cols <= vocab_size):
        raise ValueError(
            f"fused_gumbel: the shard's columns [vocab_start, vocab_start + {cols}) = "
            f"[{vocab_start}, {vocab_start + cols}) must lie inside the vocabulary "
            f"[0, vocab_size = {vocab_size})")
