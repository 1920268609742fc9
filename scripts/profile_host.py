"""Where the time of a small (router-sized) call goes: host time per call
against GPU time per call, for each backend (gumbel_softmax and gumbel_topk
with k=2) and for F.gumbel_softmax, then PyTorch profiler tables of some
contenders' forward and forward+backward.

At 16384 x 64 the GPU work takes microseconds and the benchmark's timings are
the host's (the H100 run measured 0.18 ms forward and 0.65-2.2 ms
forward+backward for the Triton backend against 0.011 ms and 0.18 ms for the
CUDA one); this says which calls the host spends them in.

With --device cpu (the default without a GPU) the shape defaults to 4 x 8 on
one thread (torch.set_num_threads(1)), where the kernels' work is negligible
and a call's time is the host overhead of the Python wrapper, the dispatcher
and autograd, which the CUDA backend pays too.

"triton op" times the Triton backend's registered op, which the public
functions skip in eager mode (see scripts/triton_host_time.py).

Usage: python scripts/profile_host.py [--device cuda] [--rows 16384] [--cols 64] [--reps 200]
                                      [--compiled] [--profile triton cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import fused_gumbel as fg


def per_call(fn, reps: int, cuda: bool) -> tuple[float, float]:
    """(host microseconds per call, GPU microseconds per call, NaN without
    CUDA) over reps calls issued back to back: the host time stops before the
    final synchronize."""
    for _ in range(max(5, reps // 10)):
        fn()
    if not cuda:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps * 1e6, float("nan")
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
    parser.add_argument("--device", choices=("cuda", "cpu"),
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rows", type=int, default=None, help="16384 on CUDA, 4 on the CPU")
    parser.add_argument("--cols", type=int, default=None, help="64 on CUDA, 8 on the CPU")
    parser.add_argument("--reps", type=int, default=None, help="200 on CUDA, 5000 on the CPU")
    parser.add_argument("--compiled", action="store_true",
                        help="add torch.compile(F.gumbel_softmax) (compiles first: tens of seconds)")
    parser.add_argument("--profile", nargs="*", default=["triton", "cuda"],
                        help="contenders (e.g. cuda, 'cuda top2', eager) whose calls are profiled")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("profile_host.py --device cuda needs a CUDA device")
    rows = args.rows or (16384 if cuda else 4)
    cols = args.cols or (64 if cuda else 8)
    reps = args.reps or (200 if cuda else 5000)
    if not cuda:
        torch.set_num_threads(1)

    x = torch.randn(rows, cols, device=args.device, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn_like(x)
    print(f"{rows} x {cols} bfloat16 on {args.device}, {reps} calls back to back, torch {torch.__version__}")
    print(f"{'contender':12s} {'hard':5s} {'pass':8s} {'host us/call':>13s} {'GPU us/call':>12s}")
    contenders = {}
    for hard in (False, True):
        contenders["eager", hard] = lambda t, h=hard: F.gumbel_softmax(t, 1.0, hard=h)
        if args.compiled:
            contenders["compiled", hard] = torch.compile(lambda t, h=hard: F.gumbel_softmax(t, 1.0, hard=h))
        for backend in fg.available_backends(args.device):
            if backend != "reference":
                contenders[backend, hard] = (
                    lambda t, b=backend, h=hard: fg.gumbel_softmax(t, 1.0, hard=h, backend=b))
                contenders[f"{backend} top2", hard] = (
                    lambda t, b=backend, h=hard: fg.gumbel_topk(t, 2, 1.0, hard=h, backend=b))
            if backend == "triton":
                # The registered op, which the public function skips in eager
                # mode (its Python dispatch costs host time).
                contenders["triton op", hard] = (
                    lambda t, h=hard: torch.ops.fused_gumbel.st_softmax_triton(t, 1.0, h, -1, None)[0])
    for (name, hard), f in contenders.items():
        for label, fn in (("fwd", lambda f=f: f(x.detach())),
                          ("fwd+bwd", lambda f=f: torch.autograd.grad(f(x), x, g))):
            host, gpu = per_call(fn, reps, cuda)
            print(f"{name:12s} {str(hard):5s} {label:8s} {host:13.1f} {gpu:12.1f}")

    for name, hard in contenders:
        if name not in args.profile:
            continue
        f = contenders[name, hard]
        for label, fn in (("fwd", lambda: f(x.detach())),
                          ("fwd+bwd", lambda: torch.autograd.grad(f(x), x, g))):
            for _ in range(5):
                fn()
            activities = [torch.profiler.ProfilerActivity.CPU]
            if cuda:
                torch.cuda.synchronize()
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            with torch.profiler.profile(activities=activities) as prof:
                for _ in range(20):
                    fn()
                if cuda:
                    torch.cuda.synchronize()
            # Sorted by self CPU time; on CUDA the kernels' rows give each
            # kernel's own GPU time, which the back-to-back timing above
            # cannot separate from the host's.
            print(f"\n== {name} hard={hard} {label}, 20 calls, by self CPU time")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=16,
                                            max_name_column_width=60))


if __name__ == "__main__":
    main()
