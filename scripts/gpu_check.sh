#!/usr/bin/env bash
# One pass on a GPU machine: build the extension against that machine's torch,
# run the CUDA and Triton tests, run the benchmark, and record the environment.
# Every step has a time limit; a failing step is recorded and the script goes
# on. Writes at most 8 files (the device tool's limit), all directly in OUTDIR:
#   build.log  ptxas.txt  pytest.log  bench.log  host.log (Triton variants, ncu)
#   bench_cuda.json  env.json
#   summary.txt (one line per step: name, exit status, seconds)
# About 7 minutes; the step limits add up to 555 s, and each step gets at most
# 10 s more to end after its SIGINT. Whatever the steps take, each limit is
# cut to what is left of BUDGET (580 s from the script's start; lower it by
# whatever the same device call ran before) less those 10 s and the 15 s kept
# for the env step, and a step with under 5 s left is skipped: the run stays
# under the device tool's 600 s per call (PROFILE=1's 75 s more come out of
# the last steps before env).
# The fifth session's full run on an H200 took 422 s (build 55, tests 240
# stopped at their then limit of 230 s, benchmark 67); its tests alone, with
# work stealing, 233 s. The test suites run their parametrized cases for the
# CUDA, Triton and reference backends only (FUSED_GUMBEL_TEST_BACKENDS): the
# CPU backend's, among them the slowest torch.compile tests, run in CI.
#
# Usage: scripts/gpu_check.sh OUTDIR        (PYTHON overrides the interpreter)
#
# PROFILE=1 adds the host-time profile of a router-sized call
# (scripts/profile_host.py) and Nsight Compute of bfloat16 (about 75 s).
# QUICK=1: for the end of a device budget (about 4.5 minutes): the build, the
# CUDA and Triton test files without their torch.compile and opcheck tests,
# the large issue shapes against eager only, and ncu on float32.
# RERUN=1 (about 5 minutes): the build, the CUDA test file without its
# torch.compile and opcheck tests, the full benchmark and the Triton
# variants: for small changes to a tree whose full run passed.
# TESTS=1 (about 5.5 minutes): the build and the full run's tests, with
# 290 s instead of 265 and nothing after them: when the full run's tests did
# not finish.
# pytest.log ends with the failures and the tests slower than 10 s as they
# happened (scripts/pytest_progress_log.py): a step stopped at its limit
# prints no summary.
set -u
QUICK=${QUICK:-0}
RERUN=${RERUN:-0}
TESTS=${TESTS:-0}

OUT=${1:?usage: scripts/gpu_check.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
: > "$OUT/summary.txt"

# step NAME SECONDS LOG COMMAND...: runs COMMAND under `timeout`, output to LOG.
BUDGET=${BUDGET:-580}
step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local left=$((BUDGET - SECONDS - 10))
  # The last step, env (where the numbers came from), keeps its 15 s.
  [ "$name" = env ] || left=$((left - 15))
  if [ "$left" -lt 5 ]; then
    echo "$name skipped: the ${BUDGET}s budget is spent" | tee -a "$OUT/summary.txt"
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local start=$SECONDS
  # SIGINT first: pytest then still prints its summary of failures.
  timeout -s INT --kill-after=10 "$limit" "$@" > "$log" 2>&1
  local rc=$?
  local note=""
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] || [ "$rc" -eq 130 ] && note=" (timed out after ${limit}s)"
  echo "$name rc=$rc $((SECONDS - start))s$note" | tee -a "$OUT/summary.txt"
  return "$rc"
}

# 1. Build for this GPU only (sm_90), with the ptxas resource report. The
# Triton kernels are installed as fused_gumbel.triton_kernels; in this
# uninstalled checkout a link stands in for the install.
step build 95 "$OUT/build.log" env TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 \
  FUSED_GUMBEL_PTXAS_VERBOSE=1 "$PY" setup.py build_ext --inplace
[ -e fused_gumbel/triton_kernels ] || ln -s ../triton_kernels fused_gumbel/triton_kernels
# The scripts run from scripts/ import the package from this checkout.
export PYTHONPATH="$PWD:$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"
# Registers, spills and stack per kernel, one line each, spills flagged.
"$PY" - "$OUT/build.log" > "$OUT/ptxas.txt" 2>&1 <<'EOF'
import re, sys

TYPES = {"N3c108BFloat16E": "bf16", "N3c104HalfE": "half", "f": "float", "d": "double"}
name = frame = None
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"Compiling entry function '(\S+)' for '(\w+)'", line)
    if m:
        k = re.search(r"([a-z][a-z_]*_kernel)(I(N3c108BFloat16E|N3c104HalfE|f|d)E)?", m.group(1))
        kind = TYPES.get(k.group(3), "") if k else ""
        name = f"{k.group(1) if k else m.group(1)}<{kind}> {m.group(2)}"
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m and name:
        frame = m.groups()
        continue
    m = re.search(r"Used (\d+) registers", line)
    if m and name and frame:
        flag = "  <-- SPILLS / LOCAL MEMORY" if any(int(v) for v in frame) else ""
        print(f"{name:42s} regs={m.group(1):>3s} stack={frame[0]} spill_st={frame[1]} spill_ld={frame[2]}{flag}")
        name = frame = None
