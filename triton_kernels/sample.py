"""The forward-only sampler on Triton (fused_gumbel.sample with backend
"triton"), registered as torch.ops.fused_gumbel.sample_triton.

Row r's sample is the first column c maximizing s = acc(x) * w_x + w_g * acc(g)
((w_x, w_g) = _score_weights(T), gumbel_math.h's sample_score_weights: x + T g
for T <= 1, x / T + g above; acc = float64 for float64 logits, float32
otherwise; g the noise of noise.py at position r * cols + c), or -1 when the
max is not finite: the definition of csrc/sample.h. The temperature is a float
argument, or under torch.compile a 0-d float64 tensor the kernel loads
(sample_triton_tau_tensor), as st_softmax.py's tau. Each program walks one row,
or one of n_splits chunks of it when there are too few rows to fill the GPU, in
BLOCK-wide windows that start at a 4-aligned position (as st_softmax.py's),
keeping a per-lane best (value, column) in argmax_better's order; a lane
reduction, and for split rows a second kernel merging the chunks, give the
row's index. Only the indices are written.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import triton
import triton.language as tl

from .._checks import accumulation_dtype, check_nonempty_dim, normalize_seed, output_layouts
from .host_ints import cdiv, next_power_of_2
from .noise import gumbel_window
from .op import _as_rows, _check_device, _check_op_inputs, _direct, _launcher, _on_device, _register, dispatcher_needed
from .st_softmax import (_NO_INDEX, _argmax_better, _inverse_temperature, _programs_wanted, _tau_args, _temperature,
                         seed_and_base)

OP = "fused_gumbel::sample_triton"
TAU_TENSOR_OP = "fused_gumbel::sample_triton_tau_tensor"
MAX_BLOCK = 2048  # window of a program (8 warps: 8 elements per thread)


@triton.jit
def _lane_best(bm, bi):
    """The row's (max, first argmax) from per-lane bests [1, BLOCK]: a NaN
    lane wins with its column (the first NaN), else the first column of the
    max; no valid lane gives (-inf, _NO_INDEX)."""
    nan = bm != bm
    m_num = tl.max(tl.where(nan, float("-inf"), bm), axis=1)
    first_max = tl.min(tl.where(~nan & (bm == m_num[:, None]), bi, _NO_INDEX), axis=1)
    first_nan = tl.min(tl.where(nan, bi, _NO_INDEX), axis=1)
    has_nan = first_nan < _NO_INDEX
    return tl.where(has_nan, float("nan"), m_num), tl.where(has_nan, first_nan, first_max)


@triton.jit
def _sampled_index(m, arg):
    """csrc/sample.h: the argmax where the max is finite, else -1."""
    ok = (m == m) & (m > float("-inf")) & (m < float("inf"))
    return tl.where(ok, arg, -1)


@triton.jit
def _score_weights(t, acc_ty: tl.constexpr):
    """gumbel_math.h's sample_score_weights: (1, T) for T <= 1,
    (_inverse_temperature(T), 1) above, rounded to acc from float64."""
    t = tl.full((), t, tl.float64)
    above = t > 1.0
    one = tl.full((), 1.0, acc_ty)
    return tl.where(above, _inverse_temperature(t, acc_ty), one), tl.where(above, one, t.to(acc_ty))


@triton.jit(do_not_specialize=["seed"])
def _sample_kernel(x_ptr, x_row_stride, index_ptr, part_m_ptr, part_i_ptr, rng_state_ptr,
                   cols, seed: tl.int64, temperature: tl.float64, t_ptr, blocks_per_split, n_splits,
                   SEED_IN_STATE: tl.constexpr, T_IN_MEMORY: tl.constexpr, SPLIT: tl.constexpr,
                   BLOCK: tl.constexpr):
    """Program (row, split): the best of its chunk, to index or (SPLIT) the workspace."""
    acc_ty = part_m_ptr.dtype.element_ty
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    key, base = seed_and_base(rng_state_ptr, seed, SEED_IN_STATE)
    wx, wg = _score_weights(_temperature(temperature, t_ptr, T_IN_MEMORY), acc_ty)
    lead = (row * cols) & 3
    first = split * blocks_per_split * BLOCK - lead
    lane = tl.arange(0, BLOCK).to(tl.int64)[None, :]
    bm = tl.full([1, BLOCK], float("-inf"), acc_ty)
    bi = tl.full([1, BLOCK], _NO_INDEX, tl.int64)
    for b in range(0, blocks_per_split):
        win = first + b * BLOCK
        col = win + lane
        valid = (col >= 0) & (col < cols)
        x = tl.load(x_ptr + row * x_row_stride + col, mask=valid, other=float("-inf"))
        g = gumbel_window(key, base, tl.full([1, 1], 0, tl.int64) + row * cols + win, BLOCK // 4)
        s = x.to(acc_ty) * wx + wg * g.to(acc_ty)
        better = valid & _argmax_better(s, col, bm, bi)
        bm = tl.where(better, s, bm)
        bi = tl.where(better, col, bi)
    m, arg = _lane_best(bm, bi)
    if SPLIT:
        tl.store(part_m_ptr + row * n_splits + split + tl.arange(0, 1), m)
        tl.store(part_i_ptr + row * n_splits + split + tl.arange(0, 1), arg)
    else:
        tl.store(index_ptr + row + tl.arange(0, 1), _sampled_index(m, arg))


@triton.jit
def _merge_kernel(part_m_ptr, part_i_ptr, index_ptr, n_splits, SPLITS: tl.constexpr):
    """Row r's index from its n_splits chunk bests."""
    row = tl.program_id(0).to(tl.int64)
    k = tl.arange(0, SPLITS)[None, :]
    ok = k < n_splits
    m = tl.load(part_m_ptr + row * n_splits + k, mask=ok, other=float("-inf"))
    i = tl.load(part_i_ptr + row * n_splits + k, mask=ok, other=_NO_INDEX)
    m1, arg = _lane_best(m, i)
    tl.store(index_ptr + row + tl.arange(0, 1), _sampled_index(m1, arg))


