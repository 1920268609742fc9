"""The forward-only sampler: one class per row from softmax(logits / temperature)
by Gumbel-max, reading the logits once and writing only the indices (the
primitive LLM serving uses), with the noise of `gumbel_softmax`."""

from __future__ import annotations

import torch

from ._checks import (accumulation_dtype, as_dim, as_tau, check_inputs, check_nonempty_dim, check_tau_tensor,
                      checked_tensor_tau, normalize_seed, op_tau, output_layouts)
from ._extension import extension_loaded, require_extension
from .noise import noise_for
from .ops import _resolve_backend, _triton_module

NO_SAMPLE = -1
"""The index of a row that has no valid sample (a NaN, all -inf, a +inf logit)."""


def _score_weight_tensors(temperature: float | torch.Tensor, acc: torch.dtype, device: torch.device
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(w_x, w_g) of the score s = x * w_x + w_g * g as `acc` tensors on
    `device`: gumbel_math.h's sample_score_weights, (1, T) for T <= 1, (1/T
    clamped to the smallest normal of `acc`, 1) above, with its roundings
    (float64, then acc). Both give argmax(x + T g) up to rounding, but x + T g
    overflows to inf for a huge T (float32: above about 1.5e37) and every row
    would have no sample; x / T + g cannot overflow. Tensor ops: the
    temperature may be a graph input under torch.compile, a batch under vmap."""
    t = torch.as_tensor(temperature, dtype=torch.float64, device=device)
    above = t > 1.0
    w_x = torch.where(above, (1.0 / t).clamp(min=torch.finfo(acc).tiny), 1.0)
    return w_x.to(acc), torch.where(above, 1.0, t).to(acc)


def sample_reference(
    logits: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    *,
    seed: int | None = None,
    dim: int = -1,
) -> torch.Tensor:
    """`sample` in plain PyTorch ops, with the fused kernels' noise: the first
    index maximizing ``s = x * w_x + w_g * g`` (_score_weight_tensors: ``x +
    temperature * g`` for temperature <= 1, ``x / temperature + g`` above; in
    float32, float64 for float64 logits); -1 where the row's max s is not
    finite."""
    temperature = as_tau(temperature, "temperature")
    if isinstance(temperature, torch.Tensor):
        # Checked at run time, under torch.compile too, one member at a time
        # under vmap (a batch of temperatures).
        temperature = checked_tensor_tau(temperature, logits.device, "temperature")
        dim = check_inputs(logits, 1.0, dim, "temperature")
    elif torch.compiler.is_compiling():
        # A graph input checked at run time (op_tau): one graph for every
        # temperature, not one per value.
        temperature = op_tau(temperature, logits.device, "temperature")
        dim = check_inputs(logits, 1.0, dim, "temperature")
    else:
        dim = check_inputs(logits, temperature, dim, "temperature")
    seed = normalize_seed(seed)
    x = (logits.reshape(1) if logits.dim() == 0 else logits).movedim(dim, -1)
    check_nonempty_dim(logits, dim)
    acc = accumulation_dtype(logits.dtype)
    if x.shape[-1] == 0:
        return torch.empty(x.shape[:-1], dtype=torch.long, device=x.device)
    g = noise_for(x.shape, seed, x.device).to(acc)
    w_x, w_g = _score_weight_tensors(temperature, acc, x.device)
    s = x.to(acc) * w_x + w_g * g
    best, index = s.max(dim=-1)
    return torch.where(torch.isfinite(best), index, torch.full_like(index, NO_SAMPLE))


if extension_loaded():

    @torch.library.register_fake("fused_gumbel::sample")
    def _sample_fake(logits, temperature, dim, seed):
        dim = check_inputs(logits, temperature, dim, "temperature")
        check_nonempty_dim(logits, dim)
        return logits.new_empty(output_layouts(logits, dim)[1], dtype=torch.long)

    @torch.library.register_fake("fused_gumbel::sample_tau_tensor")
    def _sample_tau_tensor_fake(logits, temperature, dim, seed):
        # The temperature's range is checked by the kernel, at run time.
        check_tau_tensor(temperature, "temperature")
        return _sample_fake(logits, 1.0, dim, seed)


def sample(
    logits: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    *,
    seed: int | None = None,
    dim: int = -1,
    backend: str = "auto",
) -> torch.Tensor:
    """Draws one class per row from ``softmax(logits / temperature, dim)``.

    Gumbel-max with the noise of :func:`fused_gumbel.gumbel_softmax`: the index
    is the first ``c`` maximizing ``logits[c] + temperature * g[c]`` (computed
    as ``logits[c] / temperature + g[c]`` for temperature > 1, which cannot
    overflow), which for
    ``temperature=1`` is exactly the index of ``gumbel_softmax(logits, seed=seed,
    return_index=True)`` on every row that has a sample (a row without one gives
    -1 here, torch.argmax's index there). The score rounds as the arithmetic
    dtype does: at temperatures under about 1e-6 times the logits' size, near
    ties go to the lower index more often than the softmax says. The fused
    kernels read the logits once and write only the indices. Not
    differentiable.

    Args:
        logits: unnormalized log-probabilities (float16, bfloat16, float32, float64).
        temperature: a positive finite number, or a one-element real tensor
            (ValueError for a value that is not positive and finite, TypeError
            for anything else). A run-time value: under torch.compile a new
            temperature reuses the compiled graph.
        seed: None draws the noise from PyTorch's generator of the device; an int
            makes it a pure function of (seed, position), identical on every backend.
        dim: the class dimension.
        backend: "auto", "cuda", "triton", "cpu" or "reference".

    Returns:
        int64 indices, the shape of ``logits`` without ``dim``; -1 for a row
        with no valid sample (a NaN, all -inf, or a +inf logit).
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"fused_gumbel: logits must be a torch.Tensor, got {type(logits).__name__}")
    temperature = as_tau(temperature, "temperature")
    seed = normalize_seed(seed)
    name = _resolve_backend(backend, logits.device)
    if name == "reference":
        return sample_reference(logits, temperature, seed=seed, dim=dim)
    # Under torch.compile the temperature reaches the kernels as a tensor
    # checked at run time (op_tau): a float would be a constant of the graph.
    if name == "triton":
        return _triton_module().sample_triton(logits, op_tau(temperature, logits.device, "temperature"),
                                              as_dim(dim), seed)
    require_extension()
    temperature = op_tau(temperature)
    op = (torch.ops.fused_gumbel.sample_tau_tensor if isinstance(temperature, torch.Tensor)
          else torch.ops.fused_gumbel.sample)
    return op(logits, temperature, as_dim(dim), seed)
