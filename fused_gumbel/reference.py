"""The plain-PyTorch oracle: the same computation as the fused kernels, built
from ordinary ops and fed the same noise (`gumbel_noise`). Every test compares
a backend with it.

Equivalent to::

    g = gumbel_noise(x.movedim(dim, -1).shape, seed)            # float32
    s = x.movedim(dim, -1).to(acc) + g.to(acc)                  # acc: float32, or float64
    y_soft = softmax(s / tau, -1)
    index = argmax(s, -1)
    y = one_hot(index) (straight-through: y_soft's gradient) if hard else y_soft
"""

from __future__ import annotations

import torch

from ._checks import accumulation_dtype, check_inputs, normalize_seed
from .noise import draw_seed, gumbel_noise


def gumbel_softmax_reference(
    logits: torch.Tensor,
    tau: float = 1.0,
    hard: bool = False,
    dim: int = -1,
    *,
    seed: int | None = None,
    return_index: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Gumbel-Softmax in plain PyTorch ops, with the fused kernels' noise.

    Args:
        logits: [..., n, ...] unnormalized log-probabilities, float16/bfloat16/float32/float64.
        tau: temperature, > 0.
        hard: return the exact one-hot of the argmax, with the soft sample's gradient.
        dim: the class dimension.
        seed: 64-bit seed of the noise; None draws one from PyTorch's generator.
        return_index: also return the int64 argmax, shape of logits without dim.
    """
    dim = check_inputs(logits, tau, dim)
    seed = normalize_seed(seed)
    if seed is None:
        seed = draw_seed(logits.device)
    scalar = logits.dim() == 0
    x = (logits.reshape(1) if scalar else logits).movedim(dim, -1)
    if x.shape[-1] == 0 and x.numel() == 0 and x.shape[:-1].numel() > 0:
        raise ValueError(f"fused_gumbel: cannot sample from dim {dim}, which has size 0")
    acc = accumulation_dtype(logits.dtype)
    g = gumbel_noise(x.shape, seed, device=x.device).to(acc)
    s = x.to(acc) + g
    y_soft = torch.softmax(s / tau, dim=-1)
    index = torch.argmax(s, dim=-1) if s.shape[-1] > 0 else torch.zeros(s.shape[:-1], dtype=torch.long, device=s.device)
    if hard:
        row_max = s.amax(dim=-1, keepdim=True) if s.shape[-1] > 0 else s.sum(-1, keepdim=True)
        valid = torch.isfinite(row_max)
        y_hard = torch.zeros_like(y_soft).scatter_(-1, index.unsqueeze(-1), 1.0)
        y_hard = torch.where(valid, y_hard, torch.full_like(y_hard, float("nan")))
        # y_hard + (y_soft - y_soft) is exactly y_hard for finite y_soft: the
        # value is the one-hot, the gradient the soft sample's.
        y = y_hard + (y_soft - y_soft.detach())
    else:
        y = y_soft
    y = y.to(logits.dtype).movedim(-1, dim)
    if scalar:
        y = y.reshape(())
    return (y, index) if return_index else y
