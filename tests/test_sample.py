"""fused_gumbel.sample, the forward-only sampler: every backend against the
reference fed the same noise, its distribution, and the contract's bad input."""

import math
import warnings

import pytest
import torch
from scipy import stats

import fused_gumbel as fg

from utils import DTYPES, FUSED_BACKENDS, assert_bad_tau_refused_under_compile, backend_param, device_of, sample_inputs

# Triton runs in the CPU interpreter here, so it gets the small cases only.
TRITON = backend_param("triton")
BACKENDS = FUSED_BACKENDS + [backend_param("reference")]
if not torch.cuda.is_available():
    BACKENDS.append(TRITON)
SMALL = {"router_8", "odd_cols", "dim0", "dim1_of_3d", "noncontig", "scalar_row", "row_of_1"}


def _interpreted(backend):
    return backend == "triton" and not torch.cuda.is_available()


def _rows(backend, n):
    """The interpreter runs a program per row in Python: fewer rows there."""
    return min(n, 24) if _interpreted(backend) else n


def _cases(backend):
    return [c for c in sample_inputs() if not _interpreted(backend) or c.name in SMALL]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("temperature", [1.0, 0.37, 4.0])
def test_matches_the_reference_fed_the_same_noise(backend, dtype, temperature):
    for case in _cases(backend):
        x = case.make(dtype, device_of(backend), seed=len(case.name))
        got = fg.sample(x, temperature, seed=12345, dim=case.dim, backend=backend)
        want = fg.sample_reference(x.cpu(), temperature, seed=12345, dim=case.dim)
        assert got.dtype == torch.int64 and got.shape == want.shape, case.name
        assert torch.equal(got.cpu(), want), case.name


@pytest.mark.parametrize("backend", BACKENDS)
def test_temperature_one_is_the_gumbel_softmax_index(backend):
    x = torch.randn(_rows(backend, 64), 1000, device=device_of(backend)) * 2
    _, index = fg.gumbel_softmax(x, 0.5, True, seed=-7, return_index=True, backend="reference")
    assert torch.equal(fg.sample(x, 1.0, seed=-7, backend=backend).cpu(), index.cpu())


