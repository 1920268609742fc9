"""The public functions and the fake (meta) kernels of the registered
operators. The schemas, the CPU/CUDA kernels and the operators' autograd are in
csrc/; the Triton backend registers its own sibling op in
fused_gumbel.triton_kernels."""

from __future__ import annotations

import torch

from ._checks import (accumulation_dtype, as_dim, as_tau, carries_tangent, check_inputs, check_nonempty_dim,
                      check_tau_tensor, empty_dim_last, normalize_seed, op_tau, output_layouts,
                      tau_is_differentiated)
from ._extension import extension_loaded, has_kernel, require_extension
from .reference import gumbel_softmax_reference

BACKENDS = ("auto", "cuda", "triton", "cpu", "reference")


def keeps_soft_sample(logits: torch.Tensor, hard: bool) -> bool:
    """Mirrors csrc/st_softmax.h: with hard=True the CPU kernel also writes the
    soft sample (its backward would otherwise pay for the noise twice); the
    CUDA kernel keeps only per-row statistics and regenerates it."""
    return hard and logits.device.type == "cpu"


if extension_loaded():

    @torch.library.register_fake("fused_gumbel::st_softmax")
    def _st_softmax_fake(logits, tau, hard, dim, seed):
        dim = check_inputs(logits, tau, dim)
        check_nonempty_dim(logits, dim)
        _, index_shape = output_layouts(logits, dim)
        return (
            empty_dim_last(logits, dim),
            logits.new_empty(index_shape, dtype=torch.long),
            logits.new_empty(index_shape + [2], dtype=accumulation_dtype(logits.dtype)),
            logits.new_empty([2], dtype=torch.long),
            empty_dim_last(logits, dim) if keeps_soft_sample(logits, hard) else logits.new_empty([0]),
        )

    @torch.library.register_fake("fused_gumbel::st_softmax_tau_tensor")
    def _st_softmax_tau_tensor_fake(logits, tau, hard, dim, seed):
        # tau's range is checked by the kernel, at run time.
        check_tau_tensor(tau)
        return _st_softmax_fake(logits, 1.0, hard, dim, seed)

    @torch.library.register_fake("fused_gumbel::st_softmax_shard")
    def _st_softmax_shard_fake(logits, tau, seed, vocab_start, vocab_size):
        check_inputs(logits, tau, -1)
        rows = list(logits.shape[:-1])
        return (
            torch.empty_like(logits, memory_format=torch.contiguous_format),
            logits.new_empty(rows, dtype=torch.long),
            logits.new_empty(rows + [2], dtype=accumulation_dtype(logits.dtype)),
        )

    @torch.library.register_fake("fused_gumbel::st_softmax_backward")
    def _st_softmax_backward_fake(grad, y_soft, logits, stats, rng_state, tau, dim):
        saved = y_soft if y_soft is not None else logits
        dim = check_inputs(saved, tau, dim)
        return empty_dim_last(saved, dim)

    @torch.library.register_fake("fused_gumbel::st_softmax_backward_tau_tensor")
    def _st_softmax_backward_tau_tensor_fake(grad, y_soft, logits, stats, rng_state, tau, dim):
        check_tau_tensor(tau)
        return _st_softmax_backward_fake(grad, y_soft, logits, stats, rng_state, 1.0, dim)


def _triton_module():
    from . import triton_kernels  # installed from triton_kernels/ (see pyproject.toml)

    return triton_kernels


@torch.compiler.assume_constant_result
def backend_status(backend: str, device: torch.device | str | None = None) -> tuple[bool, str]:
    """Whether `backend` can run tensors on `device` here, and if not, why.

    A constant for torch.compile: evaluated once while tracing, never a graph
    break (the dispatcher and import machinery it consults are not traceable)."""
    device = torch.device(device) if device is not None else None
    if backend == "reference":
        return True, ""
    if backend == "cpu":
        if not extension_loaded():
            return False, "the compiled extension fused_gumbel._C is not built"
        if device is not None and device.type != "cpu":
            return False, f"it runs CPU tensors only, got a tensor on {device}"
        return True, ""
    if backend == "cuda":
        if not extension_loaded():
            return False, "the compiled extension fused_gumbel._C is not built"
        if not has_kernel("st_softmax", "CUDA"):
            return False, "this build has no CUDA kernels (nvcc was not found when it was built)"
        if not torch.cuda.is_available():
            return False, "no CUDA device is available"
        if device is not None and device.type != "cuda":
            return False, f"it runs CUDA tensors only, got a tensor on {device}"
        return True, ""
    if backend == "triton":
        try:
            triton_kernels = _triton_module()
        except ImportError as exc:
            return False, f"triton is not importable ({exc})"
        ok, why = triton_kernels.is_available()
        if not ok:
            return False, why
        if device is not None and device.type != "cuda" and not triton_kernels.interpreting():
            return False, f"it runs CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), got {device}"
        return True, ""
    raise ValueError(f"fused_gumbel: unknown backend {backend!r}; choose from {BACKENDS}")


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """The backends that can run here (for tensors on `device`, if given)."""
    return [b for b in BACKENDS[1:] if backend_status(b, device)[0]]


def _under_torch_func() -> bool:
    """Whether a torch.func transform (grad, vmap, jacrev, ...) is active: the
    fused operators have no functorch rules (torch.func.grad would fail with
    a misleading error about setup_context, vmap would ignore its randomness
    argument, which the reference's seed=None draw follows). Under
    torch.compile dynamo answers it while tracing (a compiled torch.func.grad
    or vmap traces with the transform active)."""
    return torch._C._are_functorch_transforms_active()


