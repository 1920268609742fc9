"""Where the time of a small (router-sized) call goes on a GPU: host time per
call against GPU time per call, for each backend and for F.gumbel_softmax,
then PyTorch profiler tables of one backend's forward+backward.

At 16384 x 64 the GPU work takes microseconds and the benchmark's timings are
the host's (the H100 run measured 0.18 ms forward and 0.65-2.2 ms
forward+backward for the Triton backend against 0.011 ms and 0.18 ms for the
CUDA one); this says which calls the host spends them in.

Usage: python scripts/profile_host.py [--rows 16384] [--cols 64] [--profile triton]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import fused_gumbel as fg


def per_call(fn, reps: int) -> tuple[float, float]:
    """(host microseconds per call, GPU microseconds per call) over reps calls
    issued back to back: the host time stops before the final synchronize."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0 = time.perf_counter()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    host = (time.perf_counter() - t0) / reps * 1e6
    torch.cuda.synchronize()
    return host, start.elapsed_time(end) / reps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--cols", type=int, default=64)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--profile", default="triton", help="backend whose fwd+bwd is profiled")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("profile_host.py needs a CUDA device")

    x = torch.randn(args.rows, args.cols, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn_like(x)
    contenders = {"eager": lambda t: F.gumbel_softmax(t, 1.0, hard=True)}
    for backend in fg.available_backends("cuda"):
        if backend != "reference":
            contenders[backend] = lambda t, b=backend: fg.gumbel_softmax(t, 1.0, hard=True, backend=b)

    print(f"{args.rows} x {args.cols} bfloat16, hard=True, {args.reps} calls back to back")
    print(f"{'contender':10s} {'pass':8s} {'host us/call':>13s} {'GPU us/call':>12s}")
    for name, f in contenders.items():
        for label, fn in (("fwd", lambda f=f: f(x.detach())),
                          ("fwd+bwd", lambda f=f: torch.autograd.grad(f(x), x, g))):
            host, gpu = per_call(fn, args.reps)
            print(f"{name:10s} {label:8s} {host:13.1f} {gpu:12.1f}")

    if args.profile in contenders:
        f = contenders[args.profile]
        for label, fn in (("fwd", lambda: f(x.detach())),
                          ("fwd+bwd", lambda: torch.autograd.grad(f(x), x, g))):
            for _ in range(5):
                fn()
            torch.cuda.synchronize()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                    torch.profiler.ProfilerActivity.CUDA]) as prof:
                for _ in range(20):
                    fn()
                torch.cuda.synchronize()
            print(f"\n== {args.profile} {label}, 20 calls, by self CPU time")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20,
                                            max_name_column_width=60))


if __name__ == "__main__":
    main()
