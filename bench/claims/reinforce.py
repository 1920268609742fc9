"""Claim: Gumbel-Softmax gradients have far lower variance than REINFORCE
(Jang et al. 2017, sec. 3 and 4).

Same problem as temperature.py: 8 classes, fixed logits ``theta``, fixed reward
vector ``r``, objective ``E_{z ~ Cat(softmax(theta))}[r[z]]`` whose exact
gradient is ``p * (r - p.r)``. Each of ``trials`` independent estimates
averages K Monte Carlo samples, for K in {1, 10, 100, 1000}; estimators:

* ``reinforce``: score function ``r[z] * (onehot(z) - p)`` (= r[z] grad log p(z)),
  z drawn by the kernel (``hard=True, return_index=True``).
* ``reinforce_baseline``: ``(r[z] - b) * (onehot(z) - p)``, with b the running
  mean of every reward seen in the previous trials (0 in the first), as a
  baseline carried across training steps would be; b never depends on the
  current samples, so the estimator stays unbiased.
* ``gs``: autograd gradient of ``r . y_soft`` through ``fg.gumbel_softmax``, tau 0.5.
* ``st_gs``: straight-through, ``hard=True``, tau 0.5 (one-hot forward, soft
  gradient).

Two numbers per estimator and K, over the trials:

* ``variance``: mean of || estimate - mean of the estimates ||^2 (spread
  around the estimator's own mean, so bias does not enter);
* ``mse``: mean of || estimate - exact gradient ||^2 (= variance + bias^2;
  the two agree for the unbiased REINFORCE estimators, while GS and ST-GS are
  biased and their MSE levels off at bias^2 as K grows).

Run: ``python bench/claims/reinforce.py [--tiny] [--out-dir DIR] [--seed S]``;
writes ``reinforce.png`` and ``reinforce.json``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import fused_gumbel as fg  # noqa: E402
# common.py sits next to this file, which may be loaded by path (the tests).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import LOGITS, REWARD, cli, exact_gradient  # noqa: E402

TAU = 0.5

ESTIMATORS = ("reinforce", "reinforce_baseline", "gs", "st_gs")
FULL = {"trials": 200, "ks": (1, 10, 100, 1000)}
TINY = {"trials": 50, "ks": (1, 10, 100)}


def reinforce_estimates(trials: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE estimates without and with the running-mean baseline, [trials, C] each."""
    p = torch.softmax(LOGITS, -1)
    rows = LOGITS.expand(trials * k, -1).contiguous()
    _, z = fg.gumbel_softmax(rows, hard=True, return_index=True, seed=seed)
    z = z.view(trials, k)
    rewards = REWARD[z]                                   # [trials, k]
    score = torch.nn.functional.one_hot(z, LOGITS.numel()).double() - p  # grad log p(z)
    plain = (rewards.unsqueeze(-1) * score).mean(1)

    # Baseline of trial t: mean reward over trials 0..t-1 (0 for t = 0).
    seen = torch.cat([rewards.new_zeros(1), rewards.sum(1).cumsum(0)[:-1]])
    count = torch.arange(trials, dtype=torch.float64) * k
    baseline = torch.where(count > 0, seen / count.clamp(min=1), 0.0)
    centred = ((rewards - baseline.unsqueeze(1)).unsqueeze(-1) * score).mean(1)
    return plain, centred


def gs_estimates(trials: int, k: int, seed: int, hard: bool) -> torch.Tensor:
    """(Straight-through) Gumbel-Softmax estimates at TAU, [trials, C].

    One row per sample; the gradient with respect to row i of a repeated leaf
    is sample i's gradient with respect to the logits.
    """
    rows = LOGITS.expand(trials * k, -1).clone().requires_grad_(True)
    y = fg.gumbel_softmax(rows, tau=TAU, hard=hard, seed=seed)
    (y @ REWARD).sum().backward()
    return rows.grad.view(trials, k, -1).mean(1)


def loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def run(trials: int, ks: tuple[int, ...], seed: int = 0) -> dict:
    """Measures variance and MSE of the four estimators for every K.

    Args:
        trials: independent estimates per (estimator, K).
        ks: Monte Carlo samples per estimate.
        seed: base kernel seed; every (K, estimator) draw uses its own seed.

    Returns:
        A JSON-serialisable dict: per estimator the variance and MSE lists
        (aligned with ``ks``) and their log-log slopes, plus the
        REINFORCE / GS ratios.
    """
    exact = exact_gradient(LOGITS, REWARD)
    out = {name: {"variance": [], "mse": []} for name in ESTIMATORS}
    for i, k in enumerate(ks):
        # Distinct seeds: the kernels' noise is a function of (seed, position).
        s = seed + 10 * i
        plain, centred = reinforce_estimates(trials, k, s)
        estimates = {
            "reinforce": plain,
            "reinforce_baseline": centred,
            "gs": gs_estimates(trials, k, s + 1, hard=False),
            "st_gs": gs_estimates(trials, k, s + 2, hard=True),
        }
        for name, est in estimates.items():
            out[name]["variance"].append(float(((est - est.mean(0)) ** 2).sum(1).mean()))
            out[name]["mse"].append(float(((est - exact) ** 2).sum(1).mean()))
    kx = np.asarray(ks, dtype=float)
    for stats in out.values():
        stats["variance_slope"] = loglog_slope(kx, np.asarray(stats["variance"]))
        stats["mse_slope"] = loglog_slope(kx, np.asarray(stats["mse"]))
    ratio = {
        f"reinforce_over_{g}_{m}": [a / b for a, b in zip(out["reinforce"][m], out[g][m])]
        for g in ("gs", "st_gs")
        for m in ("variance", "mse")
    }
    return {
        "trials": trials,
        "ks": list(ks),
        "tau": TAU,
        "seed": seed,
        "exact_gradient": exact.tolist(),
        "estimators": out,
        "ratios": ratio,
    }


def plot(result: dict, path: Path) -> None:
    """Variance (left) and MSE vs exact (right) against K, log-log."""
    labels = {
        "reinforce": "REINFORCE",
        "reinforce_baseline": "REINFORCE + running-mean baseline",
        "gs": f"Gumbel-Softmax tau={result['tau']:g}",
        "st_gs": f"ST Gumbel-Softmax tau={result['tau']:g}",
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, metric, title in zip(
        axes,
        ("variance", "mse"),
        ("variance: mean ||est - mean est||^2", "MSE: mean ||est - exact||^2"),
    ):
        for name, stats in result["estimators"].items():
            slope = stats[f"{metric}_slope"]
            label = f"{labels[name]} (slope {slope:.2f})"
            ax.loglog(result["ks"], stats[metric], "o-", label=label)
        ax.set_xlabel("samples per estimate K")
        ax.set_title(f"{title}, {result['trials']} trials")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Command line entry: runs, prints, writes PNG + JSON; returns the numbers."""
    result = cli(argv, __doc__.splitlines()[0], "reinforce", run, FULL, TINY, plot)

    ks = result["ks"]
    for metric in ("variance", "mse"):
        print(f"{metric} ({result['trials']} trials)")
        print(f"{'estimator':>20} " + " ".join(f"{'K=' + str(k):>10}" for k in ks) + "   slope")
        for name, stats in result["estimators"].items():
            row = " ".join(f"{v:10.3e}" for v in stats[metric])
            print(f"{name:>20} {row}   {stats[metric + '_slope']:.3f}")
    for key, values in result["ratios"].items():
        print(f"{key:>32}: " + " ".join(f"{v:8.2f}" for v in values))
    return result


if __name__ == "__main__":
    main()
