"""Benchmark of fused_gumbel against torch.nn.functional.gumbel_softmax.

    python -m fused_gumbel.bench                      # the device present, its default suite
    python -m fused_gumbel.bench --quick              # a small subset (under a minute on CPU)
    python -m fused_gumbel.bench --suite all --device cuda --out bench/results/bench_cuda.json
    python -m fused_gumbel.bench --shapes 4096x1024,8x8192x64x64@1 --dtypes bf16 --modes hard
    python -m fused_gumbel.bench --markdown bench/results/bench_cuda.json   # README table
    python -m fused_gumbel.bench --plot-from bench/results/bench_cuda.json  # PNG plots again

Contenders (all called the same way, y = f(x) with x of the case's shape):
    fused-<backend>  fg.gumbel_softmax(x, tau, hard, dim=dim, backend=<backend>)
                     for every backend available for the device (cpu; cuda and triton on
                     a GPU; the plain-PyTorch reference too unless --no-reference)
    eager            F.gumbel_softmax(x, tau, hard, dim=dim)
    compiled         torch.compile(F.gumbel_softmax, dynamic=False, fullgraph=True),
                     a fresh compile (after torch._dynamo.reset()) for every
                     (shape, dtype, hard) case, warmed up before it is timed.

Passes (x always requires grad, as in training):
    fwd       y = f(x)
    fwd+bwd   y = f(x); torch.autograd.grad(y, x, grad)   (no .grad accumulation timed)

Steps:
    1. Copy bandwidth of the device: dst.copy_(src) of a large tensor,
       (bytes read + bytes written) / median time.
    2. For every case, every contender, every pass: median time and spread
       (CPU: torch.utils.benchmark.Timer.blocked_autorange, median and IQR of its
       blocks; GPU: CUDA events around each call, L2 flushed before each call by
       zeroing a 256 MiB buffer as triton.testing.do_bench does, median and IQR).
    3. The limit: the fewest bytes a pass must move (see LIMIT_MODEL), divided by
       the time, as a fraction of the copy bandwidth measured in the same run.
    4. Memory of fwd+bwd: the bytes autograd saves (saved_tensors_hooks, unique
       storages) and, on a GPU, the peak of torch.cuda.max_memory_allocated above
       what was allocated before the call.
    5. Speed-ups against eager and compiled, from the figures of the same run.
    6. A table on stdout, JSON (written after every case, so an interrupted run
       keeps what it measured) and PNG plots next to the JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import torch

# PyTorch's own function even while fused_gumbel.patch() is active.
from .patching import torch_gumbel_softmax

SCHEMA = "fused_gumbel.bench/1"

PASSES = ("fwd", "fwd+bwd")
PEERS = ("eager", "compiled")

# What each pass must move at least, in elements of the logits' dtype (N = numel).
# The int64 index, the per-row statistics (8 bytes a row) and the RNG state are
# not counted: they are O(rows), not O(N).
LIMIT_MODEL = {
    "fwd": "read logits once + write y once = 2 * N * itemsize",
    "fwd+bwd": "forward (2 * N * itemsize) + backward: read grad_y, read what was saved "
               "(the soft sample or the logits), write grad_logits (3 * N * itemsize) "
               "= 5 * N * itemsize",
    "not_counted": "the int64 argmax index, per-row statistics and the RNG state (O(rows))",
    "fraction_of_limit": "(min_bytes / median time) / copy bandwidth of the same run",
}
LIMIT_FACTOR = {"fwd": 2, "fwd+bwd": 5}

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp64": torch.float64, "float64": torch.float64,
}

# ---------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------

# (name, shape, dim). The "issue" group differs by device: the CPU set of the
# issue/paper, and rows long enough to fill a GPU.
GROUPS: dict[str, list[tuple[str, tuple[int, ...], int]]] = {
    "issue-cpu": [
        ("4096x1024", (4096, 1024), -1),
        ("512x32768", (512, 32768), -1),
        ("32x262144", (32, 262144), -1),
    ],
    "issue-cuda": [
        ("4096x32768", (4096, 32768), -1),
        ("1024x131072", (1024, 131072), -1),
        ("router 16384x64", (16384, 64), -1),
    ],
    "moe": [
        ("router 16384x8", (16384, 8), -1),
        ("router 16384x64", (16384, 64), -1),
        ("router 16384x256", (16384, 256), -1),
    ],
    "vq": [
        ("wav2vec2 32768x320", (32768, 320), -1),
        ("dVAE 8x8192x64x64 dim=1", (8, 8192, 64, 64), 1),
    ],
    "lm": [
        ("llama2 4096x32000", (4096, 32000), -1),
        ("llama3 1024x128256", (1024, 128256), -1),
        ("gemma3 64x262144", (64, 262144), -1),
    ],
}
SUITES = ("default", "issue", "moe", "vq", "lm", "all")
# On a CPU, cases are scaled down (leading dims halved) to at most this many
# elements unless --no-scale: eager F.gumbel_softmax costs ~20-35 ns/element
# fwd+bwd on a small CPU. The issue's CPU set (512x32768 = 2**24) is not touched.
CPU_MAX_ELEMENTS = 2 ** 24
QUICK_MAX_ELEMENTS = 2 ** 18


@dataclass
class Case:
    name: str
    group: str
    shape: tuple[int, ...]
    dim: int
    scaled_from: tuple[int, ...] | None = None
    groups: list[str] = field(default_factory=list)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def cols(self) -> int:
        return self.shape[self.dim]

    @property
    def rows(self) -> int:
        return self.numel // max(self.cols, 1)

    @property
    def label(self) -> str:
        dims = "x".join(map(str, self.shape))
        at = "" if self.dim in (-1, len(self.shape) - 1) else f"@{self.dim}"
        return f"{dims}{at}"


def parse_shapes(text: str) -> list[Case]:
    """'4096x1024,8x8192x64x64@1' -> cases of the group 'custom' (@d: the dim)."""
    cases = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        spec, _, dim_text = item.partition("@")
        try:
            shape = tuple(int(d) for d in spec.lower().split("x"))
            dim = int(dim_text) if dim_text else -1
        except ValueError:
            raise SystemExit(f"fused_gumbel.bench: bad shape {item!r}; write e.g. 4096x1024 or 8x8192x64x64@1")
        if not shape or any(d <= 0 for d in shape) or not -len(shape) <= dim < len(shape):
            raise SystemExit(f"fused_gumbel.bench: bad shape {item!r} (sizes > 0, dim in range)")
        cases.append(Case(item, "custom", shape, dim, groups=["custom"]))
    return cases


def scale_down(shape: tuple[int, ...], dim: int, max_elements: int) -> tuple[int, ...]:
    """Halves the largest dim other than `dim` until the shape has at most
    max_elements elements (rows shrink, the row length never does)."""
    shape = list(shape)
    dim = dim % len(shape)
    while math.prod(shape) > max_elements:
        others = [i for i in range(len(shape)) if i != dim and shape[i] > 1]
        if not others:
            break
        i = max(others, key=lambda k: shape[k])
        shape[i] = max(1, shape[i] // 2)
    return tuple(shape)


def suite_cases(suite: str, device: str, max_elements: int | None) -> list[Case]:
    """The named cases of a suite, deduplicated (a shape in two groups runs once,
    listed under both), scaled down to max_elements when given."""
    issue = "issue-cuda" if device == "cuda" else "issue-cpu"
    if suite == "default":
        names = [issue] if device == "cpu" else [issue, "moe", "lm", "vq"]
    elif suite == "issue":
        names = [issue]
    elif suite == "all":
        names = [issue, "moe", "lm", "vq"]
    else:
        names = [suite]
    cases: dict[tuple, Case] = {}
    for group in names:
        short = "issue" if group.startswith("issue") else group
        for name, shape, dim in GROUPS[group]:
            key = (shape, dim % len(shape))
            if key in cases:
                cases[key].groups.append(short)
                continue
            scaled = scale_down(shape, dim, max_elements) if max_elements else shape
            cases[key] = Case(name, short, scaled, dim, shape if scaled != shape else None, [short])
    return list(cases.values())


# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_noise_isa() -> str | None:
    """The instruction set of the CPU noise kernel ("avx512", "avx2" or
    "scalar"): AVX-512 where PyTorch's own CPU capability is AVX512."""
    try:
        return torch.ops.fused_gumbel.cpu_noise_isa()
    except (AttributeError, RuntimeError):  # the extension is not built
        return None


