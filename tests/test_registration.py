"""The registered operator: opcheck, autograd through the op, torch.compile with
fullgraph=True, and the CUDA kernels linked whenever nvcc built them."""

import os
import shutil
import warnings

import pytest
import torch

from torch._subclasses.fake_tensor import FakeTensorMode

import fused_gumbel as fg
from fused_gumbel._extension import has_kernel

from utils import (FUSED_BACKENDS, RecordOps, assert_annealing_reuses_the_graph, assert_bad_tau_refused_under_compile,
                   assert_compiled_matches_eager, assert_double_backward_refused, assert_new_seeds_reuse_the_graph,
                   backend_param, device_of)

OP = torch.ops.fused_gumbel.st_softmax


@pytest.mark.parametrize("backend", [b for b in FUSED_BACKENDS if b.values[0] != "triton"])
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("dtype,shape,dim", [
    (torch.float32, (4, 9), -1),
    (torch.float64, (3, 5, 2), 1),
    (torch.bfloat16, (6, 33), 0),
    (torch.float16, (7,), 0),
])
def test_opcheck(backend, hard, dtype, shape, dim):
    device = device_of(backend)
    x = torch.randn(shape, dtype=dtype, device=device, requires_grad=dtype == torch.float64)
    torch.library.opcheck(OP, (x, 0.7, hard, dim, 42))


def test_opcheck_backward_op():
    x = torch.randn(5, 8, dtype=torch.float64)
    y, _, stats, rng, _ = OP(x, 0.9, False, -1, 3)
    grad = torch.randn_like(y)
    torch.library.opcheck(torch.ops.fused_gumbel.st_softmax_backward, (grad, y, None, stats, rng, 0.9, -1))
    torch.library.opcheck(torch.ops.fused_gumbel.st_softmax_backward, (grad, None, x, stats, rng, 0.9, -1))


def test_opcheck_tau_tensor_siblings():
    """The ops fg.gumbel_softmax calls under torch.compile, tau a CPU tensor."""
    x = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    tau = torch.tensor(0.9, dtype=torch.float64)
    torch.library.opcheck(torch.ops.fused_gumbel.st_softmax_tau_tensor, (x, tau, True, -1, 3))
    y, _, stats, rng, _ = OP(x.detach(), 0.9, False, -1, 3)
    torch.library.opcheck(torch.ops.fused_gumbel.st_softmax_backward_tau_tensor,
                          (torch.randn_like(y), y, None, stats, rng, tau, -1))
    same = torch.ops.fused_gumbel.st_softmax_tau_tensor(x.detach(), tau, False, -1, 3)
    assert torch.equal(same[0], y)
    with pytest.raises(ValueError, match="tau"):
        torch.ops.fused_gumbel.st_softmax_tau_tensor(x.detach(), torch.tensor(-1.0), False, -1, 3)
    with pytest.raises(ValueError, match="one floating-point element"):
        torch.ops.fused_gumbel.st_softmax_tau_tensor(x.detach(), torch.ones(2), False, -1, 3)
    # The fake kernels ask the same of tau (a meta tau took the fake kernel for
    # CPU logits and returned uninitialized memory).
    plain = x.detach()
    for bad in (torch.ones(2), torch.tensor(1), torch.tensor(0.9, device="meta")):
        with pytest.raises(ValueError, match="tau as a tensor must be one floating-point element"):
            torch.ops.fused_gumbel.st_softmax_tau_tensor(plain, bad, False, -1, 3)
        with FakeTensorMode() as mode:
            fake_x, fake_bad = mode.from_tensor(plain), mode.from_tensor(bad)
            with pytest.raises(ValueError, match="one floating-point element"):
                torch.ops.fused_gumbel.st_softmax_tau_tensor(fake_x, fake_bad, False, -1, 3)


def test_op_returns_the_sample_first():
    x = torch.randn(3, 4)
    out = OP(x, 1.0, False, -1, None)
    assert isinstance(out, tuple) and out[0].shape == x.shape


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_torch_compile_fullgraph(backend, hard):
    assert_compiled_matches_eager(
        lambda logits: fg.gumbel_softmax(logits, tau=0.5, hard=hard, seed=7, backend=backend),
        device_of(backend))


