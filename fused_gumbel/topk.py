"""Straight-through Gumbel top-k: the public function and the fake kernels of
the registered operators fused_gumbel::gumbel_topk and gumbel_topk_backward.
The schemas and the CPU/CUDA kernels are in csrc/topk.cpp,
csrc/cpu/topk_cpu.cpp and csrc/cuda/topk_cuda.cu, their autograd in
csrc/autograd.cpp; the Triton backend registers its own sibling op in
fused_gumbel.triton_kernels.topk_op."""

from __future__ import annotations

import torch

from ._checks import (accumulation_dtype, as_dim, as_tau, check_inputs, check_k, check_tau_tensor, empty_dim_last,
                      normalize_seed, op_tau, output_layouts, tau_is_differentiated)
from ._extension import extension_loaded, has_kernel, require_extension
from .ops import _resolve_backend, _triton_module, backend_status
from .reference import gumbel_topk_reference

# The CUDA kernel keeps a top-k list per thread in registers, of CUDA_MAX_K
# entries (csrc/cuda/topk_cuda.cu's kMaxK): k up to that. Larger k runs on
# Triton (any k) when backend="auto", or is an error with backend="cuda".
CUDA_MAX_K = 8


def _check(logits: torch.Tensor, k: int, tau: float, dim: int) -> tuple[int, int]:
    """The contract's checks, then k's; returns (dim, k) normalized."""
    dim = check_inputs(logits, tau, dim)
    moved, _ = output_layouts(logits, dim)
    return dim, check_k(k, moved[-1])


if extension_loaded() and has_kernel("gumbel_topk", "CPU"):

    @torch.library.register_fake("fused_gumbel::gumbel_topk")
    def _gumbel_topk_fake(logits, k, tau, hard, dim, seed):
        dim, k = _check(logits, k, tau, dim)
        _, index_shape = output_layouts(logits, dim)
        return (
            empty_dim_last(logits, dim),
            empty_dim_last(logits, dim, k, torch.long),
            logits.new_empty(index_shape + [k, 2], dtype=accumulation_dtype(logits.dtype)),
            logits.new_empty([2], dtype=torch.long),
        )

    @torch.library.register_fake("fused_gumbel::gumbel_topk_backward")
    def _gumbel_topk_backward_fake(grad, logits, stats, rng_state, k, tau, dim):
        dim, k = _check(logits, k, tau, dim)
        return empty_dim_last(logits, dim)

    # The *_tau_tensor siblings (tau a CPU tensor, under torch.compile): tau's
    # range is checked by the kernel, at run time.
    @torch.library.register_fake("fused_gumbel::gumbel_topk_tau_tensor")
    def _gumbel_topk_tau_tensor_fake(logits, k, tau, hard, dim, seed):
        check_tau_tensor(tau)
        return _gumbel_topk_fake(logits, k, 1.0, hard, dim, seed)

    @torch.library.register_fake("fused_gumbel::gumbel_topk_backward_tau_tensor")
    def _gumbel_topk_backward_tau_tensor_fake(grad, logits, stats, rng_state, k, tau, dim):
        check_tau_tensor(tau)
        return _gumbel_topk_backward_fake(grad, logits, stats, rng_state, k, 1.0, dim)


def _resolve(backend: str, logits: torch.Tensor, k: int, tau: float | torch.Tensor) -> str:
    """The backend gumbel_topk runs on: as gumbel_softmax's, except that the
    CUDA kernel takes k up to CUDA_MAX_K ("auto" then runs Triton, or the
    reference)."""
    device = logits.device
    name = _resolve_backend(backend, device, tau, logits)
    if name == "cuda" and k > CUDA_MAX_K:
        if backend == "auto":
            return "triton" if backend_status("triton", device)[0] else "reference"
        raise ValueError(f"fused_gumbel: backend 'cuda' takes k up to {CUDA_MAX_K}, got k={k}; "
                         "use backend='triton' or 'auto'")
    return name


