"""The Gumbel noise in Triton: an exact port of csrc/gumbel_math.h.

Every backend must produce the same float32 bits for (seed, base, position):

    counter          = base + (position >> 2)                    (64-bit, wraps)
    (w0, w1, w2, w3) = Philox4x32-10(key = (seed_lo, seed_hi),
                                     ctr = (counter_lo, counter_hi, 0, 0))
    g                = gumbel_from_bits(w[position & 3])

so one Philox call serves the four positions of a 4-aligned group, and the
bits-to-Gumbel transform uses only correctly rounded float32 +, -, *, explicit
fused multiply-adds and integer bit operations. Every kernel that calls
`gumbel_from_bits` is launched with ``enable_fp_fusion=False``, so that no
other a*b + c is contracted into an FMA. The interpreter's `tl.fma` rounds the
product and the sum separately, so under ``TRITON_INTERPRET=1`` `_fma` computes
the single rounding itself.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from triton.runtime.jit import JITFunction

from .host_ints import cdiv

# P in log1p(f) = f + f^2 P(f) and float32(ln 2), the exact float32 values of
# gumbel_math.h's log_core (float.fromhex of the same hex literals).
P0: tl.constexpr = tl.constexpr(float.fromhex("-0x1.0p-1"))
P1: tl.constexpr = tl.constexpr(float.fromhex("0x1.555554p-2"))
P2: tl.constexpr = tl.constexpr(float.fromhex("-0x1.000226p-2"))
P3: tl.constexpr = tl.constexpr(float.fromhex("0x1.99a01cp-3"))
P4: tl.constexpr = tl.constexpr(float.fromhex("-0x1.54728ap-3"))
P5: tl.constexpr = tl.constexpr(float.fromhex("0x1.22d92ep-3"))
P6: tl.constexpr = tl.constexpr(float.fromhex("-0x1.0d8242p-3"))
P7: tl.constexpr = tl.constexpr(float.fromhex("0x1.055ec6p-3"))
P8: tl.constexpr = tl.constexpr(float.fromhex("-0x1.38c9dep-4"))
LN2: tl.constexpr = tl.constexpr(float.fromhex("0x1.62e43p-1"))
TWO_POW_M33: tl.constexpr = tl.constexpr(float.fromhex("0x1.0p-33"))
TWO_POW_M32: tl.constexpr = tl.constexpr(float.fromhex("0x1.0p-32"))
SQRT_HALF_BITS: tl.constexpr = tl.constexpr(0x3F3504F3)  # bits of float32 sqrt(1/2)
MANTISSA_MASK: tl.constexpr = tl.constexpr(0x007FFFFF)


@triton.jit
def _probe():
    pass


# Whether @triton.jit gives interpreted functions (TRITON_INTERPRET set to any
# value Triton accepts), asked of Triton itself; op.interpreting() reads it.
INTERPRETED: tl.constexpr = tl.constexpr(not isinstance(_probe, JITFunction))


@triton.jit
def _fma(a, b, c):
    """float32 a * b + c rounded once (tests/numpy_noise.py's fma, in Triton);
    a, b and c are tensors of one shape (`tl.fma` does not broadcast).

    Interpreted: the float64 product is exact, the float64 sum is rounded to
    odd (from its exact TwoSum error), and its rounding to float32 is then the
    correctly rounded FMA.
    """
    if INTERPRETED:
        p = a.to(tl.float64) * b.to(tl.float64)
        c64 = c.to(tl.float64)
        s = p + c64
        bp = s - p
        err = (p - (s - bp)) + (c64 - bp)
        bits = s.to(tl.int64, bitcast=True)
        toward = tl.where((err > 0) == (s > 0), 1, -1).to(tl.int64)
        bits = tl.where((err != 0) & ((bits & 1) == 0), bits + toward, bits)
        return bits.to(tl.float64, bitcast=True).to(tl.float32)
    else:
        return tl.fma(a, b, c)


@triton.jit
def _splat(like, value):
    """A float32 tensor of `like`'s shape filled with the constant `value`."""
    return tl.full(like.shape, value, tl.float32)


@triton.jit
def _log_core(dk, f):
    """log(2^dk * (1 + f)) for f in [sqrt(1/2) - 1, sqrt(2) - 1], float32.

    log1p(f) = f + f^2 P(f), P by Horner with one FMA per coefficient, then
    + dk ln 2 in one FMA: the operations of gumbel_math.h's log_core, in order.
    """
    p = _fma(_splat(f, P8), f, _splat(f, P7))
    p = _fma(p, f, _splat(f, P6))
    p = _fma(p, f, _splat(f, P5))
    p = _fma(p, f, _splat(f, P4))
    p = _fma(p, f, _splat(f, P3))
    p = _fma(p, f, _splat(f, P2))
    p = _fma(p, f, _splat(f, P1))
    p = _fma(p, f, _splat(f, P0))
    log1p_f = _fma(f * f, p, f)
    return _fma(dk, _splat(f, LN2), log1p_f)


@triton.jit
def _split_log_argument(x):
    """x = 2^dk * m, m in [sqrt(1/2), sqrt(2)): returns (dk as float32, m - 1).

    Subtracting sqrt(1/2)'s bits moves the exponent boundary to sqrt(1/2), so
    the arithmetic shift gives k and the mantissa bits rebuilt on top of
    sqrt(1/2)'s exponent give m; m - 1 is exact (Sterbenz).
    """
    ix = x.to(tl.int32, bitcast=True) - SQRT_HALF_BITS
    dk = (ix >> 23).to(tl.float32)
    mbits = (ix & MANTISSA_MASK) + SQRT_HALF_BITS
    f = mbits.to(tl.float32, bitcast=True) - 1.0
    return dk, f


@triton.jit
def gumbel_from_bits(r):
    """32 random bits (uint32 or int32 tensor) -> Gumbel(0, 1) noise, float32.

    g = -log(-log u), u = (r + 1/2) / 2^32 strictly inside (0, 1):
      1. t = r, or ~r when u >= 1/2, so a = (t + 1/2) / 2^32 in (0, 1/2] is the
         distance of u to the nearer end (never rounded to 0 or 1).
      2. -log u: log(a) for u < 1/2, log(1 - a) for 1/2 <= u < 3/4, and
         log1p(-a) (dk = 0, f = -a in log_core) above, which carries the upper
         tail out to 33 log 2 = 22.87.
      3. g = -log(-log u), -log u being a positive normal float.
    """
    # 1. Reflect the upper half; the int32 arithmetic shift makes the mask.
    ri = r.to(tl.int32, bitcast=True)
    upper = ri >> 31
    t = ri ^ upper
    tf = t.to(tl.float32)
    a = _fma(tf, _splat(tf, TWO_POW_M32), _splat(tf, TWO_POW_M33))
    is_upper = upper != 0
    # 2. -log u.
    w = tl.where(is_upper, 1.0 - a, a)
    dk, f = _split_log_argument(w)
    near_one = is_upper & (a <= 0.25)
    dk = tl.where(near_one, 0.0, dk)
    f = tl.where(near_one, -a, f)
    minus_log_u = -_log_core(dk, f)
    # 3. g = -log(-log u).
    dk2, f2 = _split_log_argument(minus_log_u)
    return -_log_core(dk2, f2)


@triton.jit
def _mulhilo(a, M: tl.constexpr):
    """(hi, lo) 32-bit words of the product M * a (uint32 a): one 64-bit
    product, which ptxas makes one IMAD.WIDE.U32 (tl.philox's umulhi and mul
    are two IMADs: 520 -> 400 sm_90 instructions per 4 words and thread)."""
    p = a.to(tl.uint64) * M
    return (p >> 32).to(tl.uint32), p.to(tl.uint32)


@triton.jit
def philox(seed, c0, c1):
    """Philox4x32-10 of the counter (c0, c1, 0, 0) (uint32 tensors) under the
    key (seed_lo, seed_hi) of the int64 seed: tl.philox's rounds and
    constants (gumbel_math.h's philox4x32_10)."""
    seed = seed.to(tl.uint64)
    k0 = (seed & 0xFFFFFFFF).to(tl.uint32)
    k1 = (seed >> 32).to(tl.uint32)
    c2 = c0 * 0
    c3 = c0 * 0
    for _ in tl.static_range(10):
        hi0, lo0 = _mulhilo(c0, 0xD2511F53)
        hi1, lo1 = _mulhilo(c2, 0xCD9E8D57)
        c0 = hi1 ^ c1 ^ k0
        c2 = hi0 ^ c3 ^ k1
        c1 = lo1
        c3 = lo0
        k0 = tl.add(k0, 0x9E3779B9, sanitize_overflow=False)
        k1 = tl.add(k1, 0xBB67AE85, sanitize_overflow=False)
    return c0, c1, c2, c3


@triton.jit
def gumbel_window(seed, base, first_position, N_GROUPS: tl.constexpr):
    """Noise of 4 * N_GROUPS consecutive positions per row, float32.

    first_position: int64 [ROWS, 1], each a multiple of 4 (the window start).
    Returns [ROWS, 4 * N_GROUPS] where column k holds the noise of position
    first_position + k. One Philox call per 4-position group: the counters
    base + first_position / 4 + j, j < N_GROUPS, give words w0..w3 of shape
    [ROWS, N_GROUPS], and interleaving them puts word q of group j at column
    4 j + q, exactly r = w[position & 3].
    """
    j = tl.arange(0, N_GROUPS).to(tl.int64)
    counter = base + (first_position >> 2) + j[None, :]
    # 64-bit counter -> (lo, hi) words: int64 addition wraps like the uint64
    # counter, and the casts truncate to the low 32 bits.
    w0, w1, w2, w3 = philox(seed, counter.to(tl.uint32), (counter >> 32).to(tl.uint32))
    # interleave(interleave(w0, w2), interleave(w1, w3)) = [w0, w1, w2, w3, ...].
    r = tl.interleave(tl.interleave(w0, w2), tl.interleave(w1, w3))
    return gumbel_from_bits(r)


@triton.jit
def gumbel_units(seed, base, first_position, N_GROUPS: tl.constexpr):
    """Noise of the 4 * N_GROUPS positions first_position + 4 u + q as
    [N_GROUPS, 4] (u, q), float32; first_position (a scalar) is a multiple of 4.

    The shape in which each 4-position group is one row: where the row width
    is a multiple of 16 (Triton then knows the rows' addresses 16-byte
    aligned and lays out [1, 4] per thread; sm_90 TTGIR, triton 3.8) such a
    row stays in one thread, so that reductions over axis 1 need no shuffles
    (the looped forward's per-unit state); other widths spread a row over 4
    threads, whose reductions shuffle (same results, more instructions).

    join(join(w0, w2), join(w1, w3)) is [N_GROUPS, 2, 2] with word 2 i + j at
    [u, i, j]: flattened, w0..w3.
    """
    counter = base + (first_position >> 2) + tl.arange(0, N_GROUPS).to(tl.int64)
    w0, w1, w2, w3 = philox(seed, counter.to(tl.uint32), (counter >> 32).to(tl.uint32))
    r = tl.reshape(tl.join(tl.join(w0, w2), tl.join(w1, w3)), [N_GROUPS, 4])
    return gumbel_from_bits(r)


@triton.jit
def fill_noise_kernel(out_ptr, numel, rng_state_ptr, BLOCK: tl.constexpr):
    """out[p] = noise(seed, base, p) for p < numel; (seed, base) = rng_state[0:2].

    Each program fills BLOCK positions starting at a multiple of BLOCK (so of
    4), as one [1, BLOCK] window.
    """
    seed = tl.load(rng_state_ptr)
    base = tl.load(rng_state_ptr + 1)
    start = tl.program_id(0).to(tl.int64) * BLOCK
    g = gumbel_window(seed, base, tl.full((1, 1), 0, tl.int64) + start, BLOCK // 4)
    offs = start + tl.arange(0, BLOCK)[None, :]
    tl.store(out_ptr + offs, g, mask=offs < numel)


NOISE_BLOCK = 1024  # positions per program of fill_noise_kernel


def fill_gumbel_noise(out: torch.Tensor, seed: int, base: int = 0) -> None:
    """out (float32, contiguous) <- the noise of positions 0..numel-1 for
    (seed, base): the Triton twin of torch.ops.fused_gumbel.fill_gumbel_noise.

    seed and base are taken modulo 2**64. Builds the (seed, base) tensor from
    host ints, so it is meant for tests and tools, not for graph capture.
    """
    if out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError("fused_gumbel: fill_gumbel_noise needs a contiguous float32 tensor")
    if out.numel() == 0:
        return
    state = [v - 2**64 if v >= 2**63 else v for v in (seed % 2**64, base % 2**64)]
    rng_state = torch.tensor(state, dtype=torch.int64, device=out.device)
    grid = (cdiv(out.numel(), NOISE_BLOCK),)
    with torch.cuda.device(out.device) if out.device.type == "cuda" else contextlib.nullcontext():
        fill_noise_kernel[grid](out, out.numel(), rng_state, BLOCK=NOISE_BLOCK,
                                enable_fp_fusion=False)
