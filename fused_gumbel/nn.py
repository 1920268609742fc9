"""Modules: GumbelSoftmax and the temperature schedule of Jang, Gu and Poole,
"Categorical Reparameterization with Gumbel-Softmax" (ICLR 2017), and
GumbelRouter, a mixture-of-experts router that samples its experts with
straight-through Gumbel-Softmax (top-1) or Gumbel top-k."""

from __future__ import annotations

import collections
import math
import numbers
import warnings
from contextlib import nullcontext
from typing import NamedTuple

import torch
from torch import nn

from ._checks import as_dim, as_tau, is_bool_scalar
from .ops import BACKENDS, gumbel_softmax
from .topk import gumbel_topk


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
        if tau_min > tau0:
            raise ValueError(f"TemperatureSchedule: tau_min={tau_min} exceeds tau0={tau0}")
        if rate < 0 or not math.isfinite(rate):
            raise ValueError(f"TemperatureSchedule: rate must be a finite number >= 0, got {rate}")
        if is_bool_scalar(every) or not isinstance(every, numbers.Integral) or every < 1:
            raise ValueError(f"TemperatureSchedule: every must be an int >= 1, got {every!r}")
        if tau_min < 0.1:
            warnings.warn(
                f"TemperatureSchedule: tau_min={tau_min} is below 0.1, where Gumbel-Softmax "
                "gradients have very high variance", stacklevel=2)
        self.tau0, self.tau_min, self.rate, self.every = float(tau0), float(tau_min), float(rate), int(every)

    def __call__(self, step: int) -> float:
        """The temperature at training step `step` (0-based)."""
        if int(step) < 0:
            raise ValueError(f"TemperatureSchedule: step must be >= 0, got {step}")
        t = (int(step) // self.every) * self.every
        return max(self.tau_min, self.tau0 * math.exp(-self.rate * t))

    def tensor(self, step: torch.Tensor) -> torch.Tensor:
        """The same for a step tensor, in tensor ops (float64, on step's
        device): what the modules use under torch.compile, where reading the
        step as a Python int would end the graph."""
        t = torch.div(step, self.every, rounding_mode="floor") * self.every
        return torch.clamp(self.tau0 * torch.exp(-self.rate * t.double()), min=self.tau_min)

    def __repr__(self) -> str:
        return (f"TemperatureSchedule(tau0={self.tau0}, tau_min={self.tau_min}, "
                f"rate={self.rate}, every={self.every})")


def _checked_tau(owner: str, tau: float, what: str = "a positive finite number") -> float:
    if isinstance(tau, torch.Tensor) and tau.requires_grad:
        # The modules keep tau as a float: a learned one would silently stop learning.
        raise NotImplementedError(
            f"{owner}: tau is a fixed temperature, not a learned one (got a tensor that requires grad); "
            "pass a float, or call fused_gumbel.gumbel_softmax(x, tau), which differentiates a tensor tau")
    if is_bool_scalar(tau):  # (the functions take one as PyTorch does, with a warning)
        raise TypeError(f"{owner}: tau must be {what}, got {tau!r}")
    tau = as_tau(tau)
    tau = tau.item() if isinstance(tau, torch.Tensor) else tau
    if not isinstance(tau, numbers.Real):
        raise TypeError(f"{owner}: tau must be {what}, got {type(tau).__name__} {tau!r}")
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"{owner}: tau must be {what}, got {tau!r}")
    return float(tau)


def _checked_backend(owner: str, backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"{owner}: unknown backend {backend!r}; choose from {BACKENDS}")
    return backend


def _autocasting(device_type: str) -> bool:
    """Whether torch.autocast is enabled for the device type (False for one
    autocast does not know, such as meta)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return False


def _in_backward() -> bool:
    """Whether this runs inside a backward pass: where activation checkpointing
    (torch.utils.checkpoint, reentrant or not) recomputes a block's forward."""
    return torch._C._current_graph_task_id() != -1


