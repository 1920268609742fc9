"""VAEs on the 8x8 digits: a Gaussian-latent VAE and a categorical VAE whose
Gumbel-Softmax samples come either from fused_gumbel or from
torch.nn.functional.gumbel_softmax (issue 6, item 4).

Data: sklearn's bundled digits (1797 images, 8x8, values 0..16), scaled to
[0, 1] and binarized deterministically by thresholding at 0.5, so every run and
every epoch sees the same binary images; a fixed permutation holds out 20% as
the test split. The decoder is Bernoulli (logits per pixel).

ELBO, in nats per image (higher is better): E_q[log p(x|z)] - KL(q(z|x) || p(z)),
one sample of z per image.
  * continuous: z ~ N(mu, sigma^2) by reparameterization, KL to N(0, I) in
    closed form.
  * categorical: 10 categoricals of 20 classes; training uses the relaxed
    (hard=False) Gumbel-Softmax sample at the annealed temperature, so the
    training ELBO is that of the relaxed objective; the test ELBO uses hard
    one-hot samples, i.e. the discrete model actually being learnt. KL of each
    categorical q to the uniform prior is sum_k q_k log(20 q_k), computed from
    log_softmax (never log(softmax), which gives -inf for underflowed q_k).

The two categorical runs start from one deep-copied initialisation, see the
same minibatches and use the same optimizer; only the sampler differs (so their
noise differs). Their epochs are interleaved so that load from other processes
on the shared machine falls on both alike.

    python bench/claims/vae.py [--epochs 200] [--out bench/claims/vae.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from torch import nn  # noqa: E402

import fused_gumbel as fg  # noqa: E402
from fused_gumbel.bench import cpu_name  # noqa: E402

N_CAT, N_CLASS = 10, 20           # 10 categoricals of 20 classes
GAUSS_DIM = 16                    # the continuous latent's size
HIDDEN = (256, 128)               # encoder 64-256-128-latent; decoder mirrored
Sampler = Callable[[torch.Tensor, float, bool], torch.Tensor]


def load_data(n_train: int | None = None, n_test: int | None = None,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Binarized digits (float32 0/1, [N, 64]) split 80/20 by a fixed permutation;
    n_train / n_test cut the splits (for quick tests)."""
    digits = load_digits()
    x = (torch.tensor(digits.data, dtype=torch.float32) / 16.0 > 0.5).float()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x = x[perm]
    cut = int(0.8 * len(x))
    train, test = x[:cut], x[cut:]
    return train[:n_train], test[:n_test]


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def bernoulli_loglik(x_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) per image, summed over the 64 pixels."""
    return -F.binary_cross_entropy_with_logits(x_logits, x, reduction="none").sum(-1)


class GaussianVAE(nn.Module):
    """VAE with a diagonal-Gaussian latent and an N(0, I) prior."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = mlp([64, *HIDDEN, 2 * GAUSS_DIM])
        self.dec = mlp([GAUSS_DIM, *HIDDEN[::-1], 64])

    def elbo(self, x: torch.Tensor, tau: float = 1.0, hard: bool = False) -> torch.Tensor:
        """Per-image ELBO; tau and hard are unused (kept for one training loop)."""
        mu, logvar = self.enc(x).chunk(2, dim=-1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
        return bernoulli_loglik(self.dec(z), x) - kl


class CategoricalVAE(nn.Module):
    """VAE with N_CAT categoricals of N_CLASS classes, a uniform prior, and a
    pluggable Gumbel-Softmax sampler(logits, tau, hard)."""

    def __init__(self, sampler: Sampler) -> None:
        super().__init__()
        self.sampler = sampler
        self.enc = mlp([64, *HIDDEN, N_CAT * N_CLASS])
        self.dec = mlp([N_CAT * N_CLASS, *HIDDEN[::-1], 64])

    def elbo(self, x: torch.Tensor, tau: float = 1.0, hard: bool = False) -> torch.Tensor:
        """Per-image ELBO with a relaxed (hard=False) or one-hot (hard=True) sample."""
        logits = self.enc(x).view(-1, N_CAT, N_CLASS)
        log_q = F.log_softmax(logits, dim=-1)
        kl = (log_q.exp() * (log_q + math.log(N_CLASS))).sum((-2, -1))
        # Sampling from the normalized log_q is the same distribution as from
        # the logits and keeps the sampler's inputs bounded above by 0.
        z = self.sampler(log_q, tau, hard).reshape(-1, N_CAT * N_CLASS)
        return bernoulli_loglik(self.dec(z), x) - kl


def fused_sampler(logits: torch.Tensor, tau: float, hard: bool) -> torch.Tensor:
    """fused_gumbel's CPU kernel (its noise is clamped, so it is always finite)."""
    return fg.gumbel_softmax(logits, tau, hard, dim=-1, backend="cpu")


def torch_sampler(logits: torch.Tensor, tau: float, hard: bool) -> torch.Tensor:
    """The PyTorch baseline."""
    return F.gumbel_softmax(logits, tau=tau, hard=hard, dim=-1)


def make_schedule(epochs: int, steps_per_epoch: int, tau0: float = 1.0,
                  tau_min: float = 0.5) -> fg.TemperatureSchedule:
    """tau falls once per epoch and reaches tau_min after 2/3 of the run, so
    the last third trains at the floor (the paper's 1e-5 per step would barely
    move tau in a run of a few hundred steps)."""
    total = max(1, epochs * steps_per_epoch)
    rate = math.log(tau0 / tau_min) / (2.0 / 3.0 * total)
    return fg.TemperatureSchedule(tau0=tau0, tau_min=tau_min, rate=rate, every=steps_per_epoch)


class Trainer:
    """One model, its optimizer, schedule and history; train_epoch runs one
    pass over the shuffled training set (the shuffle is seeded per trainer, so
    trainers given one seed see the same minibatches)."""

    def __init__(self, name: str, model: nn.Module, schedule: fg.TemperatureSchedule | None,
                 lr: float, batch_size: int, seed: int) -> None:
        self.name, self.model, self.schedule = name, model, schedule
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.batch_size, self.step = batch_size, 0
        self.shuffle = torch.Generator().manual_seed(seed)
        self.history: dict[str, list[float]] = {"train_elbo": [], "epoch_s": [], "tau": []}

    def train_epoch(self, x: torch.Tensor) -> None:
        """One epoch; records the mean training ELBO, its wall time and the last tau."""
        self.model.train()
        perm = torch.randperm(len(x), generator=self.shuffle)
        total, tau = 0.0, 1.0
        start = time.perf_counter()
        for i in range(0, len(x), self.batch_size):
            xb = x[perm[i:i + self.batch_size]]
            tau = self.schedule(self.step) if self.schedule is not None else 1.0
            elbo = self.model.elbo(xb, tau=tau, hard=False)
            loss = -elbo.mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step += 1
            total += float(elbo.detach().sum())
        self.history["epoch_s"].append(time.perf_counter() - start)
        self.history["train_elbo"].append(total / len(x))
        self.history["tau"].append(tau)

    @torch.no_grad()
    def test_elbo(self, x: torch.Tensor, samples: int) -> float:
        """Mean test ELBO over `samples` independent one-sample estimates, with
        hard one-hot samples for the categorical model."""
        self.model.eval()
        tau = self.schedule(self.step) if self.schedule is not None else 1.0
        return sum(float(self.model.elbo(x, tau=tau, hard=True).mean()) for _ in range(samples)) / samples


def sampler_timing(sampler: Sampler, batch_size: int, tau: float = 0.5) -> float:
    """Median microseconds of one sampler forward+backward at the VAE's shape
    ([batch, 10, 20]); the epoch times are dominated by the MLPs, this isolates
    the part fused_gumbel replaces."""
    from torch.utils.benchmark import Timer
    x = torch.randn(batch_size, N_CAT, N_CLASS, requires_grad=True)
    g = torch.randn(batch_size, N_CAT, N_CLASS)
    stmt = "torch.autograd.grad(f(x, tau, False), x, g)"
    t = Timer(stmt, globals={"torch": torch, "f": sampler, "x": x, "g": g, "tau": tau},
              num_threads=torch.get_num_threads())
    return t.blocked_autorange(min_run_time=0.5).median * 1e6


def run(epochs: int = 200, *, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
        n_train: int | None = None, n_test: int | None = None, test_samples: int = 10,
        tau_min: float = 0.5, time_samplers: bool = True) -> dict:
    """Trains the three VAEs and returns their histories and test ELBOs.

    Args:
        epochs: training epochs of every run.
        batch_size, lr: Adam minibatch size and learning rate (all runs).
        seed: the initialisation, shuffling and noise seed.
        n_train, n_test: cut the splits (None: 1437 / 360 images).
        test_samples: one-sample test ELBO estimates averaged.
        tau_min: the temperature floor of the categorical runs.
        time_samplers: also time the samplers alone (sampler_us).
    """
    torch.manual_seed(seed)
    x_train, x_test = load_data(n_train, n_test, seed)
    steps = math.ceil(len(x_train) / batch_size)
    schedule = make_schedule(epochs, steps, tau_min=tau_min)

    torch.manual_seed(seed)
    cat_fused = CategoricalVAE(fused_sampler)
    # The baseline starts from the very same weights; only the sampler differs.
    cat_torch = copy.deepcopy(cat_fused)
    cat_torch.sampler = torch_sampler
    torch.manual_seed(seed)
    gauss = GaussianVAE()

    trainers = [
        Trainer("continuous", gauss, None, lr, batch_size, seed),
        Trainer("categorical_fused", cat_fused, schedule, lr, batch_size, seed),
        Trainer("categorical_F.gumbel_softmax", cat_torch, schedule, lr, batch_size, seed),
    ]
    for _ in range(epochs):
        for t in trainers:  # interleaved: shared-machine load hits all runs alike
            t.train_epoch(x_train)

    torch.manual_seed(seed + 1)
    runs = {}
    for t in trainers:
        epoch_s = sorted(t.history["epoch_s"])
        runs[t.name] = {
            **t.history,
            "test_elbo": t.test_elbo(x_test, test_samples),
            "epoch_s_median": epoch_s[len(epoch_s) // 2],
            "epoch_s_mean": sum(epoch_s) / len(epoch_s),
        }
    result = {
        "config": {
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": "Adam", "seed": seed,
            "n_train": len(x_train), "n_test": len(x_test), "steps_per_epoch": steps,
            "test_samples": test_samples, "binarization": "x/16 > 0.5 (deterministic threshold)",
            "latent": {"continuous": f"Gaussian, {GAUSS_DIM} dims",
                       "categorical": f"{N_CAT} x {N_CLASS} classes, uniform prior"},
            "mlp": f"64-{HIDDEN[0]}-{HIDDEN[1]}-latent, decoder mirrored",
            "schedule": repr(schedule),
            "training_sample": "relaxed (hard=False)", "test_sample": "hard one-hot",
        },
        "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "fused_gumbel": fg.__version__},
        "runs": runs,
    }
    if time_samplers:
        result["sampler_us"] = {
            "fused_cpu": sampler_timing(fused_sampler, batch_size),
            "F.gumbel_softmax": sampler_timing(torch_sampler, batch_size),
        }
    return result


def plot(result: dict, path: str) -> None:
    """Training ELBO per epoch of the three runs, test ELBOs in the legend."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in result["runs"].items():
        epochs = range(1, len(r["train_elbo"]) + 1)
        ax.plot(epochs, r["train_elbo"], label=f"{name} (test {r['test_elbo']:.2f})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training ELBO (nats / image)")
    ax.set_title("VAEs on binarized 8x8 digits (test ELBO: hard samples)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """CLI: trains, prints a summary, writes the JSON and the PNG next to it."""
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=os.path.join(here, "vae.json"), help="JSON path; the PNG gets .png")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = run(args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    result["wall_s"] = time.perf_counter() - start

    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    png = os.path.splitext(args.out)[0] + ".png"
    plot(result, png)

    for name, r in result["runs"].items():
        print(f"{name:30s} train ELBO {r['train_elbo'][0]:8.2f} -> {r['train_elbo'][-1]:8.2f}"
              f"  test ELBO {r['test_elbo']:8.2f}  epoch {1e3 * r['epoch_s_median']:6.1f} ms (median)")
    for name, us in result.get("sampler_us", {}).items():
        print(f"sampler {name:20s} fwd+bwd {us:7.1f} us at [{args.batch_size}, {N_CAT}, {N_CLASS}]")
    print(f"wall {result['wall_s']:.1f} s; wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
