"""The contract's promises that are not parity: bad input, special values,
shapes, the random state and the drop-in signature. ../shared/CONTRACT.md"""

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fused_gumbel as fg

from utils import DTYPES, FUSED_BACKENDS, backend_param, device_of, tolerance

ALL_BACKENDS = FUSED_BACKENDS + [backend_param("reference")]


@pytest.mark.parametrize("function", [fg.gumbel_softmax, fg.gumbel_softmax_reference], ids=lambda f: f.__name__)
def test_signature_is_a_drop_in_for_torch(function):
    """fg.gumbel_softmax_reference too (its 4th positional argument was dim)."""
    ours = list(inspect.signature(function).parameters)
    theirs = list(inspect.signature(F.gumbel_softmax).parameters)
    assert ours[: len(theirs)] == theirs
    x = torch.randn(4, 10, 3)
    y = function(x, 0.5, True, 1e-10, 1)
    assert y.shape == x.shape and torch.equal(y.sum(1), torch.ones(4, 3))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64, torch.uint8])
def test_non_float_logits_raise_naming_the_dtype(backend, dtype):
    x = torch.ones(3, 4, device=device_of(backend)).to(dtype)
    with pytest.raises((TypeError, RuntimeError), match=str(dtype).replace("torch.", "")):
        fg.gumbel_softmax(x, backend=backend)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("tau", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_bad_tau_raises_value_error_naming_tau(backend, tau):
    x = torch.randn(3, 4, device=device_of(backend))
    before = x.clone()
    with pytest.raises(ValueError, match="tau"):
        fg.gumbel_softmax(x, tau, backend=backend)
    assert torch.equal(x, before)


@pytest.mark.parametrize("backend", ALL_BACKENDS + [backend_param("triton")])
def test_a_tensor_tau_is_a_number(backend):
    """As F.gumbel_softmax, tau may be a one-element tensor: the same sample as
    the number; a bad value is refused alike; other tensors are a TypeError."""
    x = torch.randn(3, 5, device=device_of(backend))
    for tau in (torch.tensor(0.7), torch.tensor([0.7], dtype=torch.float64), torch.tensor(0.7, device=x.device)):
        torch.testing.assert_close(fg.gumbel_softmax(x, tau, seed=2, backend=backend),
                                   fg.gumbel_softmax(x, 0.7, seed=2, backend=backend))
    with pytest.raises(ValueError, match="tau"):
        fg.gumbel_softmax(x, torch.tensor(-1.0), backend=backend)
    with pytest.raises(TypeError, match="tau"):
        fg.gumbel_softmax(x, torch.tensor([0.5, 0.7]), backend=backend)
    for not_a_number in ("0.7", b"0.7", bytearray(b"0.7"), memoryview(b"0.7"), None, [0.7]):
        with pytest.raises(TypeError, match="tau must be a number"):  # (float() reads the first four)
            fg.gumbel_softmax(x, not_a_number, backend=backend)
    # F.gumbel_softmax(x, True) runs at tau = 1: so does the drop-in, warning
    # that this is most often `hard` passed by position
    for true in (True, np.True_):
        with pytest.warns(UserWarning, match="hard is the third argument"):
            y = fg.gumbel_softmax(x, true, seed=2, backend=backend)
        assert torch.equal(y, fg.gumbel_softmax(x, 1.0, seed=2, backend=backend))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="tau"):
        fg.gumbel_softmax(x, False, backend=backend)


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_a_tau_that_requires_grad_gets_its_gradient(hard):
    """A learnable temperature, as F.gumbel_softmax allows: "auto" runs it on
    the reference backend, which differentiates tau; a fused backend named
    explicitly refuses instead of dropping the gradient."""
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 6, dtype=torch.float64)
    tau = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    y = fg.gumbel_softmax(x, tau, hard, seed=3)
    gx, gtau = torch.autograd.grad((y * w).sum(), (x, tau))
    x64, tau64 = x.detach().requires_grad_(), tau.detach().requires_grad_()
    y64 = torch.softmax((x64 + fg.gumbel_noise(x.shape, 3).double()) / tau64, -1)
    ex, etau = torch.autograd.grad((y64 * w).sum(), (x64, tau64))
    torch.testing.assert_close(gx, ex)
    torch.testing.assert_close(gtau, etau)
    with pytest.raises(NotImplementedError, match="tau"):
        fg.gumbel_softmax(x, tau, hard, seed=3, backend="cpu")
    with torch.no_grad():
        fg.gumbel_softmax(x, tau, hard, seed=3, backend="cpu")


