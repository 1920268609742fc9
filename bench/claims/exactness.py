"""Claim: the kernels sample exactly (Gumbel-Max trick, Jang et al. 2017, sec. 2).

Two measurements, one figure with two panels:

1. Hard samples ``fg.gumbel_softmax(..., hard=True, return_index=True)`` from an
   8-class softmax: empirical class frequencies against the target softmax,
   Pearson chi-square goodness of fit (``scipy.stats.chisquare``).
2. ``fg.gumbel_noise`` draws (the exact noise every backend adds) against the
   analytic Gumbel(0, 1) density, Kolmogorov-Smirnov test
   (``scipy.stats.kstest`` against ``gumbel_r``).

Run: ``python bench/claims/exactness.py [--tiny] [--out-dir DIR] [--seed S]``;
writes ``exactness.png`` and ``exactness.json`` into DIR (default: this folder).
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
from scipy import stats  # noqa: E402

import fused_gumbel as fg  # noqa: E402
# common.py sits next to this file, which may be loaded by path (the tests).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cli  # noqa: E402

# A deliberately uneven target so that a wrong sampler (e.g. one that ignored
# the logits or mis-scaled the noise) would show up in the rare classes too.
LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2])

FULL = {"n_samples": 8000, "n_noise": 20000}
TINY = {"n_samples": 2000, "n_noise": 5000}


def run(n_samples: int, n_noise: int, seed: int = 0) -> dict:
    """Draws the samples and the noise and returns the test statistics.

    Args:
        n_samples: number of hard categorical samples.
        n_noise: number of Gumbel noise draws.
        seed: kernel seed; the noise uses ``seed + 1`` so the two draws are
            independent streams.

    Returns:
        A JSON-serialisable dict with the counts, the target and both tests;
        ``noise`` holds the raw draws (a list) for the figure.
    """
    p = torch.softmax(LOGITS.double(), -1)
    # One row per sample: the kernel's noise is a function of (seed, position),
    # so every row is an independent draw from Categorical(p).
    rows = LOGITS.expand(n_samples, -1).contiguous()
    _, index = fg.gumbel_softmax(rows, hard=True, return_index=True, seed=seed)
    counts = torch.bincount(index, minlength=LOGITS.numel()).double()
    expected = p * n_samples
    chi2 = stats.chisquare(counts.numpy(), expected.numpy())

    noise = fg.gumbel_noise((n_noise,), seed + 1, dtype=torch.float64).numpy()
    ks = stats.kstest(noise, "gumbel_r")
    return {
        "n_samples": n_samples,
        "n_noise": n_noise,
        "seed": seed,
        "target": p.tolist(),
        "frequencies": (counts / n_samples).tolist(),
        "chi2_statistic": float(chi2.statistic),
        "chi2_pvalue": float(chi2.pvalue),
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "noise": noise.tolist(),
    }


def plot(result: dict, path: Path) -> None:
    """Writes the two-panel figure (frequencies; noise histogram) to ``path``."""
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    k = np.arange(len(result["target"]))
    ax0.bar(k - 0.2, result["target"], 0.4, label="target softmax", color="0.6")
    ax0.bar(k + 0.2, result["frequencies"], 0.4, label="empirical (hard samples)")
    ax0.set_xlabel("class")
    ax0.set_ylabel("probability")
    ax0.set_title(
        f"{result['n_samples']} hard samples: chi2 p = {result['chi2_pvalue']:.3f}"
    )
    ax0.legend()

    noise = np.asarray(result["noise"])
    ax1.hist(noise, bins=80, density=True, alpha=0.6, label="fg.gumbel_noise")
    x = np.linspace(noise.min(), noise.max(), 400)
    ax1.plot(x, np.exp(-(x + np.exp(-x))), "k", label="Gumbel(0,1) density")
    ax1.set_xlabel("g")
    ax1.set_title(
        f"{result['n_noise']} noise draws: KS D = {result['ks_statistic']:.4f}, "
        f"p = {result['ks_pvalue']:.3f}"
    )
    ax1.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Command line entry: runs, prints, writes PNG + JSON; returns the numbers."""
    # The raw noise draws stay out of the JSON.
    result = cli(argv, __doc__.splitlines()[0], "exactness", run, FULL, TINY, plot,
                 summary=lambda r: {k: v for k, v in r.items() if k != "noise"})

    print("class  target  empirical")
    for i, (t, f) in enumerate(zip(result["target"], result["frequencies"])):
        print(f"{i:5d}  {t:.4f}  {f:.4f}")
    print(
        f"chi-square ({result['n_samples']} samples): "
        f"stat {result['chi2_statistic']:.3f}, p {result['chi2_pvalue']:.4f}"
    )
    print(
        f"KS vs Gumbel(0,1) ({result['n_noise']} draws): "
        f"D {result['ks_statistic']:.5f}, p {result['ks_pvalue']:.4f}"
    )
    return result


if __name__ == "__main__":
    main()
