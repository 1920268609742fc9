"""Vocabulary-parallel Gumbel-Softmax: each rank of a process group holds a
contiguous slice of the vocabulary (Megatron-style tensor parallelism), and
together they draw exactly the sample `fused_gumbel.gumbel_softmax` draws from
the whole row.

The noise of column c of a rank's shard is the noise of the global position
``row * vocab_size + vocab_start + c``, so the gathered shards equal the
unsharded result for the same seed: the same index and one-hot, the soft
sample up to rounding. Per call the ranks exchange a few numbers per row and
never the logits:

* forward: each rank runs the fused kernel on its shard (its own max, sum and
  argmax, with the global noise), then one all-gather of three numbers per row
  (max, sum, global index of the argmax), which every rank merges alike, and
  of the rank's arguments, which every rank checks alike (see _agree); the
  soft sample is the shard's rescaled by ``l_r * exp((m_r - M) / tau) / S``.
  (An all-reduce would need two calls: the sums can only be added once the
  global max is known.)
* backward: ``grad = (1/tau) * y_soft * (g - sum(g * y_soft))`` with the sum
  over the whole row: one all-reduce of one number per row.

Works with any backend of torch.distributed (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from ._checks import accumulation_dtype, as_tau, carries_tangent, check_shard, normalize_seed, tau_is_differentiated
from ._extension import has_kernel
from .noise import gumbel_noise
from .ops import backend_status
from .reference import inverse_temperature

BACKENDS = ("auto", "cpu", "triton", "reference")


def _shard_reference(x: torch.Tensor, tau: float, seed: int, vocab_start: int,
                     vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch.ops.fused_gumbel.st_softmax_shard in plain PyTorch ops: the rows'
    noise over the whole vocabulary, sliced to the shard."""
    rows = x.shape[:-1]
    acc = accumulation_dtype(x.dtype)
    g = gumbel_noise((rows.numel(), vocab_size), seed, device=x.device)
    g = g[:, vocab_start:vocab_start + x.shape[-1]].reshape(x.shape).to(acc)
    s = x.to(acc) + g
    m = s.amax(-1)
    index = s.argmax(-1) + vocab_start
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp((s - m_safe.unsqueeze(-1)) * inverse_temperature(tau, s))
    l = e.sum(-1)
    y = (e / l.unsqueeze(-1)).to(x.dtype)
    return y, index, torch.stack([m, l], -1)


def _checked(logits: torch.Tensor, tau: Any, seed: Any, vocab_start: int, vocab_size: int | None,
             backend: str) -> tuple[int, float, str]:
    """This rank's own checks: (seed, tau, the backend to run) or an error.
    Without vocab_size only the shard's own columns are checked; _agree then
    checks that the ranks' shards tile the vocabulary."""
    seed = normalize_seed(seed)
    if seed is None:
        raise TypeError("fused_gumbel.distributed: seed must be an int, the same on every rank")
    tau = as_tau(tau)
    if tau_is_differentiated(tau):
        raise NotImplementedError("fused_gumbel.distributed: tau takes no derivative here (a tensor that "
                                  "requires grad or carries a tangent); pass tau.detach() or a float")
    if carries_tangent(logits):
        raise NotImplementedError("fused_gumbel.distributed: no forward-mode derivative (the logits are a dual "
                                  "tensor of torch.autograd.forward_ad)")
    width = logits.shape[-1] if logits.dim() else 1
    check_shard(logits, tau, vocab_start, vocab_start + width if vocab_size is None else vocab_size)
    return seed, float(tau), _resolve(backend, logits.device)


def _resolve(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"fused_gumbel.distributed: unknown backend {backend!r}; choose from {BACKENDS}")
    if backend == "auto":
        if device.type == "cpu" and has_kernel("st_softmax_shard", "CPU"):
            return "cpu"
        if device.type == "cuda" and backend_status("triton", device)[0]:
            return "triton"
        return "reference"
    if backend == "cpu" and not (device.type == "cpu" and has_kernel("st_softmax_shard", "CPU")):
        raise RuntimeError(
            "fused_gumbel.distributed: backend 'cpu' is not available: "
            + ("it runs CPU tensors only" if device.type != "cpu" else "the compiled extension is not built"))
    if backend == "triton":
        ok, why = backend_status("triton", device)
        if not ok:
            raise RuntimeError(f"fused_gumbel.distributed: backend 'triton' is not available: {why}")
    return backend