TAU_BACKENDS = [backend_param(b) for b in ("cpu", "cuda", "triton", "reference")]


@pytest.mark.parametrize("backend", TAU_BACKENDS)
def test_a_new_tau_reuses_the_compiled_graph(backend):
    """tau is a run-time value, under torch.compile too: an annealing schedule's
    next temperature reuses the graph instead of compiling one per value."""
    assert_annealing_reuses_the_graph(
        lambda x, tau: fg.gumbel_softmax(x, tau, True, seed=3, backend=backend),
        device_of(backend), (8, 10))


SEEDED = {
    "gumbel_softmax": lambda x, seed, b: fg.gumbel_softmax(x, 0.8, True, seed=seed, backend=b),
    "gumbel_topk": lambda x, seed, b: fg.gumbel_topk(x, 2, 0.8, seed=seed, backend=b),
    "sample": lambda x, seed, b: fg.sample(x, 0.8, seed=seed, backend=b),
}


@pytest.mark.parametrize("backend", TAU_BACKENDS)
@pytest.mark.parametrize("function", SEEDED)
@pytest.mark.parametrize("requires_grad", [False, True], ids=["inference", "training"])
def test_a_new_seed_reuses_the_compiled_graph(backend, function, requires_grad):
    """A seed that changes every step (seed=step) is a run-time value under
    torch.compile: the ops declare it SymInt, so it is a graph input rather
    than a constant of a graph per seed."""
    f = SEEDED[function]
    assert_new_seeds_reuse_the_graph(lambda x, seed: f(x, seed, backend), device_of(backend), (6, 10),
                                     requires_grad)


@pytest.mark.parametrize("backend", TAU_BACKENDS)
def test_a_bad_tau_is_refused_under_torch_compile(backend):
    """Under torch.compile tau is checked at run time: by the C++ kernels on
    the host, by checked_tau before the Triton kernels and the reference's
    ops."""
    assert_bad_tau_refused_under_compile(
        lambda x, tau: fg.gumbel_softmax(x, tau, seed=1, backend=backend),
        device_of(backend))


@pytest.mark.parametrize("backend", [backend_param(b) for b in ("cpu", "cuda", "triton")])
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_double_backward_is_refused(backend, hard):
    assert_double_backward_refused(
        lambda x: fg.gumbel_softmax(x, 0.7, hard, seed=5, backend=backend), device_of(backend))


@pytest.mark.parametrize("backend", [backend_param(b) for b in ("cpu", "cuda", "triton")])
@pytest.mark.parametrize("function", ["gumbel_softmax", "gumbel_topk"])
def test_dual_logits_run_on_the_reference(backend, function):
    """The fused backends have no forward-mode derivative: dual logits
    (torch.autograd.forward_ad) named to one raise NotImplementedError rather
    than give a sample without its tangent, and the fused operator called
    directly raises too; "auto" runs them on the reference, which carries the
    tangent (that of torch.func.jvp; "auto" used to pick the fused kernel and
    fail with torch's "jvp is not implemented")."""
    import torch.autograd.forward_ad as fwAD

    def call(x, b):
        if function == "gumbel_softmax":
            return fg.gumbel_softmax(x, 0.7, seed=5, backend=b)
        return fg.gumbel_topk(x, 2, 0.7, hard=False, seed=5, backend=b)

    x = torch.randn(3, 5, dtype=torch.float64, device=device_of(backend))
    v = torch.randn_like(x)
    expected, expected_tangent = torch.func.jvp(lambda x: call(x, "reference"), (x,), (v,))
    with fwAD.dual_level():
        with pytest.raises(NotImplementedError, match="forward-mode"):
            call(fwAD.make_dual(x, v), backend)
        if has_kernel("st_softmax", "CPU"):
            with pytest.raises(RuntimeError, match="jvp"):
                torch.ops.fused_gumbel.st_softmax(fwAD.make_dual(x.cpu(), v.cpu()), 0.7, False, -1, 5)
        y, tangent = fwAD.unpack_dual(call(fwAD.make_dual(x, v), "auto"))
    assert tangent is not None
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    torch.testing.assert_close(tangent, expected_tangent)
    torch.testing.assert_close(y, call(x, backend))


