"""scripts/profile_host.py, the host-time profile of router-sized calls that
the GPU check runs with PROFILE=1: on the CPU (tiny rows, where a call's time
is its host overhead) it must time every contender and print the profiler
tables it is asked for."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fused_gumbel._extension import has_kernel

ROOT = Path(__file__).resolve().parent.parent


def run_script(*args: str) -> tuple[str, dict[tuple[str, str, str], float]]:
    """(stdout, {(contender, hard, pass): the first figure}) of a timing
    script run from the checkout, without the Triton interpreter (the tests'
    conftest sets it; interpreted launches would time the interpreter)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = {}
    for line in run.stdout.splitlines():
        parts = line.rsplit(maxsplit=4)
        if len(parts) == 5 and parts[2] in ("fwd", "fwd+bwd"):
            rows[parts[0], parts[1], parts[2]] = float(parts[3])
    return run.stdout, rows


@pytest.mark.skipif(not has_kernel("gumbel_topk", "CPU"), reason="needs the compiled CPU kernels")
def test_times_every_contender_and_profiles_the_named_one() -> None:
    stdout, rows = run_script("scripts/profile_host.py", "--device", "cpu", "--reps", "20",
                              "--profile", "cpu top2")
    for name in ("eager", "cpu", "cpu top2"):
        for hard in ("False", "True"):
            for label in ("fwd", "fwd+bwd"):
                host = rows[name, hard, label]
                assert math.isfinite(host) and host > 0
    assert "== cpu top2 hard=False fwd+bwd" in stdout
    assert "== cpu top2 hard=True fwd," in stdout and "fused_gumbel::gumbel_topk" in stdout
    assert "== cpu hard=" not in stdout


def test_triton_host_time_times_the_eager_path_and_the_op() -> None:
    """scripts/triton_host_time.py (the Triton backend's host time with its
    launches stubbed, no GPU needed) times both paths of both ops."""
    pytest.importorskip("triton")
    stdout, rows = run_script("scripts/triton_host_time.py", "--reps", "5", "--rounds", "1")
    assert "triton eager: autograd node _StSoftmaxTritonBackward" in stdout
    assert "triton top2 eager: autograd node _GumbelTopkTritonBackward" in stdout
    for name in ("triton eager", "triton op", "triton top2 eager", "triton top2 op"):
        for hard in ("False", "True"):
            for label in ("fwd", "fwd+bwd"):
                assert math.isfinite(rows[name, hard, label]) and rows[name, hard, label] > 0
