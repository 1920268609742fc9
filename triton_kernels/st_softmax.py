"""Triton forward and backward kernels of the (straight-through) Gumbel-Softmax,
and the code that picks a launch plan and launches them.

Kernels see 2-D rows only: logits as [rows, cols] with column stride 1 and any
row stride; the sample and the gradient are written as contiguous [rows, cols].
Element (row, col) has the noise position p = row * cols + col (the flat index
in ``logits.movedim(dim, -1).contiguous()``), always in int64; a vocabulary
shard's forward uses row * vocab_size + vocab_start + col instead.

The math (design notes, csrc/gumbel_math.h), acc = float64 for float64 logits,
float32 otherwise:

    s_j    = acc(x_j) + acc(g_j)                       g: the noise of noise.py
    m      = max_j s_j, arg = first argmax             (untempered; NaN wins)
    l      = sum_j exp((s_j - m) * inv_tau)            inv_tau = min(1/tau, max finite acc)
    y_soft = exp((s_j - m) * inv_tau) / l
    y_hard = one_hot(arg) if m finite and 0 < l < inf else NaN
    grad_x = inv_tau * y_soft * (grad_y - sum_k grad_y_k * y_soft_k)

exp((s - m) * inv_tau) is evaluated as the CUDA kernel evaluates it: in
float32 ex2.approx.ftz((s - m) * scale) with scale = log2(e) / tau (clamped
as inv_tau), in float64 exp (_tempered_exp).

Noise windows: a Philox call covers a 4-aligned group of positions, so a row's
columns are walked in windows that start at a 4-aligned *position*. A row whose
first position row * cols is not a multiple of 4 starts its first window
``lead = (row * cols) & 3`` columns before column 0 (those lanes are masked).
When cols % 4 == 0 (ALIGNED) every lead is 0 and the compiler sees it.

Launch plan (``plan()``; cols rounded up to the window, W = cols or cols + 3):

    no rows: one fully masked program of the rows kernel (it records rng_state).
    next_pow2(W) <= SINGLE_BLOCK_MAX (8192): "rows" kernels, one block per row,
        BLOCK = max(16, next_pow2(W)), ROWS = rows per program so that
        ROWS * BLOCK is about 2048 elements (at most 128 rows);
        num_warps = elements / 256 within [4, 16]: 8 elements per thread up
        to 4096 columns (a row of 8192 has 16 per thread, the cap of 16 warps)
        (60-100 registers, no spills on sm_90: several programs per SM).
    longer rows: "long" kernels, BLOCK = LOOP_BLOCK (2048), 8 warps, the row
        walked in blocks; two passes over the row. The first sees a block as
        BLOCK / 4 units of 4 columns (one Philox call each, one thread's),
        and each unit lane keeps a running (max, sum, first unit holding the
        max) through the blocks, as the CUDA kernel's threads do; the lanes
        are reduced once, after the loop, not every block with shuffles and
        barriers (sm_90 SASS of the hard first pass, triton 3.8: 96
        instructions per element before, 74 with unit lanes and
        _tempered_exp, 71 with noise.philox). hard=True's first pass writes
        the one-hot's zeros as it goes, its second only the 1 (or NaN over a
        row without a valid sample). The soft sample needs s again
        (CACHE_S, while CACHE_BETWEEN_PASSES): when the sample's dtype is the
        accumulation dtype (float32, float64) the first pass stores s in the
        output, where the second pass reads it back (from L2 when the row is
        still there: every second pass that reads the row walks its blocks
        last to first, the last read first) and overwrites it with y; a
        16-bit sample cannot hold it, so s goes to a float32 workspace of
        CACHE_PROGRAMS_PER_SM rows per SM whose persistent programs walk the
        rows (FORWARD_PROGRAMS_PER_SM and BACKWARD_PROGRAMS_PER_SM, where
        set, put other aligned rows on persistent programs too; PERSISTENT; the
        alternative, regenerating the noise, is the soft forward's largest
        cost: about a third of its instructions on an H100, 200 per element
        against 134 for the hard one, which evaluates it once). The hard
        backward keeps its recomputed y_soft the same way (CACHE_Y).
        With at least 2 programs per SM worth of rows: one program does both
        passes of a row (PHASE 0; a persistent program, of the rows in turn).
        With fewer rows, each row is split into
        n_splits chunks so every SM has work: PHASE 1 writes each chunk's
        partial state, PHASE 2 merges a row's partials (in split order, so
        every program gets the same bits) and writes its chunk.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch
import triton
import triton.language as tl

from .host_ints import cdiv, next_power_of_2
from .noise import INTERPRETED, gumbel_units, gumbel_window

# The plan table (module constants so that tests can shrink them to reach the
# looped and split paths with small tensors).
SINGLE_BLOCK_MAX = 8192  # longest padded row handled as one block
LOOP_BLOCK = 2048        # block of the looped path (8 warps: 8 elements per thread)
ROWS_ELEMENTS = 2048     # elements per program the rows kernels aim for
MAX_ROWS = 128           # rows per program, at most
SPLIT_PROGRAMS_PER_SM = 2  # programs per SM the split path aims for
INTERPRETER_SMS = 4      # "SMs" assumed without a GPU (the interpreter)
# Whether the looped kernels keep a row's s (forward, hard=False) or
# recomputed y_soft (backward, hard=True) between the two passes (CACHE_S,
# CACHE_Y), in their float32/float64 output or a workspace, or regenerate the
# noise: one more write and read of the row against the noise's arithmetic.
# On the H200 (scripts/triton_variants.py,
# bench/results/cuda_h200_triton_variants.txt) the cache in a float32 output
# won: soft forward 0.58 ms against 0.75 at 4096 x 32768, hard
# forward+backward 1.19 against 1.21. The 16-bit workspace is not yet
# measured (the bfloat16 rows of that script).
CACHE_BETWEEN_PASSES = True
# Rows of the workspace per SM where the output cannot hold the cache (16-bit
# samples and gradients), one per persistent program: 4 programs of 256
# threads fit an SM at up to 64 registers.
CACHE_PROGRAMS_PER_SM = 4
# (Registers, sm_90, float32 cache, bfloat16 rows, python
# scripts/triton_sass.py: 53-63 with the seed drawn on the device and columns
# a multiple of 16; reviewers found 100-105 with an explicit seed on triton
# 3.6, which hoists the Philox key schedule out of the row loop, 91-92 on 3.8
# for columns a multiple of 4 but not of 16, 64-78 for the hard backward
# there, and 80-224 for unaligned rows. Unaligned rows therefore regenerate
# the noise. Programs that do not fit an SM run after the others, on the rows
# the fixed order gives them: the same time where 2 of 4 fit, a lone fourth
# wave where 3 do (bench/results/gpu_checks.md, fourteenth session); measured
# by scripts/triton_variants.py before this default is trusted.)
# Persistent programs per SM for the looped soft forward of aligned rows,
# float32 and float64 too: s then goes to a workspace of one row per program
# (17-35 MB at 32768 float32 columns on 132 SMs with 1-2 per SM, small
# enough to stay in L2) instead of the output, which is written once. The
# float32 soft forward (0.58 ms at 4096 x 32768 on the H200) moves x in, s
# out and back and y out, 4N at 76% of DRAM peak. None: s in a float32
# output, 16-bit rows on CACHE_PROGRAMS_PER_SM. Not yet measured:
# scripts/triton_variants.py times None, 1 and 2.
FORWARD_PROGRAMS_PER_SM: int | None = None
# Persistent programs per SM for the looped backward, whose two passes both
# read the gradient and the soft sample (hard=False: read; hard=True:
# recomputed in pass 1 and cached between the passes): with few programs
# walking the rows, the second pass (last block first) may find a row in L2
# (one program per SM: 132 x 256 KiB = 35 MB at 32768 float32 columns on an
# H100, against 8 programs per SM otherwise), and the hard backward's cache
# goes to a workspace of one row per program, small enough to stay in L2,
# not to the gradient. Only for aligned rows where hard=True (unaligned ones
# took 111 registers on one program per row and 171 persistent, sm_90).
# None: one program per row (16-bit hard rows: CACHE_PROGRAMS_PER_SM). Not
# yet measured: scripts/triton_variants.py times None, 1 and 2.
BACKWARD_PROGRAMS_PER_SM: int | None = None

_NO_INDEX: tl.constexpr = tl.constexpr(2**62)  # larger than any column
FLOAT_MAX: tl.constexpr = tl.constexpr(torch.finfo(torch.float32).max)
DOUBLE_MAX: tl.constexpr = tl.constexpr(torch.finfo(torch.float64).max)
FLOAT_TINY: tl.constexpr = tl.constexpr(torch.finfo(torch.float32).tiny)
DOUBLE_TINY: tl.constexpr = tl.constexpr(torch.finfo(torch.float64).tiny)
LN2: tl.constexpr = tl.constexpr(math.log(2.0))


# ----------------------------------------------------------------------------
# Shared device functions
# ----------------------------------------------------------------------------


@triton.jit
def _window_columns(win_col, BLOCK: tl.constexpr):
    """The columns win_col + k, k < BLOCK, of a window ([R, BLOCK] for win_col [R, 1]).

    A kernel computes the columns of its stores with this, never from what a
    helper that reads memory returns: torch's mutation analysis of a
    wrap_triton kernel (torch._higher_order_ops.triton_kernel_wrap) walks back
    from each store's address and takes every pointer handed to a call on the
    way as written. A store at y_ptr + col with col from
    _noisy_logits(x_ptr, ...) would make x_ptr (the logits) look written, and
    AOT autograd then functionalizes the read-only inputs as mutated (in the
    backward: the saved sample, stats and rng_state, forward outputs, which
    fails the partition: "Node ... was invalid, but is output")."""
    return win_col + tl.arange(0, BLOCK).to(tl.int64)[None, :]


@triton.jit
def _noisy_logits(x_ptr, x_row_stride, row, row_ok, cols, row_pos, win_col, seed, base,
                  acc_ty: tl.constexpr, BLOCK: tl.constexpr):
    """s = acc(x) + acc(g) on a [R, BLOCK] window of columns win_col + k.

    row, row_ok, row_pos, win_col: [R, 1] (int64, bool, int64, int64); row_pos
    is the noise position of (row, 0), row * cols but for a vocabulary shard,
    and row_pos + win_col a multiple of 4. Lanes outside the row get s = -inf
    and valid = False.
    """
    col = _window_columns(win_col, BLOCK)
    valid = row_ok & (col >= 0) & (col < cols)
    x = tl.load(x_ptr + row * x_row_stride + col, mask=valid, other=float("-inf"))
    g = gumbel_window(seed, base, row_pos + win_col, BLOCK // 4)
    s = x.to(acc_ty) + g.to(acc_ty)
    return s, col, valid


@triton.jit
def _argmax_better(m_b, i_b, m_a, i_a):
    """gumbel_math.h's argmax_better: does (m_b, i_b) beat (m_a, i_a)?

    Larger wins; NaN beats any number; among equals (or NaNs) the smaller
    index wins (torch.argmax's rule).
    """
    b_nan = m_b != m_b
    a_nan = m_a != m_a
    numbers = (m_b > m_a) | ((m_b == m_a) & (i_b < i_a))
    nans = b_nan & (~a_nan | (i_b < i_a))
    return tl.where(b_nan | a_nan, nans, numbers)


@triton.jit
def _exp2_ftz(x):
    """2^x for float32 x by one ex2.approx.ftz.f32 (tl.exp wraps the MUFU.EX2
    in a multiply by log2(e) and a rescaling of arguments below -126: six
    instructions against two with the multiply by the scale). The interpreter
    runs no PTX: exp2 there."""
    if INTERPRETED:
        return tl.exp2(x)
    else:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _tempered_exp(d, scale):
    """exp(d / tau) given scale = _exp_scale(tau): as the CUDA kernel's
    exp_scaled, 2^(d * scale) by ex2.approx.ftz in float32 (within 2 ulp, 0
    below 2^-126), exp(d * scale) in float64."""
    if d.dtype == tl.float64:
        return tl.exp(d * scale)
    else:
        return _exp2_ftz(d * scale)


@triton.jit
def _rescale(m_from, m_to, scale):
    """exp((m_from - m_to) / tau), exactly 1 when equal (also -inf = -inf)."""
    return tl.where(m_from == m_to, 1.0, _tempered_exp(m_from - m_to, scale))


@triton.jit
def _merge(m_a, l_a, i_a, m_b, l_b, i_b, scale):
    """softmax_merge: the (m, l, arg) of the union of pieces a and b.

    Each sum is rescaled to the common max (Milakov & Gimelshein, "Online
    normalizer calculation for softmax", 2018); an all -inf piece (l = 0)
    is the identity, NaN propagates.
    """
    b_wins = _argmax_better(m_b, i_b, m_a, i_a)
    m = tl.where(b_wins, m_b, m_a)
    i = tl.where(b_wins, i_b, i_a)
    l = l_a * _rescale(m_a, m, scale) + l_b * _rescale(m_b, m, scale)
    return m, l, i


@triton.jit
def _piece_state(s, win_col, valid, scale, BLOCK: tl.constexpr):
    """(m, l, arg) of each row of a [R, BLOCK] piece whose lane k is column
    win_col + k (reductions along axis 1).

    1. m = max of the non-NaN lanes; arg = its first column. A NaN lane makes
       m NaN and arg the first NaN column. No valid lane: m = -inf, l = 0,
       arg = _NO_INDEX (loses every tie). One int32 min finds either column:
       a lane's key is k for a NaN, BLOCK + k for a lane holding the max,
       2 * BLOCK otherwise (sm_90 SASS from triton 3.8: 1073 -> 899
       instructions per 2048-wide block and thread of the hard long forward,
       against an int64 min of the columns for each, with their shuffles).
    2. l = sum exp((s - m) / tau), with m = -inf replaced by 0 so that an
       all -inf piece sums exp(-inf) = 0 instead of NaN.
    """
    # 1. Max and first argmax.
    k = tl.arange(0, BLOCK)[None, :]
    nan = valid & (s != s)
    m_num = tl.max(tl.where(valid & ~nan, s, float("-inf")), axis=1)
    key = tl.where(nan, k, tl.where(valid & (s == m_num[:, None]), BLOCK + k, 2 * BLOCK))
    first = tl.min(key, axis=1)
    has_nan = first < BLOCK
    m = tl.where(has_nan, float("nan"), m_num)
    offset = tl.where(has_nan, first, first - BLOCK).to(tl.int64)
    arg = tl.sum(win_col + offset[:, None], axis=1)
    arg = tl.where(first < 2 * BLOCK, arg, _NO_INDEX)
    # 2. Sum of the tempered exponentials.
    m_safe = tl.where(m_num == float("-inf"), 0.0, m_num)
    e = tl.where(valid, _tempered_exp(s - m_safe[:, None], scale), 0.0)
    return m, tl.sum(e, axis=1), arg


@triton.jit
def _unit_columns(win_col, G: tl.constexpr):
    """The columns win_col + 4 u + q of a window of G units ([G, 4]; pointer
    free, as _window_columns)."""
    return win_col + (4 * tl.arange(0, G).to(tl.int64))[:, None] + tl.arange(0, 4).to(tl.int64)[None, :]


@triton.jit
def _max_nan(a, b):
    """The larger of a and b, NaN if either is NaN (a reduction's combine)."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _unit_update(s, b, m_u, l_u, best_s, best_b, scale):
    """One window ([G, 4] s of block b) into the unit lanes' running states.

    Lane u's state covers its units of the blocks so far: m_u their max (NaN
    from the first NaN), l_u = sum exp((s - m_u) / tau) (rescaled when m_u
    grows), and the first unit that holds m_u as its values best_s and its
    block best_b. Only a larger max or a first NaN replaces the best unit, so
    it is the first one (the columns of a lane grow with b). The reductions
    are along axis 1, within a thread where the row width is a multiple of
    16 (see noise.gumbel_units): no shuffles, no barriers.
    """
    u_max = tl.reduce(s, 1, _max_nan)
    better = (u_max > m_u) | ((u_max != u_max) & (m_u == m_u))
    best_s = tl.where(better[:, None], s, best_s)
    best_b = tl.where(better, tl.cast(b, tl.int32), best_b)
    m_new = tl.where(better, u_max, m_u)
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    e = tl.sum(_tempered_exp(s - m_safe[:, None], scale), axis=1)
    return m_new, l_u * _rescale(m_u, m_new, scale) + e, best_s, best_b


@triton.jit
def _units_state(m_u, l_u, best_s, best_b, lead, cols, scale, BLOCK: tl.constexpr):
    """(m, l, arg) of a chunk from its unit lanes' states (_unit_update), as
    _piece_state's: the first column of the max, or of the first NaN; an all
    -inf chunk gives its first column, with l = 0. A lane's best unit starts
    as the chunk's first block, all -inf, so that a lane that never sees a
    number larger than -inf offers its first valid column there."""
    # The first column of each lane's best unit that holds the lane's max.
    col = (best_b.to(tl.int64) * BLOCK - lead)[:, None] + _unit_columns(0, BLOCK // 4)
    lane_nan = m_u != m_u
    hit = (col >= 0) & (col < cols) & tl.where(lane_nan[:, None], best_s != best_s,
                                               best_s == m_u[:, None])
    lane_col = tl.min(tl.where(hit, col, _NO_INDEX), axis=1)
    # The lanes' max (NaN if any), the first column holding it, the sums.
    m_num = tl.max(tl.where(lane_nan, float("-inf"), m_u), axis=0)
    has_nan = tl.max(lane_nan.to(tl.int32), axis=0) > 0
    holds = tl.where(has_nan, lane_nan, ~lane_nan & (m_u == m_num))
    arg = tl.min(tl.where(holds, lane_col, _NO_INDEX), axis=0)
    l = tl.sum(l_u * _rescale(m_u, m_num, scale), axis=0)
    return tl.where(has_nan, float("nan"), m_num), l, arg


@triton.jit
def _inverse_temperature(tau, acc_ty: tl.constexpr):
    """gumbel_math.h's inverse_temperature: 1/tau in double (an IEEE
    division), clamped to [the smallest normal, the largest finite] acc value
    (a tiny tau gives 0 * inv_tau = 0 at the max, never NaN; a huge one no
    -inf * 0 at a masked entry); then rounded to acc."""
    inv = 1.0 / tl.full((), tau, tl.float64)
    if acc_ty == tl.float64:
        inv = tl.minimum(tl.maximum(inv, DOUBLE_TINY), DOUBLE_MAX)
    else:
        inv = tl.minimum(tl.maximum(inv, FLOAT_TINY), FLOAT_MAX)
    return inv.to(acc_ty)


@triton.jit
def _row_blocks(cols, lead, BLOCK: tl.constexpr):
    """cdiv(cols + lead, BLOCK): the BLOCK-wide windows of a row whose first
    window starts lead columns early, without cols + BLOCK - 1, which wraps in
    int32 for rows within BLOCK of 2^31 (an int64 cdiv made the loop counter
    int64: 48 -> 56 registers in the forward)."""
    return cols // BLOCK + tl.cdiv(cols % BLOCK + lead, BLOCK)


@triton.jit
def _exp_scale(tau, acc_ty: tl.constexpr):
    """The scale of _tempered_exp, the CUDA kernel's exp_scale_for:
    _inverse_temperature(tau ln 2) for float32 (log2(e) / tau), of tau for
    float64."""
    if acc_ty == tl.float64:
        return _inverse_temperature(tau, acc_ty)
    else:
        return _inverse_temperature(tau * LN2, acc_ty)


@triton.jit
def _temperature(tau, tau_ptr, TAU_IN_MEMORY: tl.constexpr):
    """tau: the float64 argument, or (TAU_IN_MEMORY: under torch.compile,
    where a float argument would be a constant of the graph) the float64 the
    0-d tensor at tau_ptr holds."""
    if TAU_IN_MEMORY:
        tau = tl.load(tau_ptr)
    return tau


@triton.jit
def _reciprocal(x):
    """1 / x correctly rounded, as the CPU and CUDA kernels divide: Triton
    compiles a float32 division to div.full.f32, within 2 ulp (the interpreter
    divides exactly, so CI on a CPU would not see the difference)."""
    if x.dtype == tl.float32:
        return tl.math.div_rn(1.0, x)
    else:
        return 1.0 / x


@triton.jit
def _row_is_valid(m, l):
    """A row has a sample iff m is finite and 0 < l < inf (else NaN output)."""
    return (m == m) & (m > float("-inf")) & (m < float("inf")) & (l > 0.0) & (l < float("inf"))


@triton.jit
def _hard_sample(col, arg, ok):
    """Exact one-hot at arg ([R, 1]) where ok ([R, 1]), else NaN."""
    return tl.where(ok, tl.where(col == arg, 1.0, 0.0), float("nan"))


@triton.jit
def seed_and_base(rng_state_ptr, seed, SEED_IN_STATE: tl.constexpr):
    """(seed, base) of the noise: from rng_state (seed=None, drawn on the
    device) or the scalar seed with base 0."""
    if SEED_IN_STATE:
        key = tl.load(rng_state_ptr)
        base = tl.load(rng_state_ptr + 1)
    else:
        key = seed
        base = 0
    return key, base


@triton.jit
def _philox_key(rng_state_ptr, seed, SEED_IN_STATE: tl.constexpr):
    """seed_and_base; with an explicit seed the first program also records
    (seed, 0) in rng_state for the backward."""
    key, base = seed_and_base(rng_state_ptr, seed, SEED_IN_STATE)
    if not SEED_IN_STATE:
        first = (tl.program_id(0) == 0) & (tl.program_id(1) == 0)
        two = tl.arange(0, 2)
        tl.store(rng_state_ptr + two, tl.where(two == 0, seed, 0).to(tl.int64), mask=first & (two < 2))
    return key, base


# ----------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------


@triton.jit(do_not_specialize=["seed"])
def _forward_rows_kernel(
    x_ptr, x_row_stride, y_ptr, index_ptr, stats_ptr, rng_state_ptr,
    rows, cols, seed: tl.int64, tau: tl.float64, tau_ptr, noise_stride, noise_offset,
    HARD: tl.constexpr, SEED_IN_STATE: tl.constexpr, ALIGNED: tl.constexpr,
    TAU_IN_MEMORY: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    """ROWS whole rows per program, each row one BLOCK-wide window. Row r's
    noise starts at position r * noise_stride + noise_offset."""
    acc_ty = stats_ptr.dtype.element_ty
    scale = _exp_scale(_temperature(tau, tau_ptr, TAU_IN_MEMORY), acc_ty)
    key, base = _philox_key(rng_state_ptr, seed, SEED_IN_STATE)
    # 1. s = x + g for the rows of this program ([ROWS, BLOCK]).
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)[:, None]
    row_ok = row < rows
    row_pos = row * noise_stride + noise_offset
    if ALIGNED:
        lead = 0
    else:
        lead = row_pos & 3
    s, _, valid = _noisy_logits(x_ptr, x_row_stride, row, row_ok, cols, row_pos, -lead, key,
                                base, acc_ty, BLOCK)
    col = _window_columns(-lead, BLOCK)  # not _noisy_logits': see _window_columns
    # 2. m, arg and l = sum exp((s - m) * inv_tau) per row.
    m, l, arg = _piece_state(s, -lead, valid, scale, BLOCK)
    # 3. The sample: y_soft = exp((s - m) / tau) / l, or the one-hot.
    if HARD:
        y = _hard_sample(col, arg[:, None], _row_is_valid(m, l)[:, None])
    else:
        m_safe = tl.where(m == float("-inf"), 0.0, m)
        y = _tempered_exp(s - m_safe[:, None], scale) * _reciprocal(l)[:, None]
    tl.store(y_ptr + row * cols + col, y.to(y_ptr.dtype.element_ty), mask=valid)
    # 4. index and stats = (m, l) per row.
    row1 = tl.reshape(row, [ROWS])
    ok1 = row1 < rows
    tl.store(index_ptr + row1, arg, mask=ok1)
    tl.store(stats_ptr + 2 * row1, m, mask=ok1)
    tl.store(stats_ptr + 2 * row1 + 1, l, mask=ok1)


@triton.jit(do_not_specialize=["seed"])
def _forward_long_kernel(
    x_ptr, x_row_stride, y_ptr, index_ptr, stats_ptr, rng_state_ptr,
    part_ptr, part_arg_ptr, cache_ptr,
    rows, cols, seed: tl.int64, tau: tl.float64, tau_ptr, blocks_per_split, n_splits,
    noise_stride, noise_offset, programs,
    HARD: tl.constexpr, SEED_IN_STATE: tl.constexpr, ALIGNED: tl.constexpr,
    TAU_IN_MEMORY: tl.constexpr, CACHE_S: tl.constexpr, PERSISTENT: tl.constexpr,
    PHASE: tl.constexpr, BLOCK: tl.constexpr,
):
    """One row (PHASE 0) or one chunk of a row (PHASES 1, 2) per program.

    Program (row, split) owns blocks [split * blocks_per_split, ...) of the
    row's windows. PHASE 0: both passes. PHASE 1: pass 1, partial state to
    part (m, l) / part_arg. PHASE 2: merge the row's partials, then pass 2.
    CACHE_S: pass 1 stores s in row `slot` of cache_ptr (of the accumulation
    dtype), pass 2 reads it back instead of regenerating the noise (the same
    bits): the output itself, slot = row, or (PERSISTENT, PHASE 0) a
    workspace of `programs` rows, one per program, each program walking the
    rows program_id, program_id + programs, ...
    """
    if PERSISTENT:
        for r in range(tl.program_id(0), rows, programs):
            _forward_long_row(
                tl.cast(r, tl.int64), tl.program_id(0).to(tl.int64),
                x_ptr, x_row_stride, y_ptr, index_ptr, stats_ptr, rng_state_ptr,
                part_ptr, part_arg_ptr, cache_ptr, rows, cols, seed, tau, tau_ptr,
                blocks_per_split, n_splits, noise_stride, noise_offset,
                HARD, SEED_IN_STATE, ALIGNED, TAU_IN_MEMORY, CACHE_S, PERSISTENT, PHASE, BLOCK)
            # The next row's pass 1 overwrites the slot this row's pass 2
            # read, with another mapping of columns to threads.
            tl.debug_barrier()
    else:
        row = tl.program_id(0).to(tl.int64)
        _forward_long_row(
            row, row, x_ptr, x_row_stride, y_ptr, index_ptr, stats_ptr, rng_state_ptr,
            part_ptr, part_arg_ptr, cache_ptr, rows, cols, seed, tau, tau_ptr,
            blocks_per_split, n_splits, noise_stride, noise_offset,
            HARD, SEED_IN_STATE, ALIGNED, TAU_IN_MEMORY, CACHE_S, PERSISTENT, PHASE, BLOCK)


@triton.jit
def _forward_long_row(
    r, slot, x_ptr, x_row_stride, y_ptr, index_ptr, stats_ptr, rng_state_ptr,
    part_ptr, part_arg_ptr, cache_ptr, rows, cols, seed, tau, tau_ptr,
    blocks_per_split, n_splits, noise_stride, noise_offset,
    HARD: tl.constexpr, SEED_IN_STATE: tl.constexpr, ALIGNED: tl.constexpr,
    TAU_IN_MEMORY: tl.constexpr, CACHE_S: tl.constexpr, PERSISTENT: tl.constexpr,
    PHASE: tl.constexpr, BLOCK: tl.constexpr,
):
    """_forward_long_kernel's work on row r (int64), its cache in row `slot`
    of the workspace (PERSISTENT) or in the output row. The output's row is
    addressed from y_ptr, not cache_ptr (the same tensor then): one base for
    pass 2's load and store (sm_90 SASS: 7.8 instructions per element, 8.8
    with two)."""
    acc_ty = stats_ptr.dtype.element_ty
    scale = _exp_scale(_temperature(tau, tau_ptr, TAU_IN_MEMORY), acc_ty)
    key, base = _philox_key(rng_state_ptr, seed, SEED_IN_STATE)
    # The row's state is kept as [1] tensors, the shape of a [1, BLOCK]
    # piece's reductions; `one` turns scalar offsets into [1] offsets.
    one = tl.zeros([1], tl.int64)
    row = r + one[:, None]
    split = tl.program_id(1)
    row_ok = row < rows
    row_pos = row * noise_stride + noise_offset
    if ALIGNED:
        lead = 0
    else:
        lead = (r * noise_stride + noise_offset) & 3
    first_block = split * blocks_per_split
    last_block = tl.minimum(first_block + blocks_per_split, _row_blocks(cols, lead, BLOCK))
    part = r * n_splits + split
    # 1. The state (m, l, arg) of the row (PHASES 0, 2) or of this chunk (PHASE 1).
    m = tl.full([1], float("-inf"), acc_ty)
    l = tl.zeros([1], acc_ty)
    arg = tl.full([1], _NO_INDEX, tl.int64)
    if PHASE == 2:
        # Merge the row's chunk states, in split order.
        row_part = r * n_splits
        for k in range(0, n_splits):
            m_k = tl.load(part_ptr + 2 * (row_part + k) + one)
            l_k = tl.load(part_ptr + 2 * (row_part + k) + 1 + one)
            arg_k = tl.load(part_arg_ptr + row_part + k + one)
            m, l, arg = _merge(m, l, arg, m_k, l_k, arg_k, scale)
    else:
        # Pass 1 over the windows as [BLOCK // 4, 4] units (gumbel_units):
        # each unit lane keeps a running state, reduced once after the loop.
        x_row = x_ptr + r * x_row_stride
        y_row = y_ptr + r * cols
        m_u = tl.full([BLOCK // 4], float("-inf"), acc_ty)
        l_u = tl.zeros([BLOCK // 4], acc_ty)
        best_s = tl.full([BLOCK // 4, 4], float("-inf"), acc_ty)
        best_b = tl.zeros([BLOCK // 4], tl.int32) + first_block
        for b in range(first_block, last_block):
            win = b * BLOCK - lead
            col = _unit_columns(win, BLOCK // 4)
            valid = (col >= 0) & (col < cols)
            x = tl.load(x_row + col, mask=valid, other=float("-inf"))
            s = x.to(acc_ty) + gumbel_units(key, base, r * noise_stride + noise_offset + win,
                                            BLOCK // 4).to(acc_ty)
            m_u, l_u, best_s, best_b = _unit_update(s, b, m_u, l_u, best_s, best_b, scale)
            if CACHE_S:
                if PERSISTENT:
                    tl.store(cache_ptr + slot * cols + col, s, mask=valid)
                else:
                    tl.store(y_row + col, s, mask=valid)
            if HARD:
                tl.store(y_row + col, tl.zeros_like(s).to(y_ptr.dtype.element_ty), mask=valid)
        m_r, l_r, arg_r = _units_state(m_u, l_u, best_s, best_b, lead, cols, scale, BLOCK)
        m = m_r + tl.zeros([1], acc_ty)
        l = l_r + tl.zeros([1], acc_ty)
        arg = arg_r + one
    if PHASE == 1:
        # 2. A chunk's state goes to the workspace; PHASE 2 takes over.
        tl.store(part_ptr + 2 * part + one, m)
        tl.store(part_ptr + 2 * part + 1 + one, l)
        tl.store(part_arg_ptr + part + one, arg)
    else:
        # 3. index and stats, once per row.
        row1 = tl.reshape(row, [1])
        first = split == 0
        tl.store(index_ptr + row1, arg, mask=first)
        tl.store(stats_ptr + 2 * row1, m, mask=first)
        tl.store(stats_ptr + 2 * row1 + 1, l, mask=first)
        # 4. Pass 2: the sample y = exp((s - m) * inv_tau) / l, s read back
        # (CACHE_S) or the noise regenerated. The one-hot (hard) needs neither
        # logits nor noise, and pass 1 wrote its zeros: only the 1 is left, or
        # NaN over a row without a valid sample.
        ok = _row_is_valid(m, l)[:, None]
        m_safe = tl.where(m == float("-inf"), 0.0, m)[:, None]
        inv_l = _reciprocal(l)[:, None]
        if CACHE_S or HARD:
            # Every thread's pass-1 stores are visible to the whole program
            # (pass 2 need not map columns to the threads pass 1 did).
            tl.debug_barrier()
        if HARD:
            # The block holding arg gets its 1; every block of a row without a
            # valid sample, NaN. Store addresses from the columns alone (never
            # from arg: see _window_columns), the choice in the branch.
            bad = tl.sum(tl.where(ok, 0, 1))
            for b in range(first_block, last_block):
                win_col = b * BLOCK - lead + one[:, None]
                hit = tl.sum(tl.where((arg[:, None] >= win_col) & (arg[:, None] < win_col + BLOCK), 1, 0))
                if hit + bad > 0:
                    col = _window_columns(win_col, BLOCK)
                    valid = (col >= 0) & (col < cols) & row_ok
                    y = _hard_sample(col, arg[:, None], ok)
                    tl.store(y_ptr + row * cols + col, y.to(y_ptr.dtype.element_ty), mask=valid)
        else:
            # Last block first: what pass 1 read (and stored) last is the
            # likeliest still in L2 (the same bits in either order).
            for i in range(first_block, last_block):
                b = first_block + last_block - 1 - i
                win_col = b * BLOCK - lead + one[:, None]
                col = _window_columns(win_col, BLOCK)  # not _noisy_logits': see _window_columns
                if CACHE_S:
                    valid = (col >= 0) & (col < cols)
                    if PERSISTENT:
                        s = tl.load(cache_ptr + slot * cols + col, mask=valid, other=float("-inf"))
                    else:
                        s = tl.load(y_ptr + row * cols + col, mask=valid, other=float("-inf"))
                    y = _tempered_exp(s - m_safe, scale) * inv_l
                else:
                    s, _, valid = _noisy_logits(x_ptr, x_row_stride, row, row_ok, cols, row_pos,
                                                win_col, key, base, acc_ty, BLOCK)
                    y = _tempered_exp(s - m_safe, scale) * inv_l
                tl.store(y_ptr + row * cols + col, y.to(y_ptr.dtype.element_ty), mask=valid)


# ----------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------


@triton.jit
def _noise_key(rng_state_ptr, FROM_LOGITS: tl.constexpr):
    """The forward's (seed, base); only the hard backward regenerates noise."""
    if FROM_LOGITS:
        seed = tl.load(rng_state_ptr)
        base = tl.load(rng_state_ptr + 1)
    else:
        seed = 0
        base = 0
    return seed, base


@triton.jit
def _soft_sample(y_ptr, y_row_stride, x_ptr, x_row_stride, stats_ptr, seed, base,
                 row, row_ok, cols, win_col, scale,
                 FROM_LOGITS: tl.constexpr, BLOCK: tl.constexpr):
    """y_soft on a [R, BLOCK] window, 0 outside the row: read (hard=False) or
    recomputed as exp((s - m) / tau) / l from the logits, the regenerated
    noise and the forward's stats (hard=True)."""
    acc_ty = stats_ptr.dtype.element_ty
    if FROM_LOGITS:
        s, col, valid = _noisy_logits(x_ptr, x_row_stride, row, row_ok, cols, row * cols,
                                      win_col, seed, base, acc_ty, BLOCK)
        m = tl.load(stats_ptr + 2 * row, mask=row_ok, other=0.0)
        l = tl.load(stats_ptr + 2 * row + 1, mask=row_ok, other=1.0)
        y = tl.where(valid, _tempered_exp(s - m, scale) * _reciprocal(l), 0.0)
    else:
        col = _window_columns(win_col, BLOCK)
        valid = row_ok & (col >= 0) & (col < cols)
        y = tl.load(y_ptr + row * y_row_stride + col, mask=valid, other=0.0).to(acc_ty)
    return y, col, valid


@triton.jit
def _backward_rows_kernel(
    grad_ptr, grad_row_stride, y_ptr, y_row_stride, x_ptr, x_row_stride,
    stats_ptr, rng_state_ptr, out_ptr, rows, cols, tau: tl.float64, tau_ptr,
    FROM_LOGITS: tl.constexpr, ALIGNED: tl.constexpr, TAU_IN_MEMORY: tl.constexpr,
    ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    """grad_x = inv_tau * y * (grad - sum(grad * y)) for ROWS whole rows."""
    acc_ty = stats_ptr.dtype.element_ty
    # _temperature twice, not once into a local: the interpreter keeps a
    # float64 scalar local as float32 (the cost: one scalar load per program).
    inv = _inverse_temperature(_temperature(tau, tau_ptr, TAU_IN_MEMORY), acc_ty)
    scale = _exp_scale(_temperature(tau, tau_ptr, TAU_IN_MEMORY), acc_ty)
    seed, base = _noise_key(rng_state_ptr, FROM_LOGITS)
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)[:, None]
    row_ok = row < rows
    if ALIGNED:
        lead = 0
    else:
        lead = (row * cols) & 3
    # 1. y_soft and the incoming gradient.
    y, _, valid = _soft_sample(y_ptr, y_row_stride, x_ptr, x_row_stride, stats_ptr, seed, base,
                               row, row_ok, cols, -lead, scale, FROM_LOGITS, BLOCK)
    col = _window_columns(-lead, BLOCK)  # not _soft_sample's: see _window_columns
    g = tl.load(grad_ptr + row * grad_row_stride + col, mask=valid, other=0.0).to(acc_ty)
    # 2. dot = sum_k grad_k * y_k; 3. the softmax Jacobian-vector product.
    dot = tl.sum(g * y, axis=1)[:, None]
    dx = inv * y * (g - dot)
    tl.store(out_ptr + row * cols + col, dx.to(out_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _backward_long_kernel(
    grad_ptr, grad_row_stride, y_ptr, y_row_stride, x_ptr, x_row_stride,
    stats_ptr, rng_state_ptr, out_ptr, part_ptr, cache_ptr,
    rows, cols, tau: tl.float64, tau_ptr, blocks_per_split, n_splits, programs,
    FROM_LOGITS: tl.constexpr, ALIGNED: tl.constexpr, TAU_IN_MEMORY: tl.constexpr,
    CACHE_Y: tl.constexpr, PERSISTENT: tl.constexpr, PHASE: tl.constexpr, BLOCK: tl.constexpr,
):
    """Looped backward, phases as in _forward_long_kernel: pass 1 sums
    grad * y_soft over the blocks (PHASE 1 stores the chunk's sum, PHASE 2
    adds the row's chunk sums in order), pass 2 writes grad_x. CACHE_Y (y_soft
    recomputed): pass 1 stores y_soft in grad_x (of the accumulation dtype)
    or, PERSISTENT, in a workspace row of its program, as the forward's
    CACHE_S; pass 2 reads it back instead of regenerating the noise (the same
    bits). PERSISTENT without CACHE_Y: programs walk the rows, no workspace
    (BACKWARD_PROGRAMS_PER_SM)."""
    if PERSISTENT:
        for r in range(tl.program_id(0), rows, programs):
            _backward_long_row(
                tl.cast(r, tl.int64), tl.program_id(0).to(tl.int64),
                grad_ptr, grad_row_stride, y_ptr, y_row_stride, x_ptr, x_row_stride,
                stats_ptr, rng_state_ptr, out_ptr, part_ptr, cache_ptr, rows, cols, tau, tau_ptr,
                blocks_per_split, n_splits,
                FROM_LOGITS, ALIGNED, TAU_IN_MEMORY, CACHE_Y, PERSISTENT, PHASE, BLOCK)
            if CACHE_Y:
                # The next row's pass 1 overwrites the slot this row's pass 2
                # read, with another mapping of columns to threads.
                tl.debug_barrier()
    else:
        row = tl.program_id(0).to(tl.int64)
        _backward_long_row(
            row, row, grad_ptr, grad_row_stride, y_ptr, y_row_stride, x_ptr, x_row_stride,
            stats_ptr, rng_state_ptr, out_ptr, part_ptr, cache_ptr, rows, cols, tau, tau_ptr,
            blocks_per_split, n_splits,
            FROM_LOGITS, ALIGNED, TAU_IN_MEMORY, CACHE_Y, PERSISTENT, PHASE, BLOCK)


@triton.jit
def _backward_long_row(
    r, slot, grad_ptr, grad_row_stride, y_ptr, y_row_stride, x_ptr, x_row_stride,
    stats_ptr, rng_state_ptr, out_ptr, part_ptr, cache_ptr, rows, cols, tau, tau_ptr,
    blocks_per_split, n_splits,
    FROM_LOGITS: tl.constexpr, ALIGNED: tl.constexpr, TAU_IN_MEMORY: tl.constexpr,
    CACHE_Y: tl.constexpr, PERSISTENT: tl.constexpr, PHASE: tl.constexpr, BLOCK: tl.constexpr,
):
    """_backward_long_kernel's work on row r (int64), its cache in row `slot`
    of the workspace (PERSISTENT) or in grad_x's row (addressed from out_ptr,
    as the forward's from y_ptr)."""
    acc_ty = stats_ptr.dtype.element_ty
    # _temperature twice, not once into a local: the interpreter keeps a
    # float64 scalar local as float32 (the cost: one scalar load per program).
    inv = _inverse_temperature(_temperature(tau, tau_ptr, TAU_IN_MEMORY), acc_ty)
    scale = _exp_scale(_temperature(tau, tau_ptr, TAU_IN_MEMORY), acc_ty)
    seed, base = _noise_key(rng_state_ptr, FROM_LOGITS)
    one = tl.zeros([1], tl.int64)  # as in _forward_long_row: [1] row state
    row = r + one[:, None]
    split = tl.program_id(1)
    row_ok = row < rows
    if ALIGNED:
        lead = 0
    else:
        lead = (r * cols) & 3
    first_block = split * blocks_per_split
    last_block = tl.minimum(first_block + blocks_per_split, _row_blocks(cols, lead, BLOCK))
    part = r * n_splits + split
    # 1. dot = sum_k grad_k * y_k of the row (PHASES 0, 2) or of this chunk (PHASE 1).
    dot = tl.zeros([1], acc_ty)
    if PHASE == 2:
        # The row's chunk sums, added in split order.
        row_part = r * n_splits
        for k in range(0, n_splits):
            dot += tl.load(part_ptr + row_part + k + one)
    elif FROM_LOGITS:
        # Pass 1 over the blocks as [BLOCK // 4, 4] units, as the forward's:
        # y_soft recomputed as _soft_sample does (the same bits), one Philox
        # group per thread. In [1, BLOCK] windows a 16-bit row's loads and
        # the float32 workspace's stores wanted different layouts, and triton
        # 3.6 evaluated the noise in both (sm_90 SASS, python
        # scripts/triton_sass.py: 132 instructions per element, 73.5 in
        # units; float32, triton 3.8: 73.2 -> 70.8, 48 -> 40 registers).
        m = tl.load(stats_ptr + 2 * r)
        inv_l = _reciprocal(tl.load(stats_ptr + 2 * r + 1))
        dot_units = tl.zeros([BLOCK // 4, 4], acc_ty)
        for b in range(first_block, last_block):
            win = b * BLOCK - lead
            col = _unit_columns(win, BLOCK // 4)
            valid = (col >= 0) & (col < cols)
            x = tl.load(x_ptr + r * x_row_stride + col, mask=valid, other=float("-inf"))
            s = x.to(acc_ty) + gumbel_units(seed, base, r * cols + win, BLOCK // 4).to(acc_ty)
            y = tl.where(valid, _tempered_exp(s - m, scale) * inv_l, 0.0)
            g = tl.load(grad_ptr + r * grad_row_stride + col, mask=valid, other=0.0).to(acc_ty)
            dot_units += g * y
            if CACHE_Y:
                if PERSISTENT:
                    tl.store(cache_ptr + slot * cols + col, y, mask=valid)
                else:
                    tl.store(out_ptr + r * cols + col, y, mask=valid)
        dot += tl.sum(tl.sum(dot_units, axis=1), axis=0)
    else:
        # Pass 1 over the blocks, a sum per lane, added up after the loop
        # (no shuffles and barriers per block).
        dot_lanes = tl.zeros([1, BLOCK], acc_ty)
        for b in range(first_block, last_block):
            win_col = b * BLOCK - lead + one[:, None]
            y, _, valid = _soft_sample(y_ptr, y_row_stride, x_ptr, x_row_stride, stats_ptr,
                                       seed, base, row, row_ok, cols, win_col, scale,
                                       FROM_LOGITS, BLOCK)
            col = _window_columns(win_col, BLOCK)  # not _soft_sample's: see _window_columns
            g = tl.load(grad_ptr + row * grad_row_stride + col, mask=valid, other=0.0).to(acc_ty)
            dot_lanes += g * y
        dot += tl.sum(dot_lanes, axis=1)
    if PHASE == 1:
        # 2. A chunk's sum goes to the workspace; PHASE 2 takes over.
        tl.store(part_ptr + part + one, dot)
    else:
        # 3. Pass 2: grad_x = inv_tau * y * (grad - dot).
        if CACHE_Y:
            # Pass 1's stores, from any thread, visible to all (PHASE 0).
            tl.debug_barrier()
        # Last block first, as the forward's pass 2.
        for i in range(first_block, last_block):
            b = first_block + last_block - 1 - i
            win_col = b * BLOCK - lead + one[:, None]
            col = _window_columns(win_col, BLOCK)  # not _soft_sample's: see _window_columns
            if CACHE_Y:
                valid = row_ok & (col >= 0) & (col < cols)
                if PERSISTENT:
                    y = tl.load(cache_ptr + slot * cols + col, mask=valid, other=0.0)
                else:
                    y = tl.load(out_ptr + row * cols + col, mask=valid, other=0.0)
            else:
                y, _, valid = _soft_sample(y_ptr, y_row_stride, x_ptr, x_row_stride, stats_ptr,
                                           seed, base, row, row_ok, cols, win_col, scale,
                                           FROM_LOGITS, BLOCK)
            g = tl.load(grad_ptr + row * grad_row_stride + col, mask=valid, other=0.0).to(acc_ty)
            dx = inv * y * (g - dot[:, None])
            tl.store(out_ptr + row * cols + col, dx.to(out_ptr.dtype.element_ty), mask=valid)


# ----------------------------------------------------------------------------
# Launch plan and launches
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How a [rows, cols] problem is launched (see the module docstring)."""

    aligned: bool          # cols % 4 == 0: every row starts a Philox group
    looped: bool           # long kernels (else rows kernels)
    block: int             # columns per window
    rows_per_program: int  # rows kernels only
    num_warps: int
    n_splits: int          # long kernels: programs per row (1: PHASE 0)
    blocks_per_split: int  # long kernels: windows per program


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    """Streaming multiprocessors of a CUDA device (cached: no query per call)."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _sms(device: torch.device) -> int:
    """The device's SMs (INTERPRETER_SMS for the interpreter's CPU tensors)."""
    if device.type != "cuda":
        return INTERPRETER_SMS
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def _programs_wanted(device: torch.device) -> int:
    """Programs that keep every SM busy: below that many rows, rows are split."""
    return SPLIT_PROGRAMS_PER_SM * _sms(device)


def _programs_per_sm(setting: int | None, eligible: bool, cache_in_workspace: bool) -> int | None:
    """Persistent programs per SM of a looped PHASE 0 launch, None for one
    program per row: the launch's setting (FORWARD_/BACKWARD_PROGRAMS_PER_SM)
    where set and the rows qualify, else CACHE_PROGRAMS_PER_SM where a 16-bit
    output cannot hold the cache."""
    if setting is not None and eligible:
        return setting
    return CACHE_PROGRAMS_PER_SM if cache_in_workspace else None


def _persistent_programs(rows: int | torch.SymInt, device: torch.device, per_sm: int) -> int | torch.SymInt:
    """The programs of a persistent launch: per_sm per SM, no more than rows
    (sym_min: a symbolic row count stays unguarded)."""
    if per_sm < 1:
        raise ValueError(f"fused_gumbel: persistent programs per SM must be at least 1, got {per_sm}")
    return torch.sym_min(rows, per_sm * _sms(device))


def plan(rows: int, cols: int, device: torch.device, noise_stride: int | None = None,
         noise_offset: int = 0) -> Plan:
    """The launch plan for [rows, cols] rows on `device` (fixed table, no
    autotuning); row r's noise starts at position r * noise_stride +
    noise_offset (noise_stride None: cols)."""
    stride = cols if noise_stride is None else noise_stride
    aligned = cols % 4 == 0 and stride % 4 == 0 and noise_offset % 4 == 0
    if rows == 0:
        # One fully masked program: it still records (seed, 0) in rng_state.
        return Plan(aligned, False, 16, 1, 4, 1, 0)
    width = cols if aligned else cols + 3  # columns a row's windows must cover
    padded = max(16, next_power_of_2(max(width, 1)))
    if padded <= SINGLE_BLOCK_MAX:
        rows_per_program = max(1, min(ROWS_ELEMENTS // padded, MAX_ROWS,
                                      next_power_of_2(max(rows, 1))))
        elements = rows_per_program * padded
        num_warps = min(16, max(4, elements // 256))
        return Plan(aligned, False, padded, rows_per_program, num_warps, 1, 0)
    n_blocks = cdiv(width, LOOP_BLOCK)
    wanted = _programs_wanted(device)
    n_splits = 1 if rows >= wanted else min(n_blocks, cdiv(wanted, max(rows, 1)))
    blocks_per_split = cdiv(n_blocks, n_splits)
    n_splits = cdiv(n_blocks, blocks_per_split)
    return Plan(aligned, True, LOOP_BLOCK, 1, 8, n_splits, blocks_per_split)


def _tau_args(tau: float | torch.Tensor, stand_in: torch.Tensor) -> tuple[float, torch.Tensor, bool]:
    """(tau, tau_ptr, TAU_IN_MEMORY) of a launch. A float goes by value (the
    kernel is not specialized on it); a 0-d tensor, the temperature under
    torch.compile, by pointer, with any valid pointer standing in otherwise."""
    if isinstance(tau, torch.Tensor):
        return 1.0, tau, True
    return tau, stand_in, False


def launch_forward(wrap: Callable, x_rows: torch.Tensor, y_rows: torch.Tensor, index: torch.Tensor,
                   stats: torch.Tensor, rng_state: torch.Tensor, seed: int | None,
                   tau: float | torch.Tensor, hard: bool, noise_stride: int | None = None,
                   noise_offset: int = 0) -> None:
    """Fills y_rows (rows x cols elements, row-major: the kernels use only its
    pointer), index [rows], stats [rows, 2] and (explicit seed) rng_state.
    With seed None, rng_state already holds (seed, base).
    tau: a float, or a 0-d float64 tensor on the device (see _tau_args).
    Row r's noise starts at position r * noise_stride + noise_offset
    (noise_stride None: cols; a vocabulary shard passes the vocabulary size and
    its first column).

    wrap: torch.library.wrap_triton (or the identity) applied to each kernel.
    """
    rows, cols = x_rows.shape
    p = plan(rows, cols, x_rows.device, noise_stride, noise_offset)
    stride = cols if noise_stride is None else noise_stride
    seed_in_state = seed is None
    seed_arg = 0 if seed is None else seed
    tau, tau_ptr, tau_in_memory = _tau_args(tau, stats)
    flags = dict(HARD=hard, SEED_IN_STATE=seed_in_state, ALIGNED=p.aligned,
                 TAU_IN_MEMORY=tau_in_memory, num_warps=p.num_warps, enable_fp_fusion=False)
    if not p.looped:
        # At least one program, so that rng_state is written for 0 rows too.
        grid = (max(1, cdiv(rows, p.rows_per_program)),)
        wrap(_forward_rows_kernel)[grid](
            x_rows, x_rows.stride(0), y_rows, index, stats, rng_state,
            rows, cols, seed_arg, tau, tau_ptr, stride, noise_offset, ROWS=p.rows_per_program,
            BLOCK=p.block, **flags)
        return
    args = (x_rows, x_rows.stride(0), y_rows, index, stats, rng_state)
    in_output = y_rows.dtype == stats.dtype
    if p.n_splits == 1:
        # PHASE 0 has no partial states: stats and index stand in for their
        # pointers. A 16-bit soft sample cannot hold s: it goes to a
        # workspace of CACHE_PROGRAMS_PER_SM rows per SM, which persistent
        # programs reuse row after row (aligned rows: see CACHE_PROGRAMS_PER_SM;
        # FORWARD_PROGRAMS_PER_SM, where set, for every aligned soft row).
        cache_s = CACHE_BETWEEN_PASSES and not hard and (in_output or p.aligned)
        per_sm = _programs_per_sm(FORWARD_PROGRAMS_PER_SM, cache_s and p.aligned, cache_s and not in_output)
        persistent = per_sm is not None
        programs = _persistent_programs(rows, x_rows.device, per_sm) if persistent else rows
        cache = (torch.empty((programs, cols), dtype=stats.dtype, device=x_rows.device) if persistent
                 else y_rows)
        wrap(_forward_long_kernel)[(programs, 1)](
            *args, stats, index, cache, rows, cols, seed_arg, tau, tau_ptr, p.blocks_per_split, 1,
            stride, noise_offset, programs, CACHE_S=cache_s, PERSISTENT=persistent, PHASE=0,
            BLOCK=p.block, **flags)
        return
    part = torch.empty((rows, p.n_splits, 2), dtype=stats.dtype, device=x_rows.device)
    part_arg = torch.empty((rows, p.n_splits), dtype=torch.int64, device=x_rows.device)
    for phase in (1, 2):
        wrap(_forward_long_kernel)[(rows, p.n_splits)](
            *args, part, part_arg, y_rows, rows, cols, seed_arg, tau, tau_ptr, p.blocks_per_split,
            p.n_splits, stride, noise_offset, rows, CACHE_S=CACHE_BETWEEN_PASSES and not hard and in_output,
            PERSISTENT=False, PHASE=phase, BLOCK=p.block, **flags)


def launch_backward(wrap: Callable, grad_rows: torch.Tensor, y_rows: torch.Tensor | None,
                    x_rows: torch.Tensor | None, stats: torch.Tensor, rng_state: torch.Tensor,
                    out_rows: torch.Tensor, tau: float | torch.Tensor) -> None:
    """Fills out_rows (rows x cols elements, row-major, as y_rows in
    launch_forward) with the gradient of the logits, [rows, cols] = grad_rows'
    shape.

    Exactly one of y_rows (the soft sample) and x_rows (the logits, hard=True)
    is given; stats [rows, 2] and rng_state [2] are the forward's.
    """
    rows, cols = grad_rows.shape
    if rows == 0:
        return
    p = plan(rows, cols, grad_rows.device)
    from_logits = x_rows is not None
    # The unused one of (y, x) is passed as the other so every pointer is valid.
    y_arg = y_rows if y_rows is not None else x_rows
    x_arg = x_rows if x_rows is not None else y_rows
    tau, tau_ptr, tau_in_memory = _tau_args(tau, stats)
    flags = dict(FROM_LOGITS=from_logits, ALIGNED=p.aligned, TAU_IN_MEMORY=tau_in_memory,
                 num_warps=p.num_warps, enable_fp_fusion=False)
    args = (grad_rows, grad_rows.stride(0), y_arg, y_arg.stride(0), x_arg, x_arg.stride(0),
            stats, rng_state, out_rows)
    if not p.looped:
        wrap(_backward_rows_kernel)[(cdiv(rows, p.rows_per_program),)](
            *args, rows, cols, tau, tau_ptr, ROWS=p.rows_per_program, BLOCK=p.block, **flags)
        return
    in_output = out_rows.dtype == stats.dtype
    if p.n_splits == 1:
        # PHASE 0 has no chunk sums: stats stands in for their pointer. A
        # 16-bit gradient cannot hold y_soft: as the forward's s, it goes to
        # a workspace of persistent programs.
        # Persistent programs (BACKWARD_PROGRAMS_PER_SM, or that 16-bit
        # cache's) keep the cache in a workspace row of their own.
        cache_y = CACHE_BETWEEN_PASSES and from_logits and (in_output or p.aligned)
        per_sm = _programs_per_sm(BACKWARD_PROGRAMS_PER_SM, p.aligned or not from_logits,
                                  cache_y and not in_output)
        persistent = per_sm is not None
        programs = _persistent_programs(rows, grad_rows.device, per_sm) if persistent else rows
        cache = (torch.empty((programs, cols), dtype=stats.dtype, device=grad_rows.device)
                 if cache_y and persistent else out_rows)
        wrap(_backward_long_kernel)[(programs, 1)](
            *args, stats, cache, rows, cols, tau, tau_ptr, p.blocks_per_split, 1, programs,
            CACHE_Y=cache_y, PERSISTENT=persistent, PHASE=0, BLOCK=p.block, **flags)
        return
    part = torch.empty((rows, p.n_splits), dtype=stats.dtype, device=grad_rows.device)
    for phase in (1, 2):
        wrap(_backward_long_kernel)[(rows, p.n_splits)](
            *args, part, out_rows, rows, cols, tau, tau_ptr, p.blocks_per_split, p.n_splits, rows,
            CACHE_Y=CACHE_BETWEEN_PASSES and from_logits and in_output, PERSISTENT=False, PHASE=phase,
            BLOCK=p.block, **flags)