def device_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device, "threads": torch.get_num_threads(),
                            "cpu": cpu_name(), "logical_cpus": os.cpu_count(),
                            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                            "noise_isa": cpu_noise_isa()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info.update(name=torch.cuda.get_device_name(), capability=list(torch.cuda.get_device_capability()),
                    memory_bytes=props.total_memory, sm_count=props.multi_processor_count)
    else:
        info["name"] = info["cpu"]
    return info


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "triton": None, "fused_gumbel": None, "git": None}
    try:
        import triton

        out["triton"] = triton.__version__
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        pass
    try:
        import fused_gumbel

        out["fused_gumbel"] = fused_gumbel.__version__
    except Exception:  # noqa: BLE001
        pass
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        commit = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip()
        # "-dirty" when tracked files differ from the commit (a result of local
        # changes is not the commit's), results files aside: a rerun rewrites them.
        dirty = subprocess.run(["git", "-C", here, "diff", "--quiet", "HEAD", "--", ":(top)",
                                ":(top,exclude)bench/results"], capture_output=True, timeout=5).returncode == 1
        out["git"] = (commit + ("-dirty" if dirty else "")) or None
    except Exception:  # noqa: BLE001
        pass
    return out


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


def _quantiles(times_ms: list[float]) -> dict[str, float]:
    xs = sorted(times_ms)

    def q(p: float) -> float:  # linear interpolation, as numpy.percentile
        k = (len(xs) - 1) * p
        lo, hi = math.floor(k), math.ceil(k)
        return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

    q25, med, q75 = q(0.25), q(0.5), q(0.75)
    return {"median_ms": med, "q25_ms": q25, "q75_ms": q75, "iqr_ms": q75 - q25, "min_ms": xs[0],
            "spread_pct": 100.0 * (q75 - q25) / med if med > 0 else 0.0, "runs": len(xs)}


@dataclass
class TimerConfig:
    min_time_s: float = 0.3  # CPU: blocked_autorange's min_run_time (at least)
    min_runs: int = 5  # CPU and GPU: at least this many timed blocks / calls
    warmup_ms: float = 25.0  # GPU, as do_bench
    cpu_warmup_s: float = 0.25  # CPU: untimed calls first, at least this long
    rep_ms: float = 100.0  # GPU, as do_bench
    max_runs: int = 1000  # GPU


def keep_freed_memory(enabled: bool = True) -> dict[str, Any]:
    """CPU runs: keep freed blocks in the C heap for reuse instead of returning
    them to the kernel (glibc mallopt: M_MMAP_THRESHOLD and M_TRIM_THRESHOLD
    1 GiB), the effect that jemalloc or tcmalloc give and Intel's PyTorch CPU
    tuning guide recommends. Otherwise every call of every contender pays for
    faulting in fresh pages for its outputs and temporaries, which costs more
    than some kernels (about 1 us per 4 KiB page in the VM this was developed
    on) and varies from call to call. Applies to all contenders alike; returns
    what was set, for the JSON."""
    if not enabled:
        return {"method": "system default"}
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold, limit = -1, -3, 1 << 30
        if libc.mallopt(m_mmap_threshold, limit) != 1 or libc.mallopt(m_trim_threshold, limit) != 1:
            return {"method": "system default (mallopt refused)"}
    except (OSError, AttributeError):
        return {"method": "system default (no glibc)"}
    return {"method": "glibc mallopt", "M_MMAP_THRESHOLD": limit, "M_TRIM_THRESHOLD": limit}