@pytest.mark.parametrize("function", ["gumbel_softmax", "gumbel_topk"])
def test_a_tangent_of_tau_is_carried_or_refused(function):
    """Forward-mode AD through tau (a dual tau, torch.func.jvp and jacfwd,
    compiled too): "auto" runs it on the reference backend, whose tangent is
    the derivative reverse mode gives; a fused backend named explicitly
    refuses. (Read as a float, tau dropped its tangent: jvp gave 0.)"""
    import torch.autograd.forward_ad as fwAD

    x = torch.randn(4, 6, dtype=torch.float64)
    w = torch.randn(4, 6, dtype=torch.float64)
    noise = fg.gumbel_noise(x.shape, 3, dtype=torch.float64)

    def loss(tau, backend="auto"):
        if function == "gumbel_softmax":
            y = fg.gumbel_softmax(x, tau, seed=3, backend=backend)
        else:
            y = fg.gumbel_topk(x, 2, tau, hard=False, seed=3, backend=backend)
        return (y * w).sum()

    tau = torch.tensor(0.8, dtype=torch.float64)
    if function == "gumbel_softmax":  # a formula of its own, in plain ops
        expected = torch.func.grad(lambda t: (torch.softmax((x + noise) / t, -1) * w).sum())(tau)
    else:
        expected = torch.func.grad(lambda t: (fg.gumbel_topk_reference(x, 2, t, hard=False, seed=3) * w).sum())(tau)
    one = torch.ones_like(tau)
    with fwAD.dual_level():
        got = {"dual": fwAD.unpack_dual(loss(fwAD.make_dual(tau, one))).tangent}
    got["jvp"] = torch.func.jvp(loss, (tau,), (one,))[1]
    got["jacfwd"] = torch.func.jacfwd(loss)(tau)
    torch._dynamo.reset()
    got["compiled jacfwd"] = torch.compile(torch.func.jacfwd(loss), fullgraph=True)(tau)
    for name, tangent in got.items():
        torch.testing.assert_close(tangent, expected, msg=name)
    with fwAD.dual_level(), pytest.raises(NotImplementedError, match="tau"):
        loss(fwAD.make_dual(tau, one), backend="cpu")


@pytest.mark.parametrize("function", ["gumbel_softmax", "gumbel_topk"])
def test_a_learned_tau_under_reentrant_checkpoint_differentiates_the_sample_it_returned(function):
    """torch.utils.checkpoint(use_reentrant=True) runs the forward under
    no_grad and the recompute with grad: "auto" must pick the same backend
    for both (the reference, for a tau that requires grad), or seed=None
    would draw different noise in each and the gradient be another sample's."""
    from torch.utils.checkpoint import checkpoint

    def sample(x, tau):
        if function == "gumbel_softmax":
            return fg.gumbel_softmax(x, tau, hard=True)
        return fg.gumbel_topk(x, 2, tau, hard=True)

    x0 = torch.randn(4, 8, dtype=torch.float64)
    w = torch.randn(4, 8, dtype=torch.float64)
    results = []
    for wrap in (lambda x, tau: checkpoint(sample, x, tau, use_reentrant=True), sample):
        x = x0.clone().requires_grad_()
        tau = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
        torch.manual_seed(123)
        y = wrap(x, tau)
        (y * w).sum().backward()  # (reentrant checkpoint refuses autograd.grad)
        results.append((y.detach(), x.grad, tau.grad))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("backend", [backend_param(b) for b in ("cpu", "cuda", "triton")])
