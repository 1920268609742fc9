"""A vocabulary shard's forward on Triton (fused_gumbel.distributed with CUDA
tensors), registered as torch.ops.fused_gumbel.st_softmax_shard_triton: the
outputs of fused_gumbel::st_softmax_shard (csrc/shard.h) from the st_softmax
forward kernels, run with the noise of the global positions
row * vocab_size + vocab_start + col.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .._autograd import refuse_tangents
from .._checks import accumulation_dtype, check_shard, normalize_seed
from . import st_softmax as kernels
from .op import _as_rows, _check_device, _direct, _launcher, _on_device, _register, dispatcher_needed

OP = "fused_gumbel::st_softmax_shard_triton"


def _shard(logits: torch.Tensor, tau: float, seed: int, vocab_start: int, vocab_size: int,
           wrap: Optional[Callable]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The shard's outputs, the kernels launched through wrap (see
    op._forward); wrap None: the fake kernel."""
    if wrap is not None:
        refuse_tangents(logits)
    check_shard(logits, tau, vocab_start, vocab_size)
    _check_device(logits)
    cols = logits.shape[-1]
    lead = list(logits.shape[:-1])
    rows = math.prod(lead)
    y = logits.new_empty(logits.shape)
    index = logits.new_empty(lead, dtype=torch.int64)
    stats = logits.new_empty(lead + [2], dtype=accumulation_dtype(logits.dtype))
    if wrap is not None and rows > 0:
        rng_state = logits.new_empty((2,), dtype=torch.int64)
        with _on_device(logits):
            kernels.launch_forward(wrap, _as_rows(logits, logits.dim() - 1, rows, cols),
                                   y.view(rows, cols), index, stats, rng_state, seed, tau, False,
                                   noise_stride=vocab_size, noise_offset=vocab_start)
        index += vocab_start
    return y, index, stats


def st_softmax_shard_triton_impl(logits: torch.Tensor, tau: float, seed: int, vocab_start: int,
                                 vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fused_gumbel::st_softmax_shard on the Triton kernels."""
    return _shard(logits, tau, seed, vocab_start, vocab_size, _launcher)


def _shard_fake(logits, tau, seed, vocab_start, vocab_size):
    return _shard(logits, tau, seed, vocab_start, vocab_size, None)


_register(OP, st_softmax_shard_triton_impl, _shard_fake)


def st_softmax_shard_triton(logits: torch.Tensor, tau: float, seed: int, vocab_start: int,
                            vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y_local, global index, stats) of a vocabulary shard; see csrc/shard.h.
    seed: any Python int (taken modulo 2**64); the shards of a row must share it."""
    if seed is None:
        raise TypeError("fused_gumbel: a vocabulary shard needs an int seed, shared by every shard of a row")
    seed = normalize_seed(seed)
    # A sample autograd would track goes to the op, which has no autograd and
    # says so in backward (fused_gumbel.distributed calls this without grad).
    if not dispatcher_needed(logits) and not (logits.requires_grad and torch.is_grad_enabled()):
        return _shard(logits, tau, seed, vocab_start, vocab_size, _direct)
    return torch.ops.fused_gumbel.st_softmax_shard_triton(logits, tau, seed, vocab_start, vocab_size)