@pytest.mark.parametrize("backend", [backend_param(b) for b in ("cpu", "cuda", "triton")])
def test_the_backward_and_shard_ops_refuse_a_tangent(backend):
    """The operators with no derivative of their own (the backward operators,
    the vocabulary shard) raise on a dual input rather than drop its tangent;
    the backward operators also refuse an input autograd records (a second
    derivative)."""
    import torch.autograd.forward_ad as fwAD
    from fused_gumbel import triton_kernels

    x = torch.randn(3, 8, device=device_of(backend))
    upstream = torch.randn_like(x)
    ops = torch.ops.fused_gumbel
    if backend == "triton":
        y, _, stats, rng = triton_kernels.st_softmax_triton(x, 0.7, False, -1, 5)
        _, _, topk_stats, topk_rng = triton_kernels.gumbel_topk_triton(x, 2, 0.7, False, -1, 5)[:4]
        backward, topk_backward = ops.st_softmax_triton_backward, ops.gumbel_topk_triton_backward
        shard = lambda logits: triton_kernels.st_softmax_shard_triton(logits, 0.7, 5, 0, 8)
    else:
        y, _, stats, rng, _ = ops.st_softmax(x, 0.7, False, -1, 5)
        _, _, topk_stats, topk_rng = ops.gumbel_topk(x, 2, 0.7, False, -1, 5)
        backward, topk_backward = ops.st_softmax_backward, ops.gumbel_topk_backward
        shard = (lambda logits: ops.st_softmax_shard(logits, 0.7, 5, 0, 8)) if backend == "cpu" else None
    calls = {
        "backward": lambda g, y: backward(g, y, None, stats, rng, 0.7, -1),
        "topk_backward": lambda g, logits: topk_backward(g, logits, topk_stats, topk_rng, 2, 0.7, -1),
    }
    for name, call in calls.items():
        second = x if name == "topk_backward" else y
        with fwAD.dual_level():
            for args in ((fwAD.make_dual(upstream, x), second), (upstream, fwAD.make_dual(second, x))):
                with pytest.raises(RuntimeError, match="jvp"):
                    call(*args)
        if backend != "triton":  # (torch.library's autograd refuses the Triton ops in the backward)
            with pytest.raises(NotImplementedError, match="double backward"):
                call(upstream.clone().requires_grad_(), second)
        call(upstream, second)
    if shard is not None:
        with fwAD.dual_level(), pytest.raises(RuntimeError, match="jvp"):
            shard(fwAD.make_dual(x, upstream))
        shard(x)


@pytest.mark.skipif(not has_kernel("st_softmax", "CPU"), reason="needs the compiled CPU kernels")
def test_torch_func_functionalize_runs_with_the_eager_bits():
    """torch.func.functionalize (and make_fx of it) of fg.gumbel_softmax ("auto":
    the reference under a transform) and of fg.gumbel_noise: the noise
    operator writes into its argument, which functionalize refuses in a custom
    operator, so under it the noise comes from the functional
    gumbel_noise_of_seeds, with the same bits."""
    from torch.fx.experimental.proxy_tensor import make_fx

    x = torch.randn(3, 5, dtype=torch.float64)

    def hard(x):
        return fg.gumbel_softmax(x, 0.5, hard=True, seed=2**63 + 3)

    assert torch.equal(torch.func.functionalize(hard)(x), hard(x))
    noise = torch.func.functionalize(lambda x: fg.gumbel_noise(x.shape, 2**63 + 3) + x)(torch.zeros(4, 6))
    assert torch.equal(noise, fg.gumbel_noise((4, 6), 2**63 + 3))
    graph = make_fx(torch.func.functionalize(hard))(x)
    assert not [n for n in graph.graph.nodes if "fill_gumbel_noise" in str(n.target)]
    torch.manual_seed(5)
    drawn = torch.func.functionalize(lambda x: fg.gumbel_softmax(x, 0.5))(x)
    torch.manual_seed(5)
    assert torch.equal(drawn, fg.gumbel_softmax(x, 0.5, backend="reference"))