def _rescale(m_from: torch.Tensor, m_to: torch.Tensor, inv_tau: float) -> torch.Tensor:
    """exp((m_from - m_to) / tau), exactly 1 where equal (-inf = -inf included)."""
    same = m_from == m_to
    diff = torch.where(same, torch.zeros_like(m_from), m_from - m_to)
    return torch.where(same, torch.ones_like(m_from), torch.exp(diff * inv_tau))


def _merge(parts: torch.Tensor, inv_tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M, S, index) per row from every rank's (m, l, index) [world, rows, 3]
    of float64 (the index's int64 bits viewed as float64, see _pack): the
    largest max wins (NaN wins; ties go to the smaller global index, as
    torch.argmax), and the sums are rescaled to it."""
    m, l, idx = parts.unbind(-1)
    idx = idx.view(torch.int64)
    nan = torch.isnan(m)
    any_nan = nan.any(0)
    # The candidates: the ranks holding a NaN if any does (a +inf elsewhere
    # must not win the tie: the unsharded argmax takes the first NaN), else
    # those holding the largest max.
    best = torch.where(nan, torch.full_like(m, float("-inf")), m).amax(0)
    candidate = torch.where(any_nan, nan, m == best)
    winner = torch.where(candidate, idx, torch.full_like(idx, torch.iinfo(torch.int64).max)).amin(0)
    M = torch.where(any_nan, torch.full_like(best, float("nan")), m.amax(0))
    S = (l * _rescale(m, M.expand_as(m), inv_tau)).sum(0)
    return M, S, winner


def _pack(stats: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """A rank's (m, l, index) per row as one float64 [rows, 3] tensor for one
    all_gather. The index travels as its int64 bits (a float64 value would
    round columns past 2**53 of a vocabulary that large)."""
    return torch.cat([stats.reshape(-1, 2).double(), index.reshape(-1, 1).view(torch.float64)], -1)


_ARGS = 3  # rows of a rank's arguments under its statistics in the forward's all_gather (see _arguments)


def _arguments(failed: bool, seed: int, vocab_start: int, width: int, vocab_size: int | None, tau: float,
               hard: bool, rows: int, device: torch.device) -> torch.Tensor:
    """A rank's arguments as [_ARGS, 3] float64 (the ints as int64 bits, tau as
    itself), gathered so that every rank checks that the ranks agree (see
    _agree) and that none rejected its own (`failed`); vocab_size None is -1."""
    ints = torch.tensor([int(failed), vocab_start, width, seed, -1 if vocab_size is None else vocab_size,
                         int(hard), rows, 0], dtype=torch.int64)
    args = torch.cat([ints.view(torch.float64), torch.tensor([tau], dtype=torch.float64)]).reshape(_ARGS, 3)
    # (non_blocking: a copy from pageable memory that need not wait for the
    # device's queued work, as a blocking copy would)
    return args.to(device, non_blocking=True)


def _disagreement(gathered: torch.Tensor) -> torch.Tensor:
    """Whether the ranks' _arguments [world, _ARGS, 3] rule the sample out: a
    rank rejected its own, or the ranks differ in seed, tau, hard, vocab_size
    or rows, or their shards do not tile [0, vocab_size) once each (vocab_size
    -1: the sum of the widths). A 0-d bool tensor, in device ops: no host
    synchronization."""
    flat = gathered.reshape(gathered.shape[0], -1)
    ints, tau = flat[:, :8].view(torch.int64), flat[:, 8]
    shared = ints[:, 3:7]  # seed, vocab_size, hard, rows
    start, width = ints[:, 1], ints[:, 2]
    order = start.argsort()
    start, width = start[order], width[order]
    ends = torch.cumsum(width, 0)
    vocab = torch.where(ints[0, 4] == -1, ends[-1], ints[0, 4])
    return (ints[:, 0].any() | (shared != shared[:1]).any() | (tau != tau[:1]).any()
            | (start != ends - width).any() | (ends[-1] != vocab))


def _agree(gathered: torch.Tensor, failure: Exception | None) -> int:
    """Raises on every rank alike where _disagreement does, naming why: this
    rank's own rejected arguments (`failure`), another rank's, or what the
    ranks disagree on. So all raise together rather than some waiting in a
    collective that one has left. Returns vocab_size (the sum of the widths
    where every rank passed None)."""
    if failure is not None:
        raise failure
    flat = gathered.reshape(gathered.shape[0], -1).cpu()
    failed, start, width, seed, vocab, hard, rows = flat[:, :8].view(torch.int64).T.tolist()[:7]
    tau = flat[:, 8].tolist()
    if any(failed):
        raise RuntimeError(f"fused_gumbel.distributed: rank(s) {[r for r, f in enumerate(failed) if f]} of the "
                           "group rejected their arguments (each raised why); no rank sampled")
    for name, values in (("seed", seed), ("tau", tau), ("hard", hard), ("vocab_size", vocab),
                         ("the number of rows", rows)):
        if len(set(values)) > 1:
            shown = [None if name == "vocab_size" and v == -1 else v for v in values]
            raise ValueError(f"fused_gumbel.distributed: {name} must be the same on every rank of the group; "
                             f"the ranks passed {shown}")
    vocab_size = sum(width) if vocab[0] == -1 else vocab[0]
    if bool(_disagreement(gathered)):
        shards = ", ".join(f"[{a}, {a + w})" for a, w in sorted(zip(start, width)))
        raise ValueError("fused_gumbel.distributed: the ranks' shards [vocab_start, vocab_start + width) must "
                         f"cover [0, vocab_size = {vocab_size}) once each, without gaps or overlaps; they are "
                         f"{shards}")
    return vocab_size


def _checks_on_host(device: torch.device) -> bool:
    """Whether the forward reads the ranks' arguments on the host, to raise:
    for CPU tensors. Elsewhere that would synchronize the device at every
    call: ranks that disagree get NaN rows and index -1 instead (and a rank
    that rejected its own arguments raises)."""
    return device.type == "cpu"


def _all_gather(tensor: torch.Tensor, group: Any) -> torch.Tensor:
    """Every rank's `tensor`, stacked in rank order."""
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, tensor, group=group)
    return torch.stack(gathered)


