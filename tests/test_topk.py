"""fused_gumbel.gumbel_topk (straight-through Gumbel top-k) on every backend:
parity with the plain-PyTorch reference fed the same noise (the oracle in
float64), the exact k-hot, k=1 as gumbel_softmax, gradients, gradcheck,
opcheck, torch.compile, bad input, and the sampling law against the exact
without-replacement (Plackett-Luce) inclusion probabilities.

The Triton backend runs here in the CPU interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 without a GPU): it gets the small shapes only."""

import itertools
import math
import subprocess
import sys
import textwrap

import pytest
import torch

import fused_gumbel as fg
from fused_gumbel._extension import has_kernel

from utils import (Case, DTYPES, assert_annealing_reuses_the_graph, assert_bad_tau_refused_under_compile,
                   assert_compiled_matches_eager, assert_double_backward_refused, backend_param, compile_env,
                   device_of, tolerance)

ON_GPU = torch.cuda.is_available()
# The interpreter evaluates masked lanes too (inf - inf in padding rows).
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
BACKENDS = [backend_param("cpu"), backend_param("triton"), backend_param("cuda")]
# The registered C++ operator (CPU and CUDA kernels); Triton has its own op.
OP_BACKENDS = [backend_param("cpu"), backend_param("cuda")]


def _interpreted(backend: str) -> bool:
    return backend == "triton" and not ON_GPU


# (case, k); `small` cases also run in the Triton interpreter.
CASES = [
    (Case("row_of_1", (5, 1), -1), 1, True),
    (Case("router_8", (37, 8), -1), 2, True),
    (Case("odd_cols", (9, 7), -1), 3, True),
    (Case("k_is_cols", (6, 5), -1), 5, True),
    (Case("dim0", (300, 6), 0), 4, False),
    (Case("dim1_of_3d", (3, 50, 4), 1), 5, True),
    (Case("noncontig", (11, 129), -1, contiguous=False), 3, True),
    (Case("noncontig_dim0", (40, 5), 0, contiguous=False), 2, True),
    (Case("scalar_row", (), -1), 1, True),
    (Case("vocab_1000", (16, 1000), -1), 8, False),
    (Case("k_above_8", (4, 40), -1), 12, True),
    (Case("long_row", (2, 70000), -1), 4, False),
]


def oracle(x: torch.Tensor, k: int, tau: float, hard: bool, dim: int, seed: int):
    """(y, index): the index (and k-hot) from the reference in x's own
    precision (s = x + g rounds the same way, so ties resolve alike); the soft
    values, and through autograd the gradients, from the reference in float64."""
    y_same, index = fg.gumbel_topk(x, k, tau, hard, dim, seed=seed, return_index=True, backend="reference")
    y = fg.gumbel_topk(x.double(), k, tau, hard, dim, seed=seed, backend="reference").to(x.dtype)
    if hard:
        y = y_same.detach() + (y - y.detach())
    return y, index


