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

from ._checks import (accumulation_dtype, as_dim, as_tau, check_inputs, check_k, check_nonempty_dim, check_tau,
                      checked_tensor_tau, normalize_seed, op_tau, tau_is_differentiated)
from .noise import noise_for


def _check_shape(logits: torch.Tensor, dim: int, k: int, index: bool) -> int:
    """The contract's dtype and dim checks; a non-empty sampled dim where rows
    exist for k > 0 (gumbel_topk's k, also checked) or an `index` (a softmax
    sample of no classes is the empty tensor F.gumbel_softmax returns); returns
    dim wrapped into [0, ndim)."""
    dim = check_inputs(logits, 1.0, dim)
    if k > 0 or index:
        check_nonempty_dim(logits, dim, index=k == 0)
    if k > 0:
        check_k(k, (logits.reshape(1) if logits.dim() == 0 else logits).shape[dim])
    return dim


@torch.library.custom_op("fused_gumbel::check_reference_inputs", mutates_args=())
def _check_shape_op(logits: torch.Tensor, dim: int, k: int, index: bool) -> None:
    """_check_shape as an operator, for torch.compile: its fake kernel raises
    while tracing, so the error reaches the caller as the contract's type (from
    traced Python code dynamo would wrap it in an error of its own)."""
    _check_shape(logits, dim, k, index)


@_check_shape_op.register_fake
def _check_shape_fake(logits: torch.Tensor, dim: int, k: int, index: bool) -> None:
    _check_shape(logits, dim, k, index)


@_check_shape_op.register_vmap
def _check_shape_vmap(info, in_dims: tuple, logits: torch.Tensor, dim: int, k: int, index: bool
                      ) -> tuple[None, None]:
    """Under torch.func.vmap (compiled): the checks of one batch member, on a
    meta tensor of its shape (an empty batch has no member to select)."""
    bdim = in_dims[0]
    shape = logits.shape if bdim is None else logits.shape[:bdim] + logits.shape[bdim + 1:]
    _check_shape_op(logits.new_empty(shape, device="meta"), dim, k, index)
    return None, None


def _check(logits: torch.Tensor, tau: float | torch.Tensor, dim: int, k: int = 0, index: bool = True
           ) -> tuple[int, float | torch.Tensor]:
    """The inputs' checks (see _check_shape); returns (dim wrapped, tau as the math takes it).
    Under torch.compile the shape checks run in an operator (see
    _check_shape_op) and tau becomes a device tensor checked at run time
    (op_tau), as on the fused backends: a check while tracing could only be a
    guard. A tau a derivative flows through (tau_is_differentiated) stays a
    tensor that carries it (checked_tensor_tau; under vmap possibly a batch
    of temperatures)."""
    tau = as_tau(tau)
    keep = tau_is_differentiated(tau)
    if keep:
        tau = checked_tensor_tau(tau, logits.device)
    if torch.compiler.is_compiling():
        # Detached: a check has no gradient, and under a compiled
        # torch.func.grad a tracked input would take torch.library's autograd
        # Function, which functorch refuses.
        torch.ops.fused_gumbel.check_reference_inputs(logits.detach(), as_dim(dim), k, index)
        dim = as_dim(dim) % max(logits.dim(), 1)
        return dim, tau if keep else op_tau(tau, logits.device)
    if not (keep or isinstance(tau, torch.Tensor) and tau.is_meta):
        tau = op_tau(tau)  # a float: a tensor tau is read on the host once
        check_tau(tau)
    return _check_shape(logits, dim, k, index), tau


