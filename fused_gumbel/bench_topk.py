"""Benchmark of the straight-through Gumbel top-k, fused_gumbel.gumbel_topk,
against the same relaxation in plain PyTorch ops (its "reference" backend:
a full sort of each row for the subset, then k softmax steps for y_soft).

    python -m fused_gumbel.bench_topk                 # the device present
    python -m fused_gumbel.bench_topk --cases 4096x1024k8 --out bench/results/topk_cpu.json

Contenders, each x -> k-hot (hard=True, tau = 0.5), forward and forward +
backward (torch.autograd.grad of the k-hot against a random gradient):
    fused-<backend>  fg.gumbel_topk(x, k, tau, backend=<backend>), every fused backend available
    reference        fg.gumbel_topk(x, k, tau, backend="reference")

PyTorch has no top-k sampler of its own, so the reference is the peer. Timing
as fused_gumbel.bench (CPU: untimed calls, then blocked_autorange, freed memory
kept for reuse; GPU: CUDA events, L2 flushed before each call).
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Callable

import torch

from .bench import (CudaTimer, Progress, TimerConfig, device_info, keep_freed_memory, side_bench_main,
                    side_bench_parser, time_cpu, versions)
from .bench_sample import fused_contenders

CASES = {
    "cpu": [(4096, 1024, 4), (4096, 1024, 8), (16384, 64, 2), (64, 32768, 8)],
    "cuda": [(4096, 32768, 4), (16384, 64, 2), (64, 131072, 8)],
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TAU = 0.5


def parse_cases(text: str) -> list[tuple[int, int, int]]:
    """'4096x1024k8,16384x64k2' -> [(4096, 1024, 8), (16384, 64, 2)]."""
    out = []
    for item in text.split(","):
        m = re.fullmatch(r"(\d+)x(\d+)k(\d+)", item.strip().lower())
        if not m:
            raise SystemExit(f"fused_gumbel.bench_topk: a case is ROWSxCOLSkK (4096x1024k8), got {item!r}")
        out.append((int(m[1]), int(m[2]), int(m[3])))
    return out


def make_call(backend: str, x: torch.Tensor, k: int, grad: torch.Tensor, pass_: str) -> Callable[[], Any]:
    import fused_gumbel as fg

    if pass_ == "fwd":
        return lambda: fg.gumbel_topk(x, k, TAU, backend=backend)
    xg = x.detach().requires_grad_()
    return lambda: torch.autograd.grad(fg.gumbel_topk(xg, k, TAU, backend=backend), xg, grad)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = TimerConfig(min_time_s=0.05 if args.quick else 0.3, cpu_warmup_s=0.03 if args.quick else 0.25)
    timer = CudaTimer(cfg) if device == "cuda" else (lambda fn: time_cpu(fn, cfg))
    allocator = keep_freed_memory(device == "cpu" and not args.system_malloc)
    cases = parse_cases(args.cases) if args.cases else CASES[device]
    dtypes = [DTYPES[d] for d in args.dtypes.split(",")]
    contenders = fused_contenders(device) + ["reference"]
    passes = ("fwd", "fwd+bwd")
    progress = Progress(len(cases) * len(dtypes) * len(contenders) * len(passes), enabled=not args.no_progress)
    records = []
    for rows, cols, k in cases:
        for dtype in dtypes:
            x = torch.randn(rows, cols, device=device).mul_(3).to(dtype)
            grad = torch.randn(rows, cols, device=device).to(dtype)
            for pass_ in passes:
                for name in contenders:
                    progress.update(f"{rows}x{cols} k={k} {dtype} {name} {pass_}")
                    record = {"shape": [rows, cols], "k": k, "dtype": str(dtype).replace("torch.", ""),
                              "contender": name, "pass": pass_}
                    backend = name[len("fused-"):] if name.startswith("fused-") else name
                    try:
                        record.update(timer(make_call(backend, x, k, grad, pass_)), status="ok")
                    except Exception as exc:  # noqa: BLE001 - a failing contender is reported, not fatal
                        record.update(status="error", error=f"{type(exc).__name__}: {exc}"[:300])
                    records.append(record)
    progress.close()
    for r in records:
        ref = next((p for p in records if p["contender"] == "reference" and p["status"] == "ok"
                    and (p["shape"], p["k"], p["dtype"], p["pass"]) == (r["shape"], r["k"], r["dtype"], r["pass"])),
                   None)
        r["speedup_vs_reference"] = ref["median_ms"] / r["median_ms"] if ref and r["status"] == "ok" else None
    return {"device": device_info(device), "versions": versions(), "allocator": allocator, "tau": TAU,
            "timer": {"cpu_warmup_s": cfg.cpu_warmup_s, "min_time_s": cfg.min_time_s, "min_runs": cfg.min_runs},
            "records": records}


def format_table(result: dict[str, Any]) -> str:
    lines = [f"device: {result['device']['name']}; tau {result['tau']}; hard=True",
             f"{'case':>16} {'dtype':>8} {'pass':>8} {'contender':>13} {'median ms':>10} {'vs reference':>12}"]
    for r in result["records"]:
        case = f"{r['shape'][0]}x{r['shape'][1]} k={r['k']}"
        head = f"{case:>16} {r['dtype']:>8} {r['pass']:>8} {r['contender']:>13}"
        if r["status"] != "ok":
            lines.append(f"{head}  {r['error']}")
            continue
        ratio = "-" if r["speedup_vs_reference"] is None else f"{r['speedup_vs_reference']:.2f}"
        lines.append(f"{head} {r['median_ms']:>10.3f} {ratio:>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Console entry point (fused-gumbel-bench-topk). Returns the exit status."""
    p = side_bench_parser("fused_gumbel.bench_topk", __doc__, DTYPES, "fp32")
    p.add_argument("--cases", default=None, help="comma list of ROWSxCOLSkK (default: per device)")
    return side_bench_main(p, run, format_table, argv)


if __name__ == "__main__":
    sys.exit(main())
