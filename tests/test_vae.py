"""bench/claims/vae.py trains its three VAEs end to end in a tiny setting: the
ELBOs are finite and improve, the categorical runs share their initialisation,
and the CLI writes its JSON and PNG."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "claims" / "vae.py"
RUNS = ("continuous", "categorical_fused", "categorical_F.gumbel_softmax")


def _load():
    # bench/ is not a package, so the script is loaded from its path.
    spec = importlib.util.spec_from_file_location("bench_claims_vae", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vae = _load()
TINY = dict(batch_size=32, n_train=320, n_test=64, test_samples=2, time_samplers=False)


@pytest.fixture(scope="module")
def result():
    return vae.run(3, **TINY)


@pytest.mark.parametrize("name", RUNS)
def test_elbo_finite_and_improves(result, name):
    r = result["runs"][name]
    assert len(r["train_elbo"]) == len(r["epoch_s"]) == 3
    assert all(math.isfinite(v) and v < 0 for v in r["train_elbo"])  # log-likelihood of binary pixels
    assert math.isfinite(r["test_elbo"]) and r["test_elbo"] < 0
    assert r["train_elbo"][-1] > r["train_elbo"][0]
    assert all(t > 0 for t in r["epoch_s"])


def test_categorical_runs_share_initialisation_and_schedule(result):
    fused, torch_run = result["runs"]["categorical_fused"], result["runs"]["categorical_F.gumbel_softmax"]
    assert fused["tau"] == torch_run["tau"]
    assert fused["tau"][0] == 1.0 and all(t >= 0.5 for t in fused["tau"])
    # Same weights and the same first minibatches: the first epoch's ELBOs differ
    # only through the samplers' noise.
    assert abs(fused["train_elbo"][0] - torch_run["train_elbo"][0]) < 1.0


def test_schedule_reaches_floor_within_run():
    schedule = vae.make_schedule(epochs=30, steps_per_epoch=12)
    assert schedule(0) == 1.0
    assert schedule(20 * 12) == 0.5 and schedule(30 * 12 - 1) == 0.5
    assert 0.5 < schedule(10 * 12) < 1.0


def test_cli_writes_json_and_png(tmp_path, monkeypatch):
    real_run = vae.run
    # main's full-size splits would take too long here; keep its CLI path, shrink the data.
    monkeypatch.setattr(vae, "run", lambda epochs, **kw: real_run(epochs, **TINY))
    out = tmp_path / "vae.json"
    # The current thread count, so main's set_num_threads leaves other tests as they were.
    threads = str(torch.get_num_threads())
    assert vae.main(["--epochs", "2", "--threads", threads, "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["runs"]) == set(RUNS) and data["config"]["epochs"] == 2
    assert (tmp_path / "vae.png").stat().st_size > 0