def _resolve_backend(backend: str, device: torch.device, tau: float | torch.Tensor = 1.0,
                     logits: torch.Tensor | None = None) -> str:
    """The backend that runs: "auto" resolved for the device, or the one asked
    for if it can run here (RuntimeError naming why not). A tau that autograd
    differentiates, dual logits of forward-mode AD, and any call under a
    torch.func transform run on the reference ("auto" picks it; a fused
    backend named explicitly refuses)."""
    if backend not in BACKENDS:
        raise ValueError(f"fused_gumbel: unknown backend {backend!r}; choose from {BACKENDS}")
    # "auto" asks requires_grad whatever the grad mode: a reentrant checkpoint
    # runs its forward under no_grad and its recompute with grad, which must
    # take the same backend to draw the same seed=None noise.
    differentiated = tau_is_differentiated(tau)
    dual = carries_tangent(logits)
    if backend in ("auto", "reference") and (
            differentiated or dual or (isinstance(tau, torch.Tensor) and tau.requires_grad)):
        return "reference"
    if _under_torch_func():
        if backend in ("auto", "reference"):
            return "reference"
        raise NotImplementedError(
            f"fused_gumbel: backend {backend!r} does not support torch.func transforms (grad, vmap, ...); "
            "backend='reference' (or 'auto', which picks it) supports torch.func.grad")
    if differentiated:
        raise NotImplementedError(
            f"fused_gumbel: backend {backend!r} takes no derivative for tau (a tensor that requires grad or "
            "carries a forward-mode tangent); pass tau.detach() or a float, or use backend='reference' or 'auto'")
    if dual:
        raise NotImplementedError(
            f"fused_gumbel: backend {backend!r} has no forward-mode derivative (the logits are a dual tensor of "
            "torch.autograd.forward_ad); use backend='reference' or 'auto', which carry the tangent")
    if backend == "auto":
        for candidate in (("cuda", "triton") if device.type == "cuda" else ("cpu",)):
            if backend_status(candidate, device)[0]:
                return candidate
        return "reference"
    ok, why = backend_status(backend, device)
    if not ok:
        raise RuntimeError(f"fused_gumbel: backend {backend!r} is not available: {why}")
    return backend


def gumbel_softmax(
    logits: torch.Tensor,
    tau: float | torch.Tensor = 1.0,
    hard: bool = False,
    eps: float = 1e-10,
    dim: int = -1,
    *,
    seed: int | None = None,
    return_index: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Samples from the Gumbel-Softmax distribution in one fused kernel.

    A drop-in for ``torch.nn.functional.gumbel_softmax`` (same positional
    arguments, output shape and dtype).

    Args:
        logits: [..., num_classes, ...] unnormalized log-probabilities
            (float16, bfloat16, float32, float64; any layout).
        tau: temperature, a positive finite number (or a one-element tensor; one
            that requires grad runs on the reference backend, which
            differentiates it); changing it never recompiles.
        hard: return the exact one-hot of argmax(logits + g) along ``dim``,
            differentiated as the soft sample (straight-through).
        eps: accepted and ignored, as in PyTorch.
        dim: the class dimension.
        seed: None draws the noise from PyTorch's generator of the device
            (``torch.manual_seed`` reproduces it); an int makes the noise a pure
            function of (seed, position), identical on every backend.
        return_index: also return the int64 argmax along ``dim``.
        backend: "auto", "cuda", "triton", "cpu" or "reference". "auto" runs
            the reference for what only it differentiates (a tau that
            requires grad or carries a tangent, dual logits) and under a
            torch.func transform; a fused backend named then raises.

    Returns:
        y, or (y, index) with ``return_index``; ``index`` has the shape of
        ``logits`` without ``dim``.

    Equivalent to::

        g = fused_gumbel.gumbel_noise(logits.movedim(dim, -1).shape, seed)
        s = logits.movedim(dim, -1).to(acc) + g   # acc: float32, float64 for float64 logits
        y = torch.softmax(s / tau, -1)          # or one_hot(s.argmax(-1)) if hard
        y = y.to(logits.dtype).movedim(-1, dim)
    """
    del eps
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"fused_gumbel: logits must be a torch.Tensor, got {type(logits).__name__}")
    seed = normalize_seed(seed)
    tau, dim = as_tau(tau), as_dim(dim)
    name = _resolve_backend(backend, logits.device, tau, logits)
    if -logits.dim() <= dim < logits.dim() and logits.shape[dim] == 0:
        # Rows with no classes: the reference returns the empty sample that
        # F.gumbel_softmax does (the fused kernels have no row to run).
        name = "reference"
    if name == "reference":
        return gumbel_softmax_reference(logits, tau, hard, dim=dim, seed=seed, return_index=return_index)
    if name == "triton":
        tau = op_tau(tau, logits.device)
        y, index = _triton_module().st_softmax_triton(logits, tau, bool(hard), dim, seed)[:2]
    else:
        require_extension()
        tau = op_tau(tau)
        op = (torch.ops.fused_gumbel.st_softmax_tau_tensor if isinstance(tau, torch.Tensor)
              else torch.ops.fused_gumbel.st_softmax)
        y, index = op(logits, tau, bool(hard), dim, seed)[:2]
    return (y, index) if return_index else y