def gumbel_topk(
    logits: torch.Tensor,
    k: int,
    tau: float | torch.Tensor = 1.0,
    hard: bool = True,
    dim: int = -1,
    *,
    seed: int | None = None,
    return_index: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Straight-through Gumbel top-k: k classes without replacement, in one
    fused kernel.

    The forward value (hard=True) is the exact k-hot (0.0 and 1.0) of the k
    largest s = logits + g along ``dim``, g the Gumbel noise of
    ``gumbel_softmax`` for the same seed and layout (the Gumbel-top-k trick: k
    classes drawn without replacement from softmax(logits)); ties go to the
    lower index. The gradient is that of the relaxed subset of Xie and Ermon
    (2019): a_1 = s, p_j = softmax(a_j / tau), a_{j+1} = a_j + log(max(1 - p_j,
    tiny)), y_soft = sum_{j <= k} p_j (a row sums to k); hard=False returns
    y_soft. k=1 is ``gumbel_softmax`` (same sample, same index).

    Args:
        logits: [..., n, ...] unnormalized log-probabilities (float16,
            bfloat16, float32, float64; any layout).
        k: subset size, an int in [1, n].
        tau: temperature of the relaxation, a positive finite number, or a
            one-element tensor, as gumbel_softmax's (one that requires grad
            runs on the reference, which differentiates it).
        hard: return the k-hot with y_soft's gradient (straight-through).
        dim: the class dimension.
        seed: None draws the noise from PyTorch's generator of the device; an
            int makes it a pure function of (seed, position), the same on every
            backend and the same as ``gumbel_softmax``'s.
        return_index: also return the chosen classes (int64, in decreasing
            order of s): the logits' shape with ``dim`` of size k.
        backend: "auto", "cuda", "triton", "cpu" or "reference".

    Returns:
        y (the logits' shape and dtype), or (y, index) with ``return_index``.
        A row with a NaN, a +inf or fewer than k entries above -inf has no
        subset: its y (and gradient) is NaN, the other rows are unaffected.

    Equivalent to::

        s = logits.movedim(dim, -1).float() + gumbel_noise(shape, seed)
        index = s.sort(-1, descending=True, stable=True).indices[..., :k]
        y = zeros_like(s).scatter(-1, index, 1.0)           # hard=True
        a, y_soft = s, 0
        for _ in range(k):                                   # the gradient's path
            p = softmax(a / tau, -1); y_soft += p; a += log(clamp_min(1 - p, tiny))
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"fused_gumbel: logits must be a torch.Tensor, got {type(logits).__name__}")
    # Under torch.compile tau is checked at run time, by the C++ kernels or by
    # checked_tau (see op_tau), so that a bad value raises the ValueError from
    # the compiled graph; so is a tau the reference differentiates (under vmap
    # possibly a batch of temperatures, which has no one value to read here).
    tau, dim = as_tau(tau), as_dim(dim)
    checked_later = torch.compiler.is_compiling() or tau_is_differentiated(tau)
    dim, k = _check(logits, k, 1.0 if checked_later else tau, dim)
    seed = normalize_seed(seed)
    name = _resolve(backend, logits, k, tau)
    if name == "reference":
        return gumbel_topk_reference(logits, k, tau, hard, dim, seed=seed, return_index=return_index)
    if name == "triton":
        tau = op_tau(tau, logits.device)
        y, index = _triton_module().gumbel_topk_triton(logits, k, tau, bool(hard), dim, seed)[:2]
    else:
        require_extension()
        tau = op_tau(tau)
        op = (torch.ops.fused_gumbel.gumbel_topk_tau_tensor if isinstance(tau, torch.Tensor)
              else torch.ops.fused_gumbel.gumbel_topk)
        y, index = op(logits, k, tau, bool(hard), dim, seed)[:2]
    return (y, index) if return_index else y