def side_bench_parser(prog: str, doc: str, dtype_names: Iterable[str], default_dtypes: str
                      ) -> argparse.ArgumentParser:
    """The options that fused_gumbel.bench_sample and bench_topk share; each
    adds its own case option. prog: the module, as the usage line names it."""
    p = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if present")
    p.add_argument("--dtypes", default=default_dtypes, type=_names_from(dtype_names),
                   help="comma list of " + ",".join(dtype_names))
    p.add_argument("--quick", action="store_true", help="shorter timing (a smoke run)")
    p.add_argument("--system-malloc", action="store_true",
                   help="CPU: leave the C allocator as it is (see fused_gumbel.bench --help)")
    p.add_argument("--out", default=None, help="write the results as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    return p


def _names_from(known: Iterable[str]) -> Callable[[str], str]:
    """An argparse type: a comma list of names from `known`."""
    known = list(known)

    def parse(text: str) -> str:
        unknown = [n for n in _csv(text) if n not in known]
        if unknown or not _csv(text):
            raise argparse.ArgumentTypeError(f"{', '.join(unknown) or 'nothing'} not in {', '.join(known)}")
        return text
    return parse


def side_bench_main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], dict[str, Any]],
                    table: Callable[[dict[str, Any]], str], argv: list[str] | None) -> int:
    """Parses argv, runs, prints the table and writes the JSON (--out), which
    records when and with what arguments it ran."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    created = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    result = {"created": created, "argv": argv, **run(args)}
    print(table(result))
    if args.out:
        _write_json(result, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def time_cpu(fn: Callable[[], Any], cfg: TimerConfig) -> dict[str, Any]:
    """torch.utils.benchmark.Timer.blocked_autorange, run long enough for at
    least cfg.min_runs blocks; median and IQR over the blocks (ms per call)."""
    from torch.utils.benchmark import Timer

    # Warm up for a while, not for one call: the first calls that allocate a
    # large output fault in fresh pages until the C allocator starts reusing
    # freed blocks (in this VM, 27 ms against a steady 9 ms at 32 x 262144).
    start = time.perf_counter()
    calls = 0
    while calls < 3 or time.perf_counter() - start < cfg.cpu_warmup_s:
        t0 = time.perf_counter()
        fn()
        estimate = time.perf_counter() - t0
        calls += 1
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    times: list[float] = []
    for _ in range(4):  # a slow first block can leave fewer than min_runs blocks: measure more
        m = timer.blocked_autorange(min_run_time=max(cfg.min_time_s, (cfg.min_runs - len(times)) * estimate * 1.05))
        times += m.times
        if len(times) >= cfg.min_runs:
            break
    out = _quantiles([t * 1e3 for t in times])
    out["number_per_run"] = m.number_per_run
    return out


class CudaTimer:
    """CUDA events around each call; before each call the L2 cache is flushed by
    zeroing a 256 MiB buffer (triton.testing.do_bench's procedure), with at least
    min_runs and at most max_runs calls filling about rep_ms."""

    def __init__(self, cfg: TimerConfig):
        self.cfg = cfg
        self.flush = torch.empty(256 * 2 ** 20, dtype=torch.int8, device="cuda")

    def __call__(self, fn: Callable[[], Any]) -> dict[str, Any]:
        cfg = self.cfg
        fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(3):
            self.flush.zero_()
            fn()
        end.record()
        torch.cuda.synchronize()
        estimate = max(start.elapsed_time(end) / 3, 1e-3)
        for _ in range(max(1, min(int(cfg.warmup_ms / estimate), cfg.max_runs))):
            fn()
        n = max(cfg.min_runs, min(int(cfg.rep_ms / estimate), cfg.max_runs))
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for i in range(n):
            self.flush.zero_()
            starts[i].record()
            fn()
            ends[i].record()
        torch.cuda.synchronize()
        out = _quantiles([s.elapsed_time(e) for s, e in zip(starts, ends)])
        out["number_per_run"] = 1
        return out


def copy_bandwidth(device: str, timer: Callable, mib: int) -> dict[str, Any]:
    """dst.copy_(src) of a `mib` MiB float32 tensor: (read + written bytes) / time."""
    n = mib * 2 ** 20 // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    t = timer(lambda: dst.copy_(src))
    nbytes = 2 * src.nbytes
    return {"method": "dst.copy_(src), float32", "tensor_bytes": src.nbytes, "bytes_moved": nbytes,
            "median_ms": t["median_ms"], "iqr_ms": t["iqr_ms"], "runs": t["runs"],
            "gbps": nbytes / (t["median_ms"] * 1e-3) / 1e9}


# ---------------------------------------------------------------------------
# Contenders
# ---------------------------------------------------------------------------


def _set_compile_limits() -> None:
    """A fresh compile per case already avoids recompiles; raise the limits too,
    so a run can never silently fall back to eager."""
    cfg = torch._dynamo.config
    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                 "accumulated_recompile_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 1024))


def make_contender(name: str, tau: float, hard: bool, dim: int) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "eager":
        return lambda x: torch_gumbel_softmax(x, tau=tau, hard=hard, dim=dim)
    if name == "compiled":
        torch._dynamo.reset()  # every case compiles afresh (no cache entries pile up)

        def peer(x: torch.Tensor) -> torch.Tensor:
            return torch_gumbel_softmax(x, tau=tau, hard=hard, dim=dim)

        return torch.compile(peer, dynamic=False, fullgraph=True)
    if name.startswith("fused-"):
        import fused_gumbel as fg

        backend = name[len("fused-"):]
        return lambda x: fg.gumbel_softmax(x, tau, hard, dim=dim, backend=backend)
    raise ValueError(f"unknown contender {name!r}")


def fused_backends(device: str, requested: list[str] | None, reference: bool) -> tuple[list[str], dict[str, str]]:
    """The fused backends to run and, for the ones left out, why."""
    from fused_gumbel.ops import backend_status

    names = requested or ["cpu", "cuda", "triton"]
    if reference and "reference" not in names:
        names = names + ["reference"]
    run, skipped = [], {}
    for b in names:
        ok, why = backend_status(b, device)
        if ok and b == "triton" and device == "cpu" and not requested:
            ok, why = False, "the Triton interpreter on a CPU is not a contender (name it with --backends)"
        if ok:
            run.append(b)
        elif requested or b != "cpu" or device == "cpu":
            skipped[f"fused-{b}"] = why
    return run, skipped


class SavedBytes:
    """saved_tensors_hooks: the bytes of the unique storages autograd saves."""

    def __init__(self) -> None:
        self.storages: dict[tuple[int, str], int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        self.storages[(s.data_ptr(), str(t.device))] = s.nbytes()
        return t

    @property
    def nbytes(self) -> int:
        return sum(self.storages.values())


def measure_memory(fn: Callable, x: torch.Tensor, grad: torch.Tensor, device: str) -> dict[str, Any]:
    """One fwd+bwd: bytes saved for backward (saved_extra_bytes: leaving out the
    logits and the output, which the caller holds anyway); on CUDA also the peak
    allocated above the allocation before the call (it includes y and grad_logits)."""
    saved = SavedBytes()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        y = fn(x)
    held = {(t.untyped_storage().data_ptr(), str(t.device)) for t in (x, y)}
    (gx,) = torch.autograd.grad(y, x, grad)
    out: dict[str, Any] = {"saved_bytes": saved.nbytes, "saved_tensors": len(saved.storages),
                           "saved_extra_bytes": sum(n for k, n in saved.storages.items() if k not in held)}
    if device == "cuda":
        torch.cuda.synchronize()
        out["peak_bytes"] = torch.cuda.max_memory_allocated() - base
        out["mem_bytes"], out["mem_method"] = out["peak_bytes"], "torch.cuda.max_memory_allocated above baseline"
    else:
        out["mem_bytes"], out["mem_method"] = out["saved_bytes"], "saved_tensors_hooks (unique storages)"
    del y, gx
    return out


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


class Progress:
    """tqdm when installed, else one line on stderr (rewritten on a terminal)."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.n, self.enabled, self.t0 = total, 0, enabled, time.time()
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, file=sys.stderr, dynamic_ncols=True, leave=True)
            except ImportError:
                pass
        self.tty = sys.stderr.isatty()

    def start(self, desc: str) -> None:
        """Names the item now running (a compile can take a minute), before
        update counts it done."""
        if self.enabled and self.bar is not None:
            self.bar.set_description_str(desc[:60])

    def update(self, desc: str, step: int = 1) -> None:
        self.n += step
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description_str(desc[:60], refresh=False)
            self.bar.update(step)
            return
        line = f"[{self.n}/{self.total} {time.time() - self.t0:5.0f}s] {desc}"
        if self.tty:
            sys.stderr.write("\r" + line[:120].ljust(120))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def note(self, text: str) -> None:
        if self.enabled:
            if self.bar is not None:
                self.bar.write(text, file=sys.stderr)
            else:
                sys.stderr.write(("\n" if self.tty else "") + text + "\n")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.tty:
            sys.stderr.write("\n")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _write_json(result: dict[str, Any], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)