@pytest.mark.skipif(not has_kernel("st_softmax", "CPU"), reason="needs the compiled CPU kernels")
def test_torch_func_grad_runs_on_the_reference():
    """Under a torch.func transform "auto" runs the reference backend (the
    fused operators have no functorch rules); a fused backend named explicitly
    raises a clear NotImplementedError."""
    x = torch.randn(3, 5, dtype=torch.float64)
    w = torch.randn(3, 5, dtype=torch.float64)
    got = torch.func.grad(lambda x: (fg.gumbel_softmax(x, 0.7, seed=1) * w).sum())(x)
    x2 = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad((fg.gumbel_softmax(x2, 0.7, seed=1, backend="cpu") * w).sum(), x2)
    torch.testing.assert_close(got, expected)
    with pytest.raises(NotImplementedError, match="torch.func"):
        torch.func.grad(lambda x: fg.gumbel_softmax(x, seed=1, backend="cpu").sum())(x)


@pytest.mark.skipif(not has_kernel("st_softmax", "CPU"), reason="needs the compiled CPU kernels")
def test_vmap_takes_an_explicit_seed():
    """An explicit seed is a pure function of (seed, position): under vmap each
    batch member gets the noise a call on it alone gets."""
    x = torch.randn(3, 5)
    y = torch.func.vmap(lambda r: fg.gumbel_softmax(r, 0.7, seed=4))(x)
    torch.testing.assert_close(y, torch.stack([fg.gumbel_softmax(r, 0.7, seed=4) for r in x]))


VMAP_SAMPLERS = {
    "gumbel_softmax": lambda r: fg.gumbel_softmax(r, 0.7),
    "gumbel_topk": lambda r: fg.gumbel_topk(r, 2, 0.7, hard=False),
    "sample": fg.sample,
}


@pytest.mark.skipif(not has_kernel("st_softmax", "CPU"), reason="needs the compiled CPU kernels")
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched_logits", "shared_logits"])
@pytest.mark.parametrize("function", list(VMAP_SAMPLERS))
def test_vmap_seed_none_follows_randomness(function, batched, compiled):
    """seed=None under vmap draws as torch.rand does: "different" gives each
    member noise of its own, "same" one noise for all, "error" raises, whether
    the logits are batched or not (a draw from logits vmap does not batch
    ignored the argument). torch.manual_seed reproduces each."""
    sampler = VMAP_SAMPLERS[function]
    row = torch.randn(64) * 0.1  # near-uniform: different noise gives different samples
    members = row.expand(8, 64).clone() if batched else torch.randn(8)

    def run(randomness, members=members):
        call = torch.func.vmap(sampler if batched else lambda _: sampler(row), randomness=randomness)
        if compiled:
            torch._dynamo.reset()
            call = torch.compile(call, fullgraph=True)
        return call(members)

    for randomness in ("different", "same"):
        torch.manual_seed(11)
        y = run(randomness)
        assert y.shape[0] == 8
        torch.manual_seed(11)
        assert torch.equal(run(randomness), y)
        distinct = len({tuple(member.flatten().tolist()) for member in y})
        # (8 draws of one index among 64 may repeat; 8 soft samples cannot)
        assert distinct >= 5 if randomness == "different" else distinct == 1, (randomness, distinct)
    assert run("different", members[:0]).shape[0] == 0
    with pytest.raises(RuntimeError, match="random"):  # (compiled: dynamo's Unsupported, a RuntimeError)
        run("error")


@pytest.mark.skipif(not has_kernel("st_softmax", "CPU"), reason="needs the compiled CPU kernels")
def test_compiled_vmap_of_seed_none_reuses_the_graph_across_batch_sizes():
    """The reference's noise of a batch of seeds is one operator call, whatever
    the batch size (one call per member unrolled the batch into the graph: a
    graph per size, and fullgraph=True failed at the recompile limit)."""
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    sample = torch.compile(torch.func.vmap(lambda r: fg.gumbel_softmax(r, 0.5), randomness="different"),
                           backend=counter, fullgraph=True)
    for batch in range(2, 14):
        y = sample(torch.zeros(batch, 6))
        assert len({tuple(member.tolist()) for member in y}) == batch
    assert counter.frame_count <= 2, counter.frame_count


