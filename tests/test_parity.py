"""Every fused backend against the plain-PyTorch reference fed the same noise:
values, argmax index and gradients, over backend x dtype x shape x dim x hard."""

import pytest
import torch

import fused_gumbel as fg

from utils import DTYPES, FUSED_BACKENDS, device_of, reference, sample_inputs, tolerance

CASES = sample_inputs()


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_forward_and_backward_match_reference(backend, dtype, case, hard):
    device = device_of(backend)
    x = case.make(dtype, device, seed=1).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    tau, seed = 0.7, 1234
    y, index = fg.gumbel_softmax(x, tau, hard, dim=case.dim, seed=seed, return_index=True, backend=backend)
    y_ref, index_ref = reference(x_ref, tau, hard, case.dim, seed)

    assert y.shape == x.shape and y.dtype == dtype and index.dtype == torch.int64
    assert index.shape == y_ref.sum(dim=case.dim).shape if x.dim() else index.shape == ()
    torch.testing.assert_close(index, index_ref, rtol=0, atol=0)
    atol, rtol = tolerance(dtype)
    if hard:
        # exact one-hot: the forward value is 0.0 or 1.0, nothing in between.
        torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
        assert ((y == 0) | (y == 1)).all()
    else:
        torch.testing.assert_close(y, y_ref, atol=atol, rtol=rtol)

    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    upstream = upstream.to(device=device, dtype=dtype)
    (grad,) = torch.autograd.grad(y, x, upstream)
    (grad_ref,) = torch.autograd.grad(y_ref, x_ref, upstream)
    # The gradient is scaled by 1/tau and by values up to |upstream|: allow a
    # few units of the output tolerance.
    torch.testing.assert_close(grad, grad_ref, atol=4 * atol, rtol=4 * rtol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_low_precision_error_at_most_twice_pytorchs(backend, dtype):
    """flash-attention's policy: against a float64 evaluation of the same
    sample, our error is at most twice that of plain PyTorch ops in `dtype`."""
    device = device_of(backend)
    x = torch.randn(64, 3000, generator=torch.Generator().manual_seed(3), dtype=torch.float64).mul(2)
    x = x.to(device=device, dtype=dtype)
    tau, seed = 0.5, 99
    g = fg.gumbel_noise(x.shape, seed, device=device)
    exact = torch.softmax((x.double() + g.double()) / tau, -1)
    plain = torch.softmax((x + g.to(dtype)) / tau, -1)
    ours = fg.gumbel_softmax(x, tau, seed=seed, backend=backend)
    err_plain = (plain.double() - exact).abs().max().item()
    err_ours = (ours.double() - exact).abs().max().item()
    assert err_ours <= 2 * err_plain, (err_ours, err_plain)


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_rows_split_over_threads_match_reference(backend, hard):
    """One very long row (2**20 columns) is split over every core and the
    pieces are merged: the result must not depend on the split."""
    device = device_of(backend)
    x = torch.randn(1, 2**20, generator=torch.Generator().manual_seed(4)).to(device) * 4
    y, index = fg.gumbel_softmax(x, 1.3, hard, seed=77, return_index=True, backend=backend)
    y_ref, index_ref = reference(x, 1.3, hard, -1, 77)
    assert index.item() == index_ref.item()
    torch.testing.assert_close(y, y_ref, atol=1e-7, rtol=1e-4)
    if not hard:
        assert abs(y.double().sum().item() - 1) < 1e-4


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_few_rows_use_every_thread_same_result(backend):
    """The same rows give the same bits whether processed one row per thread or
    split within rows."""
    device = device_of(backend)
    x = torch.randn(8, 40000, generator=torch.Generator().manual_seed(5)).to(device)
    full = fg.gumbel_softmax(x, 0.9, seed=3, backend=backend)
    one = torch.cat([fg.gumbel_softmax(x[:1], 0.9, seed=3, backend=backend)])
    assert torch.equal(full[0].argmax(), one[0].argmax())
    torch.testing.assert_close(full[:1], one, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_gradcheck_float64(backend):
    device = device_of(backend)
    x = torch.randn(6, 33, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fg.gumbel_softmax(t, 0.8, seed=11, backend=backend), (x,))
    # dim != -1 and a non-contiguous input go through the same backward.
    xt = torch.randn(33, 6, dtype=torch.float64, device=device).t().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: fg.gumbel_softmax(t, 1.7, dim=0, seed=12, backend=backend), (xt,))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_hard_gradient_is_the_soft_gradient(backend):
    """Straight-through: the hard sample's gradient is the soft sample's."""
    device = device_of(backend)
    x = torch.randn(7, 50, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(7, 50, dtype=torch.float64, device=device)
    (g_hard,) = torch.autograd.grad((fg.gumbel_softmax(x, 0.6, True, seed=5, backend=backend) * w).sum(), x)
    (g_soft,) = torch.autograd.grad((fg.gumbel_softmax(x, 0.6, False, seed=5, backend=backend) * w).sum(), x)
    torch.testing.assert_close(g_hard, g_soft, atol=1e-13, rtol=1e-11)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_backward_recomputing_the_soft_sample_matches_reading_it(backend):
    """st_softmax_backward regenerates the soft sample from logits, noise and
    the row statistics exactly as well as it reads a saved one."""
    device = device_of(backend)
    x = torch.randn(5, 300, device=device)
    grad = torch.randn(5, 300, device=device)
    y, _, stats, rng, _ = torch.ops.fused_gumbel.st_softmax(x, 0.8, False, -1, 21)
    from_y = torch.ops.fused_gumbel.st_softmax_backward(grad, y, None, stats, rng, 0.8, -1)
    from_x = torch.ops.fused_gumbel.st_softmax_backward(grad, None, x, stats, rng, 0.8, -1)
    torch.testing.assert_close(from_x, from_y, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", FUSED_BACKENDS[:2])
def test_backward_ops_read_strided_saved_state_as_its_values(backend):
    """The C++ backward ops called directly make strided views of stats and
    rng_state contiguous (as the Triton ones do) rather than read the kernel's
    seed and counter base from the wrong place."""
    device = device_of(backend)
    x = torch.randn(6, 40, device=device)
    grad = torch.randn_like(x)
    ops = torch.ops.fused_gumbel
    cases = ((ops.st_softmax(x, 0.5, True, -1, None)[:4], ops.st_softmax_backward,
              lambda stats, rng: (grad, None, x, stats, rng, 0.5, -1)),
             (ops.gumbel_topk(x, 2, 0.5, True, -1, None), ops.gumbel_topk_backward,
              lambda stats, rng: (grad, x, stats, rng, 2, 0.5, -1)))
    for (_, _, stats, rng_state), backward, args in cases:
        strided_stats = torch.stack([stats, torch.full_like(stats, float("nan"))], -1)[..., 0]
        strided_rng = torch.stack([rng_state, rng_state + 12345], -1)[:, 0]
        assert not strided_stats.is_contiguous() and not strided_rng.is_contiguous()
        assert torch.equal(backward(*args(strided_stats, strided_rng)), backward(*args(stats, rng_state)))
