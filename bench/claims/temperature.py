"""Claim: the temperature trades bias for variance (Jang et al. 2017, sec. 2-3).

Part 1 (qualitative, fig. 1 of the paper): five Gumbel-Softmax draws at
tau = 5, 1, 0.5, 0.1 next to the target distribution; low tau gives nearly
one-hot samples, high tau nearly uniform ones.

Part 2 (measured): on an 8-class categorical with fixed logits ``theta`` and a
fixed reward vector ``r``, the objective ``E_{z ~ Cat(softmax(theta))}[r[z]]``
has the exact gradient ``p * (r - p.r)``. The Gumbel-Softmax estimator is the
autograd gradient of ``r . y_soft(theta, tau)`` through ``fg.gumbel_softmax``,
one independent sample per row of an N-row batch of the same logits. For each
tau on a grid from 0.1 to 5:

* bias = || mean over samples of the GS gradient - exact gradient ||,
* variance = mean over samples of || per-sample gradient - their mean ||^2,

and the log-log slope of variance against tau at small tau is fitted.

Run: ``python bench/claims/temperature.py [--tiny] [--out-dir DIR] [--seed S]``;
writes ``temperature.png`` and ``temperature.json``.
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

DRAW_TAUS = (5.0, 1.0, 0.5, 0.1)
# Taus at or below this value enter the small-tau slope fit.
SLOPE_TAU_MAX = 0.5

FULL = {"n_samples": 200000, "n_taus": 15}
TINY = {"n_samples": 4000, "n_taus": 6}


def gs_gradients(
    logits: torch.Tensor, reward: torch.Tensor, tau: float, n: int, seed: int, hard: bool = False
) -> torch.Tensor:
    """Per-sample Gumbel-Softmax gradients of ``reward . y``, shape [n, classes].

    Each row of the batch is one sample (the kernel's noise is a function of
    (seed, position)); since the rows share no parameters, the gradient with
    respect to row i of a repeated leaf is exactly sample i's gradient with
    respect to ``logits``. ``hard=True`` gives the straight-through estimator.
    """
    rows = logits.detach().expand(n, -1).clone().requires_grad_(True)
    y = fg.gumbel_softmax(rows, tau=tau, hard=hard, seed=seed)
    (y @ reward).sum().backward()
    return rows.grad


def draws(n_draws: int, seed: int) -> dict[float, list[list[float]]]:
    """``n_draws`` soft samples per tau in DRAW_TAUS (same noise for every tau)."""
    rows = LOGITS.expand(n_draws, -1).contiguous()
    return {
        tau: fg.gumbel_softmax(rows, tau=tau, seed=seed).tolist() for tau in DRAW_TAUS
    }


def loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def run(n_samples: int, n_taus: int, seed: int = 0) -> dict:
    """Measures bias and variance of the GS gradient over a tau grid.

    Args:
        n_samples: independent samples (batch rows) per tau.
        n_taus: number of log-spaced taus from 0.1 to 5.
        seed: kernel seed; the same noise serves every tau (common random
            numbers make the curves smoother without biasing any point).

    Returns:
        A JSON-serialisable dict of the grid, bias, variance, Monte Carlo
        standard error of the bias, the fitted slope and the draws.
    """
    exact = exact_gradient(LOGITS, REWARD)
    taus = np.geomspace(0.1, 5.0, n_taus)
    bias, variance, bias_se = [], [], []
    for tau in taus:
        g = gs_gradients(LOGITS, REWARD, float(tau), n_samples, seed)
        mean = g.mean(0)
        var = float(((g - mean) ** 2).sum(1).mean())
        bias.append(float((mean - exact).norm()))
        variance.append(var)
        # Norm of the sampling error of the mean; the bias is only resolved
        # where it is well above this floor.
        bias_se.append((var / n_samples) ** 0.5)
    small = taus <= SLOPE_TAU_MAX
    return {
        "n_samples": n_samples,
        "seed": seed,
        "logits": LOGITS.tolist(),
        "reward": REWARD.tolist(),
        "target": torch.softmax(LOGITS, -1).tolist(),
        "exact_gradient": exact.tolist(),
        "taus": taus.tolist(),
        "bias": bias,
        "bias_mc_se": bias_se,
        "variance": variance,
        "slope_tau_max": SLOPE_TAU_MAX,
        "variance_slope_small_tau": loglog_slope(taus[small], np.asarray(variance)[small]),
        "draws": {str(t): d for t, d in draws(5, seed + 1).items()},
    }


def plot(result: dict, path: Path) -> None:
    """Draw panels (top row) and bias / variance against tau (bottom row)."""
    fig = plt.figure(figsize=(12, 6.5))
    grid = fig.add_gridspec(2, 4)
    k = np.arange(len(result["target"]))
    for col, (tau, samples) in enumerate(result["draws"].items()):
        ax = fig.add_subplot(grid[0, col])
        ax.bar(k, result["target"], 0.9, color="0.8", label="target")
        width = 0.9 / len(samples)
        for j, y in enumerate(samples):
            ax.bar(k - 0.45 + (j + 0.5) * width, y, width, label="draws" if j == 0 else None)
        ax.set_ylim(0, 1)
        ax.set_title(f"tau = {float(tau):g}")
        ax.set_xlabel("class")
        if col == 0:
            ax.legend(fontsize=8)

    taus = np.asarray(result["taus"])
    ax = fig.add_subplot(grid[1, :2])
    ax.loglog(taus, result["bias"], "o-", label="bias ||mean GS grad - exact||")
    ax.loglog(taus, result["bias_mc_se"], ":", color="0.5", label="MC standard error")
    ax.set_xlabel("tau")
    ax.legend(fontsize=8)
    ax.set_title(f"bias ({result['n_samples']} samples per tau)")

    ax = fig.add_subplot(grid[1, 2:])
    var = np.asarray(result["variance"])
    ax.loglog(taus, var, "o-", color="C3", label="variance of per-sample GS grad")
    small = taus <= result["slope_tau_max"]
    slope = result["variance_slope_small_tau"]
    coef = np.polyfit(np.log(taus[small]), np.log(var[small]), 1)
    fit = np.exp(np.polyval(coef, np.log(taus[small])))
    label = f"fit tau <= {result['slope_tau_max']:g}: slope {slope:.2f}"
    ax.loglog(taus[small], fit, "k--", label=label)
    ax.set_xlabel("tau")
    ax.legend(fontsize=8)
    ax.set_title("variance")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Command line entry: runs, prints, writes PNG + JSON; returns the numbers."""
    result = cli(argv, __doc__.splitlines()[0], "temperature", run, FULL, TINY, plot)

    print(f"exact gradient p*(r - p.r): {np.round(result['exact_gradient'], 4).tolist()}")
    print(f"{'tau':>7} {'bias':>9} {'MC s.e.':>9} {'variance':>10}")
    for row in zip(result["taus"], result["bias"], result["bias_mc_se"], result["variance"]):
        print(f"{row[0]:7.3f} {row[1]:9.5f} {row[2]:9.5f} {row[3]:10.4f}")
    print(
        f"log-log slope of variance vs tau for tau <= {SLOPE_TAU_MAX:g}: "
        f"{result['variance_slope_small_tau']:.3f}"
    )
    return result


if __name__ == "__main__":
    main()