@pytest.mark.parametrize("function", ["st_softmax", "gumbel_topk"])
def test_the_ops_refuse_a_tau_that_requires_grad(backend, function):
    """The fused operators (the *_tau_tensor ops, and the Triton backend's
    functions) give tau no gradient: called directly with a tau that autograd
    records, they raise rather than leave tau.grad None; under no_grad they
    run."""
    from fused_gumbel import triton_kernels

    device = device_of(backend)
    x = torch.randn(3, 5, device=device)
    tau = torch.tensor(0.7, dtype=torch.float64, device=device if backend == "triton" else "cpu")
    tau.requires_grad_()
    ops = torch.ops.fused_gumbel
    if backend == "triton":
        calls = ([triton_kernels.st_softmax_triton, ops.st_softmax_triton_tau_tensor] if function == "st_softmax"
                 else [triton_kernels.gumbel_topk_triton, ops.gumbel_topk_triton_tau_tensor])
    else:
        calls = [ops.st_softmax_tau_tensor if function == "st_softmax" else ops.gumbel_topk_tau_tensor]
    args = (False, -1, 4)
    for call in calls:
        run = (lambda: call(x, tau, *args)) if function == "st_softmax" else (lambda: call(x, 2, tau, *args))
        for logits_grad in (False, True):
            x.requires_grad_(logits_grad)
            with pytest.raises(NotImplementedError, match="no gradient for tau"):
                run()
            with torch.no_grad():
                assert not run()[0].requires_grad


@pytest.mark.parametrize("backend", ALL_BACKENDS + [backend_param("triton")])
def test_a_float_dim_or_a_bool_seed_is_a_type_error(backend):
    """Not silently truncated (int(1.5) == 1) or read as 0/1."""
    x = torch.randn(3, 4, device=device_of(backend))
    with pytest.raises(TypeError, match="dim"):
        fg.gumbel_softmax(x, dim=1.5, backend=backend)
    with pytest.raises(TypeError, match="seed"):
        fg.gumbel_softmax(x, seed=True, backend=backend)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dim", [2, -3, 100])
def test_dim_out_of_range_raises_index_error(backend, dim):
    with pytest.raises(IndexError):
        fg.gumbel_softmax(torch.randn(3, 4, device=device_of(backend)), dim=dim, backend=backend)


def test_direct_op_call_raises_the_same_errors():
    op = torch.ops.fused_gumbel.st_softmax
    with pytest.raises(TypeError, match="int64"):
        op(torch.ones(2, 3, dtype=torch.long), 1.0, False, -1, 0)
    with pytest.raises(ValueError, match="tau"):
        op(torch.randn(2, 3), -2.0, False, -1, 0)
    with pytest.raises(IndexError):
        op(torch.randn(2, 3), 1.0, False, 5, 0)


