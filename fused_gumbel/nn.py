"""Modules: GumbelSoftmax and the temperature schedule of Jang, Gu and Poole,
"Categorical Reparameterization with Gumbel-Softmax" (ICLR 2017)."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .ops import gumbel_softmax


class TemperatureSchedule:
    """tau_t = max(tau_min, tau0 * exp(-rate * t)), with t rounded down to a
    multiple of `every` (the paper updates tau every N steps).

    Defaults follow the paper: tau0=1.0, tau_min=0.5, rate=1e-5, every=1000.
    The paper warns that tau below about 0.1 makes the gradients' variance
    explode; a floor below 0.1 is allowed but warned about.
    """

    def __init__(self, tau0: float = 1.0, tau_min: float = 0.5, rate: float = 1e-5, every: int = 1000) -> None:
        if not (math.isfinite(tau0) and tau0 > 0):
            raise ValueError(f"TemperatureSchedule: tau0 must be positive and finite, got {tau0}")
        if not (math.isfinite(tau_min) and tau_min > 0):
            raise ValueError(f"TemperatureSchedule: tau_min must be positive and finite, got {tau_min}")
        if rate < 0 or not math.isfinite(rate):
            raise ValueError(f"TemperatureSchedule: rate must be a finite number >= 0, got {rate}")
        if every < 1:
            raise ValueError(f"TemperatureSchedule: every must be >= 1, got {every}")
        if tau_min < 0.1:
            warnings.warn(
                f"TemperatureSchedule: tau_min={tau_min} is below 0.1, where Gumbel-Softmax "
                "gradients have very high variance", stacklevel=2)
        self.tau0, self.tau_min, self.rate, self.every = float(tau0), float(tau_min), float(rate), int(every)

    def __call__(self, step: int) -> float:
        """The temperature at training step `step` (0-based)."""
        t = (int(step) // self.every) * self.every
        return max(self.tau_min, self.tau0 * math.exp(-self.rate * t))

    def __repr__(self) -> str:
        return (f"TemperatureSchedule(tau0={self.tau0}, tau_min={self.tau_min}, "
                f"rate={self.rate}, every={self.every})")


class GumbelSoftmax(nn.Module):
    """Gumbel-Softmax sampling as a module.

    With a `schedule`, each forward in training mode uses the schedule's tau for
    the module's step counter and then advances it; in eval mode the current
    tau is used and the counter stays. With `hard_eval` (default True), eval
    mode returns hard samples, as the paper evaluates.

    Args:
        tau: the fixed temperature (ignored when `schedule` is given).
        hard: straight-through (one-hot forward, soft gradient) in training.
        dim: the class dimension.
        schedule: an optional TemperatureSchedule.
        hard_eval: use hard samples in eval mode.
        backend: see fused_gumbel.gumbel_softmax.
    """

    def __init__(self, tau: float = 1.0, hard: bool = False, dim: int = -1, *,
                 schedule: TemperatureSchedule | None = None, hard_eval: bool = True,
                 backend: str = "auto") -> None:
        super().__init__()
        self.tau, self.hard, self.dim = float(tau), bool(hard), int(dim)
        self.schedule, self.hard_eval, self.backend = schedule, bool(hard_eval), backend
        self.register_buffer("step", torch.zeros((), dtype=torch.long), persistent=True)

    def current_tau(self) -> float:
        return self.schedule(int(self.step)) if self.schedule is not None else self.tau

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        tau = self.current_tau()
        hard = self.hard if self.training else (self.hard or self.hard_eval)
        y = gumbel_softmax(logits, tau, hard, dim=self.dim, backend=self.backend)
        if self.training and self.schedule is not None:
            self.step += 1
        return y

    def extra_repr(self) -> str:
        tau = repr(self.schedule) if self.schedule is not None else f"tau={self.tau}"
        return f"{tau}, hard={self.hard}, dim={self.dim}, backend={self.backend!r}"
