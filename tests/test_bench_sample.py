"""The sampler benchmark runs end to end on a tiny case and reports every
contender with ratios against the same run's peers."""

import json

import pytest

from fused_gumbel import bench_sample
from fused_gumbel.ops import backend_status


@pytest.mark.skipif(not backend_status("cpu")[0], reason="needs the compiled CPU kernels")
def test_quick_run_writes_json(tmp_path, capsys):
    out = tmp_path / "sample.json"
    assert bench_sample.main(["--device", "cpu", "--quick", "--shapes", "4x100", "--dtypes", "fp32",
                              "--out", str(out), "--no-progress", "--system-malloc"]) == 0
    result = json.loads(out.read_text())
    assert result["allocator"] == {"method": "system default"}
    assert result["created"] and result["argv"][:2] == ["--device", "cpu"]
    by_name = {r["contender"]: r for r in result["records"]}
    assert set(by_name) == {"fused-cpu", "eager", "compiled", "multinomial"}
    assert all(r["status"] == "ok" and r["median_ms"] > 0 for r in by_name.values())
    fused = by_name["fused-cpu"]
    assert fused["speedup_vs_eager"] == pytest.approx(by_name["eager"]["median_ms"] / fused["median_ms"])
    assert 0 < fused["fraction_of_limit"] and result["copy_bandwidth"]["gbps"] > 0
    assert "fused-cpu" in capsys.readouterr().out
