"""Benchmark of the forward-only sampler, fused_gumbel.sample, against what
PyTorch users write to draw one class per row of softmax(logits / T).

    python -m fused_gumbel.bench_sample                   # the device present
    python -m fused_gumbel.bench_sample --shapes 64x128256 --dtypes bf16 --out bench/results/sample_cuda.json

Contenders, each x -> int64 index per row:
    fused-<backend>  fg.sample(x, T, backend=<backend>), every backend available
    eager            F.gumbel_softmax(x / T, hard=True).argmax(-1) (PyTorch's, under fg.patch too)
    compiled         torch.compile of eager (fullgraph, a fresh compile per case)
    multinomial      torch.multinomial(torch.softmax(x.float() / T, -1), 1)

The limit: a sampler must read the logits once and write one int64 per row;
those bytes over the median time, as a fraction of the device's copy
bandwidth (dst.copy_(src), read + written bytes / time) measured in the same
run. Timing as fused_gumbel.bench (CPU: blocked_autorange; GPU: CUDA events,
L2 flushed before each call).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Callable

import torch

from .bench import (CudaTimer, Progress, TimerConfig, _set_compile_limits, copy_bandwidth, device_info,
                    keep_freed_memory, side_bench_main, side_bench_parser, time_cpu, versions)
from .patching import torch_gumbel_softmax

SHAPES = {
    "cuda": [(64, 128256), (1, 128256), (256, 32000), (4096, 64)],
    "cpu": [(64, 32000), (8, 128256), (4096, 64)],
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PEERS = ("eager", "compiled")
TEMPERATURE = 0.7


def make_contender(name: str, temperature: float) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "eager":
        return lambda x: torch_gumbel_softmax(x / temperature, hard=True).argmax(-1)
    if name == "compiled":
        torch._dynamo.reset()

        def peer(x: torch.Tensor) -> torch.Tensor:
            return torch_gumbel_softmax(x / temperature, hard=True).argmax(-1)

        return torch.compile(peer, dynamic=False, fullgraph=True)
    if name == "multinomial":
        return lambda x: torch.multinomial(torch.softmax(x.float() / temperature, -1), 1)
    if name.startswith("fused-"):
        import fused_gumbel as fg

        backend = name[len("fused-"):]
        return lambda x: fg.sample(x, temperature, backend=backend)
    raise ValueError(f"unknown contender {name!r}")


def fused_contenders(device: str) -> list[str]:
    from .ops import backend_status

    names = ["cuda", "triton"] if device == "cuda" else ["cpu"]
    return [f"fused-{b}" for b in names if backend_status(b, device)[0]]


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """--shapes: a comma list of ROWSxCOLS (an argparse type)."""
    out = []
    for item in text.split(","):
        try:
            rows, cols = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not ROWSxCOLS") from None
        if rows < 1 or cols < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: rows and columns must be at least 1")
        out.append((rows, cols))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = TimerConfig(min_time_s=0.05 if args.quick else 0.3, cpu_warmup_s=0.03 if args.quick else 0.25)
    timer = CudaTimer(cfg) if device == "cuda" else (lambda fn: time_cpu(fn, cfg))
    allocator = keep_freed_memory(device == "cpu" and not args.system_malloc)
    _set_compile_limits()
    shapes = args.shapes or SHAPES[device]
    dtypes = [DTYPES[d] for d in args.dtypes.split(",")]
    contenders = fused_contenders(device) + ["eager", "compiled", "multinomial"]
    progress = Progress(len(shapes) * len(dtypes) * len(contenders), enabled=not args.no_progress)
    copy = copy_bandwidth(device, timer, 64 if device == "cpu" else 1024)
    records = []
    for rows, cols in shapes:
        for dtype in dtypes:
            x = torch.randn(rows, cols, device=device).mul_(3).to(dtype)
            min_bytes = x.nbytes + rows * 8
            for name in contenders:
                progress.update(f"{rows}x{cols} {dtype} {name}")
                record = {"shape": [rows, cols], "dtype": str(dtype).replace("torch.", ""), "contender": name,
                          "min_bytes": min_bytes}
                try:
                    fn = make_contender(name, TEMPERATURE)
                    record.update(timer(lambda: fn(x)), status="ok")
                except Exception as exc:  # noqa: BLE001 - a failing contender is reported, not fatal
                    record.update(status="error", error=f"{type(exc).__name__}: {exc}"[:300])
                records.append(record)
    progress.close()
    for r in records:
        peers = {p["contender"]: p for p in records
                 if p["shape"] == r["shape"] and p["dtype"] == r["dtype"] and p["status"] == "ok"}
        ok = r["status"] == "ok"
        for peer in PEERS + ("multinomial",):
            p = peers.get(peer)
            r[f"speedup_vs_{peer}"] = p["median_ms"] / r["median_ms"] if ok and p else None
        r["gbps"] = r["min_bytes"] / (r["median_ms"] * 1e-3) / 1e9 if ok else None
        r["fraction_of_limit"] = r["gbps"] / copy["gbps"] if ok else None
    return {"device": device_info(device), "versions": versions(), "allocator": allocator,
            "copy_bandwidth": copy, "temperature": TEMPERATURE, "records": records}


def format_table(result: dict[str, Any]) -> str:
    def f(v: float | None, spec: str) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    lines = [f"device: {result['device']['name']}; copy bandwidth {result['copy_bandwidth']['gbps']:.1f} GB/s; "
             f"temperature {result['temperature']}",
             f"{'shape':>12} {'dtype':>8} {'contender':>13} {'median ms':>10} {'vs eager':>9} "
             f"{'vs compiled':>11} {'vs multinom.':>12} {'% of limit':>10}"]
    for r in result["records"]:
        shape = "x".join(map(str, r["shape"]))
        if r["status"] != "ok":
            lines.append(f"{shape:>12} {r['dtype']:>8} {r['contender']:>13}  {r['error']}")
            continue
        pct = None if r["fraction_of_limit"] is None else 100 * r["fraction_of_limit"]
        lines.append(f"{shape:>12} {r['dtype']:>8} {r['contender']:>13} {f(r['median_ms'], '.4f'):>10} "
                     f"{f(r['speedup_vs_eager'], '.2f'):>9} {f(r['speedup_vs_compiled'], '.2f'):>11} "
                     f"{f(r['speedup_vs_multinomial'], '.2f'):>12} {f(pct, '.1f'):>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Console entry point (fused-gumbel-bench-sample). Returns the exit status."""
    p = side_bench_parser("fused_gumbel.bench_sample", __doc__, DTYPES, "bf16,fp32")
    p.add_argument("--shapes", default=None, type=parse_shapes, help="comma list of ROWSxCOLS (default: per device)")
    return side_bench_main(p, run, format_table, argv)


if __name__ == "__main__":
    sys.exit(main())
