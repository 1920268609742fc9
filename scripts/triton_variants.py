"""Times the Triton backend's looped kernels with and without their row cache
between the two passes (st_softmax.CACHE_BETWEEN_PASSES: the soft forward's s
and the hard backward's recomputed y_soft, kept in a float32 output or, for
16-bit ones, a float32 workspace of persistent programs; or the noise
regenerated), next to the CUDA backend, at the issue's long-row shapes in
bfloat16 (first: the undecided case) and float32, the seed drawn on the
device as in the benchmark: the measurement that decides the default. The
cache changes only the soft forward and the hard backward, the passes timed.

Usage: python scripts/triton_variants.py [--out results.json]
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch

import fused_gumbel as fg
from fused_gumbel.bench import CudaTimer, TimerConfig
from fused_gumbel.triton_kernels import st_softmax

SHAPES = ((4096, 32768), (1024, 131072))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("triton_variants.py needs a CUDA device")
    timer = CudaTimer(TimerConfig(rep_ms=60.0))
    variants = [("cuda", None), ("triton", True), ("triton", False)]
    records = []
    print(f"{'shape':>14s} {'dtype':9s} {'mode':5s} {'pass':8s} " + " ".join(
        f"{b + ('' if c is None else ' cache' if c else ' regen'):>13s}" for b, c in variants), flush=True)
    for dtype, (rows, cols) in itertools.product((torch.bfloat16, torch.float32), SHAPES):
        x = torch.randn(rows, cols, device="cuda", dtype=dtype)
        xg = x.clone().requires_grad_(True)
        g = torch.randn_like(x)
        for hard, pass_ in ((False, "fwd"), (True, "fwd+bwd")):
            cells = []
            for backend, cache in variants:
                if cache is not None:
                    st_softmax.CACHE_BETWEEN_PASSES = cache
                if pass_ == "fwd":
                    fn = lambda b=backend, h=hard: fg.gumbel_softmax(x, 0.7, hard=h, backend=b)
                else:
                    fn = lambda b=backend, h=hard: torch.autograd.grad(
                        fg.gumbel_softmax(xg, 0.7, hard=h, backend=b), xg, g)
                ms = timer(fn)["median_ms"]
                cells.append(ms)
                records.append(dict(shape=[rows, cols], dtype=str(dtype).removeprefix("torch."), hard=hard,
                                    **{"pass": pass_}, backend=backend, cache_between_passes=cache,
                                    median_ms=ms))
            st_softmax.CACHE_BETWEEN_PASSES = True
            print(f"{rows:>6d}x{cols:<7d} {str(dtype).removeprefix('torch.'):9s} {'hard' if hard else 'soft':5s} "
                  f"{pass_:8s} " + " ".join(f"{c:13.3f}" for c in cells), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, records=records), f,
                      indent=1)


if __name__ == "__main__":
    main()