class _VocabParallelGumbelSoftmax(torch.autograd.Function):
    """Forward and backward of the vocabulary-parallel sample; the collectives
    sit inside, so autograd sees one function per rank."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, tau: float, hard: bool, seed: int, vocab_start: int,
                vocab_size: int, group: Any, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
        if backend == "cpu":
            y_local, index, stats = torch.ops.fused_gumbel.st_softmax_shard(
                logits, tau, seed, vocab_start, vocab_size)
        elif backend == "triton":
            from . import triton_kernels

            y_local, index, stats = triton_kernels.st_softmax_shard_triton(
                logits, tau, seed, vocab_start, vocab_size)
        else:
            y_local, index, stats = _shard_reference(logits, tau, seed, vocab_start, vocab_size)
        rows = logits.shape[:-1]
        mine = _pack(stats, index)
        arguments = _arguments(False, seed, vocab_start, logits.shape[-1], vocab_size, tau, hard, rows.numel(),
                               logits.device)
        gathered = _all_gather(torch.cat([mine, arguments]), group)
        if _checks_on_host(logits.device):
            _agree(gathered[:, -_ARGS:], None)
        inv_tau = 1.0 / tau
        M, S, winner = _merge(gathered[:, :-_ARGS], inv_tau)
        disagree = _disagreement(gathered[:, -_ARGS:])
        winner = torch.where(disagree, -1, winner)  # (what a rank that failed sent is no column)
        valid = torch.isfinite(M) & (S > 0) & torch.isfinite(S) & ~disagree
        acc = accumulation_dtype(logits.dtype)
        m_r, l_r = mine[:, 0], mine[:, 1]
        scale = torch.where(valid, l_r * _rescale(m_r, M, inv_tau) / S, torch.full_like(S, float("nan")))
        y_soft = (y_local.reshape(-1, logits.shape[-1]).to(acc) * scale.to(acc).unsqueeze(-1))
        # A shard with no mass in a valid row (all its columns -inf) has a NaN
        # local softmax, of weight 0: its share of the sample is 0, not NaN * 0.
        y_soft = torch.where((scale == 0).unsqueeze(-1), 0.0, y_soft)
        y_soft = y_soft.to(logits.dtype).reshape(logits.shape)
        if hard:
            col = (winner - vocab_start).reshape(rows)
            cols = torch.arange(logits.shape[-1], device=logits.device)
            y = (cols == col.unsqueeze(-1)).to(logits.dtype)
            y = torch.where(valid.reshape(rows).unsqueeze(-1), y, torch.full_like(y, float("nan")))
        else:
            y = y_soft
        ctx.save_for_backward(y_soft)
        ctx.tau, ctx.group = tau, group
        index = winner.reshape(rows)
        ctx.mark_non_differentiable(index)
        return y, index

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor, _grad_index: Any) -> tuple:
        if torch.is_grad_enabled():  # (create_graph=True) the all_reduce below has no autograd
            raise NotImplementedError("fused_gumbel.distributed: the gradient of the gradient (double backward) "
                                      "is not implemented: the backward's all-reduce has no autograd")
        (y_soft,) = ctx.saved_tensors
        acc = accumulation_dtype(y_soft.dtype)
        g, ys = grad_y.to(acc), y_soft.to(acc)
        dot = (g * ys).sum(-1)
        dist.all_reduce(dot, group=ctx.group)
        grad = (ys * (g - dot.unsqueeze(-1)) * (1.0 / ctx.tau)).to(y_soft.dtype)
        return grad, None, None, None, None, None, None, None


def gumbel_softmax(
    logits_shard: torch.Tensor,
    tau: float = 1.0,
    hard: bool = False,
    *,
    seed: int,
    vocab_start: int,
    vocab_size: int | None = None,
    group: Any = None,
    return_index: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Gumbel-Softmax over a vocabulary split across the ranks of `group`.

    Every rank calls it with its shard; the shards, gathered along the last
    dim, equal ``fused_gumbel.gumbel_softmax(full_logits, tau, hard, seed=seed)``
    (identical index and one-hot; the soft sample up to rounding: the shard's
    soft sample is computed in the logits' dtype and then rescaled, so 16-bit
    dtypes round twice). Differentiable: the backward all-reduces one number
    per row.

    Args:
        logits_shard: [..., shard_width] this rank's columns of the vocabulary
            (the vocabulary is the last dim), any float dtype.
        tau: temperature, a positive finite number.
        hard: exact one-hot of the global argmax (straight-through gradient).
        seed: the same int on every rank (required: the ranks must draw the
            same noise without talking to each other).
        vocab_start: the global column of this shard's first column.
        vocab_size: the full vocabulary size. None finds it with one extra
            all-gather of the ranks' arguments (and a host synchronization);
            pass it to save that call.
        group: the torch.distributed process group (None: the default group).
        return_index: also return the int64 global index of the sample (the
            same on every rank), shape of the logits without the last dim.
        backend: "auto" (the fused CPU kernel for CPU tensors, the Triton
            kernel for CUDA tensors, else the reference), "cpu", "triton" or
            "reference". The CUDA C++ kernel does not take global noise
            positions, so CUDA tensors run on Triton.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("fused_gumbel.distributed: torch.distributed is not initialized "
                           "(call torch.distributed.init_process_group first)")
    if not isinstance(logits_shard, torch.Tensor):
        raise TypeError(f"fused_gumbel.distributed: logits_shard must be a torch.Tensor, "
                        f"got {type(logits_shard).__name__}")
    # A rank whose arguments are rejected still takes part in the first
    # collective, which tells every rank to raise: raising at once would leave
    # the others waiting in it.
    failure = None
    try:
        seed, tau, name = _checked(logits_shard, tau, seed, vocab_start, vocab_size, backend)
    except (TypeError, ValueError, IndexError, RuntimeError, NotImplementedError) as error:
        failure = error
    rows = logits_shard.shape[:-1].numel() if logits_shard.dim() else 1
    if failure is None:
        arguments = _arguments(False, seed, int(vocab_start), logits_shard.shape[-1], vocab_size, tau, bool(hard),
                               rows, logits_shard.device)
    else:
        arguments = _arguments(True, 0, 0, 0, None, 0.0, False, rows, logits_shard.device)
    if vocab_size is None:
        vocab_size = _agree(_all_gather(arguments, group), failure)
    elif failure is not None:
        # The forward's all_gather of the others: this rank's statistics are
        # never read (its arguments say it failed).
        stats = torch.full((rows, 3), float("nan"), dtype=torch.float64, device=logits_shard.device)
        _agree(_all_gather(torch.cat([stats, arguments]), group), failure)
    y, index = _VocabParallelGumbelSoftmax.apply(
        logits_shard, float(tau), bool(hard), seed, int(vocab_start), int(vocab_size), group, name)
    return (y, index) if return_index else y
