"""The top-k benchmark runs end to end on a tiny case and reports the fused
kernel against the reference backend timed in the same run."""

import json

import pytest

from fused_gumbel import bench_topk
from fused_gumbel.ops import backend_status


def test_parse_cases():
    assert bench_topk.parse_cases("4096x1024k8, 16x64K2") == [(4096, 1024, 8), (16, 64, 2)]
    with pytest.raises(SystemExit, match="ROWSxCOLSkK"):
        bench_topk.parse_cases("4096x1024")


@pytest.mark.skipif(not backend_status("cpu")[0], reason="needs the compiled CPU kernels")
def test_quick_run_writes_json(tmp_path, capsys):
    out = tmp_path / "topk.json"
    assert bench_topk.main(["--device", "cpu", "--quick", "--cases", "6x40k3", "--out", str(out),
                            "--no-progress", "--system-malloc"]) == 0
    result = json.loads(out.read_text())
    assert result["allocator"] == {"method": "system default"}
    by = {(r["contender"], r["pass"]): r for r in result["records"]}
    assert set(by) == {(c, p) for c in ("fused-cpu", "reference") for p in ("fwd", "fwd+bwd")}
    assert all(r["status"] == "ok" and r["median_ms"] > 0 and r["k"] == 3 for r in by.values())
    for p in ("fwd", "fwd+bwd"):
        fused, ref = by[("fused-cpu", p)], by[("reference", p)]
        assert fused["speedup_vs_reference"] == pytest.approx(ref["median_ms"] / fused["median_ms"])
        assert ref["speedup_vs_reference"] == pytest.approx(1.0)
    assert "fused-cpu" in capsys.readouterr().out
