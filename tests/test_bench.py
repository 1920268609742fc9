"""The benchmark harness (fused_gumbel.bench) runs end to end on tiny shapes and
writes the JSON, Markdown and plots it promises. Timings are not checked."""

import json
import math
import subprocess
import sys

import pytest
import torch

from fused_gumbel import bench

# --system-malloc: the in-process runs below leave pytest's allocator alone.
TIMING = ["--min-time", "0.001", "--min-runs", "2", "--copy-mib", "4", "--no-progress", "--system-malloc"]
RECORD_KEYS = {
    "contender", "kind", "case", "name", "group", "groups", "shape", "dim", "rows", "cols", "numel",
    "scaled_from", "dtype", "hard", "mode", "pass", "tau", "status", "min_bytes",
    "median_ms", "q25_ms", "q75_ms", "iqr_ms", "min_ms", "spread_pct", "runs", "number_per_run",
    "speedup_vs_eager", "speedup_vs_compiled", "gbps", "fraction_of_limit",
    "mem_bytes", "mem_method", "saved_bytes", "saved_extra_bytes", "peak_bytes", "case_wall_s",
}


def _check_result(result, contenders, n_cases, passes=("fwd", "fwd+bwd")):
    assert result["schema"] == bench.SCHEMA
    assert result["complete"] is True
    assert result["device"]["type"] == "cpu"
    assert result["device"]["name"] and result["device"]["threads"] == torch.get_num_threads()
    assert result["versions"]["torch"] == torch.__version__
    assert result["copy_bandwidth"]["gbps"] > 0
    assert result["allocator"] == {"method": "system default"}
    assert result["device"]["noise_isa"] == torch.ops.fused_gumbel.cpu_noise_isa()
    assert set(result["limit_model"]) >= {"fwd", "fwd+bwd"}
    assert result["contenders"] == contenders
    records = result["records"]
    assert len(records) == n_cases * len(contenders) * len(passes)
    for r in records:
        assert RECORD_KEYS <= set(r), RECORD_KEYS - set(r)
        assert r["status"] == "ok", r["status"]
        assert r["median_ms"] > 0 and r["iqr_ms"] >= 0 and r["q25_ms"] <= r["median_ms"] <= r["q75_ms"]
        assert r["runs"] >= 2
        assert r["cols"] == r["shape"][r["dim"]] and r["rows"] * r["cols"] == r["numel"] == math.prod(r["shape"])
        itemsize = torch.empty((), dtype=getattr(torch, r["dtype"])).element_size()
        assert r["min_bytes"] == {"fwd": 2, "fwd+bwd": 5}[r["pass"]] * r["numel"] * itemsize
        assert r["speedup_vs_eager"] > 0
        assert r["fraction_of_limit"] > 0
        assert r["gbps"] == pytest.approx(r["min_bytes"] / (r["median_ms"] * 1e-3) / 1e9)
        assert r["mem_bytes"] == r["saved_bytes"] >= 0 and r["peak_bytes"] is None
        if r["contender"] == "eager":
            assert r["speedup_vs_eager"] == pytest.approx(1.0)
        if "compiled" in contenders:
            assert r["speedup_vs_compiled"] > 0
        else:
            assert r["speedup_vs_compiled"] is None
    # ratios come from the figures of the same run
    by = {(r["case"], r["dtype"], r["mode"], r["pass"], r["contender"]): r for r in records}
    for (case, dtype, mode, pass_, c), r in by.items():
        eager = by[(case, dtype, mode, pass_, "eager")]
        assert r["speedup_vs_eager"] == pytest.approx(eager["median_ms"] / r["median_ms"])


def test_bench_with_compiled_peer(tmp_path):
    out = tmp_path / "bench_cpu.json"
    assert bench.main(["--device", "cpu", "--shapes", "8x16", "--dtypes", "fp32", "--out", str(out),
                       "--no-plot"] + TIMING) == 0
    result = json.loads(out.read_text())
    _check_result(result, ["fused-cpu", "fused-reference", "eager", "compiled"], n_cases=2)
    compiled = [r for r in result["records"] if r["contender"] == "compiled"]
    assert all(r["graphs"] >= 1 and r["compile_s"] > 0 for r in compiled)
    assert {r["mode"] for r in result["records"]} == {"soft", "hard"}