def test_cpu_kernel_splits_few_long_rows_alike():
    """Two rows of 2**17 split over the threads, merged: the reference's index."""
    x = torch.randn(2, 1 << 17) * 4
    assert torch.equal(fg.sample(x, 0.8, seed=99, backend="cpu"),
                       fg.sample_reference(x, 0.8, seed=99))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_frequencies_follow_the_tempered_softmax(backend, temperature):
    """20,000 rows of the same 8 logits: a chi-square test against
    softmax(logits / temperature). (Under the interpreter Triton's noise is
    checked bit for bit by the parity test instead: 20,000 programs take
    minutes there.)"""
    if _interpreted(backend):
        pytest.skip("20,000 rows in the Triton interpreter; parity covers its noise")
    logits = torch.tensor([1.5, 0.2, -0.3, 0.9, -2.0, 0.0, 0.6, -1.1])
    x = logits.expand(20_000, 8).to(device_of(backend))
    index = fg.sample(x, temperature, seed=31337, backend=backend)
    counts = torch.bincount(index.cpu(), minlength=8).double()
    expected = torch.softmax(logits.double() / temperature, 0) * counts.sum()
    assert stats.chisquare(counts.numpy(), expected.numpy()).pvalue > 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_none_follows_manual_seed(backend):
    x = torch.randn(_rows(backend, 256), 50, device=device_of(backend))
    torch.manual_seed(4)
    a = fg.sample(x, backend=backend)
    b = fg.sample(x, backend=backend)
    torch.manual_seed(4)
    assert torch.equal(fg.sample(x, backend=backend), a)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeds_are_64_bit(backend):
    x = torch.zeros(_rows(backend, 512), 64, device=device_of(backend))
    assert not torch.equal(fg.sample(x, seed=5, backend=backend), fg.sample(x, seed=5 + 2**32, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_special_values(backend):
    x = torch.randn(5, 40, device=device_of(backend))
    x[0, 7] = math.nan
    x[1] = -math.inf
    x[2, :39] = -math.inf  # only column 39 can be drawn
    x[3, ::2] = -math.inf
    x[4, 3] = math.inf
    got = fg.sample(x, 0.7, seed=8, backend=backend).cpu()
    assert got[0] == -1 and got[1] == -1 and got[2] == 39 and got[4] == -1
    assert got[3] % 2 == 1
    clean = fg.sample(x[3:4], 0.7, seed=8, backend=backend).cpu()
    assert torch.equal(clean, fg.sample_reference(x[3:4].cpu(), 0.7, seed=8))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_temperature_that_requires_grad_is_read_quietly(backend):
    """sample is not differentiable: a temperature tensor that requires grad
    is read as its value, without torch's warning on converting it."""
    x = torch.randn(4, 9, device=device_of(backend))
    with warnings.catch_warnings():
        # torch's warning is a UserWarning; Triton 3.6's interpreter itself
        # warns (a DeprecationWarning of NumPy's) at every loop bound.
        warnings.simplefilter("error", UserWarning)
        got = fg.sample(x, torch.tensor(0.5, requires_grad=True), seed=5, backend=backend)
    assert torch.equal(got, fg.sample(x, 0.5, seed=5, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_logits_and_temperatures(backend):
    x = torch.tensor([[1e4, -1e4, 0.0], [65504.0, 65504.0, -65504.0]], device=device_of(backend))
    for t in (1e-30, 1.0, 1e20):
        got = fg.sample(x.half(), t, seed=3, backend=backend).cpu()
        assert got[0] in (0, 1, 2) and got[1] in (0, 1)
    # a vanishing temperature is the greedy argmax (first of the ties)
    assert fg.sample(x, 1e-30, seed=3, backend=backend).cpu().tolist() == [0, 0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_huge_temperature_is_a_uniform_sample(backend, dtype):
    """Above temperature 1 the score is x / T + g (the argmax of x + T g): in
    float32 x + T g overflowed to inf above about T = 1.5e37, and every row
    had no sample (-1). A masked -inf stays unsampled."""
    rows = 1400
    x = torch.randn(rows, 8, dtype=dtype, device=device_of(backend))
    x[:, 3] = float("-inf")
    for t in (1e37, 1e39, 1e300):
        got = fg.sample(x, t, seed=5, backend=backend).cpu()
        assert torch.equal(got, fg.sample_reference(x.cpu(), t, seed=5)), t
        counts = torch.bincount(got, minlength=8)
        assert (got >= 0).all() and counts[3] == 0, (t, counts)
        # the 7 other classes alike: within 5 standard deviations of rows / 7
        expected = rows / 7
        assert ((counts[[0, 1, 2, 4, 5, 6, 7]] - expected).abs() < 5 * math.sqrt(expected * 6 / 7)).all(), counts


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input(backend):
    device = device_of(backend)
    with pytest.raises((TypeError, RuntimeError), match="int64"):
        fg.sample(torch.ones(3, 4, dtype=torch.int64, device=device), backend=backend)
    for t in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="temperature"):
            fg.sample(torch.randn(3, 4, device=device), t, backend=backend)
    for t in ("0.7", bytearray(b"0.7"), None, torch.tensor([0.5, 0.7])):
        with pytest.raises(TypeError, match="temperature must be a number"):
            fg.sample(torch.randn(3, 4, device=device), t, backend=backend)
    with pytest.raises(IndexError):
        fg.sample(torch.randn(3, 4, device=device), dim=2, backend=backend)
    with pytest.raises(ValueError, match="size 0"):
        fg.sample(torch.randn(3, 0, device=device), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_rows(backend):
    got = fg.sample(torch.randn(0, 9, device=device_of(backend)), seed=1, backend=backend)
    assert got.shape == (0,) and got.dtype == torch.int64


@pytest.mark.parametrize("backend", [b for b in FUSED_BACKENDS])
def test_opcheck(backend):
    x = torch.randn(6, 33, device=device_of(backend))
    torch.library.opcheck(torch.ops.fused_gumbel.sample.default, (x, 0.5, -1, 11))
    t = torch.tensor(0.5, dtype=torch.float64)
    torch.library.opcheck(torch.ops.fused_gumbel.sample_tau_tensor.default, (x, t, -1, 11))
    for value in (1e-30, 0.5, 1.0, 1.0000001, 3.0, 1e39, 1e300):  # both score weightings, their extremes
        as_tensor = torch.tensor(value, dtype=torch.float64)
        assert torch.equal(torch.ops.fused_gumbel.sample_tau_tensor(x, as_tensor, -1, 11),
                           torch.ops.fused_gumbel.sample(x, value, -1, 11)), value
    for bad in (torch.ones(2), torch.tensor(1), torch.tensor(0.5, device="meta")):
        with pytest.raises(ValueError, match="temperature as a tensor must be one floating-point element"):
            torch.ops.fused_gumbel.sample_tau_tensor(x, bad, -1, 11)
    with pytest.raises(ValueError, match="temperature must be a positive finite"):
        torch.ops.fused_gumbel.sample_tau_tensor(x, torch.tensor(-1.0), -1, 11)


def test_compiles_without_graph_break():
    x = torch.randn(16, 100)

    @torch.compile(fullgraph=True)
    def draw(logits):
        return fg.sample(logits, 0.7, seed=21)

    assert torch.equal(draw(x), fg.sample_reference(x, 0.7, seed=21))


COMPILED_BACKENDS = [backend_param(b) for b in ("cpu", "cuda", "triton", "reference")]


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_a_new_temperature_reuses_the_compiled_graph(backend):
    """The temperature is a run-time value under torch.compile, as
    gumbel_softmax's tau: a float one (symbolic after its first change) and a
    tensor one reach the kernels as a tensor, so temperatures on both sides of
    1 (the two score weightings) share one graph. With one graph per
    temperature, fullgraph=True fails at the recompile limit after 8; and a
    tensor temperature failed while tracing on the fused backends."""
    device = device_of(backend)
    x = torch.randn(6, 40, device=device)
    for as_tensor in (False, True):
        torch._dynamo.reset()
        counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
        compiled = torch.compile(lambda x, t: fg.sample(x, t, seed=3, backend=backend), backend=counter,
                                 fullgraph=True)
        for step in range(12):
            t = 0.3 * 1.4 ** step
            t = torch.tensor(t, device=device) if as_tensor else t
            assert torch.equal(compiled(x, t), fg.sample(x, t, seed=3, backend=backend)), (as_tensor, step)
        assert counter.frame_count <= 2, (as_tensor, counter.frame_count)
        with pytest.raises(ValueError, match="temperature must be a positive finite"):
            compiled(x, torch.tensor(-1.0, device=device) if as_tensor else -1.0)


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_a_bad_temperature_is_refused_under_torch_compile(backend):
    assert_bad_tau_refused_under_compile(lambda x, t: fg.sample(x, t, seed=1, backend=backend),
                                         device_of(backend), "temperature")


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        fg.sample(torch.randn(2, 3), backend="tpu")
