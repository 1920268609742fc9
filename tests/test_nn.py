"""The GumbelSoftmax module and the temperature schedule."""

import copy
import io
import math
import pickle

import pytest
import torch

import fused_gumbel as fg


def test_schedule_follows_the_method():
    s = fg.TemperatureSchedule()
    assert (s.tau0, s.tau_min, s.rate, s.every) == (1.0, 0.5, 1e-5, 1000)
    assert s(0) == 1.0 and s(999) == 1.0
    assert s(1000) == pytest.approx(math.exp(-1e-5 * 1000))
    assert s(10**7) == 0.5
    with pytest.warns(UserWarning, match="0.1"):
        fg.TemperatureSchedule(tau_min=0.05)
    with pytest.raises(ValueError):
        fg.TemperatureSchedule(tau0=0)
    for bad, match in ((dict(tau0=0.5, tau_min=0.6), "exceeds"), (dict(every=1.5), "every"),
                       (dict(every=True), "every")):
        with pytest.raises(ValueError, match=match):
            fg.TemperatureSchedule(**bad)
    with pytest.raises(ValueError, match="step"):
        s(-1)


def test_module_anneals_in_training_and_is_hard_in_eval():
    m = fg.GumbelSoftmax(hard=False, schedule=fg.TemperatureSchedule(tau0=2.0, tau_min=0.5, rate=0.1, every=1))
    x = torch.randn(4, 6, requires_grad=True)
    taus = []
    for _ in range(3):
        taus.append(m.current_tau())
        m(x).sum().backward()
    assert taus == [2.0, 2.0 * math.exp(-0.1), 2.0 * math.exp(-0.2)]
    m.eval()
    y = m(x)
    assert ((y == 0) | (y == 1)).all() and int(m.step) == 3
    assert "TemperatureSchedule" in repr(m)


def test_module_state_dict_keeps_the_step():
    m = fg.GumbelSoftmax(schedule=fg.TemperatureSchedule(every=1, rate=1e-3))
    m(torch.randn(2, 3))
    m2 = fg.GumbelSoftmax(schedule=fg.TemperatureSchedule(every=1, rate=1e-3))
    m2.load_state_dict(m.state_dict())
    assert m2.current_tau() == m.current_tau()


def test_module_follows_writes_to_its_step():
    """The forward reads the step from a Python copy (no device sync per
    call), re-read when the buffer is written or replaced."""
    schedule = fg.TemperatureSchedule(tau0=2.0, tau_min=0.1, rate=0.01, every=1)
    m = fg.GumbelSoftmax(schedule=schedule, backend="cpu")
    x = torch.randn(3, 5)

    def sample_at(step):
        torch.manual_seed(1)
        return fg.gumbel_softmax(x, schedule(step), backend="cpu")

    for write in (lambda: m.step.fill_(40), lambda: m.load_state_dict({"step": torch.tensor(7)}),
                  lambda: setattr(m, "step", torch.tensor(90))):
        m(x)
        write()
        expected_step = int(m.step)
        torch.manual_seed(1)
        torch.testing.assert_close(m(x), sample_at(expected_step))
        assert int(m.step) == expected_step + 1


_FAST = fg.TemperatureSchedule(tau0=2.0, tau_min=0.1, rate=0.5, every=1)  # a new tau at every step


def _scheduled_modules():
    """A GumbelSoftmax after a linear layer and a GumbelRouter, both with _FAST."""
    torch.manual_seed(0)
    gs = fg.GumbelSoftmax(schedule=_FAST, backend="cpu")
    return [torch.nn.Sequential(torch.nn.Linear(8, 5), gs),
            fg.GumbelRouter(8, 5, tau=_FAST, backend="cpu")]


def _loss(out):
    y = out if isinstance(out, torch.Tensor) else out[0] * out[3][..., :1]  # (reentrant: a plain tuple)
    return (y * torch.linspace(-1, 2, y.shape[-1])).sum()


@pytest.mark.parametrize("calls", [1, 2], ids=["one_call", "two_calls"])
@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non_reentrant"])
def test_a_checkpointed_forward_is_recomputed_at_its_own_step(reentrant, calls):
    """Activation checkpointing runs the forward again in the backward pass:
    that recompute takes the tau of the forward it repeats and does not
    advance the step again (else the schedule anneals twice as fast and the
    gradient is of another temperature's sample); also for a module called
    twice before one backward (a shared block, summed micro-batch losses),
    whose forwards the backward recomputes in reverse order."""
    x = torch.randn(6, 8, requires_grad=True)  # (reentrant checkpointing needs an input that does)
    for index in range(2):
        plain, checkpointed = _scheduled_modules()[index], _scheduled_modules()[index]
        for step in range(3):
            for module, run in ((plain, lambda m, x: m(x)), (checkpointed, lambda m, x: torch.utils.checkpoint.
                                                             checkpoint(m, x, use_reentrant=reentrant))):
                torch.manual_seed(step)
                sum(_loss(run(module, x * (call + 1))) for call in range(calls)).backward()
            inner = checkpointed[-1] if index == 0 else checkpointed
            assert int(inner.step) == calls * (step + 1)
        for p, q in zip(plain.parameters(), checkpointed.parameters()):
            assert p.grad.abs().sum() > 0
            # (two calls: the contributions may add up in another order)
            torch.testing.assert_close(q.grad, p.grad, rtol=0 if calls == 1 else 1e-5, atol=0 if calls == 1 else 1e-6)


