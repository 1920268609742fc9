"""Triton forward and backward kernels of gumbel_topk (straight-through Gumbel
top-k), and their launches.

Kernels see 2-D rows: logits as [rows, cols] with column stride 1; the sample
and the gradient are written as contiguous [rows, cols], the index as
[rows, k], the statistics as [rows, k, 2]. Noise, windows and the Philox key
are st_softmax.py's (the same bits as every backend). csrc/topk.h states the
math; per row of s = x + g:

    selection: k rounds, round j takes the best element (argmax order: NaN
               first, larger, then lower index) after round j-1's pick
    steps:     a_1 = s; (m_j, rest_j) = max of a_j and the sum of
               exp((a_j - m_j) / tau) over all but one maximum;
               p_j = exp((a_j - m_j) / tau) / (1 + rest_j);
               q_j = rest_j / (1 + rest_j) where p_j > 1/2, else 1 - p_j;
               a_{j+1} = a_j + log(max(q_j, tiny)); y_soft = sum_j p_j
    backward:  with alpha_j = 1 - p_j / (tau q_j) (p_j / tau where clamped)
               and beta_j = p_j (gy - d_j) / tau, the reverse recursion
               ga_j = alpha_j ga_{j+1} + beta_j unrolls forward:
               ga_{j+1} = sum_{i > j} (prod_{j < l < i} alpha_l) beta_i, so
               d_j = sum(gp_j p_j), gp_j = gy - ga_{j+1} / q_j, needs only the
               d_i of later steps: pass t (j = k - t) replays the k steps
               element by element and yields d_j; a last pass writes ga_1.

A program holds ROWS rows and walks their columns in BLOCK-wide windows.
Nothing per element is stored between passes: each pass regenerates s (the
logits and the noise) and replays the steps, unless the row is a single
window (SINGLE), when s, a_j and y_soft stay in registers. Per-step row statistics (and the backward's d_j) live in
registers as [ROWS, KP] tensors, KP = next_pow2(k): any k runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import triton
import triton.language as tl

from .host_ints import cdiv, next_power_of_2
from .st_softmax import (
    _argmax_better,
    _inverse_temperature,
    _noisy_logits,
    _philox_key,
    _reciprocal,
    _tau_args,
    _temperature,
    _window_columns,
    seed_and_base,
)

# The plan table (module constants so that tests can shrink them to reach the
# windowed path with small tensors). Sizes keep every kernel free of register
# spills on sm_90 (tests/test_topk.py compiles them and reads ptxas's report).
SINGLE_BLOCK_MAX = 2048  # longest padded row kept in registers as one window
LOOP_BLOCK = 1024        # window of longer rows: one row per program, 8 warps
ROWS_ELEMENTS = 2048     # elements per program of single-window rows
MAX_ROWS = 64            # rows per program, at most

_NO_INDEX: tl.constexpr = tl.constexpr(2**62)
FLOAT_TINY: tl.constexpr = tl.constexpr(torch.finfo(torch.float32).tiny)
DOUBLE_TINY: tl.constexpr = tl.constexpr(torch.finfo(torch.float64).tiny)


@triton.jit
def _tiny(acc_ty: tl.constexpr):
    """The smallest normal number of acc_ty: the clamp of 1 - p_j."""
    if acc_ty == tl.float64:
        t = tl.full((), DOUBLE_TINY, tl.float64)
    else:
        t = tl.full((), FLOAT_TINY, tl.float32)
    return t


@triton.jit
def _window(x_ptr, x_row_stride, row, row_ok, cols, b, lead, key, base, s_single,
            acc_ty: tl.constexpr, SINGLE: tl.constexpr, BLOCK: tl.constexpr):
    """s = x + g on window b of the rows ([ROWS, BLOCK]); SINGLE reuses s_single."""
    win_col = b * BLOCK - lead
    if SINGLE:
        col = _window_columns(win_col, BLOCK)
        valid = row_ok & (col >= 0) & (col < cols)
        s = s_single
    else:
        s, col, valid = _noisy_logits(x_ptr, x_row_stride, row, row_ok, cols, row * cols, win_col,
                                      key, base, acc_ty, BLOCK)
    return s, col, valid


@triton.jit
def _program_rows(rows, cols, ALIGNED: tl.constexpr, ROWS: tl.constexpr):
    """The ROWS rows of this program ([ROWS, 1] row, row_ok) and each row's
    lead (columns before column 0 in its first 4-aligned window). No pointer
    goes in: the stores' addresses are made from these (see
    st_softmax._window_columns)."""
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)[:, None]
    row_ok = row < rows
    if ALIGNED:
        lead = row * 0
    else:
        lead = (row * cols) & 3
    return row, row_ok, lead


@triton.jit
def _single_window(x_ptr, x_row_stride, row, row_ok, cols, lead, key, base, acc_ty: tl.constexpr,
                   SINGLE: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """When a row is one window (SINGLE), s = x + g of that window (zeros otherwise)."""
    s_single = tl.zeros([ROWS, BLOCK], acc_ty)
    if SINGLE:
        s_single, _, _ = _noisy_logits(x_ptr, x_row_stride, row, row_ok, cols, row * cols, -lead,
                                       key, base, acc_ty, BLOCK)
    return s_single


@triton.jit
def _pick(t, kk, j):
    """Column j of a [ROWS, KP] register table, as [ROWS, 1]."""
    return tl.sum(tl.where(kk == j, t, 0), axis=1)[:, None]


@triton.jit
def _put(t, kk, j, v):
    """The table t with column j set to v ([ROWS])."""
    return tl.where(kk == j, v[:, None], t)


@triton.jit
def _probs(a, m, rest, inv):
    """p_j and q_j = 1 - p_j (no cancellation) from the step's (m, rest)."""
    inv_l = _reciprocal(1.0 + rest)
    p = tl.exp((a - m) * inv) * inv_l
    q = tl.where(p > 0.5, rest * inv_l, 1.0 - p)
    return p, q