@pytest.mark.skipif(not has_kernel("st_softmax", "CPU"), reason="needs the compiled CPU kernels")
def test_hessian_with_seed_none_takes_randomness_same():
    """jacfwd (and so hessian) vmaps the function itself: with seed=None it
    raises under vmap's default randomness="error", as torch.rand does, and
    with randomness="same" it differentiates one sample: that of the seed
    the reference draws (draw_seed) after the same torch.manual_seed."""
    from fused_gumbel.noise import draw_seed

    x = torch.randn(3, 5, dtype=torch.float64)
    w = torch.randn(3, 5, dtype=torch.float64)
    loss = lambda x, seed=None: (fg.gumbel_softmax(x, 0.7, seed=seed) * w).sum()
    with pytest.raises(RuntimeError, match="randomness"):
        torch.func.hessian(loss)(x)
    torch.manual_seed(5)
    h = torch.func.jacfwd(torch.func.jacrev(loss), randomness="same")(x)
    torch.manual_seed(5)
    expected = torch.func.hessian(loss)(x, int(draw_seed()))
    assert h.abs().sum() > 0
    torch.testing.assert_close(h, expected, rtol=0, atol=0)


@pytest.mark.skipif(not has_kernel("st_softmax", "CPU"), reason="needs the compiled CPU kernels")
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("function", list(VMAP_SAMPLERS))
def test_vmap_over_temperatures(function, compiled):
    """vmap over a batch of temperatures: each member as a call with its
    temperature alone, and a bad member the contract's ValueError (eager
    vmap read the batch as one value and failed; compiled, a bad one ran)."""
    def call(t):
        if function == "gumbel_softmax":
            return fg.gumbel_softmax(x, t, seed=3)
        if function == "gumbel_topk":
            return fg.gumbel_topk(x, 2, t, hard=False, seed=3)
        return fg.sample(x, t, seed=3)

    x = torch.randn(4, 16, dtype=torch.float64)
    temperatures = torch.tensor([0.3, 1.0, 2.5, 1e39], dtype=torch.float64)
    sample = torch.func.vmap(call)
    if compiled:
        torch._dynamo.reset()
        sample = torch.compile(sample, fullgraph=True)
    got = sample(temperatures)
    for member, t in zip(got, temperatures.tolist()):
        torch.testing.assert_close(member, call(t), rtol=1e-12, atol=1e-14)
    name = "temperature" if function == "sample" else "tau"
    with pytest.raises(ValueError, match=f"{name} must be a positive finite number"):
        sample(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))


@pytest.mark.skipif(not has_kernel("st_softmax", "CPU"), reason="needs the compiled CPU kernels")
@pytest.mark.parametrize("function", ["gumbel_softmax", "gumbel_topk"])
def test_vmap_of_a_hard_sample_has_a_batching_rule(function):
    """The reference builds the one-hot out of place: an in-place scatter_ has
    no batching rule, so vmap warned of its slow fallback and failed on an
    empty batch (as F.gumbel_softmax's hard path still does)."""
    def sample(r):
        if function == "gumbel_softmax":
            return fg.gumbel_softmax(r, 0.7, hard=True, seed=4)
        return fg.gumbel_topk(r, 2, 0.7, hard=True, seed=4)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for batch in (3, 0):
            x = torch.randn(batch, 4, 5)
            y = torch.func.vmap(sample)(x)
            assert y.shape == x.shape
            if batch:
                torch.testing.assert_close(y, torch.stack([sample(r) for r in x]), rtol=0, atol=0)
                assert set(y.unique().tolist()) == {0.0, 1.0}


@pytest.mark.skipif(not has_kernel("st_softmax", "CPU"), reason="needs the compiled CPU kernels")
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_compiled_torch_func_transforms_run_on_the_reference(hard):
    """torch.compile(fullgraph=True) of torch.func.grad and vmap: dynamo
    traces them with the transform active, so "auto" must still pick the
    reference (a fused operator there fails: its C++ autograd has no
    functorch support) and give what the eager transforms give."""
    x = torch.randn(4, 6, dtype=torch.float64)
    w = torch.randn(4, 6, dtype=torch.float64)
    grad = torch.func.grad(lambda x: (fg.gumbel_softmax(x, 0.7, hard, seed=1) * w).sum())
    vmap = torch.func.vmap(lambda r: fg.gumbel_softmax(r, 0.7, hard, seed=1))
    for transform in (grad, vmap):
        torch._dynamo.reset()
        torch.testing.assert_close(torch.compile(transform, fullgraph=True)(x), transform(x),
                                   rtol=1e-12, atol=1e-14)