def _skip_if_too_big(backend: str, small: bool) -> None:
    if _interpreted(backend) and not small:
        pytest.skip("the Triton interpreter gets the small shapes only")


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("case,k,small", CASES, ids=[c.name for c, _, _ in CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_and_backward_match_reference(backend, dtype, case, k, small, hard):
    _skip_if_too_big(backend, small)
    if backend == "cuda" and k > fg.topk.CUDA_MAX_K:
        pytest.skip("the CUDA kernel takes k <= 8")
    device = device_of(backend)
    x = case.make(dtype, device, seed=1).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    tau, seed = 0.7, 1234
    y, index = fg.gumbel_topk(x, k, tau, hard, case.dim, seed=seed, return_index=True, backend=backend)
    y_ref, index_ref = oracle(x_ref, k, tau, hard, case.dim, seed)

    assert y.shape == x.shape and y.dtype == dtype
    assert index.dtype == torch.int64 and index.shape == index_ref.shape
    torch.testing.assert_close(index, index_ref, rtol=0, atol=0)
    atol, rtol = tolerance(dtype)
    # Each of the k steps rounds once more: allow k units.
    if hard:
        torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
        assert ((y == 0) | (y == 1)).all()
        rows = y.sum(dim=case.dim) if x.dim() else y
        assert (rows == k).all()
    else:
        torch.testing.assert_close(y, y_ref, atol=k * atol, rtol=k * rtol)

    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    upstream = upstream.to(device=device, dtype=dtype)
    (grad,) = torch.autograd.grad(y, x, upstream)
    (grad_ref,) = torch.autograd.grad(y_ref, x_ref, upstream)
    # The gradient goes through 1/tau and 1/(1 - p_j) k times over: several
    # units of the output tolerance per step, relative to its largest entry.
    # (router_8, float32, seed 1234: one entry of 0.048 is off by 3.0e-5 on the
    # CPU kernel and 4.9e-5 on the H100's, against the float64 reference.)
    scale = max(1.0, grad_ref.double().abs().max().item())
    torch.testing.assert_close(grad, grad_ref, atol=16 * k * atol * scale, rtol=16 * k * rtol)


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_k1_is_gumbel_softmax(backend, hard):
    """k=1 is the straight-through Gumbel-Softmax: same sample, same index,
    same gradient, for the same seed."""
    device = device_of(backend)
    x = torch.randn(13, 37, generator=torch.Generator().manual_seed(6)).to(device).mul(2).requires_grad_()
    y, index = fg.gumbel_topk(x, 1, 0.6, hard, seed=42, return_index=True, backend=backend)
    y1, index1 = fg.gumbel_softmax(x, 0.6, hard, seed=42, return_index=True, backend=backend)
    assert torch.equal(index[:, 0], index1)
    if hard:
        assert torch.equal(y, y1)
    else:
        torch.testing.assert_close(y, y1, atol=1e-6, rtol=1e-5)
    w = torch.randn(13, 37, generator=torch.Generator().manual_seed(7)).to(device)
    (g,) = torch.autograd.grad((y * w).sum(), x)
    (g1,) = torch.autograd.grad((y1 * w).sum(), x)
    torch.testing.assert_close(g, g1, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_is_in_decreasing_order_of_the_noisy_logits(backend):
    device = device_of(backend)
    x = torch.randn(3, 7, 20, generator=torch.Generator().manual_seed(8)).to(device)
    y, index = fg.gumbel_topk(x, 6, 0.5, dim=1, seed=9, return_index=True, backend=backend)
    assert index.shape == (3, 6, 20)
    s = x.movedim(1, -1) + fg.gumbel_noise((3, 20, 7), 9, device=device)
    chosen = s.gather(-1, index.movedim(1, -1))
    assert (chosen[..., :-1] >= chosen[..., 1:]).all()
    # the k-hot sits on the chosen classes and nowhere else
    assert torch.equal(y, torch.zeros_like(y).scatter(1, index, 1.0))


def test_same_subset_on_every_backend():
    backends = [b for b in ("cpu", "triton", "cuda", "reference") if fg.ops.backend_status(b, device_of(b))[0]]
    outs = []
    for b in backends:
        x = torch.randn(17, 33, generator=torch.Generator().manual_seed(10)).to(device_of(b))
        y, index = fg.gumbel_topk(x, 4, 0.8, seed=2**40 + 3, return_index=True, backend=b)
        outs.append((y.cpu(), index.cpu()))
    for y, index in outs[1:]:
        assert torch.equal(y, outs[0][0]) and torch.equal(index, outs[0][1])


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_cpu_rows_split_over_threads_match_reference(hard):
    """Fewer rows than threads: each row is cut into segments over the threads
    (row_plan.h's plan_segments) and their shares are combined per step. The
    result matches the reference and the same rows processed whole."""
    ok, why = fg.ops.backend_status("cpu", "cpu")
    if not ok:
        pytest.skip(why)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, 2))
    try:
        x = torch.randn(1, 40000, dtype=torch.float64, generator=torch.Generator().manual_seed(20))
        x[0, ::7] = -math.inf
        x = x.mul(3).requires_grad_()
        y, index = fg.gumbel_topk(x, 5, 0.8, hard, seed=21, return_index=True, backend="cpu")
        y_ref, index_ref = oracle(x, 5, 0.8, hard, -1, 21)
        assert torch.equal(index, index_ref)
        torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-10)
        w = torch.randn(1, 40000, dtype=torch.float64, generator=torch.Generator().manual_seed(22))
        (g,) = torch.autograd.grad((y * w).sum(), x)
        (g_ref,) = torch.autograd.grad((y_ref * w).sum(), x)
        torch.testing.assert_close(g, g_ref, atol=1e-11, rtol=1e-9)
        # the same row among as many rows as threads is processed whole
        many = torch.cat([x.detach(), torch.randn(max(threads, 2) - 1, 40000, dtype=torch.float64)])
        y_many = fg.gumbel_topk(many, 5, 0.8, hard, seed=21, backend="cpu")
        torch.testing.assert_close(y_many[:1], y.detach(), atol=1e-13, rtol=1e-12)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_float64(backend):
    device = device_of(backend)
    x = torch.randn(4, 9, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: fg.gumbel_topk(t, 3, 0.8, hard=False, seed=11, backend=backend), (x,))
    xt = torch.randn(7, 3, dtype=torch.float64, device=device).t().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: fg.gumbel_topk(t, 2, 1.7, hard=False, dim=0, seed=12, backend=backend), (xt,))