class _StepCounter(nn.Module):
    """The training-step buffer `step` (saved in the state dict) of a module
    with a TemperatureSchedule, and the schedule's tau at that step without a
    device synchronization per forward: eager mode keeps a Python copy of the
    step, re-read from the buffer (one sync) when something else wrote or
    replaced it (step.fill_, load_state_dict, .to(); writes that bypass
    autograd's version counter, through step.data or step.numpy(), are seen
    only at the next train() or eval()); under torch.compile tau is computed
    from the buffer with tensor ops, so the graph neither breaks nor
    specializes on the step.

    A forward that activation checkpointing recomputes in the backward pass
    takes the tau of the latest training forward not yet recomputed, and does
    not advance the step: the backward recomputes the checkpointed forwards
    in the reverse of their order (one module called several times before a
    backward, a sum of micro-batch losses), or each after its own forward.
    Schedules that interleave them otherwise (pipeline parallelism), and
    training forwards that no backward recomputes run between a forward and
    its backward, pair them wrongly."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("step", torch.zeros((), dtype=torch.long), persistent=True)
        self._forget_step()

    def _forget_step(self) -> None:
        self._step_int, self._step_seen = 0, None  # the copy, and (buffer, its version) it was read from
        # The steps of the training forwards a checkpoint may recompute, latest
        # last (bounded: without checkpointing nothing takes them back).
        self._unrecomputed = collections.deque(maxlen=1024)

    def _scheduled_tau(self, schedule: TemperatureSchedule, advancing: bool) -> float | torch.Tensor:
        """The tau of this forward; `advancing`: a training forward that
        advances the step."""
        if torch.compiler.is_compiling() and hasattr(schedule, "tensor"):
            return schedule.tensor(self.step)
        if advancing and self._unrecomputed and _in_backward():
            return schedule(self._unrecomputed.pop())
        seen, version = self._step_seen, self._step_version()
        if version is None or seen is None or seen[0] is not self.step or seen[1] != version:
            self._step_int, self._step_seen = int(self.step), (self.step, version)
        return schedule(self._step_int)

    def _step_version(self) -> int | None:
        """The step buffer's version counter; None for a buffer made under
        torch.inference_mode, which has none (its step is then read at every
        forward). (Not `_version`: nn.Module's, which state_dict saves.)"""
        return None if self.step.is_inference() else self.step._version

    def train(self, mode: bool = True) -> "_StepCounter":
        self._step_seen = None
        return super().train(mode)

    def reset_parameters(self) -> None:
        """Sets `step` to 0, as after construction; what initializing a model
        built on the meta device (``to_empty``, then ``reset_parameters``)
        needs, whose buffers hold arbitrary memory."""
        with torch.no_grad():
            self.step.zero_()
        self._forget_step()

    def __getstate__(self) -> dict:
        # A copy (deepcopy, pickle) has a buffer whose version counter starts
        # again: the cached version could match a later write's.
        state = super().__getstate__()
        state["_step_seen"], state["_unrecomputed"] = None, collections.deque(maxlen=1024)
        return state

    def _advance(self) -> None:
        if torch.compiler.is_compiling():
            self.step += 1
            return
        if _in_backward():  # checkpointing's recompute of a training forward
            return
        self.step += 1
        if self._step_seen is not None:  # (tau came from the step)
            self._unrecomputed.append(self._step_int)
            self._step_int, self._step_seen = self._step_int + 1, (self.step, self._step_version())


class GumbelSoftmax(_StepCounter):
    """Gumbel-Softmax sampling as a module.

    With a `schedule`, each forward in training mode uses the schedule's tau for
    the module's step counter and then advances it; in eval mode the current
    tau is used and the counter stays. With `hard_eval` (default True), eval
    mode returns hard samples, as the paper evaluates.

    Args:
        tau: the fixed temperature (ignored when `schedule` is given).
        hard: straight-through (one-hot forward, soft gradient) in training.
        dim: the class dimension.
        schedule: an optional TemperatureSchedule (or any callable step -> tau;
            under torch.compile only a TemperatureSchedule, whose ``tensor``
            method computes tau in the graph, avoids a graph break).
        hard_eval: use hard samples in eval mode.
        backend: see fused_gumbel.gumbel_softmax.
    """

    def __init__(self, tau: float = 1.0, hard: bool = False, dim: int = -1, *,
                 schedule: TemperatureSchedule | None = None, hard_eval: bool = True,
                 backend: str = "auto") -> None:
        super().__init__()
        if schedule is not None and not callable(schedule):
            raise TypeError(f"GumbelSoftmax: schedule must be a TemperatureSchedule or None, got {schedule!r}")
        self.tau, self.hard, self.dim = _checked_tau("GumbelSoftmax", tau), bool(hard), as_dim(dim)
        self.schedule, self.hard_eval = schedule, bool(hard_eval)
        self.backend = _checked_backend("GumbelSoftmax", backend)

    def current_tau(self) -> float:
        """The temperature the next forward uses."""
        return self.schedule(int(self.step)) if self.schedule is not None else self.tau

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """A sample of gumbel_softmax(logits) at the current temperature."""
        tau = self._scheduled_tau(self.schedule, self.training) if self.schedule is not None else self.tau
        hard = self.hard if self.training else (self.hard or self.hard_eval)
        y = gumbel_softmax(logits, tau, hard, dim=self.dim, backend=self.backend)
        if self.training and self.schedule is not None:
            self._advance()
        return y

    def extra_repr(self) -> str:
        tau = repr(self.schedule) if self.schedule is not None else f"tau={self.tau}"
        return f"{tau}, hard={self.hard}, dim={self.dim}, hard_eval={self.hard_eval}, backend={self.backend!r}"


class RouterOutput(NamedTuple):
    """What GumbelRouter returns, for x of shape [..., d_model].

    combine_weights: [..., k], x's dtype. The weight of each chosen expert's
        output: exactly 1/k in the forward pass (the k weights sum to 1),
        differentiated as the relaxed (soft) sample, so the gate learns
        through them (straight-through).
    expert_index: [..., k] int64, the chosen experts (for k > 1 in the order
        gumbel_topk returns them).
    aux_loss: [] float32, the load-balancing loss times its weight (0 when the
        weight is 0); add it to the training loss.
    router_probs: [..., num_experts] float32, softmax of the gate's logits
        (no noise, no temperature): the P_e of the load-balancing loss.
    """

    combine_weights: torch.Tensor
    expert_index: torch.Tensor
    aux_loss: torch.Tensor
    router_probs: torch.Tensor


def load_balancing_loss(router_probs: torch.Tensor, expert_index: torch.Tensor) -> torch.Tensor:
    """The Switch Transformer's auxiliary loss (Fedus, Zoph and Shazeer, 2021,
    eq. 4): num_experts * sum_e f_e * P_e.

    f_e is the fraction of the k * tokens routing slots that went to expert e
    (no gradient), P_e the mean router probability of e. It is 1.0 when both
    are uniform, for any k, and grows as the load concentrates.

    Args:
        router_probs: [..., num_experts] router probabilities.
        expert_index: [..., k] int64 chosen experts.
    """
    num_experts = router_probs.shape[-1]
    probs = router_probs.reshape(-1, num_experts)
    index = expert_index.reshape(-1)
    if index.numel() == 0:
        return probs.new_zeros(())
    # scatter_add, not bincount: a fixed output shape, so torch.compile keeps one graph
    counts = probs.new_zeros(num_experts).scatter_add_(0, index, probs.new_ones(index.shape))
    fraction = counts / index.numel()
    return num_experts * (fraction * probs.mean(0)).sum()


class GumbelRouter(_StepCounter):
    """A mixture-of-experts router: a linear gate d_model -> num_experts and a
    hard choice of k experts per token, trained with straight-through Gumbel.

    Training mode: k = 1 samples the expert with
    ``fused_gumbel.gumbel_softmax(logits, tau, hard=True, return_index=True)``;
    k > 1 samples k distinct experts with
    ``fused_gumbel.gumbel_topk(logits, k, tau, hard=True, return_index=True)``.
    The forward value of every combine weight is exactly 1/k; the gradient is
    the relaxed sample's, so the gate learns from the experts' outputs.

    Eval mode: deterministic, no noise: the k experts of largest logit
    (argmax for k = 1), combine weights 1/k with the gradient of
    softmax(logits / tau). ``noisy_eval=True`` samples in eval mode too.

    Temperature: a float, or a TemperatureSchedule read at ``self.step``. The
    router advances ``step`` by one after each training-mode forward (as
    GumbelSoftmax does); when it is called more than once per optimizer step,
    or the step should come from the training loop, pass
    ``step_on_forward=False`` and set it: ``router.step.fill_(global_step)``.
    ``step`` is a buffer, saved in the state dict.

    Load balancing: ``aux_loss_weight`` * the Switch Transformer loss
    (see ``load_balancing_loss``); 0.01 is the Switch paper's value, 0 disables
    it (aux_loss is then a zero tensor).

    The gate's logits are computed in float32 (the router is where low
    precision hurts most, as the Switch paper notes).

    Args:
        d_model: size of each token's features (last dim of the input).
        num_experts: number of experts.
        k: experts per token, 1 <= k <= num_experts.
        tau: temperature (float > 0) or a TemperatureSchedule.
        aux_loss_weight: weight of the load-balancing loss, >= 0.
        noisy_eval: sample (with noise) in eval mode as in training.
        step_on_forward: advance the schedule's step after each training forward.
        bias: give the gate a bias.
        backend: fused_gumbel backend of the sampler (see gumbel_softmax).

    Example::

        router = GumbelRouter(512, num_experts=8)
        out = router(x)                                   # x: [tokens, 512]
        y = torch.zeros_like(x)
        for e, expert in enumerate(experts):              # each expert sees its tokens only
            token, slot = (out.expert_index == e).nonzero(as_tuple=True)
            y = y.index_add(0, token, out.combine_weights[token, slot, None] * expert(x[token]))
        loss = task_loss(y) + out.aux_loss
    """

    def __init__(self, d_model: int, num_experts: int, k: int = 1, *,
                 tau: float | TemperatureSchedule = 1.0, aux_loss_weight: float = 0.01,
                 noisy_eval: bool = False, step_on_forward: bool = True, bias: bool = False,
                 backend: str = "auto") -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("num_experts", num_experts), ("k", k)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"GumbelRouter: {name} must be a positive int, got {value!r}")
        d_model, num_experts, k = int(d_model), int(num_experts), int(k)
        if k > num_experts:
            raise ValueError(f"GumbelRouter: k={k} exceeds num_experts={num_experts}")
        if not isinstance(tau, TemperatureSchedule):
            tau = _checked_tau("GumbelRouter", tau, "a positive finite number or a TemperatureSchedule")
        try:
            if is_bool_scalar(aux_loss_weight) or isinstance(aux_loss_weight, (str, bytes)):
                raise TypeError
            aux_loss_weight = float(aux_loss_weight)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"GumbelRouter: aux_loss_weight must be a number, got {aux_loss_weight!r}") from None
        if not (math.isfinite(aux_loss_weight) and aux_loss_weight >= 0):
            raise ValueError(f"GumbelRouter: aux_loss_weight must be a finite number >= 0, got {aux_loss_weight}")
        _checked_backend("GumbelRouter", backend)
        self.d_model, self.num_experts, self.k = d_model, num_experts, k
        self.tau, self.aux_loss_weight = tau, float(aux_loss_weight)
        self.noisy_eval, self.step_on_forward, self.backend = bool(noisy_eval), bool(step_on_forward), backend
        self.gate = nn.Linear(d_model, num_experts, bias=bias)

    def current_tau(self) -> float:
        """The temperature the next forward uses."""
        return self.tau(int(self.step)) if isinstance(self.tau, TemperatureSchedule) else self.tau

    def reset_parameters(self) -> None:
        """A new gate (nn.Linear's initialization) and `step` 0."""
        super().reset_parameters()
        self.gate.reset_parameters()

    def forward(self, x: torch.Tensor) -> RouterOutput:
        """Routes the tokens of x [..., d_model]; returns a RouterOutput."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"GumbelRouter: x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"GumbelRouter: x must be a floating-point tensor, got {x.dtype}")
        if x.dim() == 0 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"GumbelRouter: x must have shape [..., d_model={self.d_model}], got {tuple(x.shape)}")
        # Autocast would run the gate (and the softmaxes) in its low-precision
        # dtype whatever the dtype of their inputs.
        with torch.autocast(x.device.type, enabled=False) if _autocasting(x.device.type) else nullcontext():
            return self._route(x)

    def _route(self, x: torch.Tensor) -> RouterOutput:
        logits = nn.functional.linear(x.float(), self.gate.weight.float(),
                                      None if self.gate.bias is None else self.gate.bias.float())
        advancing = self.training and self.step_on_forward
        tau = self._scheduled_tau(self.tau, advancing) if isinstance(self.tau, TemperatureSchedule) else self.tau
        if self.training or self.noisy_eval:
            if self.k == 1:
                sample, index = gumbel_softmax(logits, tau, True, return_index=True, backend=self.backend)
                index = index.unsqueeze(-1)
            else:
                sample, index = gumbel_topk(logits, self.k, tau, hard=True, dim=-1, return_index=True,
                                            backend=self.backend)
        else:
            index = logits.argmax(-1, keepdim=True) if self.k == 1 else logits.topk(self.k, -1).indices
            soft = torch.softmax(logits / tau, -1)
            # the exact k-hot, differentiated as the tempered softmax
            sample = torch.zeros_like(soft).scatter(-1, index, 1.0) + (soft - soft.detach())
        if advancing:
            self._advance()
        combine = sample.gather(-1, index).to(x.dtype) / self.k  # 1/k in x's dtype (float64: exactly)
        probs = torch.softmax(logits, -1)
        if self.aux_loss_weight > 0:
            aux = self.aux_loss_weight * load_balancing_loss(probs, index)
        else:
            aux = probs.new_zeros(())
        return RouterOutput(combine, index, aux, probs)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_experts={self.num_experts}, k={self.k}, tau={self.tau!r}, "
                f"aux_loss_weight={self.aux_loss_weight}, noisy_eval={self.noisy_eval}, "
                f"backend={self.backend!r}")