def _add_ratios(records: list[dict[str, Any]], copy_gbps: float) -> None:
    """Speed-ups against the peers and fraction of the limit, from this run's figures."""
    by_pass: dict[str, dict[str, dict]] = {}
    for r in records:
        if r["status"] == "ok":
            by_pass.setdefault(r["pass"], {})[r["contender"]] = r
    for r in records:
        for peer in PEERS:
            r[f"speedup_vs_{peer}"] = None
        r["gbps"] = r["fraction_of_limit"] = None
        if r["status"] != "ok":
            continue
        for peer in PEERS:
            p = by_pass.get(r["pass"], {}).get(peer)
            if p is not None:
                r[f"speedup_vs_{peer}"] = p["median_ms"] / r["median_ms"]
        r["gbps"] = r["min_bytes"] / (r["median_ms"] * 1e-3) / 1e9
        r["fraction_of_limit"] = r["gbps"] / copy_gbps if copy_gbps else None


def run_case(case: Case, dtype: torch.dtype, hard: bool, contenders: list[str], passes: list[str],
             device: str, tau: float, timer: Callable, progress: Progress, copy_gbps: float) -> list[dict[str, Any]]:
    """Every contender and pass of one (shape, dtype, hard) case."""
    torch.manual_seed(0)
    x = torch.randn(case.shape, dtype=dtype, device=device).requires_grad_(True)
    grad = torch.randn(case.shape, dtype=dtype, device=device)
    itemsize = x.element_size()
    mode = "hard" if hard else "soft"
    base = {"case": case.label, "name": case.name, "group": case.group, "groups": case.groups,
            "shape": list(case.shape), "dim": case.dim, "rows": case.rows, "cols": case.cols,
            "numel": case.numel, "scaled_from": list(case.scaled_from) if case.scaled_from else None,
            "dtype": _dtype_name(dtype), "hard": hard, "mode": mode, "tau": tau}
    records = []
    t_case = time.perf_counter()
    for name in contenders:
        progress.start(f"{case.label} {_dtype_name(dtype)} {mode} {name}"
                       + (" (compiling)" if name == "compiled" else ""))
        fields: dict[str, Any] = {}
        try:
            fn = make_contender(name, tau, hard, case.dim)
            if name == "compiled":
                from torch._dynamo.utils import counters

                graphs0 = counters["stats"]["unique_graphs"]
                t0 = time.perf_counter()
                for _ in range(2):  # compile the forward, then the backward
                    torch.autograd.grad(fn(x), x, grad)
                if device == "cuda":
                    torch.cuda.synchronize()
                fields["compile_s"] = time.perf_counter() - t0
                fields["graphs"] = counters["stats"]["unique_graphs"] - graphs0
                if fields["graphs"] < 1:
                    raise RuntimeError("torch.compile produced no graph (it would run eagerly)")
            error = None
        except Exception as exc:  # noqa: BLE001 - a broken contender must not end the run
            error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        for pass_ in passes:
            rec = dict(base, contender=name, kind="peer" if name in PEERS else "fused", **{"pass": pass_},
                       min_bytes=LIMIT_FACTOR[pass_] * case.numel * itemsize, **fields)
            if error is None:
                try:
                    if pass_ == "fwd":
                        rec.update(timer(lambda: fn(x)))
                    else:
                        rec.update(timer(lambda: torch.autograd.grad(fn(x), x, grad)))
                    rec["status"] = "ok"
                except Exception as exc:  # noqa: BLE001
                    rec["status"] = "error: " + f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                    if device == "cuda":
                        torch.cuda.empty_cache()
            else:
                rec["status"] = "error: " + error
            records.append(rec)
            progress.update(f"{case.label} {_dtype_name(dtype)} {mode} {pass_} {name}")
        mem: dict[str, Any] = {}
        if error is None:
            try:
                mem = measure_memory(fn, x, grad, device)
            except Exception as exc:  # noqa: BLE001
                mem = {"mem_error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
        for rec in records[-len(passes):]:
            rec.update({"mem_bytes": None, "mem_method": None, "saved_bytes": None, "saved_extra_bytes": None,
                        "peak_bytes": None}, **mem)
        fn = None
        if device == "cuda":
            torch.cuda.empty_cache()
    _add_ratios(records, copy_gbps)
    for rec in records:
        rec["case_wall_s"] = time.perf_counter() - t_case
    return records


def _load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _running_elsewhere(reads: int = 5, interval_s: float = 0.1) -> float | None:
    """Tasks running besides this process now: the median of a few reads of
    /proc/loadavg's running count, less this process (Linux; else None). The
    load average would also count work that ended a minute ago."""
    counts = []
    try:
        for _ in range(reads):
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
            time.sleep(interval_s)
    except (OSError, ValueError, IndexError):
        return None
    return float(sorted(counts)[len(counts) // 2])


def _busy_note(others: float | None, threads: int) -> str | None:
    """A note when other work holds cores the benchmark's threads need (its
    timings then include waiting for them), else None. others: tasks
    running besides the benchmark (_running_elsewhere)."""
    cpus = os.cpu_count() or 1
    if others is None or others <= cpus - threads:
        return None
    return (f"the machine was busy: {others:g} other tasks running at the start, {cpus} logical CPUs, "
            f"{threads} threads for the benchmark; they shared the cores, so times may be inflated "
            f"(stop them, or pass --threads {max(1, cpus - math.ceil(others))})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fused_gumbel.bench",
        description="Benchmark fused_gumbel against F.gumbel_softmax eager and torch.compile'd.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Suites: issue (CPU: 4096x1024, 512x32768, 32x262144; CUDA: 4096x32768, 1024x131072, "
               "16384x64), moe (16384 x 8/64/256), vq (32768x320 wav2vec2; 8x8192x64x64 dim=1 DALL-E dVAE), "
               "lm (4096x32000, 1024x128256, 64x262144), all. default: issue on a CPU; on CUDA issue "
               "(fp32+bf16) + moe, lm, vq (bf16 only unless --dtypes).")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--suite", default=None, help="comma list of " + ", ".join(SUITES) + " (default: default)")
    p.add_argument("--shapes", default=None, help="custom shapes instead of a suite: 4096x1024,8x8192x64x64@1")
    p.add_argument("--quick", action="store_true",
                   help="the issue shapes (on a CPU cut to 2**18 elements), fp32 on a CPU / bf16 on CUDA unless "
                        "--dtypes, short timings: under a minute on a CPU")
    p.add_argument("--dtypes", default=None, help="comma list: fp32,bf16,fp16,fp64 (default fp32,bf16)")
    p.add_argument("--modes", default="soft,hard", help="comma list: soft,hard")
    p.add_argument("--passes", default="fwd,fwd+bwd", help="comma list: fwd,fwd+bwd")
    p.add_argument("--backends", default=None, help="fused backends (default: all available for the device)")
    p.add_argument("--no-reference", dest="reference", action="store_false",
                   help="leave out the 'reference' (plain PyTorch ops) backend")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile peer")
    p.add_argument("--tau", type=_positive(float), default=1.0, help="temperature of every case (default 1.0)")
    p.add_argument("--threads", type=_positive(int), default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--system-malloc", action="store_true",
                   help="CPU: leave the C allocator as it is (default: keep freed memory for reuse, "
                        "so that no contender pays page faults on every call)")
    p.add_argument("--no-scale", action="store_true", help="run CPU cases at full size (slow)")
    p.add_argument("--min-time", type=float, default=None, help="CPU: seconds per measurement at least")
    p.add_argument("--min-runs", type=int, default=None, help="timed blocks/calls per measurement at least")
    p.add_argument("--warmup-ms", type=float, default=None, help="GPU warm-up per measurement (ms)")
    p.add_argument("--rep-ms", type=float, default=None, help="GPU timed span per measurement (ms)")
    p.add_argument("--copy-mib", type=int, default=None, help="size of the copy-bandwidth tensor (MiB)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds of cases after which the rest are skipped "
                        "(default: 150 on CUDA, none on CPU; 0: none)")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/bench_<device>_<time>.json)")
    p.add_argument("--no-plot", action="store_true", help="write no PNG plots next to the JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.add_argument("--plot-from", metavar="JSON", default=None, help="only re-plot a saved JSON")
    p.add_argument("--markdown", metavar="JSON", default=None, help="only print a saved JSON as Markdown")
    return p


def _positive(kind: type) -> Callable[[str], Any]:
    """An argparse type: a finite number of `kind` above 0."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n' if kind is int else ''} {kind.__name__}: {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value
    return parse


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


Plan = list[tuple[Case, torch.dtype, bool]]


def make_plan(args: argparse.Namespace, device: str) -> tuple[Plan, list[str], list[str]]:
    """The (case, dtype, hard) list to run, the passes and the notes on scaled cases."""
    notes: list[str] = []
    cap = None
    if device == "cpu" and not args.no_scale:
        cap = QUICK_MAX_ELEMENTS if args.quick else CPU_MAX_ELEMENTS
    dtype_names = args.dtypes
    if args.quick and args.suite is not None:
        raise SystemExit("fused_gumbel.bench: --quick runs the issue suite; leave out --suite (or --quick)")
    suites = _csv(args.suite or "default")
    if args.shapes:
        cases = parse_shapes(args.shapes)
    else:
        for s in suites:
            if s not in SUITES:
                raise SystemExit(f"fused_gumbel.bench: unknown suite {s!r}; choose from {SUITES}")
        if args.quick:
            suites = ["issue"]
            if dtype_names is None:  # the device's usual training dtype
                dtype_names = "bf16" if device == "cuda" else "fp32"
        cases = []
        seen = set()
        for s in suites:
            for c in suite_cases(s, device, cap):
                if (c.shape, c.dim) not in seen:
                    seen.add((c.shape, c.dim))
                    cases.append(c)
    for c in cases:
        if c.scaled_from:
            notes.append(f"{c.name}: scaled down for the {device} to {c.label} "
                         f"(full size {'x'.join(map(str, c.scaled_from))}; --no-scale runs it)")
    try:
        dtypes = [DTYPES[d] for d in _csv(dtype_names or "fp32,bf16")]
    except KeyError as exc:
        raise SystemExit(f"fused_gumbel.bench: unknown dtype {exc}; choose from {sorted(DTYPES)}")
    modes = _csv(args.modes)
    passes = _csv(args.passes)
    if not set(modes) <= {"soft", "hard"} or not set(passes) <= set(PASSES) or not modes or not passes:
        raise SystemExit("fused_gumbel.bench: --modes takes soft,hard and --passes fwd,fwd+bwd")
    plan = []
    for c in cases:
        ds = dtypes
        # the lean CUDA default: issue in every dtype, the named groups in bf16 only
        if device == "cuda" and dtype_names is None and not args.shapes and "default" in suites \
                and c.group != "issue":
            ds = [torch.bfloat16]
        plan += [(c, d, m == "hard") for d in ds for m in modes]
    return plan, passes, notes


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the benchmark described by parsed arguments; returns the result
    (also written to args.out)."""
    import fused_gumbel  # noqa: F401  (loads the operators before any timing)

    t_start = time.time()
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("fused_gumbel.bench: --device cuda but no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = _load_average()
    running_before = _running_elsewhere()
    allocator = keep_freed_memory(device == "cpu" and not args.system_malloc)
    _set_compile_limits()

    # 1. cases
    plan, passes, notes = make_plan(args, device)

    # 2. contenders
    requested = _csv(args.backends) if args.backends else None
    backends, skipped_contenders = fused_backends(device, requested, args.reference)
    contenders = [f"fused-{b}" for b in backends] + ["eager"] + ([] if args.no_compile else ["compiled"])
    if args.no_compile:
        skipped_contenders["compiled"] = "--no-compile"

    # 3. timer
    cfg = TimerConfig()
    if args.quick:
        cfg = TimerConfig(min_time_s=0.03, min_runs=3, warmup_ms=10.0, rep_ms=30.0, cpu_warmup_s=0.03)
    elif device == "cuda":
        cfg = TimerConfig(warmup_ms=10.0, rep_ms=50.0, min_runs=10, max_runs=500)
    for attr, val in (("min_time_s", args.min_time), ("min_runs", args.min_runs),
                      ("warmup_ms", args.warmup_ms), ("rep_ms", args.rep_ms)):
        if val is not None:
            setattr(cfg, attr, val)
    if device == "cuda":
        timer: Callable = CudaTimer(cfg)
        timer_desc = {"method": "CUDA events per call, L2 flushed (256 MiB zero_) before each call "
                                "(the triton.testing.do_bench procedure); median and IQR over calls",
                      **asdict(cfg)}
    else:
        timer = lambda fn: time_cpu(fn, cfg)  # noqa: E731
        timer_desc = {"method": "untimed calls for cpu_warmup_s, then torch.utils.benchmark.Timer."
                                "blocked_autorange; median and IQR over blocks",
                      "threads": torch.get_num_threads(), **asdict(cfg)}
    budget = args.time_budget
    if budget is None:
        budget = 150.0 if device == "cuda" and not args.shapes else 0.0

    out = args.out or os.path.join(
        "bench", "results", f"bench_{device}_{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json")
    copy_mib = args.copy_mib or (1024 if device == "cuda" else (64 if args.quick else 256))
    copy = copy_bandwidth(device, timer, copy_mib)
    if device == "cuda":
        torch.cuda.empty_cache()

    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "argv": list(getattr(args, "argv", [])),
        "device": device_info(device),
        "versions": versions(),
        "timer": timer_desc,
        "allocator": allocator,
        "copy_bandwidth": copy,
        "limit_model": LIMIT_MODEL,
        "contenders": contenders,
        "skipped_contenders": skipped_contenders,
        "passes": passes,
        "tau": args.tau,
        "load_average": {"before": load_before, "after": None, "running_elsewhere_before": running_before},
        "notes": notes,
        "records": [],
        "skipped_cases": [],
        "complete": False,
        "elapsed_s": None,
    }
    busy = _busy_note(running_before, torch.get_num_threads())
    if busy:
        notes.append(busy)
    progress = Progress(len(plan) * len(contenders) * len(passes), enabled=not args.no_progress)
    progress.note(f"fused_gumbel.bench: {device} ({result['device']['name']}), {torch.get_num_threads()} threads, "
                  f"copy {copy['gbps']:.1f} GB/s; {len(plan)} cases x {len(contenders)} contenders x "
                  f"{len(passes)} passes -> {out}")
    for n in notes:
        progress.note("note: " + n)
    t_cases = time.time()
    for case, dtype, hard in plan:
        if budget and time.time() - t_cases > budget:
            result["skipped_cases"].append({"case": case.label, "name": case.name, "dtype": _dtype_name(dtype),
                                            "hard": hard, "why": f"time budget of {budget:.0f} s spent"})
            progress.update(f"skipped {case.label} (time budget)", len(contenders) * len(passes))
            continue
        result["records"] += run_case(case, dtype, hard, contenders, passes, device, args.tau, timer,
                                      progress, copy["gbps"])
        result["elapsed_s"] = time.time() - t_start
        _write_json(result, out)
    progress.close()
    if result["skipped_cases"]:
        notes.append(f"{len(result['skipped_cases'])} cases skipped: the time budget of {budget:.0f} s "
                     "was spent (--time-budget 0 runs them all)")
    result["complete"] = True
    result["load_average"]["after"] = _load_average()
    result["elapsed_s"] = time.time() - t_start
    _write_json(result, out)
    result["_path"] = out
    return result


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------


def _fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _fmt_pct(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.0f}%" if v >= 0.095 else f"{100 * v:.1f}%"


def _fmt_bytes(v: int | None) -> str:
    if v is None:
        return "-"
    return f"{v / 2 ** 20:.1f} MiB" if v >= 2 ** 20 else f"{v / 1024:.1f} KiB"


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 100 else f"{v:.1f}"


def format_table(result: dict[str, Any]) -> str:
    """The plain-text table of every record (stdout at the end of a run)."""
    head = ("contender", "case", "dtype", "mode", "pass", "median ms", "IQR ms", "vs eager", "vs compiled",
            "of limit", "memory")
    rows = [head]
    for r in result["records"]:
        if r["status"] != "ok":
            rows.append((r["contender"], r["case"], r["dtype"], r["mode"], r["pass"], r["status"][:60],
                         "", "", "", "", ""))
            continue
        rows.append((r["contender"], r["case"], r["dtype"], r["mode"], r["pass"], _fmt_ms(r["median_ms"]),
                     _fmt_ms(r["iqr_ms"]), _fmt_ratio(r["speedup_vs_eager"]), _fmt_ratio(r["speedup_vs_compiled"]),
                     _fmt_pct(r["fraction_of_limit"]), _fmt_bytes(r.get("mem_bytes"))))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _case_cell(r: dict[str, Any]) -> str:
    """The case's name, and the shape it ran at when that was scaled down."""
    return f"{r['name']} (run as {r['case']})" if r.get("scaled_from") else r["name"]


def _header(result: dict[str, Any]) -> list[str]:
    d, v, c = result["device"], result["versions"], result["copy_bandwidth"]
    dev = d["name"] if d["type"] == "cuda" else f"{d['name']} ({d['threads']} threads)"
    if d["type"] == "cpu" and d.get("noise_isa"):
        dev += f", {d['noise_isa']} noise (torch CPU capability {d['torch_cpu_capability']})"
    lines = [f"Device: {dev}; torch {v['torch']}, triton {v['triton'] or '-'}, python {v['python']}; "
             f"copy bandwidth {c['gbps']:.1f} GB/s ({c['method']}, {_fmt_bytes(c['tensor_bytes'])})."]
    command = shlex.join(["python", "-m", "fused_gumbel.bench", *result.get("argv", [])])
    lines.append(f"Run: {result.get('created', '-')}, commit {v.get('git') or 'unknown'}, `{command}`"
                 f"{'' if result.get('complete', True) else ' (incomplete)'}.")
    alloc = result.get("allocator", {})
    if alloc.get("method") == "glibc mallopt":
        lines.append("Allocator: freed memory kept in the C heap for reuse by every contender (glibc mallopt "
                     "M_MMAP_THRESHOLD = M_TRIM_THRESHOLD = 1 GiB; `--system-malloc` leaves it as it is).")
    return lines


def to_markdown(result: dict[str, Any]) -> str:
    """Markdown of a result: a timing table (one row per case and pass, one
    column group per contender) and a memory table (fwd+bwd)."""
    recs = [r for r in result["records"]]
    contenders = result["contenders"]
    fused = [c for c in contenders if c not in PEERS]
    peers = [c for c in PEERS if c in contenders]
    lines = _header(result)
    lines.append("")
    t = result["timer"]
    mem_method = next((r["mem_method"] for r in recs if r.get("mem_method")), "-")
    lines.append(f"Times: median ms, spread IQR (timer: {t['method']}); "
                 "`x eager` / `x compiled`: speed-up of the fused kernel against that peer; "
                 "`limit`: (minimum bytes / time) / copy bandwidth "
                 "(fwd: 2N, fwd+bwd: 5N elements of the dtype). "
                 f"Memory: {mem_method}, fwd+bwd.")
    for n in result.get("notes", []):
        lines.append(f"\n> {n}")
    lines.append("")
    key_of = lambda r: (r["case"], r["dtype"], r["mode"], r["pass"])  # noqa: E731
    table: dict[tuple, dict[str, dict]] = {}
    order: list[tuple] = []
    meta: dict[tuple, dict] = {}
    for r in recs:
        k = key_of(r)
        if k not in table:
            table[k], meta[k] = {}, r
            order.append(k)
        table[k][r["contender"]] = r

    def ms(r: dict | None) -> str:
        if r is None:
            return "-"
        if r["status"] != "ok":
            return "error"
        return f"{_fmt_ms(r['median_ms'])} ± {_fmt_ms(r['iqr_ms'])}"

    head = ["case", "dtype", "mode", "pass"] + [f"{p} ms" for p in peers]
    for f in fused:
        head += [f"{f} ms"] + [f"x {p}" for p in peers] + ["limit"]
    head += [f"{p} limit" for p in peers]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    for k in order:
        m, row = meta[k], table[k]
        cells = [_case_cell(m), m["dtype"], m["mode"], m["pass"]]
        cells += [ms(row.get(p)) for p in peers]
        for f in fused:
            r = row.get(f)
            cells.append(ms(r))
            ok = r is not None and r["status"] == "ok"
            cells += [_fmt_ratio(r[f"speedup_vs_{p}"]) if ok else "-" for p in peers]
            cells.append(_fmt_pct(r["fraction_of_limit"]) if ok else "-")
        for p in peers:
            r = row.get(p)
            cells.append(_fmt_pct(r["fraction_of_limit"]) if r is not None and r["status"] == "ok" else "-")
        lines.append("| " + " | ".join(cells) + " |")
    # memory table
    lines += ["", "Memory of fwd+bwd (" + mem_method + "):", "",
              "| case | dtype | mode | " + " | ".join(contenders) + " |",
              "|" + "|".join("---" for _ in range(3 + len(contenders))) + "|"]
    seen = set()
    for k in order:  # memory is measured once per (case, dtype, mode), on fwd+bwd
        if k[:3] in seen:
            continue
        seen.add(k[:3])
        m, row = meta[k], table[k]
        cells = [_case_cell(m), m["dtype"], m["mode"]]
        cells += [_fmt_bytes(row[c].get("mem_bytes")) if c in row else "-" for c in contenders]
        lines.append("| " + " | ".join(cells) + " |")
    if result.get("skipped_cases"):
        lines.append(f"\nSkipped (time budget): " + ", ".join(
            f"{s['case']} {s['dtype']} {'hard' if s['hard'] else 'soft'}" for s in result["skipped_cases"]))
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], json_path: str) -> list[str]:
    """Speed-up against row length (one panel per pass and peer) and fraction of
    the limit against row length (one panel per pass); PNGs next to the JSON."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("fused_gumbel.bench: matplotlib is not installed; no plots (pip install matplotlib)", file=sys.stderr)
        return []
    recs = [r for r in result["records"] if r["status"] == "ok"]
    if not recs:
        return []
    stem = os.path.splitext(json_path)[0]
    passes = [p for p in PASSES if any(r["pass"] == p for r in recs)]
    contenders = result["contenders"]
    fused = [c for c in contenders if c not in PEERS]
    peers = [p for p in PEERS if p in contenders]
    colors = {c: f"C{i}" for i, c in enumerate(contenders)}
    styles = {"float32": "-", "bfloat16": "--", "float16": ":", "float64": "-."}
    markers = {"soft": "o", "hard": "s"}
    title = result["device"]["name"] + (f", {result['device']['threads']} threads"
                                        if result["device"]["type"] == "cpu" else "")

    def series(rs: list[dict], key: str):
        groups: dict[tuple, list] = {}
        for r in rs:
            if r.get(key) is not None:
                groups.setdefault((r["contender"], r["dtype"], r["mode"]), []).append((r["cols"], r[key]))
        return {k: sorted(v) for k, v in groups.items()}

    paths = []
    # speed-up
    if fused and peers:
        fig, axes = plt.subplots(len(passes), len(peers), figsize=(6 * len(peers), 3.8 * len(passes)),
                                 squeeze=False)
        for i, p in enumerate(passes):
            for j, peer in enumerate(peers):
                ax = axes[i][j]
                for (c, dt, mode), pts in series([r for r in recs if r["pass"] == p and r["contender"] in fused],
                                                 f"speedup_vs_{peer}").items():
                    ax.plot([x for x, _ in pts], [y for _, y in pts], color=colors[c], linestyle=styles.get(dt, "-"),
                            marker=markers[mode], label=f"{c} {dt} {mode}")
                ax.axhline(1.0, color="gray", linewidth=0.8)
                ax.set_xscale("log", base=2)
                ax.set_xlabel("row length (size of dim)")
                ax.set_ylabel(f"speed-up vs {peer}")
                ax.set_title(f"{p}: fused vs {peer}")
                ax.grid(True, alpha=0.3)
                ax.legend(fontsize=7)
        fig.suptitle(title)
        fig.tight_layout()
        paths.append(stem + "_speedup.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    # fraction of the limit
    fig, axes = plt.subplots(1, len(passes), figsize=(6.5 * len(passes), 4.2), squeeze=False)
    for i, p in enumerate(passes):
        ax = axes[0][i]
        for (c, dt, mode), pts in series([r for r in recs if r["pass"] == p], "fraction_of_limit").items():
            ax.plot([x for x, _ in pts], [y for _, y in pts], color=colors.get(c, "k"),
                    linestyle=styles.get(dt, "-"), marker=markers[mode], label=f"{c} {dt} {mode}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("row length (size of dim)")
        ax.set_ylabel("fraction of the copy-bandwidth limit")
        ax.set_title(f"{p} (copy {result['copy_bandwidth']['gbps']:.0f} GB/s)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    paths.append(stem + "_limit.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def load(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            result = json.load(f)
    except OSError as exc:
        raise SystemExit(f"fused_gumbel.bench: cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SystemExit(f"fused_gumbel.bench: {path} is not JSON ({exc})") from None
    if result.get("schema") != SCHEMA:
        raise SystemExit(f"fused_gumbel.bench: {path} is not a {SCHEMA} result (schema {result.get('schema')!r})")
    return result


def main(argv: list[str] | None = None) -> int:
    """Console entry point (fused-gumbel-bench). Returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.markdown:
        sys.stdout.write(to_markdown(load(args.markdown)))
        return 0
    if args.plot_from:
        result = load(args.plot_from)
        target = args.out or args.plot_from
        for p in plot(result, target):
            print(f"wrote {p}")
        return 0
    result = run(args)
    path = result.pop("_path")
    print()
    print("\n".join(_header(result)))
    print(f"timer: {result['timer']['method']}")
    print(f"limit: fwd {LIMIT_MODEL['fwd']}; fwd+bwd 5 * N * itemsize; {LIMIT_MODEL['not_counted']} not counted")
    for c, why in result["skipped_contenders"].items():
        print(f"not run: {c} ({why})")
    for n in result["notes"]:
        print(f"note: {n}")
    print(format_table(result))
    print(f"\nwrote {path} ({result['elapsed_s']:.0f} s)")
    if not args.no_plot:
        for p in plot(result, path):
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
