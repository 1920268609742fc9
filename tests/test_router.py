"""fused_gumbel.nn.GumbelRouter, its load-balancing loss, and the MoE example
(examples/moe_router.py) trained in a tiny setting."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

import fused_gumbel as fg
from fused_gumbel.nn import GumbelRouter, load_balancing_loss

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "moe_router.py"


def _router_logits(router, x):
    return torch.nn.functional.linear(x.float(), router.gate.weight.float())


def test_top1_routes_with_the_fused_sampler():
    torch.manual_seed(0)
    router = GumbelRouter(8, 5, tau=0.7)
    x = torch.randn(3, 4, 8)
    torch.manual_seed(1)
    out = router(x)
    assert out.combine_weights.shape == (3, 4, 1) and out.expert_index.shape == (3, 4, 1)
    assert out.expert_index.dtype == torch.int64 and out.router_probs.shape == (3, 4, 5)
    assert torch.equal(out.combine_weights, torch.ones(3, 4, 1))  # exactly 1, no residue
    torch.testing.assert_close(out.router_probs.sum(-1), torch.ones(3, 4))
    # the same draw as fused_gumbel.gumbel_softmax from the same generator state
    torch.manual_seed(1)
    _, index = fg.gumbel_softmax(_router_logits(router, x), 0.7, True, return_index=True)
    assert torch.equal(out.expert_index.squeeze(-1), index)


def test_straight_through_gradient_reaches_the_gate():
    torch.manual_seed(0)
    router = GumbelRouter(6, 4, aux_loss_weight=0.0)
    x = torch.randn(32, 6)
    out = router(x)
    gain = torch.randn(32, 1)
    (out.combine_weights * gain).sum().backward()
    assert router.gate.weight.grad is not None and router.gate.weight.grad.abs().sum() > 0
    assert out.aux_loss.item() == 0.0


def test_eval_is_deterministic_argmax():
    torch.manual_seed(0)
    router = GumbelRouter(8, 6, tau=fg.TemperatureSchedule(every=1, rate=0.1)).eval()
    x = torch.randn(50, 8, requires_grad=True)
    a, b = router(x), router(x)
    assert torch.equal(a.expert_index, b.expert_index) and int(router.step) == 0
    assert torch.equal(a.expert_index.squeeze(-1), _router_logits(router, x).argmax(-1))
    assert torch.equal(a.combine_weights, torch.ones(50, 1))
    a.combine_weights.sum().backward()  # still differentiable (softmax gradient)
    assert router.gate.weight.grad is not None
    noisy = GumbelRouter(8, 6, noisy_eval=True).eval()
    draws = {tuple(noisy(torch.zeros(200, 8)).expert_index.flatten().tolist()) for _ in range(2)}
    assert len(draws) == 2


def test_schedule_steps_per_training_forward_or_by_the_caller():
    schedule = fg.TemperatureSchedule(tau0=2.0, tau_min=0.5, rate=0.5, every=1)
    router = GumbelRouter(4, 3, tau=schedule)
    x = torch.randn(5, 4)
    taus = []
    for _ in range(3):
        taus.append(router.current_tau())
        router(x)
    assert taus == [2.0, 2.0 * math.exp(-0.5), 2.0 * math.exp(-1.0)] and int(router.step) == 3
    clone = GumbelRouter(4, 3, tau=schedule)
    clone.load_state_dict(router.state_dict())
    assert clone.current_tau() == router.current_tau()
    manual = GumbelRouter(4, 3, tau=schedule, step_on_forward=False)
    manual(x)
    assert int(manual.step) == 0
    manual.step.fill_(4)
    assert manual.current_tau() == schedule(4)


def test_load_balancing_loss():
    n = 4
    uniform = torch.full((8, n), 1.0 / n)
    assert load_balancing_loss(uniform, torch.arange(8).remainder(n).unsqueeze(-1)).item() == pytest.approx(1.0)
    collapsed = torch.nn.functional.one_hot(torch.zeros(8, dtype=torch.long), n).float()
    assert load_balancing_loss(collapsed, torch.zeros(8, 1, dtype=torch.long)).item() == pytest.approx(n)
    # f_e counts every one of the k slots: a balanced top-2 is 1.0 as well
    assert load_balancing_loss(uniform, torch.tensor([[0, 1], [2, 3]] * 4)).item() == pytest.approx(1.0)
    torch.manual_seed(0)
    router = GumbelRouter(4, n, aux_loss_weight=0.5)
    out = router(torch.randn(16, 4))
    expected = 0.5 * load_balancing_loss(out.router_probs, out.expert_index)
    torch.testing.assert_close(out.aux_loss, expected)
    out.aux_loss.backward()
    assert router.gate.weight.grad.abs().sum() > 0


def test_dtypes_and_empty_input():
    router = GumbelRouter(8, 4).to(torch.bfloat16)
    out = router(torch.randn(6, 8, dtype=torch.bfloat16))
    assert out.combine_weights.dtype == torch.bfloat16 and out.router_probs.dtype == torch.float32
    # top-3 weights are 1/3 in x's dtype: exactly float64's for float64
    weights = GumbelRouter(8, 4, k=3).double()(torch.randn(6, 8, dtype=torch.float64)).combine_weights
    assert weights.dtype == torch.float64 and (weights == 1 / 3).all()
    empty = GumbelRouter(8, 4)(torch.randn(0, 8))
    assert empty.expert_index.shape == (0, 1) and empty.aux_loss.item() == 0.0


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(d_model=0, num_experts=4), ValueError, "d_model"),
    (dict(d_model=4, num_experts=2.0), ValueError, "num_experts"),
    (dict(d_model=4, num_experts=4, k=5), ValueError, "k=5"),
    (dict(d_model=4, num_experts=4, tau=0.0), ValueError, "tau"),
    (dict(d_model=4, num_experts=4, tau=float("nan")), ValueError, "tau"),
    (dict(d_model=4, num_experts=4, aux_loss_weight=-1.0), ValueError, "aux_loss_weight"),
    (dict(d_model=4, num_experts=4, aux_loss_weight="0.01"), TypeError, "aux_loss_weight"),
    (dict(d_model=4, num_experts=4, aux_loss_weight=torch.ones(2)), TypeError, "aux_loss_weight"),
    (dict(d_model=4, num_experts=4, tau="1.0"), TypeError, "tau"),
    (dict(d_model=4, num_experts=4, backend="gpu"), ValueError, "backend"),
])
def test_bad_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        GumbelRouter(**kwargs)


def test_numpy_sizes_are_taken_as_nn_linear_takes_them():
    import numpy as np

    router = GumbelRouter(np.int64(4), np.int32(3), k=np.int64(2), aux_loss_weight=torch.tensor(0.5))
    assert (router.d_model, router.num_experts, router.k) == (4, 3, 2) and type(router.k) is int
    assert router.aux_loss_weight == 0.5 and type(router.aux_loss_weight) is float


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_the_gate_is_float32_under_autocast(k, training):
    """Autocast would run the gate's linear in bfloat16 whatever its inputs'
    dtype; the router's promise is float32 logits, probabilities and loss."""
    router = GumbelRouter(16, 4, k=k).train(training)
    router.step_on_forward = False
    x = torch.randn(32, 16)
    torch.manual_seed(0)
    plain = router(x)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = router(x)
    assert cast.router_probs.dtype == cast.aux_loss.dtype == torch.float32
    assert torch.equal(cast.router_probs, plain.router_probs) and torch.equal(cast.aux_loss, plain.aux_loss)
    assert torch.equal(cast.expert_index, plain.expert_index)