@pytest.mark.parametrize("backend", BACKENDS)
def test_hard_gradient_is_the_soft_gradient(backend):
    device = device_of(backend)
    x = torch.randn(5, 30, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(5, 30, dtype=torch.float64, device=device)
    (g_hard,) = torch.autograd.grad((fg.gumbel_topk(x, 3, 0.6, True, seed=5, backend=backend) * w).sum(), x)
    (g_soft,) = torch.autograd.grad((fg.gumbel_topk(x, 3, 0.6, False, seed=5, backend=backend) * w).sum(), x)
    torch.testing.assert_close(g_hard, g_soft, atol=1e-13, rtol=1e-11)


@pytest.mark.parametrize("backend", OP_BACKENDS)
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("dtype,shape,dim,k", [
    (torch.float32, (4, 9), -1, 3),
    (torch.float64, (3, 5, 2), 1, 2),
    (torch.bfloat16, (6, 33), 0, 4),
    (torch.float16, (7,), 0, 1),
])
def test_opcheck(backend, hard, dtype, shape, dim, k):
    device = device_of(backend)
    x = torch.randn(shape, dtype=dtype, device=device, requires_grad=dtype == torch.float64)
    torch.library.opcheck(torch.ops.fused_gumbel.gumbel_topk, (x, k, 0.7, hard, dim, 42))


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_opcheck_triton_op(hard):
    ok, why = fg.ops.backend_status("triton", device_of("triton"))
    if not ok:
        pytest.skip(why)
    device = device_of("triton")
    x = torch.randn(3, 5, 2, dtype=torch.float64, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.fused_gumbel.gumbel_topk_triton, (x, 2, 0.7, hard, 1, 42))
    _, _, stats, rng = torch.ops.fused_gumbel.gumbel_topk_triton(x.detach(), 2, 0.7, hard, 1, 42)
    torch.library.opcheck(torch.ops.fused_gumbel.gumbel_topk_triton_backward,
                          (torch.randn_like(x), x.detach(), stats, rng, 2, 0.7, 1))
    tau = torch.tensor(0.7, dtype=torch.float64, device=device)
    torch.library.opcheck(torch.ops.fused_gumbel.gumbel_topk_triton_tau_tensor, (x, 2, tau, hard, 1, 42))
    torch.library.opcheck(torch.ops.fused_gumbel.gumbel_topk_triton_backward_tau_tensor,
                          (torch.randn_like(x), x.detach(), stats, rng, 2, tau, 1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,dim,k", [((6, 5), -1, 2), ((6, 5), 0, 2), ((6, 5), 0, 1), ((3, 1), 0, 2)])
def test_the_subset_and_its_index_can_be_written_in_place(backend, shape, dim, k):
    """As gumbel_softmax's sample: outputs of their own, not views (also
    where moving dim back changes no element's place: size-1 dims, k = 1)."""
    device = device_of(backend)
    x = torch.randn(shape, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(shape, dtype=torch.float64, device=device)
    grads = []
    for b in (backend, "reference"):
        y, index = fg.gumbel_topk(x, k, 0.8, dim=dim, seed=9, return_index=True, backend=b)
        assert b == "reference" or (y._base is None and index._base is None)
        y.mul_(3.0)
        index.add_(1)
        grads.append(torch.autograd.grad((y * w).sum(), x)[0])
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_double_backward_is_refused(backend, hard):
    assert_double_backward_refused(
        lambda x: fg.gumbel_topk(x, 2, 0.7, hard, seed=5, backend=backend), device_of(backend))


@pytest.mark.parametrize("backend", BACKENDS + [backend_param("reference")])
def test_a_bad_tau_is_refused_under_torch_compile(backend):
    """As gumbel_softmax's."""
    assert_bad_tau_refused_under_compile(
        lambda x, tau: fg.gumbel_topk(x, 2, tau, seed=1, backend=backend),
        device_of(backend))


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_opcheck_tau_tensor_ops(backend):
    device = device_of(backend)
    x = torch.randn(4, 7, dtype=torch.float64, device=device, requires_grad=True)
    tau = torch.tensor(0.7, dtype=torch.float64)
    for hard in (False, True):
        torch.library.opcheck(torch.ops.fused_gumbel.gumbel_topk_tau_tensor, (x, 3, tau, hard, -1, 42))
    _, _, stats, rng = torch.ops.fused_gumbel.gumbel_topk_tau_tensor(x.detach(), 3, tau, False, -1, 4)
    torch.library.opcheck(torch.ops.fused_gumbel.gumbel_topk_backward_tau_tensor,
                          (torch.randn_like(x), x.detach(), stats, rng, 3, tau, -1))
    with pytest.raises(ValueError, match="tau"):
        torch.ops.fused_gumbel.gumbel_topk_tau_tensor(x, 3, torch.tensor(float("inf"), dtype=torch.float64),
                                                      True, -1, 1)


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_opcheck_backward_op(backend):
    device = device_of(backend)
    x = torch.randn(5, 8, dtype=torch.float64, device=device)
    _, _, stats, rng = torch.ops.fused_gumbel.gumbel_topk(x, 3, 0.9, False, -1, 3)
    grad = torch.randn_like(x)
    torch.library.opcheck(torch.ops.fused_gumbel.gumbel_topk_backward, (grad, x, stats, rng, 3, 0.9, -1))


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph(backend, hard):
    # Inductor before torch 2.14 launches user Triton kernels without their
    # enable_fp_fusion=False (torch 2.11 on the H100): products in the Triton
    # kernels' sums may become FMAs, and the gradient's 1/(1 - p_j) terms
    # amplify that rounding (up to 7.4e-5 relative there). The noise, written
    # with explicit FMAs, is not affected. The other backends run the same
    # kernels compiled or not.
    k = 3
    atol, rtol = tolerance(torch.float32)
    grad_tolerance = (16 * k * atol, 16 * k * rtol) if backend == "triton" else None
    assert_compiled_matches_eager(
        lambda logits: fg.gumbel_topk(logits, k, tau=0.5, hard=hard, seed=7, backend=backend),
        device_of(backend), grad_tolerance)


@pytest.mark.parametrize("backend", BACKENDS + [backend_param("reference")])
def test_a_new_tau_reuses_the_compiled_graph(backend):
    """As gumbel_softmax's: under torch.compile the temperature reaches the
    ops as a tensor (the *_tau_tensor siblings)."""
    assert_annealing_reuses_the_graph(
        lambda x, tau: fg.gumbel_topk(x, 2, tau, True, seed=3, backend=backend),
        device_of(backend), (6, 9), steps=10)


# ----------------------------------------------------------------------------
# The sampling law
# ----------------------------------------------------------------------------


def plackett_luce_subsets(logits: list[float], k: int) -> dict[tuple[int, ...], float]:
    """P(subset) of k classes drawn without replacement from softmax(logits),
    by enumerating every ordered draw."""
    w = [math.exp(v) for v in logits]
    probs: dict[tuple[int, ...], float] = {}
    for order in itertools.permutations(range(len(w)), k):
        p, left = 1.0, sum(w)
        for i in order:
            p *= w[i] / left
            left -= w[i]
        key = tuple(sorted(order))
        probs[key] = probs.get(key, 0.0) + p
    return probs


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("backend", BACKENDS)
def test_subset_frequencies_match_plackett_luce(backend, k):
    """The Gumbel-top-k trick: the k largest of logits + g are k classes
    without replacement from softmax(logits). Chi-square on the 10 subsets of
    5 classes and a z-test on each inclusion probability (fixed seed: the
    counts are deterministic; 1e-4 would be the false-alarm rate of a fresh seed)."""
    from scipy import stats

    logits = [1.0, 0.3, -0.5, 0.8, -1.2]
    n = 8000 if _interpreted(backend) else 40000
    x = torch.tensor(logits).repeat(n, 1).to(device_of(backend))
    _, index = fg.gumbel_topk(x, k, seed=20240 + k, return_index=True, backend=backend)
    subsets = index.sort(-1).values.cpu()
    exact = plackett_luce_subsets(logits, k)
    keys = sorted(exact)
    code = {key: c for c, key in enumerate(keys)}
    observed = torch.bincount(torch.tensor([code[tuple(r)] for r in subsets.tolist()]), minlength=len(keys))
    expected = torch.tensor([exact[key] * n for key in keys], dtype=torch.float64)
    assert stats.chisquare(observed.double().numpy(), expected.numpy()).pvalue > 1e-4
    inclusion = torch.tensor([sum(p for key, p in exact.items() if i in key) for i in range(5)],
                             dtype=torch.float64)
    counts = torch.bincount(subsets.flatten(), minlength=5).double()
    z = (counts - n * inclusion) / (n * inclusion * (1 - inclusion)).sqrt()
    assert z.abs().max() < 4.0, z


# ----------------------------------------------------------------------------
# Bad input and special values
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS + [backend_param("reference")])
def test_bad_input_raises_the_contracts_errors(backend):
    device = device_of(backend)
    x = torch.randn(4, 6, device=device)
    with pytest.raises((TypeError, RuntimeError), match="int64"):
        fg.gumbel_topk(torch.ones(4, 6, dtype=torch.int64, device=device), 2, backend=backend)
    for tau in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="tau"):
            fg.gumbel_topk(x, 2, tau, backend=backend)
    with pytest.raises(IndexError):
        fg.gumbel_topk(x, 2, dim=2, backend=backend)
    for k in (0, 7, -1, 2.5, True, None):
        with pytest.raises(ValueError, match="k"):
            fg.gumbel_topk(x, k, backend=backend)
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_direct_op_call_raises_the_same_errors(backend):
    x = torch.randn(4, 6, device=device_of(backend))
    op = torch.ops.fused_gumbel.gumbel_topk
    with pytest.raises(TypeError, match="torch.int32"):
        op(x.int(), 2, 1.0, True, -1, 0)
    with pytest.raises(ValueError, match="tau"):
        op(x, 2, -1.0, True, -1, 0)
    with pytest.raises(IndexError):
        op(x, 2, 1.0, True, 5, 0)
    with pytest.raises(ValueError, match="k"):
        op(x, 7, 1.0, True, -1, 0)


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_without_a_subset_are_nan_and_others_unaffected(backend, hard):
    """A NaN, a +inf, or fewer than k entries above -inf: that row is NaN (and
    its gradient), no crash; the other rows are what they would be alone."""
    device = device_of(backend)
    x = torch.randn(6, 10, generator=torch.Generator().manual_seed(13)).to(device)
    bad = x.clone()
    bad[1, 4] = math.nan
    bad[2, 7] = math.inf
    bad[3, :8] = -math.inf  # 2 finite entries, k = 3
    bad[4] = -math.inf
    bad.requires_grad_()
    y = fg.gumbel_topk(bad, 3, 0.5, hard, seed=3, backend=backend)
    clean = fg.gumbel_topk(x, 3, 0.5, hard, seed=3, backend=backend)
    assert torch.isnan(y[1:5]).all()
    torch.testing.assert_close(y[[0, 5]], clean[[0, 5]], rtol=0, atol=0)
    (g,) = torch.autograd.grad(y.sum(), bad)
    assert torch.isnan(g[1:5]).all() and torch.isfinite(g[[0, 5]]).all()


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_entries_are_never_selected_and_exactly_zero(backend, dtype, hard):
    device = device_of(backend)
    x = torch.randn(60, 20, generator=torch.Generator().manual_seed(14)).to(device=device, dtype=dtype)
    mask = torch.rand(60, 20, generator=torch.Generator().manual_seed(15)).to(device) < 0.6
    mask[:, :3] = False
    x = x.masked_fill(mask, -math.inf).requires_grad_()
    y, index = fg.gumbel_topk(x, 3, 0.3, hard, seed=8, return_index=True, backend=backend)
    assert (y[mask] == 0).all()
    assert not mask.gather(1, index).any()
    assert torch.isfinite(y).all()
    (g,) = torch.autograd.grad(y.float().pow(2).sum(), x)
    assert (g[mask] == 0).all() and torch.isfinite(g).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_finite_logits_and_tiny_tau_stay_finite(backend):
    device = device_of(backend)
    x = torch.randn(4, 30, generator=torch.Generator().manual_seed(16)).to(device)
    x[0, 3], x[1, 5], x[2, 7] = 1e4, -1e4, 3e38
    x.requires_grad_()
    for tau in (1.0, 1e-30):
        y, index = fg.gumbel_topk(x, 3, tau, False, seed=2, return_index=True, backend=backend)
        assert torch.isfinite(y).all()
        assert index[0, 0] == 3 and index[2, 0] == 7 and (index[1] != 5).all()
        (g,) = torch.autograd.grad(y.sum(), x)
        assert torch.isfinite(g).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_inputs_return_empty(backend):
    device = device_of(backend)
    x = torch.randn(0, 5, device=device)
    y, index = fg.gumbel_topk(x, 2, seed=1, return_index=True, backend=backend)
    assert y.shape == (0, 5) and index.shape == (0, 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_none_follows_manual_seed_and_calls_differ(backend):
    device = device_of(backend)
    x = torch.randn(16, 50, device=device)
    torch.manual_seed(0)
    a = fg.gumbel_topk(x, 5, backend=backend)
    b = fg.gumbel_topk(x, 5, backend=backend)
    torch.manual_seed(0)
    c = fg.gumbel_topk(x, 5, backend=backend)
    assert torch.equal(a, c) and not torch.equal(a, b)


@pytest.mark.skipif(not has_kernel("gumbel_topk", "CPU"), reason="the extension has no gumbel_topk")
@pytest.mark.parametrize("tau_tensor", [False, True], ids=["tau", "tau_tensor"])
def test_backward_saves_only_per_step_row_statistics(tau_tensor):
    """What autograd keeps: the logits, [rows, k, 2] statistics and rng_state
    (and tau where it is a tensor); only y carries a gradient."""
    x = torch.randn(64, 100, requires_grad=True)
    tau = torch.tensor(0.6, dtype=torch.float64) if tau_tensor else 0.6
    op = torch.ops.fused_gumbel.gumbel_topk_tau_tensor if tau_tensor else torch.ops.fused_gumbel.gumbel_topk
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y, index, stats, rng_state = op(x, 4, tau, True, -1, 1)
    expected = [x, stats, rng_state] + ([tau] if tau_tensor else [])
    assert [t.data_ptr() for t in saved] == [t.data_ptr() for t in expected]
    assert stats.shape == (64, 4, 2) and rng_state.shape == (2,)
    assert y.requires_grad and not any(t.requires_grad for t in (index, stats, rng_state))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("cols", [50, 64])
def test_triton_windowed_rows_match_single_window(monkeypatch, hard, cols, dtype):
    """Rows longer than one window are walked in windows (s regenerated in
    every pass, step statistics merged across windows): shrink the window so
    the interpreter reaches that path, and compare with the CPU kernel. In
    float32 too: the merge's rescaling once took st_softmax's ex2 scale for
    1 / tau there (row sums of 3-3.6 for k = 4)."""
    ok, why = fg.ops.backend_status("triton", device_of("triton"))
    if not ok:
        pytest.skip(why)
    from fused_gumbel.triton_kernels import topk as kernels

    monkeypatch.setattr(kernels, "SINGLE_BLOCK_MAX", 16)
    monkeypatch.setattr(kernels, "LOOP_BLOCK", 16)
    assert not kernels.plan(5, cols).single
    device = device_of("triton")
    x = torch.randn(5, cols, dtype=torch.float64, generator=torch.Generator().manual_seed(17)).to(device)
    x = x.mul(2).to(dtype).requires_grad_()
    y, index = fg.gumbel_topk(x, 4, 0.9, hard, seed=18, return_index=True, backend="triton")
    y_ref, index_ref = oracle(x, 4, 0.9, hard, -1, 18)
    assert torch.equal(index, index_ref)
    tol = dict(atol=1e-12, rtol=1e-10) if dtype == torch.float64 else dict(atol=2e-6, rtol=2e-5)
    torch.testing.assert_close(y, y_ref.to(dtype), **tol)
    w = torch.randn(5, cols, dtype=torch.float64, generator=torch.Generator().manual_seed(19)).to(device)
    (g,) = torch.autograd.grad((y * w.to(dtype)).sum(), x)
    (g_ref,) = torch.autograd.grad((y_ref * w.to(y_ref.dtype)).sum(), x)
    tol = dict(atol=1e-11, rtol=1e-9) if dtype == torch.float64 else dict(atol=2e-5, rtol=2e-4)
    torch.testing.assert_close(g, g_ref.to(dtype), **tol)


_COMPILE_SCRIPT = textwrap.dedent("""
    import re
    import triton
    from triton_sm90 import build, spill_bytes
    from fused_gumbel.triton_kernels import topk as K

    # (rows, cols, k, dtype, hard, seed drawn on the device)
    for rows, cols, k, dt, hard, seed_in in ((16384, 64, 2, "fp16", True, True),
                                             (4096, 1000, 8, "bf16", False, False),
                                             (64, 1000, 16, "fp64", False, True),
                                             (64, 4001, 8, "fp32", True, False)):
        p = K.plan(rows, cols)
        c = dict(ROWS=p.rows_per_program, BLOCK=p.block, KP=triton.next_power_of_2(k),
                 ALIGNED=p.aligned, SINGLE=p.single)
        fwd = build(K._topk_forward_kernel, dt, dict(HARD=hard, SEED_IN_STATE=seed_in,
                    TAU_IN_MEMORY=hard, **c), p.num_warps)
        bwd = build(K._topk_backward_kernel, dt, dict(TAU_IN_MEMORY=not hard, **c), p.num_warps)
        approx = sum(len(re.findall(r"\\bdiv\\.(?:full|approx)\\.f32", c.asm["ptx"])) for c in (fwd, bwd))
        print(rows, cols, k, dt, int(p.single), approx, spill_bytes(fwd), spill_bytes(bwd))
""")


@pytest.mark.skipif(ON_GPU, reason="the GPU runs compile the kernels for real")
def test_triton_topk_kernels_compile_for_sm90():
    """The interpreter accepts code the compiler rejects: compile every
    constexpr branch to sm_90 (Triton's own ptxas) without a GPU. Rows of one
    window must not spill; the windowed path may spill a few bytes. Every
    float32 division is correctly rounded, as the CPU and CUDA kernels' (Triton
    would divide with div.full.f32, within 2 ulp)."""
    pytest.importorskip("triton.compiler")
    done = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=compile_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    for line in done.stdout.strip().splitlines():
        *_, single, approx, fwd, bwd = line.split()
        assert approx == "0", line
        assert int(fwd) + int(bwd) <= (0 if single == "1" else 32), line


def test_torch_compile_seed_none_draws_fresh_noise():
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: fg.gumbel_topk(x, 3), fullgraph=True)
    x = torch.randn(64, 100) * 0.01
    assert not torch.equal(compiled(x), compiled(x))


# ----------------------------------------------------------------------------
# GPU only (skipped, with the reason shown, on a machine without one)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [backend_param("cuda"), backend_param("triton")])
def test_cuda_graph_replays_draw_fresh_noise(backend):
    if not ON_GPU:
        pytest.skip("needs a CUDA device")
    x = torch.randn(8, 100, device="cuda")
    fg.gumbel_topk(x, 3, 0.5, False, backend=backend)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = fg.gumbel_topk(x, 3, 0.5, False, backend=backend)
    graph.replay()
    first = y.clone()
    graph.replay()
    assert not torch.equal(first, y)


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_cuda_k_above_8_runs_on_triton_or_is_an_error(hard):
    ok, why = fg.ops.backend_status("cuda", "cuda" if ON_GPU else None)
    if not ok:
        pytest.skip(f"backend 'cuda': {why}")
    x = torch.randn(6, 50, device="cuda")
    with pytest.raises(ValueError, match="k"):
        fg.gumbel_topk(x, 9, hard=hard, seed=1, backend="cuda")
    y, index = fg.gumbel_topk(x, 9, hard=hard, seed=1, return_index=True)
    y_ref, index_ref = oracle(x, 9, 1.0, hard, -1, 1)
    assert torch.equal(index, index_ref)
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=2e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gap", [0.855, 0.862, 0.868])
def test_nearly_removed_class_keeps_the_gradient_finite(backend, gap):
    """A class that step 1 all but removes (its rest exp(-gap / tau) near the
    bottom of float32 at tau = 0.01): the GPU backwards' forward-accumulated
    products see the clamp there; the gradient must stay finite and equal the
    CPU kernel's reverse recursion."""
    target = torch.tensor([[1.0, 1.0 - gap, -0.16, -2.0]])
    x = target - fg.gumbel_noise(target.shape, 5)  # s = x + g is the target row
    dev = device_of(backend)
    upstream = torch.tensor([[0.3, -1.2, 0.7, 2.0]])
    grads = []
    for b, d in ((backend, dev), ("cpu", "cpu")):
        xb = x.clone().to(d).requires_grad_()
        y = fg.gumbel_topk(xb, 3, 0.01, hard=False, seed=5, backend=b)
        (y * upstream.to(d)).sum().backward()
        grads.append(xb.grad.cpu())
    assert torch.isfinite(grads[0]).all(), grads[0]
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
