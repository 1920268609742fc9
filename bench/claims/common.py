"""What the claim scripts share: the 8-class gradient problem of
temperature.py and reinforce.py, and the command line every script has."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import torch

# Uneven probabilities and rewards of both signs, so no class dominates the gradient.
LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2], dtype=torch.float64)
REWARD = torch.tensor([1.0, -1.0, 2.0, 0.0, 0.5, -2.0, 1.0, 3.0], dtype=torch.float64)


def exact_gradient(logits: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """d E_{z~Cat(softmax(logits))}[reward[z]] / d logits = p * (r - p.r)."""
    p = torch.softmax(logits, -1)
    return p * (reward - (p * reward).sum())


def cli(argv: list[str] | None, description: str, stem: str, run: Callable[..., dict],
        full: dict, tiny: dict, plot: Callable[[dict, Path], None],
        summary: Callable[[dict], dict] = lambda r: r) -> dict:
    """Parses --tiny/--out-dir/--seed, runs, writes <stem>.png and <stem>.json
    (the `summary` of the result) into the out dir; returns the summary."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tiny", action="store_true", help="small test setting")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    result = run(**(tiny if args.tiny else full), seed=args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot(result, args.out_dir / f"{stem}.png")
    out = summary(result)
    (args.out_dir / f"{stem}.json").write_text(json.dumps(out, indent=2) + "\n")
    return out