# Dynamo passes an error raised by a fake kernel on to the caller from torch
# 2.14 (which has FakeTensorObservedException); before, it wraps it in a
# TorchRuntimeError carrying the message (README, torch.compile).
DIM_ERROR_UNDER_COMPILE = (
    IndexError if hasattr(torch._dynamo.exc, "FakeTensorObservedException")
    else torch._dynamo.exc.TorchRuntimeError)


@pytest.mark.skipif(not has_kernel("st_softmax", "CPU"), reason="needs the compiled CPU kernels")
@pytest.mark.parametrize("batch", [3, 0])
def test_compiled_vmap_checks_dim_even_for_an_empty_batch(batch):
    """The reference's check operator, vmapped, checks a batch member's shape:
    an empty batch too, as eager vmap does (it had no member to check)."""
    x = torch.randn(batch, 5, 7)
    for in_dims in (0, 1):
        sample = torch.func.vmap(lambda r: fg.gumbel_softmax(r, 0.5, hard=True, dim=2, seed=3), in_dims=in_dims)
        with pytest.raises(IndexError, match="dim"):
            sample(x)
        torch._dynamo.reset()
        with pytest.raises(DIM_ERROR_UNDER_COMPILE, match="dim out of range"):
            torch.compile(sample, fullgraph=True)(x)


@pytest.mark.parametrize("backend", TAU_BACKENDS)
def test_bad_inputs_under_torch_compile_keep_the_contracts_errors(backend):
    """fullgraph=True: dim out of range is an IndexError, integer logits an
    error naming the dtype, on every backend (the reference checks in an
    operator whose fake kernel raises while tracing)."""
    x = torch.randn(3, 4, device=device_of(backend))
    torch._dynamo.reset()
    with pytest.raises(DIM_ERROR_UNDER_COMPILE, match="dim out of range"):
        torch.compile(lambda x: fg.gumbel_softmax(x, dim=2, seed=1, backend=backend), fullgraph=True)(x)
    torch._dynamo.reset()
    with pytest.raises((TypeError, RuntimeError), match="int64"):
        torch.compile(lambda x: fg.gumbel_softmax(x, seed=1, backend=backend), fullgraph=True)(x.long())


@pytest.mark.parametrize("backend", TAU_BACKENDS)
def test_torch_compile_seed_none_draws_fresh_noise(backend):
    """seed=None under torch.compile(fullgraph=True): each call draws fresh
    noise and torch.manual_seed reproduces it (the reference draws through the
    opaque op gumbel_noise_of_seeds: reading a seed on the host would break the
    graph)."""
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: fg.gumbel_softmax(x, hard=True, backend=backend), fullgraph=True)
    x = (torch.zeros(64, 1000) + torch.randn(64, 1000) * 0.01).to(device_of(backend))
    torch.manual_seed(7)
    a, b = compiled(x), compiled(x)
    torch.manual_seed(7)
    assert not torch.equal(a, b) and torch.equal(compiled(x), a)


def _nvcc_found() -> bool:
    return bool(shutil.which("nvcc") or os.path.exists("/usr/local/cuda/bin/nvcc"))


@pytest.mark.skipif(not _nvcc_found(), reason="no nvcc on this machine: the CUDA sources were not built")
@pytest.mark.skipif(os.environ.get("FUSED_GUMBEL_CUDA") == "0", reason="built with FUSED_GUMBEL_CUDA=0")
def test_cuda_kernels_are_compiled_and_linked_when_nvcc_exists():
    for op in ("st_softmax", "st_softmax_backward", "fill_gumbel_noise", "philox_bits"):
        assert has_kernel(op, "CUDA"), op