def test_a_state_dict_loads_with_weights_only():
    """torch.load's default (weights_only=True) takes the modules' state
    dicts: their metadata holds nn.Module's int version, not a method."""
    for module in _scheduled_modules():
        module(torch.randn(2, 8))
        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=True)
        assert all(isinstance(m["version"], int) for m in loaded._metadata.values())
        fresh = _scheduled_modules()[0 if isinstance(module, torch.nn.Sequential) else 1]
        fresh.load_state_dict(loaded)
        for key, value in module.state_dict().items():
            assert torch.equal(fresh.state_dict()[key], value), key


def test_modules_built_on_the_meta_device_start_at_step_0():
    """The meta-device recipe (to_empty, then every module's reset_parameters)
    leaves step 0, whatever memory to_empty gave the buffer."""
    with torch.device("meta"):
        modules = [fg.GumbelSoftmax(schedule=_FAST), fg.GumbelRouter(8, 5, tau=_FAST)]
    for module in modules:
        module.to_empty(device="cpu")
        module.step.fill_(123456789)  # what an uninitialized buffer may hold
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
        assert int(module.step) == 0 and module.current_tau() == _FAST(0)
    router = fg.GumbelRouter(8, 5)
    before = router.gate.weight.clone()
    router.reset_parameters()
    assert not torch.equal(router.gate.weight, before)


@pytest.mark.parametrize("copy_of", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))],
                         ids=["deepcopy", "pickle"])
def test_a_copy_follows_writes_to_its_step(copy_of):
    """A copy's buffer counts its versions from the start again: the copy must
    not compare them with the original's."""
    x = torch.randn(3, 8)
    for steps in (1, 2, 3):
        for module in _scheduled_modules():
            for _ in range(steps):
                module(x)
            for write in (lambda m: m.step.fill_(10),
                          lambda m: m.load_state_dict({"step": torch.tensor(10)}, strict=False)):
                clone = copy_of(module)
                inner = clone[-1] if isinstance(clone, torch.nn.Sequential) else clone
                write(inner)
                assert inner._scheduled_tau(_FAST, False) == _FAST(10)


def test_module_with_a_schedule_compiles_to_one_graph():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    schedule = fg.TemperatureSchedule(tau0=2.0, tau_min=0.5, rate=0.5, every=1)
    m = fg.GumbelSoftmax(schedule=schedule, backend="cpu")
    compiled = torch.compile(m, fullgraph=True)
    x = torch.randn(4, 6, requires_grad=True)
    for step in range(4):
        torch.manual_seed(step)
        y = compiled(x)
        y.sum().backward()
        torch.manual_seed(step)
        torch.testing.assert_close(y, fg.gumbel_softmax(x, schedule(step), backend="cpu"))
    assert int(m.step) == 4 and counters["stats"]["unique_graphs"] == 1
    assert m.current_tau() == schedule(4)


def test_module_arguments_are_checked_at_construction():
    import numpy as np

    for bad in (dict(tau=0), dict(tau=float("nan")), dict(backend="bogus")):
        with pytest.raises(ValueError):
            fg.GumbelSoftmax(**bad)
    for not_a_number in ("0.5", None, 1 + 0j, torch.tensor([0.5, 0.7])):  # as gumbel_softmax's tau
        with pytest.raises(TypeError, match="tau must be a number"):
            fg.GumbelSoftmax(tau=not_a_number)
    for true in (True, np.True_):  # (which gumbel_softmax takes as 1, with a warning)
        with pytest.raises(TypeError, match="GumbelSoftmax: tau"):
            fg.GumbelSoftmax(tau=true)
    with pytest.raises(TypeError, match="schedule"):
        fg.GumbelSoftmax(schedule=0.5)
    assert fg.GumbelSoftmax(tau=np.float32(0.5)).tau == 0.5 == fg.GumbelSoftmax(tau=torch.tensor(0.5)).tau
    # a learned tau would be read once as a float and never learn: refused
    with pytest.raises(NotImplementedError, match="learned"):
        fg.GumbelSoftmax(tau=torch.nn.Parameter(torch.tensor(0.5)))


def test_module_with_a_schedule_built_under_inference_mode():
    """A buffer made under torch.inference_mode has no version counter, which
    the eager path reads to see writes to the step: the step is then read at
    every forward."""
    x = torch.randn(3, 5)
    with torch.inference_mode():
        m = fg.GumbelSoftmax(schedule=fg.TemperatureSchedule(tau0=2.0, rate=0.1, every=1), hard_eval=False)
        m.eval()
        torch.manual_seed(0)
        y = m(x)
        torch.manual_seed(0)
        torch.testing.assert_close(y, fg.gumbel_softmax(x, 2.0))
        m.train()
        m(x)
        m.step.fill_(5)
        torch.manual_seed(0)
        y = m(x)
        torch.manual_seed(0)
        torch.testing.assert_close(y, fg.gumbel_softmax(x, 2.0 * math.exp(-0.5)))
        assert int(m.step) == 6
