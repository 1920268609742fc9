"""A small mixture-of-experts layer trained with fused_gumbel.nn.GumbelRouter.

The toy task needs routing: inputs come from a few clusters, and each cluster
has its own linear map to its target (y = A_c x + b_c). One linear layer cannot
fit them all; linear experts can, once the router sends each cluster to its
own expert. The router is trained only through the straight-through gradient
of its hard choice (and the load-balancing loss).

    python examples/moe_router.py                   # top-1, 4 experts, 4 clusters, 300 steps
    python examples/moe_router.py --k 2             # top-2 (needs fused_gumbel.gumbel_topk)
    python examples/moe_router.py --experts 8 --clusters 8 --aux-loss-weight 0.01

Printed: the task loss as it falls, the load of each expert (fraction of the
routing slots over the last 50 steps), the loss in eval mode (argmax routing),
and, for comparison, one linear layer trained the same way and the same MoE
trained without the auxiliary loss (weight 0).
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import torch
from torch import nn

import fused_gumbel as fg


class Task(NamedTuple):
    centers: torch.Tensor  # [clusters, dim]
    maps: torch.Tensor     # [clusters, dim, dim]
    offsets: torch.Tensor  # [clusters, dim]

    def sample(self, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x [batch, dim] around a random cluster's center, y = A_c x + b_c."""
        c = torch.randint(0, len(self.centers), (batch,), generator=gen)
        x = self.centers[c] + torch.randn(batch, self.centers.shape[1], generator=gen)
        y = torch.einsum("bij,bj->bi", self.maps[c], x) + self.offsets[c]
        return x, y


def make_task(clusters: int = 4, dim: int = 16, seed: int = 0) -> Task:
    gen = torch.Generator().manual_seed(seed)
    centers = 3.0 * torch.randn(clusters, dim, generator=gen)
    maps = torch.randn(clusters, dim, dim, generator=gen) / dim**0.5
    return Task(centers, maps, torch.randn(clusters, dim, generator=gen))


class MoE(nn.Module):
    """y = sum over the k chosen experts e of combine_weight * expert_e(x);
    each expert only sees the tokens routed to it (sparse dispatch)."""

    def __init__(self, dim: int, num_experts: int, k: int = 1, aux_loss_weight: float = 0.01,
                 tau: float | fg.TemperatureSchedule = 1.0) -> None:
        super().__init__()
        self.router = fg.GumbelRouter(dim, num_experts, k, tau=tau, aux_loss_weight=aux_loss_weight)
        self.experts = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, fg.RouterOutput]:
        route = self.router(x)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, slot = (route.expert_index == e).nonzero(as_tuple=True)
            if token.numel():
                weight = route.combine_weights[token, slot].unsqueeze(-1)
                out = out.index_add(0, token, weight * expert(x[token]))
        return out, route


def train(model: nn.Module, task: Task, steps: int = 300, batch: int = 256, lr: float = 1e-2,
          seed: int = 0, log_every: int = 0, load_window: int = 50) -> dict:
    """Adam on the mean squared error (+ the router's aux loss for an MoE).
    Returns the task losses, the expert loads over the last `load_window`
    steps, whether the gate got gradients, and the time taken."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the router's noise
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    is_moe = isinstance(model, MoE)
    counts = torch.zeros(model.router.num_experts) if is_moe else None
    losses, gate_grads = [], []
    start = time.perf_counter()
    for step in range(steps):
        x, y = task.sample(batch, gen)
        if is_moe:
            pred, route = model(x)
        else:
            pred, route = model(x), None
        loss = nn.functional.mse_loss(pred, y)
        total = loss + route.aux_loss if is_moe else loss
        optimizer.zero_grad()
        total.backward()
        if is_moe:
            gate_grads.append(model.router.gate.weight.grad.norm().item())
            if step >= steps - load_window:
                counts += torch.bincount(route.expert_index.flatten(), minlength=len(counts))
        optimizer.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            extra = f"  aux {route.aux_loss.item():.4f}" if is_moe else ""
            print(f"  step {step:4d}  loss {loss.item():.4f}{extra}")
    result = dict(losses=losses, seconds=time.perf_counter() - start, eval_loss=evaluate(model, task, gen))
    if is_moe:
        result.update(load=(counts / counts.sum()).tolist(), gate_grad_norms=gate_grads)
    return result


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, gen: torch.Generator, batch: int = 4096) -> float:
    """Task loss in eval mode (the router takes each token's argmax expert)."""
    model.eval()
    x, y = task.sample(batch, gen)
    pred = model(x)[0] if isinstance(model, MoE) else model(x)
    model.train()
    return nn.functional.mse_loss(pred, y).item()


def final_loss(result: dict, last: int = 20) -> float:
    """Mean task loss over the last `last` steps (a single step is noisy)."""
    tail = result["losses"][-last:]
    return sum(tail) / len(tail)


def imbalance(load: list[float]) -> float:
    """num_experts * the largest expert's share: 1.0 is a perfectly even load,
    num_experts means every token went to one expert."""
    return len(load) * max(load)


def run(steps: int = 300, experts: int = 4, clusters: int = 4, dim: int = 16, k: int = 1,
        aux_loss_weight: float = 0.1, seed: int = 0, log_every: int = 0, **train_args) -> dict:
    """The MoE with aux weight `aux_loss_weight` and with 0, and one linear
    layer, each from the same seed on the same task."""
    task = make_task(clusters, dim, seed)
    results = {}
    for name, weight in (("moe", aux_loss_weight), ("moe_no_aux", 0.0)):
        torch.manual_seed(seed)
        model = MoE(dim, experts, k, aux_loss_weight=weight)
        if log_every:
            print(f"MoE, {experts} experts, top-{k}, aux_loss_weight={weight}:")
        results[name] = train(model, task, steps, seed=seed, log_every=log_every if name == "moe" else 0,
                              **train_args)
    torch.manual_seed(seed)
    results["linear"] = train(nn.Linear(dim, dim), task, steps, seed=seed, **train_args)
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--clusters", type=int, default=4)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--aux-loss-weight", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (the tensors are tiny: a second thread only adds synchronisation)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    results = run(args.steps, args.experts, args.clusters, k=args.k, aux_loss_weight=args.aux_loss_weight,
                  seed=args.seed, log_every=max(1, args.steps // 6))
    print(f"\ntask loss: first step -> mean of the last 20 steps, then eval mode; {args.steps} steps, "
          f"{torch.get_num_threads()} CPU thread(s):")
    for name, label in (("moe", f"MoE, aux weight {args.aux_loss_weight}"), ("moe_no_aux", "MoE, aux weight 0"),
                        ("linear", "one linear layer")):
        r = results[name]
        line = (f"  {label:24s} loss {r['losses'][0]:.3f} -> {final_loss(r):.4f}, eval {r['eval_loss']:.4f}"
                f"  ({r['seconds']:.1f} s)")
        if "load" in r:
            load = " ".join(f"{f:.2f}" for f in r["load"])
            line += f"\n  {'':24s} expert load [{load}], imbalance {imbalance(r['load']):.2f}"
        print(line)
    return results


if __name__ == "__main__":
    main()