@pytest.mark.skipif(not has_kernel("st_softmax", "CPU"), reason="needs the compiled CPU kernels")
def test_only_the_sample_is_differentiable():
    """The kept soft sample, stats and rng_state carry no gradient: autograd
    must not build (and fill) a zero gradient for them in every backward."""
    x = torch.randn(4, 300, requires_grad=True)
    y, index, stats, rng_state, y_soft = torch.ops.fused_gumbel.st_softmax(x, 0.5, True, -1, 7)
    assert y.requires_grad
    assert not any(t.requires_grad for t in (index, stats, rng_state, y_soft))
    (grad,) = torch.autograd.grad((y * torch.arange(300.0)).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("backend", [backend_param(b) for b in ("cpu", "cuda", "triton")])
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_the_backward_runs_its_backward_op_alone(backend, hard):
    """A backward is the backward operator and nothing else: no zero gradient
    made (an allocation and a fill kernel each) for the outputs that have none
    (index, stats, rng_state), as torch.library's Python autograd did for the
    Triton ops by default."""
    suffix = "_triton" if backend == "triton" else ""
    x = torch.randn(4, 8, device=device_of(backend), requires_grad=True)
    w = torch.randn(4, 8, device=x.device)
    for name, sample in (("st_softmax", lambda: fg.gumbel_softmax(x, 0.7, hard, seed=3, backend=backend)),
                         ("gumbel_topk", lambda: fg.gumbel_topk(x, 2, 0.7, hard, seed=3, backend=backend))):
        y = sample()
        with RecordOps() as record:
            torch.autograd.grad(y, x, w)
        # (the soft sample, kept as an output, is unpacked through a detach)
        ops = [op for op in record.ops if op != "aten.detach.default"]
        assert ops == [f"fused_gumbel.{name}{suffix}_backward.default"], (name, record.ops)


@pytest.mark.parametrize("backend", [backend_param(b) for b in ("cpu", "cuda", "triton")])
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_compiled_autograd_takes_the_backward_of_an_eager_forward(backend, hard):
    """A forward run eagerly whose backward runs under compiled autograd (a
    frame torch.compile fell back on, code under torch.compiler.disable): the
    operators' autograd nodes (C++; Python for Triton) compile, with the eager
    gradients. (Outputs marked non-differentiable once failed an internal
    assert there; the Triton ops' Python autograd makes no zero gradients for
    them.)"""
    import torch._dynamo.compiled_autograd as compiled_autograd

    device = device_of(backend)
    x = torch.randn(4, 8, device=device, requires_grad=True)
    w = torch.arange(8.0, device=device)
    for sample in (lambda x: fg.gumbel_softmax(x, 0.7, hard, seed=3, backend=backend),
                   lambda x: fg.gumbel_topk(x, 2, 0.7, hard, seed=3, backend=backend)):
        (expected,) = torch.autograd.grad((sample(x) * w).sum(), x)
        torch._dynamo.reset()
        loss = (sample(x) * w).sum()
        with compiled_autograd._enable(torch.compile(backend="eager")):
            loss.backward()
        torch.testing.assert_close(x.grad, expected)
        x.grad = None


@pytest.mark.parametrize("backend", [b for b in FUSED_BACKENDS if b.values[0] != "triton"])
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("tau_tensor", [False, True], ids=["tau", "tau_tensor"])
def test_the_backward_keeps_what_the_readme_says(backend, hard, tau_tensor):
    """What autograd keeps for the backward (README, "What the backward
    keeps"): the sample itself for hard=False (no extra memory), the kept soft
    sample on the CPU or the logits on CUDA for hard=True; then the per-row
    statistics, rng_state, and the temperature where it is a tensor."""
    x = torch.randn(6, 10, device=device_of(backend), requires_grad=True)
    tau = torch.tensor(0.7, dtype=torch.float64) if tau_tensor else 0.7
    op = torch.ops.fused_gumbel.st_softmax_tau_tensor if tau_tensor else OP
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y, _, stats, rng_state, y_soft = op(x, tau, hard, -1, 3)
    first = (x if x.device.type == "cuda" else y_soft) if hard else y
    expected = [first, stats, rng_state] + ([tau] if tau_tensor else [])
    assert [t.data_ptr() for t in saved] == [t.data_ptr() for t in expected]


def test_checked_tau_copies_a_good_tau_and_raises_on_a_bad_one():
    tau = torch.tensor(0.37, dtype=torch.float64)
    torch.library.opcheck(torch.ops.fused_gumbel.checked_tau, (tau, torch.device("cpu")))
    out = torch.ops.fused_gumbel.checked_tau(tau, torch.device(device_of("triton")))
    assert out.dtype == torch.float64 and out.dim() == 0 and out.item() == 0.37
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="tau"):
            torch.ops.fused_gumbel.checked_tau(torch.tensor(bad, dtype=torch.float64), torch.device("cpu"))
