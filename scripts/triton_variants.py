"""Times the Triton backend's looped kernels in the variants that module
constants of st_softmax choose between, next to the CUDA backend, at the
issue's long-row shapes in bfloat16 (first: the undecided cases) and
float32, the seed drawn on the device as in the benchmark: the measurements
that decide the defaults.

- CACHE_BETWEEN_PASSES: the soft forward's s and the hard backward's
  recomputed y_soft kept between the two passes (in a float32 output or, for
  16-bit ones, a float32 workspace of persistent programs), or the noise
  regenerated. Timed: the soft forward, the hard forward+backward.
- FORWARD_PROGRAMS_PER_SM: the soft forward on 1 or 2 persistent
  programs per SM, s in a workspace row of each (float32 too). Timed: the
  soft forward.
- BACKWARD_PROGRAMS_PER_SM: the looped backward on one program per row
  (None) or on 1 or 2 persistent programs per SM, whose second pass may
  find the row in L2 (hard=True: its cache in a workspace row per program).
  Timed: the soft and hard forward+backward.

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
# (label, backend, the st_softmax constants it sets, the others at their
# defaults).
CACHE = [("cuda", "cuda", {}),
         ("triton cache", "triton", {"CACHE_BETWEEN_PASSES": True}),
         ("triton regen", "triton", {"CACHE_BETWEEN_PASSES": False})]
# (4 per SM is the 16-bit rows' "triton cache".)
FORWARD = [(f"triton {n}/SM", "triton", {"FORWARD_PROGRAMS_PER_SM": n}) for n in (1, 2)]
# (CUDA's soft forward+backward is in the benchmark's table of the same run;
# the hard one's, and one program per row, in the CACHE row above.)
PERSISTENT = [(f"triton {'row' if n is None else f'{n}/SM'}", "triton", {"BACKWARD_PROGRAMS_PER_SM": n})
              for n in (None, 1, 2)]
# (hard, pass, variants)
CASES = ((False, "fwd", CACHE + FORWARD), (True, "fwd+bwd", CACHE), (False, "fwd+bwd", PERSISTENT),
         (True, "fwd+bwd", PERSISTENT[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("triton_variants.py needs a CUDA device")
    timer = CudaTimer(TimerConfig(rep_ms=25.0))
    defaults = {name: getattr(st_softmax, name)
                for _, _, settings in CACHE + FORWARD + PERSISTENT for name in settings}
    records = []
    print(f"{'shape':>14s} {'dtype':9s} {'mode':5s} {'pass':8s} variants (ms, median)", flush=True)
    for dtype, (rows, cols) in itertools.product((torch.bfloat16, torch.float32), SHAPES):
        x = torch.randn(rows, cols, device="cuda", dtype=dtype)
        xg = x.clone().requires_grad_(True)
        g = torch.randn_like(x)
        for hard, pass_, variants in CASES:
            cells = []
            for label, backend, settings in variants:
                for name, value in dict(defaults, **settings).items():
                    setattr(st_softmax, name, value)
                if pass_ == "fwd":
                    fn = lambda b=backend, h=hard: fg.gumbel_softmax(x, 0.7, hard=h, backend=b)
                else:
                    fn = lambda b=backend, h=hard: torch.autograd.grad(
                        fg.gumbel_softmax(xg, 0.7, hard=h, backend=b), xg, g)
                ms = timer(fn)["median_ms"]
                cells.append(f"{label} {ms:.3f}")
                records.append(dict(shape=[rows, cols], dtype=str(dtype).removeprefix("torch."), hard=hard,
                                    **{"pass": pass_}, backend=backend, variant=label, settings=settings,
                                    median_ms=ms))
            for name, value in defaults.items():
                setattr(st_softmax, name, value)
            print(f"{rows:>6d}x{cols:<7d} {str(dtype).removeprefix('torch.'):9s} {'hard' if hard else 'soft':5s} "
                  f"{pass_:8s} " + " | ".join(cells), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, records=records), f,
                      indent=1)


if __name__ == "__main__":
    main()
