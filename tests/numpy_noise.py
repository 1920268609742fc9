"""The noise specification in NumPy, exactly as the README states it: an
independent implementation the compiled kernels are checked against bit for bit."""

import numpy as np

F32 = np.float32
# The coefficients of P in log1p(f) = f + f**2 P(f) and float32(ln 2), as exact
# float32 values.
P = [F32(float.fromhex(h)) for h in (
    "-0x1.0p-1", "0x1.555554p-2", "-0x1.000226p-2", "0x1.99a01cp-3", "-0x1.54728ap-3",
    "0x1.22d92ep-3", "-0x1.0d8242p-3", "0x1.055ec6p-3", "-0x1.38c9dep-4")]
LN2 = F32(float.fromhex("0x1.62e43p-1"))


def fma(a, b, c) -> np.ndarray:
    """float32 a * b + c rounded once, as the hardware FMA does.

    NumPy has no FMA, and rounding a * b + c to float64 and then to float32 can
    round twice the wrong way. So: the float64 product of two float32 values is
    exact; the float64 sum is rounded to odd (when inexact, the neighbour with an
    odd last bit, found from the exact error of the sum), and rounding that to
    float32 is then correct (Boldo and Melquiond, 2008: 53 >= 24 + 2 bits).
    """
    a, b, c = (np.asarray(v, dtype=F32).astype(np.float64) for v in (a, b, c))
    p = a * b
    s = p + c
    bp = s - p
    err = (p - (s - bp)) + (c - bp)  # p + c - s exactly (Knuth's TwoSum)
    bits = s.view(np.int64)
    toward = np.where((err > 0) == (s > 0), 1, -1)
    bits = np.where((err != 0) & (bits & 1 == 0), bits + toward, bits)
    return bits.view(np.float64).astype(F32)


def philox4x32_10(seed: int, counter: np.ndarray) -> np.ndarray:
    """Philox4x32-10 of the 64-bit counters `counter` (c2 = c3 = 0) under the
    64-bit key `seed`; returns [n, 4] uint32 words."""
    mask = np.uint64(0xFFFFFFFF)
    c0 = counter.astype(np.uint64) & mask
    c1 = counter.astype(np.uint64) >> np.uint64(32)
    c2 = np.zeros_like(c0)
    c3 = np.zeros_like(c0)
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64((seed >> 32) & 0xFFFFFFFF)
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c0  # exact: both factors < 2**32
        p1 = np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (
            (p1 >> np.uint64(32)) ^ c1 ^ k0,
            p1 & mask,
            (p0 >> np.uint64(32)) ^ c3 ^ k1,
            p0 & mask,
        )
        k0 = (k0 + np.uint64(0x9E3779B9)) & mask
        k1 = (k1 + np.uint64(0xBB67AE85)) & mask
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def _split(x):
    """x = 2**k * (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)): returns (k, f)."""
    ix = x.view(np.int32) - np.int32(0x3F3504F3)
    k = (ix >> 23).astype(F32)
    f = ((ix & np.int32(0x7FFFFF)) + np.int32(0x3F3504F3)).view(F32) - F32(1)
    return k, f


def _log(k, f):
    """k log 2 + log1p(f) = fma(k, LN2, fma(f * f, P(f), f)), P by Horner with FMAs."""
    p = np.full_like(f, P[8])
    for c in reversed(P[:8]):
        p = fma(p, f, c)
    return fma(k, LN2, fma(f * f, p, f))


def gumbel_from_bits(r: np.ndarray) -> np.ndarray:
    """32 random bits -> float32 Gumbel(0, 1) noise."""
    with np.errstate(all="ignore"):
        upper = (r.view(np.int32) >> 31).view(np.uint32)  # all ones when r >= 2**31
        a = fma((r ^ upper).view(np.int32).astype(F32), F32(2.0**-32), F32(2.0**-33))  # distance to 0 or 1
        w = np.where(upper != 0, F32(1) - a, a).astype(F32)
        k, f = _split(w)
        near_one = (upper != 0) & (a <= F32(0.25))
        k = np.where(near_one, F32(0), k).astype(F32)
        f = np.where(near_one, -a, f).astype(F32)
        minus_log_u = -_log(k, f)
        return -_log(*_split(minus_log_u.astype(F32)))


def gumbel_noise(n: int, seed: int, first: int = 0) -> np.ndarray:
    """The noise of flat positions first .. first + n - 1 for `seed`."""
    seed &= (1 << 64) - 1
    pos = np.arange(first, first + n, dtype=np.uint64)
    words = philox4x32_10(seed, pos >> np.uint64(2))
    return gumbel_from_bits(words[np.arange(n), (pos & np.uint64(3)).astype(np.int64)])