def test_bench_shapes_dtypes_reference_markdown_plots(tmp_path, capsys):
    out = tmp_path / "b.json"
    argv = ["--device", "cpu", "--shapes", "8x16,2x5x3@1", "--dtypes", "fp32,bf16",
            "--no-compile", "--out", str(out)] + TIMING
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "fused-cpu" in printed and "vs eager" in printed
    result = json.loads(out.read_text())
    _check_result(result, ["fused-cpu", "fused-reference", "eager"], n_cases=2 * 2 * 2)
    assert result["skipped_contenders"]["compiled"] == "--no-compile"
    assert result["argv"] == argv
    assert {tuple(r["shape"]) for r in result["records"]} == {(8, 16), (2, 5, 3)}
    r = next(r for r in result["records"] if r["shape"] == [2, 5, 3])
    assert (r["dim"], r["cols"], r["rows"]) == (1, 5, 6)

    assert bench.main(["--markdown", str(out)]) == 0
    md = capsys.readouterr().out
    assert "| case | dtype | mode | pass |" in md and "fused-cpu ms" in md
    assert f"Run: {result['created']}, commit {result['versions']['git']}, `python -m fused_gumbel.bench " in md
    assert "load_average" in result and result["load_average"]["after"] is not None
    assert md.count("\n| 8x16 |") == 8 + 4  # 2 dtypes x 2 modes x 2 passes, + the memory table

    pytest.importorskip("matplotlib")
    pngs = [tmp_path / "b_speedup.png", tmp_path / "b_limit.png"]
    assert all(p.stat().st_size > 0 for p in pngs)
    for p in pngs:
        p.unlink()
    assert bench.main(["--plot-from", str(out)]) == 0
    assert all(p.stat().st_size > 0 for p in pngs)


@pytest.mark.parametrize("argv, message", [
    (["--threads", "0"], "--threads: must be above 0"),
    (["--tau", "-1"], "--tau: must be above 0"),
    (["--tau", "nan"], "--tau: must be above 0"),
    (["--quick", "--suite", "moe"], "--quick runs the issue suite"),
    (["--markdown", "no-such-file.json"], "cannot read no-such-file.json"),
])
def test_bad_arguments_stop_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert message in str(exc.value.code) + capsys.readouterr().err


def test_a_busy_machine_is_noted(monkeypatch):
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 2)
    assert bench._busy_note(0, 2) is None and bench._busy_note(1, 1) is None
    assert "--threads 1" in bench._busy_note(1, 2)
    assert bench._busy_note(None, 2) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_cpu_runs_keep_freed_memory_for_reuse():
    """A CPU benchmark run sets glibc to keep freed blocks (a separate process:
    the setting is process-wide)."""
    code = ("import json; from fused_gumbel import bench; "
            "print(json.dumps(bench.keep_freed_memory(True)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["method"] == "glibc mallopt" and got["M_MMAP_THRESHOLD"] == got["M_TRIM_THRESHOLD"] == 1 << 30
    assert bench.keep_freed_memory(False) == {"method": "system default"}


def test_suites_and_scaling():
    cpu = bench.suite_cases("default", "cpu", bench.CPU_MAX_ELEMENTS)
    assert [c.shape for c in cpu] == [(4096, 1024), (512, 32768), (32, 262144)]
    assert all(c.scaled_from is None for c in cpu)
    cuda = bench.suite_cases("default", "cuda", None)
    assert {"issue", "moe", "lm", "vq"} == {c.group for c in cuda}
    router = [c for c in cuda if c.shape == (16384, 64)]
    assert len(router) == 1 and router[0].groups == ["issue", "moe"]
    dvae = next(c for c in cuda if c.group == "vq" and c.dim == 1)
    assert dvae.shape == (8, 8192, 64, 64) and dvae.cols == 8192 and dvae.rows == 32768
    lm = bench.suite_cases("lm", "cpu", bench.CPU_MAX_ELEMENTS)
    assert any(c.scaled_from for c in lm)
    for c in lm:  # rows shrink, the row length never does
        assert c.numel <= bench.CPU_MAX_ELEMENTS
        if c.scaled_from:
            assert c.scaled_from[c.dim] == c.cols
    vq = bench.suite_cases("vq", "cpu", bench.CPU_MAX_ELEMENTS)
    assert vq[1].scaled_from == (8, 8192, 64, 64) and vq[1].cols == 8192 and vq[1].numel <= bench.CPU_MAX_ELEMENTS
    assert bench.scale_down((8, 8192, 64, 64), 1, 2 ** 24)[1] == 8192
    assert [c.shape for c in bench.parse_shapes("4x5, 2x3x4@-2")] == [(4, 5), (2, 3, 4)]
    with pytest.raises(SystemExit):
        bench.parse_shapes("4xq")


def test_plans():
    """The CUDA default stays lean (issue in both dtypes, named groups in bf16);
    --quick is the issue set in one dtype."""
    parse = bench.build_parser().parse_args
    plan, passes, _ = bench.make_plan(parse([]), "cuda")
    assert passes == ["fwd", "fwd+bwd"] and len(plan) == 3 * 2 * 2 + 7 * 2
    assert {d for c, d, _ in plan if c.group != "issue"} == {torch.bfloat16}
    plan, _, _ = bench.make_plan(parse(["--quick"]), "cuda")
    assert len(plan) == 6 and {d for _, d, _ in plan} == {torch.bfloat16}
    plan, _, notes = bench.make_plan(parse(["--quick"]), "cpu")
    assert len(plan) == 6 and {d for _, d, _ in plan} == {torch.float32} and len(notes) == 3
    assert all(c.numel <= bench.QUICK_MAX_ELEMENTS for c, _, _ in plan)
    plan, _, _ = bench.make_plan(parse(["--suite", "all"]), "cuda")
    assert len(plan) == 10 * 2 * 2
    plan, _, notes = bench.make_plan(parse([]), "cpu")
    assert len(plan) == 12 and not notes