def test_unknown_and_unavailable_backends():
    with pytest.raises(ValueError, match="unknown backend"):
        fg.gumbel_softmax(torch.randn(2, 3), backend="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="'cuda'.*not available"):
            fg.gumbel_softmax(torch.randn(2, 3), backend="cuda")
    with pytest.raises(RuntimeError, match="'cpu'"):
        fg.gumbel_softmax(torch.randn(2, 3, device="meta"), backend="cpu")


@pytest.mark.parametrize("seed", [None, 5])
def test_meta_tensors_give_shapes_as_torch_ops_do(seed):
    """Meta tensors (model construction on the meta device, shape and FLOP
    counting) run as F.gumbel_softmax does: "auto" picks the reference, whose
    noise on meta is a shape without values."""
    x = torch.randn(4, 6, 3, device="meta", dtype=torch.bfloat16)
    for hard in (False, True):
        y, index = fg.gumbel_softmax(x, 0.5, hard, dim=1, seed=seed, return_index=True)
        assert (y.device.type, y.shape, y.dtype) == ("meta", x.shape, x.dtype)
        assert (index.device.type, index.shape, index.dtype) == ("meta", (4, 3), torch.int64)
    assert fg.gumbel_topk(x, 2, seed=seed).shape == x.shape
    assert fg.sample(x, seed=seed).shape == (4, 6)
    tau = torch.tensor(0.5, device="meta")  # a meta tau has no value to check
    assert fg.gumbel_softmax(x, tau, True, seed=seed).shape == x.shape
    assert fg.gumbel_topk(x, 2, tau, seed=seed).shape == x.shape
    assert fg.sample(x, tau, seed=seed).shape == (4, 6)
    assert fg.gumbel_noise((2, 3), 1, device="meta").shape == (2, 3)


# ------------------------------------------------------------ special values
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_nan_row_is_nan_and_other_rows_unaffected(backend, hard):
    x = torch.randn(4, 50, device=device_of(backend))
    x[1, 7] = math.nan
    y = fg.gumbel_softmax(x, hard=hard, seed=3, backend=backend)
    clean = x.clone()
    clean[1] = 0.0
    y_clean = fg.gumbel_softmax(clean, hard=hard, seed=3, backend=backend)
    assert torch.isnan(y[1]).all()
    torch.testing.assert_close(y[[0, 2, 3]], y_clean[[0, 2, 3]], rtol=0, atol=0)


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_masked_entries_are_never_selected_and_exactly_zero(backend, dtype, hard):
    x = torch.randn(300, 20, device=device_of(backend)).to(dtype)
    mask = torch.rand(300, 20, device=x.device) < 0.6
    mask[:, 0] = False
    x = x.masked_fill(mask, -math.inf)
    y, index = fg.gumbel_softmax(x, 0.3, hard, seed=8, return_index=True, backend=backend)
    assert (y[mask] == 0).all()
    assert not mask.gather(1, index[:, None]).any()
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_all_masked_row_is_nan_without_crash(backend, hard):
    x = torch.randn(3, 10, device=device_of(backend))
    x[2] = -math.inf
    y = fg.gumbel_softmax(x, hard=hard, seed=1, backend=backend)
    assert torch.isnan(y[2]).all()
    assert torch.isfinite(y[:2]).all()


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_huge_finite_logits_give_finite_correct_output(backend, dtype, hard):
    big = torch.finfo(torch.float16).max if dtype == torch.float16 else 1e4
    x = torch.randn(6, 40, device=device_of(backend)).to(dtype)
    x[0, 3], x[1, 5], x[2, :] = big, -big, -big
    x[3, 9] = big
    x[3, 10] = -big
    y, index = fg.gumbel_softmax(x, 0.5, hard, seed=2, return_index=True, backend=backend)
    assert torch.isfinite(y).all()
    assert index[0] == 3 and index[3] == 9
    assert y[0, 3] == 1 and y[3, 9] == 1 and y[1, 5] == 0
    torch.testing.assert_close(y.double().sum(-1), torch.ones(6, dtype=torch.float64, device=y.device),
                               atol=2e-2, rtol=0)


@pytest.mark.parametrize("tau", [0.5, 0.1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_the_dtypes_largest_logits_stay_finite(backend, dtype, tau):
    """Finite logits never give NaN or inf: not even the dtype's largest,
    where (x + g) / tau overflows unless the row's max is taken out first."""
    big = torch.finfo(dtype).max
    x = torch.randn(4, 30, device=device_of(backend)).to(dtype)
    x[0, 7], x[1, :] = big, -big
    x[2, 4], x[2, 5] = big, -big
    for hard in (False, True):
        y, index = fg.gumbel_softmax(x, tau, hard, seed=5, return_index=True, backend=backend)
        assert torch.isfinite(y).all(), (backend, dtype, tau, hard)
        assert index[0] == 7 and index[2] == 4 and y[0, 7] == 1 and y[2, 4] == 1


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_tiny_tau_stays_finite(backend):
    x = torch.randn(5, 30, device=device_of(backend))
    for tau in (1e-30, 1e-45, 1e-300):
        y = fg.gumbel_softmax(x, tau, seed=4, backend=backend)
        assert torch.isfinite(y).all()
        assert torch.equal(y, F.one_hot(y.argmax(-1), 30).float())


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_huge_tau_gives_a_uniform_sample(backend, dtype):
    """A huge but finite tau is valid: the soft sample is uniform over the
    unmasked classes (float32's 1/tau underflows to 0 above about 1.4e45, and
    a masked -inf times 0 would be NaN), the hard one a one-hot."""
    x = torch.randn(4, 30, device=device_of(backend)).to(dtype)
    x[1, :10] = float("-inf")
    uniform = torch.full((4, 30), 1 / 30, dtype=torch.float64)
    uniform[1, :10], uniform[1, 10:] = 0, 1 / 20
    for tau in (1e30, 1e46, 1e300):
        y = fg.gumbel_softmax(x, tau, seed=4, backend=backend)
        torch.testing.assert_close(y.double().cpu(), uniform, atol=tolerance(dtype)[0], rtol=tolerance(dtype)[1])
        assert (y[1, :10] == 0).all()
        y, index = fg.gumbel_softmax(x, tau, True, seed=4, return_index=True, backend=backend)
        assert torch.equal(y, F.one_hot(index, 30).to(dtype)) and index[1] >= 10


@pytest.mark.parametrize("backend", ALL_BACKENDS + [backend_param("triton")])
@pytest.mark.parametrize("shape,dim", [((5, 7), -1), ((5, 7), 0), ((2, 3, 4), 1), ((), 0), ((3, 1), 0),
                                       ((2, 1, 4), 1)])
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_the_sample_can_be_written_in_place(backend, shape, dim, hard):
    """As with F.gumbel_softmax, the sample is a tensor of its own: writing into
    the hard sample (masking a class, scaling) works and is differentiated
    through (autograd refuses in-place writes into a view a custom op returns).
    The soft sample is saved for the backward, so autograd refuses a backward
    after writing into it, as it does for torch.softmax's."""
    device = device_of(backend)
    x = torch.randn(shape, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(shape, dtype=torch.float64, device=device)
    grads = []
    for b in (backend, "reference"):
        y = fg.gumbel_softmax(x, 0.8, hard, dim=dim, seed=9, backend=b)
        assert b == "reference" or y._base is None
        y.mul_(2.0)
        if y.dim():
            y.select(dim, 0).zero_()
        if not hard:
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                torch.autograd.grad((y * w).sum(), x)
            return
        grads.append(torch.autograd.grad((y * w).sum(), x)[0])
    torch.testing.assert_close(grads[0], grads[1])


def test_float16_never_nan_where_torch_is():
    """F.gumbel_softmax samples its noise in float16 and gives NaN rows on
    large float16 inputs; ours computes the noise in float32."""
    x = torch.randn(2000, 32768, generator=torch.Generator().manual_seed(0)).to(torch.float16)
    for hard in (False, True):
        y = fg.gumbel_softmax(x, 1.0, hard)
        assert not torch.isnan(y).any()


# -------------------------------------------------------------------- shapes
@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("shape,dim", [((0, 5), -1), ((5, 0, 3), 0), ((2, 0, 4), -1), ((0, 0), 1)])
def test_empty_inputs_return_empty(backend, shape, dim):
    x = torch.randn(shape, device=device_of(backend))
    y, index = fg.gumbel_softmax(x, hard=True, dim=dim, return_index=True, backend=backend)
    assert y.shape == x.shape and y.numel() == 0
    assert index.numel() == 0


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("shape,dim", [((3, 0), -1), ((0,), 0), ((4, 0, 2), 1)])
def test_rows_with_no_classes_give_the_empty_sample(backend, hard, shape, dim):
    """As F.gumbel_softmax returns it (for hard=True it raises; the empty
    one-hot is still well defined), differentiable; the rows have no argmax,
    so return_index=True raises (torch.argmax does too)."""
    x = torch.randn(shape, device=device_of(backend), dtype=torch.float16, requires_grad=True)
    y = fg.gumbel_softmax(x, 0.5, hard, dim=dim, seed=3, backend=backend)
    expected = F.gumbel_softmax(x, 0.5, dim=dim)
    assert y.shape == expected.shape and y.dtype == expected.dtype and y.device == x.device
    y.sum().backward()
    assert x.grad.shape == x.shape
    with pytest.raises(ValueError, match="size 0"):
        fg.gumbel_softmax(x, hard=hard, dim=dim, return_index=True, backend=backend)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_rows_with_no_classes_under_torch_compile(backend):
    """fullgraph=True, as eager; the index's error surfaces from the check
    operator's fake kernel (torch 2.14 wraps a ValueError in a RuntimeError
    that carries its message)."""
    x = torch.randn(3, 0, device=device_of(backend), requires_grad=True)
    torch._dynamo.reset()
    y = torch.compile(lambda x: fg.gumbel_softmax(x, 0.5, True, seed=2, backend=backend), fullgraph=True)(x)
    y.sum().backward()
    assert y.shape == x.shape and x.grad.shape == x.shape
    torch._dynamo.reset()
    with pytest.raises((ValueError, RuntimeError), match="size 0"):
        torch.compile(lambda x: fg.gumbel_softmax(x, return_index=True, backend=backend), fullgraph=True)(x)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_rows_of_one_column_are_one(backend):
    x = torch.randn(7, 1, device=device_of(backend))
    for hard in (False, True):
        y, index = fg.gumbel_softmax(x, hard=hard, return_index=True, backend=backend)
        assert torch.equal(y, torch.ones_like(y)) and (index == 0).all()


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_rows_of_2_to_the_20(backend):
    x = torch.randn(3, 2**20, device=device_of(backend), dtype=torch.bfloat16)
    y, index = fg.gumbel_softmax(x, 0.5, True, seed=9, return_index=True, backend=backend)
    _, index_ref = fg.gumbel_softmax(x, 0.5, True, seed=9, return_index=True, backend="reference")
    assert torch.equal(index, index_ref)
    assert (y.sum(-1) == 1).all()


# --------------------------------------------------------------- random state
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_seed_none_follows_manual_seed_and_calls_differ(backend):
    x = torch.randn(16, 100, device=device_of(backend))
    torch.manual_seed(123)
    a = fg.gumbel_softmax(x, backend=backend)
    b = fg.gumbel_softmax(x, backend=backend)
    torch.manual_seed(123)
    a2 = fg.gumbel_softmax(x, backend=backend)
    assert torch.equal(a, a2)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_explicit_seed_is_pure_and_64_bit(backend):
    x = torch.randn(16, 100, device=device_of(backend))
    a = fg.gumbel_softmax(x, seed=5, backend=backend)
    assert torch.equal(a, fg.gumbel_softmax(x, seed=5, backend=backend))
    assert not torch.equal(a, fg.gumbel_softmax(x, seed=2**32 + 5, backend=backend))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_seeded_sample_equals_softmax_of_logits_plus_gumbel_noise(backend):
    device = device_of(backend)
    x = torch.randn(9, 333, device=device)
    for tau in (0.3, 1.0, 4.0):
        y = fg.gumbel_softmax(x, tau, seed=17, backend=backend)
        expect = torch.softmax((x.double() + fg.gumbel_noise(x.shape, 17, device=device).double()) / tau, -1)
        torch.testing.assert_close(y, expect.float(), atol=1e-6, rtol=1e-5)


def test_the_same_seed_gives_the_same_sample_on_every_backend():
    x = torch.randn(20, 77)
    ys = {b: fg.gumbel_softmax(x, 0.9, True, seed=2**40 + 1, return_index=True, backend=b)
          for b in fg.available_backends("cpu")}
    base_y, base_i = ys.pop("reference")
    for name, (y, i) in ys.items():
        assert torch.equal(i, base_i), name
        assert torch.equal(y, base_y), name