@triton.jit
def _step_piece(a, valid, inv):
    """(m, rest) of each row of a piece; an all -inf piece is (-inf, -1)
    (its sum, 1 + rest, is 0)."""
    m = tl.max(tl.where(valid, a, float("-inf")), axis=1)
    m_safe = tl.where(m == float("-inf"), 0.0, m)[:, None]
    is_max = valid & (a == m[:, None])
    e = tl.where(valid & ~is_max, tl.exp((a - m_safe) * inv), 0.0)
    count = tl.sum(is_max.to(a.dtype), axis=1)
    rest = tl.where(m == float("-inf"), -1.0, tl.sum(e, axis=1) + count - 1.0)
    return m, rest


@triton.jit
def _rescale(m_from, m_to, inv):
    """exp((m_from - m_to) * inv), exactly 1 when equal (also -inf = -inf).
    tl.exp with 1 / tau, as every exponential here (st_softmax's _rescale
    takes the scale of its ex2 form)."""
    return tl.where(m_from == m_to, 1.0, tl.exp((m_from - m_to) * inv))


@triton.jit
def _step_merge(m1, r1, m2, r2, inv):
    """(m, rest) of the union of two pieces, each sum rescaled to the common
    max (Milakov & Gimelshein 2018); rest never cancels."""
    m = tl.maximum(m1, m2)
    from_1 = r1 + (1.0 + r2) * _rescale(m2, m, inv)
    from_2 = r2 + (1.0 + r1) * _rescale(m1, m, inv)
    return m, tl.where(m1 >= m2, from_1, from_2)


@triton.jit
def _select_piece(s, col, valid, pv, pi):
    """The best element of each row of a piece after (pv, pi) ([ROWS, 1]) in
    the argmax order, as (value, column); (-inf, _NO_INDEX) if none."""
    elig = valid & _argmax_better(pv, pi, s, col)
    nan = s != s
    first_nan = tl.min(tl.where(elig & nan, col, _NO_INDEX), axis=1)
    m_num = tl.max(tl.where(elig & ~nan, s, float("-inf")), axis=1)
    first_max = tl.min(tl.where(elig & ~nan & (s == m_num[:, None]), col, _NO_INDEX), axis=1)
    has_nan = first_nan < _NO_INDEX
    return tl.where(has_nan, float("nan"), m_num), tl.where(has_nan, first_nan, first_max)