def _tempered(s: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """(s - max(s)) / tau along the last dim, as the fused kernels compute it:
    the shift keeps huge finite logits finite, and the clamped 1/tau keeps a
    tiny tau from giving inf / inf (the max maps to 0, the rest to <= 0). The
    shift is detached: softmax does not depend on it."""
    if s.shape[-1] == 0:
        return s
    return (s - s.amax(dim=-1, keepdim=True).detach()) * inverse_temperature(tau, s)


def inverse_temperature(tau: float | torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """1/tau in s's dtype, clamped as gumbel_math.h's inverse_temperature: to
    [the smallest normal, the largest finite value], so that neither a tiny nor
    a huge tau gives 0 * inf = NaN. tau is a float, or under torch.compile a
    0-d tensor (see _check): one expression for both."""
    finfo = torch.finfo(s.dtype)
    inv = torch.ones((), dtype=torch.float64, device=s.device) / tau
    return inv.clamp(min=finfo.tiny, max=finfo.max).to(s.dtype)


def gumbel_softmax_reference(
    logits: torch.Tensor,
    tau: float | torch.Tensor = 1.0,
    hard: bool = False,
    eps: float = 1e-10,
    dim: int = -1,
    *,
    seed: int | None = None,
    return_index: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Gumbel-Softmax in plain PyTorch ops, with the fused kernels' noise: the
    backend "reference" of fused_gumbel.gumbel_softmax, with its arguments
    (F.gumbel_softmax's positional ones).

    Args:
        logits: [..., n, ...] unnormalized log-probabilities, float16/bfloat16/float32/float64.
        tau: temperature, > 0: a number or a one-element tensor (one that
            requires grad gets its gradient).
        hard: return the exact one-hot of the argmax, with the soft sample's gradient.
        eps: ignored, as in F.gumbel_softmax.
        dim: the class dimension.
        seed: 64-bit seed of the noise; None draws one from PyTorch's generator.
        return_index: also return the int64 argmax, shape of logits without dim.
    """
    del eps
    dim, tau = _check(logits, tau, dim, index=return_index)
    seed = normalize_seed(seed)
    scalar = logits.dim() == 0
    x = (logits.reshape(1) if scalar else logits).movedim(dim, -1)
    acc = accumulation_dtype(logits.dtype)
    g = noise_for(x.shape, seed, x.device).to(acc)
    s = x.to(acc) + g
    y_soft = torch.softmax(_tempered(s, tau), dim=-1)
    index = torch.argmax(s, dim=-1) if s.shape[-1] > 0 else torch.zeros(s.shape[:-1], dtype=torch.long, device=s.device)
    if hard and s.shape[-1] > 0:
        row_max = s.amax(dim=-1, keepdim=True)
        valid = torch.isfinite(row_max)
        y_hard = torch.zeros_like(y_soft).scatter(-1, index.unsqueeze(-1), 1.0)
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


def gumbel_topk_reference(
    logits: torch.Tensor,
    k: int,
    tau: float = 1.0,
    hard: bool = True,
    dim: int = -1,
    *,
    seed: int | None = None,
    return_index: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Straight-through Gumbel top-k in plain PyTorch ops, with the fused
    kernels' noise: the oracle of fused_gumbel.gumbel_topk.

    The forward value (hard=True) is the k-hot of the k largest s = logits + g
    along dim (ties: lower index first), k classes drawn without replacement
    from softmax(logits). The gradient is that of the relaxed subset of Xie and
    Ermon (2019), "Reparameterizable subset sampling via continuous
    relaxations": a_1 = s, p_j = softmax(a_j / tau), a_{j+1} = a_j +
    log(max(1 - p_j, tiny)), y_soft = sum_{j <= k} p_j (hard=False returns it).

    1 - p_j is evaluated as sum_{i != max} e_i / l for the element with
    p_j > 1/2 (only the row's max can have it), not as 1 - p_j, which would
    cancel to 0 long before the clamp: the same function, without the
    rounding. A row with a NaN, a +inf or fewer than k entries > -inf has no
    subset: its output (and gradient) is NaN.

    Args:
        logits: [..., n, ...] unnormalized log-probabilities.
        k: subset size, an int in [1, n].
        tau: temperature of the relaxation, > 0.
        hard: the exact k-hot with y_soft's gradient, else y_soft.
        dim: the class dimension.
        seed: 64-bit seed of the noise; None draws one from PyTorch's generator.
        return_index: also return the int64 chosen classes, in decreasing
            order of s: logits' shape with dim of size k.
    """
    dim, tau = _check(logits, tau, dim, k)
    scalar = logits.dim() == 0
    x = (logits.reshape(1) if scalar else logits).movedim(dim, -1)
    k = check_k(k, x.shape[-1])
    seed = normalize_seed(seed)
    acc = accumulation_dtype(logits.dtype)
    s = x.to(acc) + noise_for(x.shape, seed, x.device).to(acc)
    # The subset: a stable descending sort orders as the argmax rule does
    # (NaN first, then larger values, ties by lower index).
    index = torch.sort(s.detach(), dim=-1, descending=True, stable=True).indices[..., :k]
    inv_tau, tiny = inverse_temperature(tau, s), torch.finfo(acc).tiny
    a, y_soft = s, torch.zeros_like(s)
    for _ in range(k):
        m = a.detach().amax(dim=-1, keepdim=True)
        is_max = a.detach() == m
        e = torch.exp((a - m) * inv_tau)
        l = e.sum(dim=-1, keepdim=True)
        l_rest = e.masked_fill(is_max, 0.0).sum(dim=-1, keepdim=True) + (is_max.sum(-1, keepdim=True) - 1)
        p = e / l
        one_minus_p = torch.where(p > 0.5, l_rest / l, 1.0 - p)
        a = a + torch.log(one_minus_p.clamp_min(tiny))
        y_soft = y_soft + p
    if s.numel() > 0:
        kth = torch.gather(s.detach(), -1, index[..., -1:])
        valid = torch.isfinite(s.detach().amax(dim=-1, keepdim=True)) & (kth > float("-inf"))
    else:
        valid = torch.ones(s.shape[:-1] + (1,), dtype=torch.bool, device=s.device)
    nan_or_one = torch.where(valid, 1.0, float("nan")).to(acc)
    y_soft = y_soft * nan_or_one
    if hard:
        y_hard = torch.zeros_like(y_soft).scatter(-1, index, 1.0) * nan_or_one
        y = y_hard + (y_soft - y_soft.detach())
    else:
        y = y_soft
    y = y.to(logits.dtype).movedim(-1, dim)
    index = index.movedim(-1, dim)
    if scalar:
        y, index = y.reshape(()), index.reshape(())
    return (y, index) if return_index else y