def _plan(rows: int, cols: int, device: torch.device) -> tuple[int, int, int]:
    """(BLOCK, n_splits, blocks_per_split): windows of up to MAX_BLOCK columns,
    rows split into chunks when there are fewer rows than the programs that
    fill the device."""
    width = cols if cols % 4 == 0 else cols + 3
    block = max(16, min(MAX_BLOCK, next_power_of_2(max(width, 1))))
    n_blocks = cdiv(width, block)
    wanted = _programs_wanted(device)
    n_splits = 1 if rows >= wanted else min(n_blocks, cdiv(wanted, max(rows, 1)))
    per_split = cdiv(n_blocks, n_splits)
    return block, cdiv(n_blocks, per_split), per_split


def _sample(logits: torch.Tensor, temperature: float | torch.Tensor, dim: int, seed: Optional[int],
            wrap: Optional[Callable]) -> torch.Tensor:
    """The sampled indices, the kernels launched through wrap (see
    op._forward); wrap None: the fake kernel. A tensor temperature is a 0-d
    float64 tensor on the logits' device whose value checked_tau checked."""
    dim = _check_op_inputs(logits, temperature, dim, "temperature")
    _check_device(logits)
    moved, index_shape = output_layouts(logits, dim)
    rows, cols = math.prod(index_shape), moved[-1]
    check_nonempty_dim(logits, dim)
    index = logits.new_empty(index_shape, dtype=torch.int64)
    if wrap is None or rows == 0:
        return index
    acc = accumulation_dtype(logits.dtype)
    if seed is None:
        # Drawn on the device: no host sync, fresh noise on every graph replay.
        rng_state = torch.randint(-(2**63), 2**63 - 1, (2,), dtype=torch.int64, device=logits.device)
    else:
        rng_state = index  # unread
    block, n_splits, per_split = _plan(rows, cols, logits.device)
    part_m = logits.new_empty((rows, n_splits), dtype=acc)
    part_i = logits.new_empty((rows, n_splits), dtype=torch.int64)
    x_rows = _as_rows(logits, dim, rows, cols)
    temperature, t_ptr, t_in_memory = _tau_args(temperature, part_m)
    with _on_device(logits):
        wrap(_sample_kernel)[(rows, n_splits)](
            x_rows, x_rows.stride(0), index, part_m, part_i, rng_state, cols,
            0 if seed is None else seed, temperature, t_ptr, per_split, n_splits,
            SEED_IN_STATE=seed is None, T_IN_MEMORY=t_in_memory, SPLIT=n_splits > 1, BLOCK=block,
            num_warps=8 if block >= 1024 else 4, enable_fp_fusion=False)
        if n_splits > 1:
            wrap(_merge_kernel)[(rows,)](
                part_m, part_i, index, n_splits,
                SPLITS=max(16, next_power_of_2(n_splits)))
    return index


def sample_triton_impl(logits: torch.Tensor, temperature: float, dim: int,
                       seed: Optional[int]) -> torch.Tensor:
    """fused_gumbel::sample on the Triton kernels."""
    return _sample(logits, temperature, dim, seed, _launcher)


def sample_triton_tau_tensor_impl(logits: torch.Tensor, temperature: torch.Tensor, dim: int,
                                  seed: Optional[int]) -> torch.Tensor:
    """sample_triton with the temperature a 0-d float64 tensor on the logits'
    device (torch.compile: a float argument would be a constant of the graph).
    The kernel cannot raise, so the value is not checked here: the caller
    checks it first (fused_gumbel.sample makes it with checked_tau), as for
    st_softmax_triton_tau_tensor."""
    return _sample(logits, temperature, dim, seed, _launcher)


def _sample_fake(logits, temperature, dim, seed):
    return _sample(logits, temperature, dim, seed, None)


_register(OP, sample_triton_impl, _sample_fake, (torch.Tag.nondeterministic_seeded,))
_register(TAU_TENSOR_OP, sample_triton_tau_tensor_impl, _sample_fake, (torch.Tag.nondeterministic_seeded,))


def sample_triton(logits: torch.Tensor, temperature: float | torch.Tensor, dim: int,
                  seed: Optional[int]) -> torch.Tensor:
    """torch.ops.fused_gumbel.sample_triton (or, for a tensor temperature, its
    sample_triton_tau_tensor sibling) with any Python int seed."""
    seed = normalize_seed(seed)
    if not dispatcher_needed(logits, temperature):
        return _sample(logits, temperature, dim, seed, _direct)
    op = (torch.ops.fused_gumbel.sample_triton_tau_tensor if isinstance(temperature, torch.Tensor)
          else torch.ops.fused_gumbel.sample_triton)
    return op(logits, temperature, dim, seed)
