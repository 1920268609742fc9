"""The paper-claim scripts in bench/claims run on a tiny setting and report sane numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import matplotlib

matplotlib.use("Agg")

CLAIMS = Path(__file__).resolve().parent.parent / "bench" / "claims"


def _load(name: str) -> ModuleType:
    """Imports bench/claims/<name>.py by path (bench is not a package)."""
    spec = importlib.util.spec_from_file_location(f"claims_{name}", CLAIMS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exactness(tmp_path: Path) -> None:
    result = _load("exactness").main(["--tiny", "--seed", "0", "--out-dir", str(tmp_path)])
    assert (tmp_path / "exactness.png").is_file() and (tmp_path / "exactness.json").is_file()
    assert result["chi2_pvalue"] > 1e-3
    assert result["ks_pvalue"] > 1e-3
    assert abs(sum(result["frequencies"]) - 1.0) < 1e-9


def test_temperature(tmp_path: Path) -> None:
    result = _load("temperature").main(["--tiny", "--seed", "0", "--out-dir", str(tmp_path)])
    assert (tmp_path / "temperature.png").is_file()
    taus, variance, bias = result["taus"], result["variance"], result["bias"]
    assert taus[0] == 0.1 and abs(taus[-1] - 5.0) < 1e-12
    # Low temperature: high variance, low bias; high temperature: the reverse.
    assert variance[0] > variance[-1]
    assert bias[0] < bias[-1]
    assert result["variance_slope_small_tau"] < 0


def test_reinforce(tmp_path: Path) -> None:
    result = _load("reinforce").main(["--tiny", "--seed", "0", "--out-dir", str(tmp_path)])
    assert (tmp_path / "reinforce.png").is_file()
    assert all(r > 1 for r in result["ratios"]["reinforce_over_gs_variance"])
    assert all(r > 1 for r in result["ratios"]["reinforce_over_st_gs_variance"])
    for stats in result["estimators"].values():
        assert stats["variance_slope"] < 0
        assert stats["mse_slope"] < 0