EOF
[ -f scripts/check_ptxas.py ] && "$PY" scripts/check_ptxas.py "$OUT/build.log" >> "$OUT/ptxas.txt" 2>&1

# 2. Every suite that runs a GPU backend (cuda and triton), in parallel worker
# processes (pytest-xdist: Triton's compiles are CPU-bound and the machine has
# 16 cores); the CPU-only files and the CPU backend's cases run in CI.
export FUSED_GUMBEL_TEST_BACKENDS=cuda,triton,reference
export FUSED_GUMBEL_PROGRESS_LOG="$OUT/progress.tmp"
: > "$FUSED_GUMBEL_PROGRESS_LOG"
pytest_opts=(-p no:cacheprovider -p no:benchmark -p pytest_progress_log --continue-on-collection-errors)
"$PY" -c "import xdist" 2>/dev/null && pytest_opts+=(-n 16)
# Work stealing (pytest-xdist 3.2): an idle worker takes tests queued for a
# busy one, so that one long compile does not hold the end of the run.
"$PY" -c "import xdist.scheduler as s; s.WorkStealingScheduling" 2>/dev/null && pytest_opts+=(--dist worksteal)
"$PY" -c "import pytest_timeout" 2>/dev/null && pytest_opts+=(--timeout=240)
if [ "$RERUN" = 1 ]; then
  step pytest 60 "$OUT/pytest.log" "$PY" -m pytest -q -rfE "${pytest_opts[@]}" --durations=5 \
    -k "not compile and not opcheck" tests/test_cuda.py
elif [ "$QUICK" = 1 ]; then
  step pytest 90 "$OUT/pytest.log" "$PY" -m pytest -q -rfE "${pytest_opts[@]}" --durations=15 \
    -k "not compile and not opcheck" tests/test_cuda.py tests/test_triton.py
else
  step pytest "$([ "$TESTS" = 1 ] && echo 290 || echo 265)" "$OUT/pytest.log" "$PY" -m pytest -q -rfEs \
    "${pytest_opts[@]}" --durations=15 \
    tests/test_cuda.py tests/test_triton.py tests/test_sample.py tests/test_topk.py \
    tests/test_parity.py tests/test_registration.py tests/test_contract.py tests/test_statistics.py \
    tests/test_distributed.py::test_cuda_tensors_through_nccl
fi
{ echo "== failures and slow tests, as they happened"; cat "$FUSED_GUMBEL_PROGRESS_LOG"; } >> "$OUT/pytest.log"
rm -f "$FUSED_GUMBEL_PROGRESS_LOG"
if [ "$TESTS" = 1 ]; then
  echo "== summary"; cat "$OUT/summary.txt"
  echo "== pytest.log"; grep -v PytestBenchmarkWarning "$OUT/pytest.log" | tail -n 60
  exit 0
fi

# Workers of a pytest stopped at its limit can outlive it, still running CUDA
# tests (the fourth session's benchmark ran beside them: router-sized calls
# 2-5x slower than in the runs before, some Triton cases 0.1-0.3 ms): nothing
# may hold the GPU while the benchmark runs.
if command -v nvidia-smi > /dev/null; then
  for pid in $(nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null); do
    kill -KILL "$pid" 2>/dev/null && echo "killed $pid, left on the GPU by the tests" | tee -a "$OUT/summary.txt"
  done
  sleep 2
fi

# 3. The benchmark, when the package provides one.
if "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('fused_gumbel.bench') is None)" 2>/dev/null; then
  # The issue's shapes; --no-plot: its PNGs would go next to the JSON (plots
  # are made afterwards with --plot-from); the budget stops it in time.
  if [ "$QUICK" = 1 ]; then
    step bench 55 "$OUT/bench.log" "$PY" -m fused_gumbel.bench --device cuda \
      --shapes 4096x32768,1024x131072 --no-reference --no-compile \
      --out "$OUT/bench_cuda.json" --no-plot --no-progress --time-budget 45
  else
    # RERUN: the plain-PyTorch reference left out, so that every case fits.
    step bench 90 "$OUT/bench.log" "$PY" -m fused_gumbel.bench --device cuda --suite issue \
      --out "$OUT/bench_cuda.json" --no-plot --time-budget 75 $([ "$RERUN" = 1 ] && echo --no-reference)
  fi
else
  echo "bench skipped: no fused_gumbel.bench" | tee -a "$OUT/summary.txt"
fi

