"""The kernels of one forward and one forward+backward at a benchmark shape, for
Nsight Compute: warm-up outside the profiled range, then each contender once
inside torch.cuda.profiler.start()/stop(), so that

    ncu --profile-from-start off --section SpeedOfLight ... python scripts/ncu_kernels.py

reports only the kernels of the measured calls (which unit bounds them: memory,
issue slots, or stalls). Run without ncu it prints each call's time.

Usage: python scripts/ncu_kernels.py [--rows 4096] [--cols 32768] [--backends cuda triton]
"""

from __future__ import annotations

import argparse

import torch

import fused_gumbel as fg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=32768)
    parser.add_argument("--backends", nargs="+", default=["cuda", "triton"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("ncu_kernels.py needs a CUDA device")

    calls = []
    for dtype in args.dtypes:
        x = torch.randn(args.rows, args.cols, device="cuda", dtype=getattr(torch, dtype))
        xg = x.clone().requires_grad_(True)
        g = torch.randn_like(x)
        for backend in args.backends:
            for hard in (True, False):
                # An explicit seed: no generator kernel among the profiled ones.
                calls.append((f"{backend} {dtype} fwd hard={hard}",
                              lambda b=backend, h=hard, x=x: fg.gumbel_softmax(
                                  x, 0.7, hard=h, seed=1, backend=b)))
            calls.append((f"{backend} {dtype} fwd+bwd soft",
                          lambda b=backend, x=xg, g=g: torch.autograd.grad(
                              fg.gumbel_softmax(x, 0.7, seed=1, backend=b), x, g)))
    for _, fn in calls:
        fn()
    torch.cuda.synchronize()

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for name, fn in calls:
        torch.cuda.nvtx.range_push(name)
        torch.cuda.profiler.start()
        start.record()
        fn()
        end.record()
        torch.cuda.profiler.stop()
        torch.cuda.nvtx.range_pop()
        torch.cuda.synchronize()
        print(f"{name:40s} {start.elapsed_time(end):8.3f} ms", flush=True)


if __name__ == "__main__":
    main()
