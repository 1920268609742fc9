"""The host time of the Triton backend's Python path, measured without a GPU.

CPU tensors, with Triton's launches stubbed out (JITFunction.run does
nothing; the backend's CUDA-device check is lifted), so a call's time is what
the checks, the allocations, the seed draw, the launch planning, autograd and,
on the op path, torch.library's Python dispatch cost. Triton's own launcher
(binding the arguments, the kernel cache lookup, the driver call) is not in
it, nor is any kernel: these are lower bounds of a GPU call's host time, for
comparing the two paths a call can take:

  eager   the public functions (what fg.gumbel_softmax(..., backend="triton")
          calls outside torch.compile): an autograd.Function launching the
          kernels directly;
  op      the registered op, torch.ops.fused_gumbel.st_softmax_triton (what
          torch.compile, make_fx and dispatch modes see).

The CPU backend (its kernels included, negligible at this size) is printed
for scale. Min and median over rounds of back-to-back calls, one thread.

Usage: python scripts/triton_host_time.py [--rows 4] [--cols 8] [--reps 2000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import torch


def stub_triton_launches() -> None:
    """Makes every Triton launch a no-op and lets the backend take CPU tensors."""
    if os.environ.get("TRITON_INTERPRET"):
        raise SystemExit("triton_host_time.py stubs the compiled launches: run it without TRITON_INTERPRET")
    import triton.runtime.jit as jit

    jit.JITFunction.run = lambda self, *args, **kwargs: None
    from fused_gumbel.triton_kernels import op, topk_op

    for module in (op, topk_op):
        module._check_device = lambda t: None


def per_call_us(fn: Callable[[], object], reps: int, rounds: int) -> tuple[float, float]:
    """(min, median) over rounds of the microseconds per call of reps calls."""
    for _ in range(max(20, reps // 10)):
        fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - t0) / reps * 1e6)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    stub_triton_launches()
    torch.set_num_threads(1)

    import fused_gumbel as fg
    from fused_gumbel import triton_kernels

    x = torch.randn(args.rows, args.cols, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn_like(x)
    st_softmax_op = torch.ops.fused_gumbel.st_softmax_triton
    topk_op = torch.ops.fused_gumbel.gumbel_topk_triton
    contenders: dict[str, Callable] = {
        "triton eager": lambda t, h: triton_kernels.st_softmax_triton(t, 1.0, h, -1, None)[0],
        "triton op": lambda t, h: st_softmax_op(t, 1.0, h, -1, None)[0],
        "triton top2 eager": lambda t, h: triton_kernels.gumbel_topk_triton(t, 2, 1.0, h, -1, None)[0],
        "triton top2 op": lambda t, h: topk_op(t, 2, 1.0, h, -1, None)[0],
    }
    if "cpu" in fg.available_backends("cpu"):
        contenders["cpu"] = lambda t, h: fg.gumbel_softmax(t, 1.0, hard=h, backend="cpu")
    for name, f in contenders.items():
        node = type(f(x, False).grad_fn).__name__
        print(f"{name}: autograd node {node}")
        if name.startswith("triton") and name.endswith("eager") != node.endswith("TritonBackward"):
            raise SystemExit(f"{name} did not take the path it is named for")
    print(f"{args.rows} x {args.cols} bfloat16 on the CPU, Triton launches stubbed, {args.rounds} rounds of "
          f"{args.reps} calls, torch {torch.__version__}")
    print(f"{'contender':18s} {'hard':5s} {'pass':8s} {'min us':>8s} {'median us':>10s}")
    for name, f in contenders.items():
        for hard in (False, True):
            for label, fn in (("fwd", lambda: f(x.detach(), hard)),
                              ("fwd+bwd", lambda: torch.autograd.grad(f(x, hard), x, g))):
                low, mid = per_call_us(fn, args.reps, args.rounds)
                print(f"{name:18s} {str(hard):5s} {label:8s} {low:8.1f} {mid:10.1f}")


if __name__ == "__main__":
    main()
