"""Integer helpers of the launch plans, in plain Python. triton.cdiv and
triton.next_power_of_2 are constexpr functions in recent Triton versions,
about 2 us per call from host code (they unwrap constexpr arguments first):
several per launch is a noticeable share of a small call's host time."""

from __future__ import annotations

import triton


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for b > 0, as triton.cdiv."""
    return (a + b - 1) // b


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n for n >= 1 (0 for n = 0), as
    triton.next_power_of_2. A symbolic size (a triton_op traced by
    torch.compile with dynamic shapes) goes to Triton's version, whose bit
    arithmetic guards on a range of n: bit_length would pin n to one value."""
    if not isinstance(n, int):
        return triton.next_power_of_2(n)
    return 1 << (n - 1).bit_length() if n > 0 else 0