def test_bad_input():
    router = GumbelRouter(4, 3)
    with pytest.raises(ValueError, match="d_model=4"):
        router(torch.randn(2, 5))
    with pytest.raises(TypeError, match="floating"):
        router(torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="Tensor"):
        router([[0.0] * 4])


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("schedule", [False, True], ids=["fixed_tau", "schedule"])
def test_compiles_without_graph_breaks(k, schedule):
    """fullgraph=True, a fixed tau or an annealing schedule: with a schedule,
    tau comes from the step buffer in tensor ops, so the steps share one
    graph instead of compiling one each."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    tau = fg.TemperatureSchedule(tau0=2.0, tau_min=0.5, rate=0.5, every=1) if schedule else 1.0
    router = GumbelRouter(8, 4, k, tau=tau, aux_loss_weight=0.01)
    compiled = torch.compile(router, fullgraph=True)
    x = torch.randn(16, 8)
    for _ in range(4):
        out = compiled(x)
        (out.combine_weights.sum() + out.aux_loss).backward()
    assert router.gate.weight.grad.abs().sum() > 0 and int(router.step) == 4
    assert counters["stats"]["unique_graphs"] == 1
    assert router.current_tau() == (tau(4) if schedule else 1.0)


def test_top_k_routes_k_distinct_experts():
    torch.manual_seed(0)
    router = GumbelRouter(8, 6, k=2, tau=0.5)
    x = torch.randn(40, 8)
    out = router(x)
    assert out.expert_index.shape == (40, 2) and out.combine_weights.shape == (40, 2)
    assert (out.expert_index[:, 0] != out.expert_index[:, 1]).all()
    assert torch.equal(out.combine_weights, torch.full((40, 2), 0.5))
    (out.combine_weights * torch.randn(40, 2)).sum().add(out.aux_loss).backward()
    assert router.gate.weight.grad.abs().sum() > 0
    router.eval()
    top = router(x).expert_index
    assert torch.equal(top.sort(-1).values, _router_logits(router, x).topk(2, -1).indices.sort(-1).values)


def _example():
    # examples/ is not a package, so the script is loaded from its path.
    spec = importlib.util.spec_from_file_location("examples_moe_router", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_moe_example_trains_and_balances(one_cpu_thread):
    moe = _example()
    results = moe.run(steps=200, experts=4, clusters=4, aux_loss_weight=0.1, seed=0)
    balanced, unbalanced, linear = results["moe"], results["moe_no_aux"], results["linear"]
    assert moe.final_loss(balanced) < 0.2 * balanced["losses"][0]
    assert balanced["eval_loss"] < linear["eval_loss"]  # routing matters on this task
    assert all(g > 0 for g in balanced["gate_grad_norms"])
    assert moe.imbalance(balanced["load"]) < moe.imbalance(unbalanced["load"])


def test_moe_example_top2(one_cpu_thread):
    moe = _example()
    result = moe.run(steps=60, k=2, seed=0)["moe"]
    assert moe.final_loss(result, 10) < 0.5 * result["losses"][0]
    assert all(g > 0 for g in result["gate_grad_norms"])