# 4. The Triton looped kernels with and without their row cache between the
# passes (st_softmax.CACHE_BETWEEN_PASSES), next to CUDA, and the soft
# forward and the backward on persistent programs (FORWARD_PROGRAMS_PER_SM,
# BACKWARD_PROGRAMS_PER_SM): the
# measurements that decide the defaults. With PROFILE=1, host time against GPU time of a router-sized call,
# per backend, and profiler tables of the Triton and CUDA backends' calls.
: > "$OUT/host.log"
if [ "$QUICK" != 1 ]; then
  step variants 55 "$OUT/variants.tmp" "$PY" scripts/triton_variants.py
  { echo "== triton_variants"; cat "$OUT/variants.tmp"; } >> "$OUT/host.log"
  rm -f "$OUT/variants.tmp"
fi
if [ "${PROFILE:-0}" = 1 ]; then
  step host 40 "$OUT/host.tmp" "$PY" scripts/profile_host.py --profile triton cuda
  { echo "== profile_host"; cat "$OUT/host.tmp"; } >> "$OUT/host.log"
  rm -f "$OUT/host.tmp"
fi

# 5. Nsight Compute on the kernels of one call per contender at 4096 x 32768
# (scripts/ncu_kernels.py): what bounds each (DRAM, issue slots, stalls), and
# the instructions it executed. Appended to host.log (eight files at most).
if [ "$RERUN" = 1 ]; then
  echo "ncu skipped: RERUN=1" | tee -a "$OUT/summary.txt"
elif command -v ncu > /dev/null; then
  dtypes=float32
  [ "${PROFILE:-0}" = 1 ] && dtypes="float32 bfloat16"
  for dtype in $dtypes; do
    step "ncu-$dtype" 35 "$OUT/ncu.tmp" ncu --profile-from-start off --clock-control none \
      --section SpeedOfLight --section Occupancy --section LaunchStats \
      --section SchedulerStats --section WarpStateStats --section InstructionStats \
      "$PY" scripts/ncu_kernels.py --dtypes "$dtype"
    { echo "== ncu $dtype"; cat "$OUT/ncu.tmp"; } >> "$OUT/host.log"
  done
  rm -f "$OUT/ncu.tmp"
else
  echo "ncu skipped: not on PATH" | tee -a "$OUT/summary.txt"
fi

# 6. The environment the numbers came from.
[ "$RERUN" = 1 ] || step env 15 "$OUT/env.tmp" "$PY" - "$OUT/env.json" <<'EOF'
import json, platform, subprocess, sys

import torch


def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable: {exc}"


env = {
    "python": platform.python_version(),
    "torch": torch.__version__,
    "torch_cuda": torch.version.cuda,
    "cuda_available": torch.cuda.is_available(),
    "nvcc": (run(["nvcc", "--version"]).splitlines() or ["not found"])[-1],
    "driver": run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
}
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    env.update(device=props.name, capability=f"{props.major}.{props.minor}",
               sms=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1),
               device_count=torch.cuda.device_count())
try:
    import triton

    env["triton"] = triton.__version__
except ImportError as exc:
    env["triton"] = f"not importable: {exc}"
try:
    import fused_gumbel

    env["fused_gumbel_backends"] = fused_gumbel.available_backends("cuda")
except Exception as exc:  # the report must be written even if the build failed
    env["fused_gumbel_backends"] = f"import failed: {exc}"
if torch.cuda.is_available():
    # The noise alone (write-only, 4 bytes per value): how far the noise
    # arithmetic keeps its kernel from the bandwidth limit.
    def ms(fn, reps=20):
        fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / reps

    out = torch.empty(1 << 28, device="cuda")
    env["noise_values"] = out.numel()
    env["fill_ms"] = round(ms(lambda: out.fill_(1.0)), 4)
    try:
        env["noise_cuda_ms"] = round(ms(lambda: torch.ops.fused_gumbel.fill_gumbel_noise(out, 1)), 4)
        from fused_gumbel.triton_kernels import noise

        env["noise_triton_ms"] = round(ms(lambda: noise.fill_gumbel_noise(out, 1)), 4)
    except Exception as exc:
        env["noise_timing"] = f"failed: {exc}"
with open(sys.argv[1], "w") as f:
    json.dump(env, f, indent=2)
print(json.dumps(env))
EOF
# The env step's output is env.json itself; keep the file count at eight.
rm -f "$OUT/env.tmp"

# What the caller sees first: the step summary, spills, the test verdicts.
echo "== summary"; cat "$OUT/summary.txt"
echo "== ptxas"; cat "$OUT/ptxas.txt"
for log in pytest.log bench.log; do
  [ -f "$OUT/$log" ] && { echo "== $log"; tail -n 40 "$OUT/$log"; }
done
[ "$QUICK" = 1 ] || { echo "== host.log (Triton variants)"; grep -A 17 "== triton_variants" "$OUT/host.log"; }
echo "done: $(ls "$OUT" | wc -l) files in $OUT"
