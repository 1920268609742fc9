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

from typing import Any, NamedTuple

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


class _Arguments(NamedTuple):
    """What the ranks of a call must agree on, and where this rank's shard
    lies; exchanged as one [3, 3] float64 tensor (see _arguments)."""

    failed: int  # 1: this rank rejected its own arguments (the rest are then 0)
    vocab_start: int
    width: int
    seed: int
    vocab_size: int  # -1: None, to be found from the widths
    hard: int
    rows: int
    tau: float


_ARGS = 3  # rows of the tensor of a rank's _Arguments (8 int64 bit patterns, 1 float64)


def _arguments(args: _Arguments) -> torch.Tensor:
    """A rank's _Arguments as [_ARGS, 3] float64 on the CPU: the ints as int64
    bits, tau as itself."""
    ints = torch.tensor([args.failed, args.vocab_start, args.width, args.seed, args.vocab_size, args.hard,
                         args.rows, 0], dtype=torch.int64)  # (the 0 pads 8 + 1 values to 3 rows)
    return torch.cat([ints.view(torch.float64), torch.tensor([args.tau], dtype=torch.float64)]).reshape(_ARGS, 3)


def _agree(gathered: torch.Tensor, failure: BaseException | None) -> int:
    """Raises on every rank alike, from every rank's _arguments [world, _ARGS,
    3]: this rank's own failure, another rank's ("rank r rejected its
    arguments"), arguments that differ between the ranks, or shards that do
    not cover [0, vocab_size) once each. So all raise together, rather than
    some waiting in a collective that another has left. Returns vocab_size
    (the sum of the widths where every rank passed None)."""
    if failure is not None:
        raise failure
    flat = gathered.reshape(gathered.shape[0], -1).cpu()
    ranks = [_Arguments(*ints[:7], tau) for ints, tau in
             zip(flat[:, :8].contiguous().view(torch.int64).tolist(), flat[:, 8].tolist())]
    failed = [r for r, a in enumerate(ranks) if a.failed]
    if failed:
        raise RuntimeError(f"fused_gumbel.distributed: rank(s) {failed} of the group rejected their arguments "
                           "(each raised why); no rank sampled")
    for name in ("seed", "tau", "hard", "vocab_size", "rows"):
        values = [getattr(a, name) for a in ranks]
        if len(set(values)) > 1:
            shown = [None if name == "vocab_size" and v == -1 else v for v in values]
            raise ValueError(f"fused_gumbel.distributed: {name} must be the same on every rank of the group; "
                             f"the ranks passed {shown}")
    vocab_size = sum(a.width for a in ranks) if ranks[0].vocab_size == -1 else ranks[0].vocab_size
    shards = sorted((a.vocab_start, a.vocab_start + a.width) for a in ranks)
    if shards[0][0] != 0 or shards[-1][1] != vocab_size or any(b[0] != a[1] for a, b in zip(shards, shards[1:])):
        raise ValueError("fused_gumbel.distributed: the ranks' shards [vocab_start, vocab_start + width) must "
                         f"cover [0, vocab_size = {vocab_size}) once each, without gaps or overlaps; they are "
                         + ", ".join(f"[{a}, {b})" for a, b in shards))
    return vocab_size


def _checks_in_forward(device: torch.device) -> bool:
    """Whether the forward's all-gather carries the ranks' _arguments, read on
    the host: for CPU tensors. For CUDA tensors that would cost a host copy
    and a synchronization per call, so with vocab_size given the ranks'
    agreement is not checked (leave vocab_size out to have it checked), and a
    rank that rejected its own arguments sends statistics that make the
    others' rows NaN with index -1."""
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
                vocab_size: int, group: Any, backend: str, arguments: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
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
        if arguments is not None:  # (see _checks_in_forward)
            gathered = _all_gather(torch.cat([mine, arguments.to(mine.device)]), group)
            _agree(gathered[:, -_ARGS:], None)
            gathered = gathered[:, :-_ARGS]
        else:
            gathered = _all_gather(mine, group)
        inv_tau = 1.0 / tau
        M, S, winner = _merge(gathered, inv_tau)
        valid = torch.isfinite(M) & (S > 0) & torch.isfinite(S)
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
        return grad, None, None, None, None, None, None, None, None


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

    The ranks must agree on seed, tau, hard, vocab_size and the rows, and their
    shards must cover [0, vocab_size) once each. Every rank checks that, and
    raises alike, for CPU tensors and wherever vocab_size is None; for CUDA
    tensors with vocab_size given it is not checked (it would synchronize the
    device at every call), and a rank that rejects its own arguments leaves
    the others NaN rows and index -1.

    Args:
        logits_shard: [..., shard_width] this rank's columns of the vocabulary
            (the vocabulary is the last dim), any float dtype.
        tau: temperature, a positive finite number.
        hard: exact one-hot of the global argmax (straight-through gradient).
        seed: the same int on every rank (required: the ranks must draw the
            same noise without talking to each other).
        vocab_start: the global column of this shard's first column.
        vocab_size: the full vocabulary size. None finds it with one extra
            all-gather of the ranks' arguments, read on the host, which also
            checks that they agree (on CPU tensors the forward checks that
            anyway); pass it to save that call.
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
    # A rank that rejects its own arguments still takes part in the first
    # collective, which tells every rank to raise: raising at once would leave
    # the others waiting in it. (Any exception: none may skip the collective.)
    rows, device = logits_shard.shape[:-1].numel(), logits_shard.device
    exchanged = vocab_size is None or _checks_in_forward(device)
    try:
        seed, tau, name = _checked(logits_shard, tau, seed, vocab_start, vocab_size, backend)
        arguments = _arguments(_Arguments(0, int(vocab_start), logits_shard.shape[-1], seed,
                                          -1 if vocab_size is None else int(vocab_size), int(bool(hard)), rows,
                                          tau)) if exchanged else None
        failure = None
    except Exception as error:
        failure, arguments = error, _arguments(_Arguments(1, 0, 0, 0, 0, 0, rows, 0.0))
    if vocab_size is None:
        vocab_size = _agree(_all_gather(arguments.to(device), group), failure)
    elif failure is not None:
        # The forward's all-gather: NaN statistics and index -1 for the others
        # to merge (with the arguments that say this rank failed, where the
        # forward reads them).
        mine = _pack(torch.full((rows, 2), float("nan"), device=device), torch.full((rows,), -1, device=device))
        if _checks_in_forward(device):
            mine = torch.cat([mine, arguments.to(device)])
        _all_gather(mine, group)
        raise failure
    y, index = _VocabParallelGumbelSoftmax.apply(
        logits_shard, float(tau), bool(hard), seed, int(vocab_start), int(vocab_size), group, name,
        arguments if _checks_in_forward(device) else None)
    return (y, index) if return_index else y