@triton.jit(do_not_specialize=["seed"])
def _topk_forward_kernel(
    x_ptr, x_row_stride, y_ptr, index_ptr, stats_ptr, rng_state_ptr,
    rows, cols, k, n_blocks, seed: tl.int64, tau: tl.float64, tau_ptr,
    HARD: tl.constexpr, SEED_IN_STATE: tl.constexpr, ALIGNED: tl.constexpr, SINGLE: tl.constexpr,
    TAU_IN_MEMORY: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr, KP: tl.constexpr,
):
    acc_ty = stats_ptr.dtype.element_ty
    inv = _inverse_temperature(_temperature(tau, tau_ptr, TAU_IN_MEMORY), acc_ty)
    tiny = _tiny(acc_ty)
    key, base = _philox_key(rng_state_ptr, seed, SEED_IN_STATE)
    row, row_ok, lead = _program_rows(rows, cols, ALIGNED, ROWS)
    s_single = _single_window(x_ptr, x_row_stride, row, row_ok, cols, lead, key, base, acc_ty,
                              SINGLE, ROWS, BLOCK)
    kk = tl.arange(0, KP)[None, :]
    # 1. Selection: round j picks the best element after round j-1's pick.
    pv = tl.full([ROWS, 1], float("nan"), acc_ty)
    pi = tl.full([ROWS, 1], -1, tl.int64)
    picks = tl.full([ROWS, KP], -1, tl.int64)
    best = tl.zeros([ROWS], acc_ty)  # round 1's value: the row's max
    last = tl.zeros([ROWS], acc_ty)  # round k's value
    for j in range(0, k):
        v = tl.full([ROWS], float("-inf"), acc_ty)
        i = tl.full([ROWS], _NO_INDEX, tl.int64)
        for b in range(0, n_blocks):
            s, col, valid = _window(x_ptr, x_row_stride, row, row_ok, cols, b, lead, key, base,
                                    s_single, acc_ty, SINGLE, BLOCK)
            v_b, i_b = _select_piece(s, col, valid, pv, pi)
            better = _argmax_better(v_b, i_b, v, i)
            v = tl.where(better, v_b, v)
            i = tl.where(better, i_b, i)
        tl.store(index_ptr + tl.reshape(row, [ROWS]) * k + j, i, mask=tl.reshape(row_ok, [ROWS]))
        picks = _put(picks, kk, j, i)
        best = tl.where(j == 0, v, best)
        last = v
        pv = v[:, None]
        pi = i[:, None]
    # A NaN or +inf, or fewer than k entries above -inf: no subset.
    ok = (best == best) & (best > float("-inf")) & (best < float("inf")) & (last > float("-inf"))
    # 2. The k steps: (m_j, rest_j) of a_j. One window keeps a_j and y_soft in
    # registers; longer rows replay a_j from s and the earlier steps.
    ms = tl.zeros([ROWS, KP], acc_ty)
    rs = tl.zeros([ROWS, KP], acc_ty)
    a_single = s_single
    y_single = tl.zeros([ROWS, BLOCK], acc_ty)
    for j in range(0, k):
        m = tl.full([ROWS], float("-inf"), acc_ty)
        rest = tl.full([ROWS], -1.0, acc_ty)
        for b in range(0, n_blocks):
            s, col, valid = _window(x_ptr, x_row_stride, row, row_ok, cols, b, lead, key, base,
                                    s_single, acc_ty, SINGLE, BLOCK)
            if SINGLE:
                a = a_single
            else:
                a = s
                for i in range(0, j):
                    p, q = _probs(a, _pick(ms, kk, i), _pick(rs, kk, i), inv)
                    a = a + tl.log(tl.maximum(q, tiny))
            m_b, r_b = _step_piece(a, valid, inv)
            m, rest = _step_merge(m, rest, m_b, r_b, inv)
        ms = _put(ms, kk, j, m)
        rs = _put(rs, kk, j, rest)
        if SINGLE:
            p, q = _probs(a_single, m[:, None], rest[:, None], inv)
            y_single += p
            a_single = a_single + tl.log(tl.maximum(q, tiny))
        stat = stats_ptr + (tl.reshape(row, [ROWS]) * k + j) * 2
        ok1 = tl.reshape(row_ok, [ROWS])
        tl.store(stat, tl.where(ok, m, float("nan")), mask=ok1)
        tl.store(stat + 1, tl.where(ok, rest, float("nan")), mask=ok1)
    # 3. The sample: the k-hot, or y_soft = sum_j p_j.
    for b in range(0, n_blocks):
        win_col = b * BLOCK - lead
        col = _window_columns(win_col, BLOCK)  # not _window's: see st_softmax._window_columns
        valid = row_ok & (col >= 0) & (col < cols)
        if HARD:
            chosen = col < 0
            for j in range(0, k):
                chosen = chosen | (col == _pick(picks, kk, j))
            y = tl.where(chosen, 1.0, 0.0)
        elif SINGLE:
            y = y_single
        else:
            s, _, valid = _window(x_ptr, x_row_stride, row, row_ok, cols, b, lead, key, base,
                                  s_single, acc_ty, SINGLE, BLOCK)
            a = s
            y = tl.zeros([ROWS, BLOCK], acc_ty)
            for j in range(0, k):
                p, q = _probs(a, _pick(ms, kk, j), _pick(rs, kk, j), inv)
                y += p
                a = a + tl.log(tl.maximum(q, tiny))
        y = tl.where(ok[:, None], y, float("nan"))
        tl.store(y_ptr + row * cols + col, y.to(y_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _chain(s, gy, stats_ptr, row, row_ok, k, j, ds, kk, inv, tiny):
    """One backward pass on a window: replays the k steps from s and returns
    (ga_{j+1}, p_j, 1 / q_j or 0 where clamped), ga_{j+1} accumulated forward
    from the d_i (i > j) in ds (see the module docstring)."""
    a = s
    acc = tl.zeros_like(s)
    prod = tl.full(s.shape, 1.0, s.dtype)
    p_j = tl.zeros_like(s)
    r_j = tl.zeros_like(s)
    stat = stats_ptr + row * k * 2
    for i in range(0, k):
        m = tl.load(stat + 2 * i, mask=row_ok, other=0.0)
        rest = tl.load(stat + 2 * i + 1, mask=row_ok, other=0.0)
        p, q = _probs(a, m, rest, inv)
        r = tl.where(q >= tiny, _reciprocal(q), 0.0)
        p_j = tl.where(i == j, p, p_j)
        r_j = tl.where(i == j, r, r_j)
        later = i > j
        # beta = 0 adds nothing even where prod has overflowed (its exact
        # term vanishes with p), never inf * 0.
        beta = inv * p * (gy - _pick(ds, kk, i))
        acc = tl.where(later & (beta != 0.0), acc + prod * beta, acc)
        prod = tl.where(later, prod * (1.0 - inv * p * r), prod)
        a = a + tl.log(tl.maximum(q, tiny))
    return acc, p_j, r_j


@triton.jit
def _topk_backward_kernel(
    grad_ptr, grad_row_stride, x_ptr, x_row_stride, stats_ptr, rng_state_ptr, out_ptr,
    rows, cols, k, n_blocks, tau: tl.float64, tau_ptr,
    ALIGNED: tl.constexpr, SINGLE: tl.constexpr, TAU_IN_MEMORY: tl.constexpr,
    ROWS: tl.constexpr, BLOCK: tl.constexpr, KP: tl.constexpr,
):
    acc_ty = stats_ptr.dtype.element_ty
    inv = _inverse_temperature(_temperature(tau, tau_ptr, TAU_IN_MEMORY), acc_ty)
    tiny = _tiny(acc_ty)
    key, base = seed_and_base(rng_state_ptr, 0, True)
    row, row_ok, lead = _program_rows(rows, cols, ALIGNED, ROWS)
    s_single = _single_window(x_ptr, x_row_stride, row, row_ok, cols, lead, key, base, acc_ty,
                              SINGLE, ROWS, BLOCK)
    kk = tl.arange(0, KP)[None, :]
    # 1. d_j = sum(gp_j p_j) for j = k-1 .. 0 (0-based), each from the later ones.
    ds = tl.zeros([ROWS, KP], acc_ty)
    for t in range(0, k):
        j = k - 1 - t
        d = tl.zeros([ROWS], acc_ty)
        for b in range(0, n_blocks):
            s, col, valid = _window(x_ptr, x_row_stride, row, row_ok, cols, b, lead, key, base,
                                    s_single, acc_ty, SINGLE, BLOCK)
            gy = tl.load(grad_ptr + row * grad_row_stride + col, mask=valid, other=0.0).to(acc_ty)
            ga_next, p_j, r_j = _chain(s, gy, stats_ptr, row, row_ok, k, j, ds, kk, inv, tiny)
            d += tl.sum(tl.where(valid, (gy - ga_next * r_j) * p_j, 0.0), axis=1)
        ds = _put(ds, kk, j, d)
    # 2. ga_1 = sum_i (prod_{l < i} alpha_l) beta_i; NaN for a row with no subset.
    for b in range(0, n_blocks):
        s, _, valid = _window(x_ptr, x_row_stride, row, row_ok, cols, b, lead, key, base,
                              s_single, acc_ty, SINGLE, BLOCK)
        col = _window_columns(b * BLOCK - lead, BLOCK)  # not _window's: see st_softmax._window_columns
        gy = tl.load(grad_ptr + row * grad_row_stride + col, mask=valid, other=0.0).to(acc_ty)
        ga, p_unused, r_unused = _chain(s, gy, stats_ptr, row, row_ok, k, -1, ds, kk, inv, tiny)
        m1 = tl.load(stats_ptr + row * k * 2, mask=row_ok, other=0.0)
        ga = tl.where(m1 == m1, ga, float("nan"))
        tl.store(out_ptr + row * cols + col, ga.to(out_ptr.dtype.element_ty), mask=valid)


@dataclass(frozen=True)
class Plan:
    """How a [rows, cols] problem is launched."""

    aligned: bool          # cols % 4 == 0: every row starts a Philox group
    single: bool           # a row is one window (s stays in registers)
    block: int             # columns per window
    n_blocks: int          # windows per row
    rows_per_program: int
    num_warps: int


def plan(rows: int, cols: int) -> Plan:
    """The launch plan for [rows, cols] rows (a fixed table, no autotuning)."""
    aligned = cols % 4 == 0
    width = cols if aligned else cols + 3  # columns a row's windows must cover
    padded = max(16, next_power_of_2(max(width, 1)))
    if padded > SINGLE_BLOCK_MAX:
        return Plan(aligned, False, LOOP_BLOCK, cdiv(width, LOOP_BLOCK), 1, 8)
    rows_per_program = max(1, min(ROWS_ELEMENTS // padded, MAX_ROWS, next_power_of_2(max(rows, 1))))
    num_warps = min(8, max(4, rows_per_program * padded // 256))
    return Plan(aligned, True, padded, 1, rows_per_program, num_warps)


def launch_forward(wrap: Callable, x_rows: torch.Tensor, y_rows: torch.Tensor, index: torch.Tensor,
                   stats: torch.Tensor, rng_state: torch.Tensor, k: int, seed: int | None,
                   tau: float | torch.Tensor, hard: bool) -> None:
    """Fills y_rows [rows, cols], index [rows, k], stats [rows, k, 2] and
    (explicit seed) rng_state; with seed None, rng_state holds (seed, base).
    tau: a float, or a 0-d float64 tensor on the device."""
    rows, cols = x_rows.shape
    p = plan(rows, cols)
    tau, tau_ptr, tau_in_memory = _tau_args(tau, stats)
    # At least one program, so that rng_state is written for 0 rows too.
    grid = (max(1, cdiv(rows, p.rows_per_program)),)
    wrap(_topk_forward_kernel)[grid](
        x_rows, x_rows.stride(0), y_rows, index, stats, rng_state,
        rows, cols, k, p.n_blocks, 0 if seed is None else seed, tau, tau_ptr,
        HARD=hard, SEED_IN_STATE=seed is None, ALIGNED=p.aligned, SINGLE=p.single,
        TAU_IN_MEMORY=tau_in_memory, ROWS=p.rows_per_program, BLOCK=p.block, KP=next_power_of_2(k),
        num_warps=p.num_warps, enable_fp_fusion=False)


def launch_backward(wrap: Callable, grad_rows: torch.Tensor, x_rows: torch.Tensor,
                    stats: torch.Tensor, rng_state: torch.Tensor, out_rows: torch.Tensor,
                    k: int, tau: float | torch.Tensor) -> None:
    """Fills out_rows (rows x cols elements, row-major: the kernel uses only its
    pointer) with the gradient of the logits, [rows, cols] = grad_rows' shape."""
    rows, cols = grad_rows.shape
    if rows == 0:
        return
    p = plan(rows, cols)
    tau, tau_ptr, tau_in_memory = _tau_args(tau, stats)
    wrap(_topk_backward_kernel)[(cdiv(rows, p.rows_per_program),)](
        grad_rows, grad_rows.stride(0), x_rows, x_rows.stride(0), stats, rng_state, out_rows,
        rows, cols, k, p.n_blocks, tau, tau_ptr,
        ALIGNED=p.aligned, SINGLE=p.single, TAU_IN_MEMORY=tau_in_memory, ROWS=p.rows_per_program, BLOCK=p.block,
        KP=next_power_of_2(k), num_warps=p.num_warps, enable_fp_fusion=False)
