"""What every test file shares: the inputs, the backends and the tolerances."""

from __future__ import annotations

import dataclasses
import operator
import os
import re
import sys

import pytest
import torch
import torch._dynamo.testing
from torch.utils._python_dispatch import TorchDispatchMode

import fused_gumbel as fg
from fused_gumbel._autograd import _DOUBLE_BACKWARD
from fused_gumbel.ops import backend_status

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")


def compile_env() -> dict[str, str]:
    """The environment of a subprocess that compiles the Triton kernels for
    sm_90 (scripts/triton_sm90.py): this process's imports, without
    TRITON_INTERPRET (set before triton is imported, it would make the kernels
    interpreted functions)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([SCRIPTS] + [p for p in sys.path if p])
    return env


def device_of(backend: str) -> str:
    return "cuda" if backend in ("cuda", "triton") and torch.cuda.is_available() else "cpu"


# FUSED_GUMBEL_TEST_BACKENDS (a comma list) limits the backends the
# parametrized suites run: scripts/gpu_check.sh leaves out the CPU backend,
# whose cases (its torch.compile ones take minutes) CI runs.
SELECTED_BACKENDS = os.environ.get("FUSED_GUMBEL_TEST_BACKENDS")


def backend_param(backend: str):
    """A pytest param for `backend`, skipped with the reason when it cannot
    run or was not selected."""
    ok, why = backend_status(backend, device_of(backend))
    if ok and SELECTED_BACKENDS and backend not in SELECTED_BACKENDS.split(","):
        ok, why = False, "not in FUSED_GUMBEL_TEST_BACKENDS"
    return pytest.param(backend, marks=pytest.mark.skipif(not ok, reason=f"backend {backend!r}: {why}"), id=backend)


# The fused backends the parity suite runs. Triton runs here only on a GPU:
# under the CPU interpreter its own suite (test_triton.py) uses small shapes.
FUSED_BACKENDS = [backend_param("cpu"), backend_param("cuda")]
if torch.cuda.is_available():
    FUSED_BACKENDS.append(backend_param("triton"))


@dataclasses.dataclass
class Case:
    name: str
    shape: tuple[int, ...]
    dim: int
    contiguous: bool = True

    def make(self, dtype: torch.dtype, device: str, *, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
        """Fresh random logits (never zeros); a non-contiguous case is a slice
        of a wider tensor."""
        gen = torch.Generator().manual_seed(seed)
        if self.contiguous:
            x = torch.randn(self.shape, generator=gen, dtype=torch.float64) * scale
        else:
            wide = (*self.shape[:-1], self.shape[-1] * 2 + 1)
            x = (torch.randn(wide, generator=gen, dtype=torch.float64) * scale)[..., 1::2]
            assert not x.is_contiguous()
        return x.to(device=device, dtype=dtype)


def sample_inputs() -> list[Case]:
    """The shapes and dims every parity test runs over."""
    return [
        Case("row_of_1", (5, 1), -1),
        Case("router_8", (37, 8), -1),
        Case("odd_cols", (9, 7), -1),
        Case("vocab_1000", (16, 1000), -1),
        Case("dim0", (300, 6), 0),
        Case("dim1_of_3d", (3, 50, 4), 1),
        Case("noncontig", (11, 129), -1, contiguous=False),
        Case("noncontig_dim0", (40, 5), 0, contiguous=False),
        Case("scalar_row", (), -1),
        Case("long_row", (2, 70000), -1),
    ]


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(atol, rtol) for outputs in `dtype`. Triton's interpreter (3.8)
    truncates float32 to bfloat16 where the compiled kernels round to nearest
    even (fp_downcast_rounding="rtne" alike): under TRITON_INTERPRET=1 a
    bfloat16 output may sit one ulp toward zero, within these bounds."""
    return {
        torch.float64: (1e-12, 1e-10),
        torch.float32: (2e-6, 2e-5),
        torch.float16: (2e-3, 2e-3),
        torch.bfloat16: (1.6e-2, 1.6e-2),
    }[dtype]


def reference(x: torch.Tensor, tau: float, hard: bool, dim: int, seed: int):
    """The oracle: the index from the reference in the backend's own precision
    (s = x + g rounds the same way, so ties resolve alike); the values, and
    through autograd the gradients, from the reference in float64, cast back.
    (float32 torch.softmax over 2**20 columns is itself off by ~1e-4.)"""
    y_same, index = fg.gumbel_softmax(x, tau, hard, dim=dim, seed=seed, return_index=True, backend="reference")
    y = fg.gumbel_softmax(x.double(), tau, hard, dim=dim, seed=seed, backend="reference").to(x.dtype)
    if hard:
        # the one-hot must sit where the same-precision argmax is; the
        # straight-through gradient still comes from the float64 soft sample.
        y = y_same.detach() + (y - y.detach())
    return y, index


def assert_compiled_matches_eager(sample, device: str,
                                  grad_tolerance: tuple[float, float] | None = None) -> None:
    """torch.compile(fullgraph=True) of a small model around `sample` (logits
    -> y) gives the eager loss and gradient (within grad_tolerance = (atol,
    rtol) if given, else assert_close's float32 default)."""
    torch._dynamo.reset()

    def model(x, w):
        y = sample(x @ w)
        return (y * torch.arange(y.shape[-1], device=y.device)).sum()

    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(8, 16, device=device)
    w = torch.randn(16, 12, device=device, requires_grad=True)
    loss = compiled(x, w)
    (grad,) = torch.autograd.grad(loss, w)
    loss_eager = model(x, w)
    (grad_eager,) = torch.autograd.grad(loss_eager, w)
    torch.testing.assert_close(loss, loss_eager)
    atol, rtol = grad_tolerance if grad_tolerance is not None else (None, None)
    torch.testing.assert_close(grad, grad_eager, atol=atol, rtol=rtol)


def assert_annealing_reuses_the_graph(sample, device: str, shape: tuple[int, ...], steps: int = 12) -> None:
    """torch.compile(fullgraph=True) of `sample` (logits, tau -> y) over an
    annealing schedule: every step's forward and gradient equal eager's, and
    at most two graphs are compiled (dynamo makes the float tau symbolic at its
    first change). One graph per temperature would hit the recompile limit, an
    error with fullgraph=True, after 8 steps."""
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(sample, backend=counter, fullgraph=True)
    x = torch.randn(shape, device=device, requires_grad=True)
    g = torch.randn(shape, device=device)
    for step in range(steps):
        tau = 0.9 ** step
        y, eager = compiled(x, tau), sample(x, tau)
        torch.testing.assert_close(y, eager, rtol=0, atol=0)
        torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(eager, x, g)[0])
    assert counter.frame_count <= 2, counter.frame_count
    # The seed reaches the op as the graph input it is: Inductor's C++ wrapper
    # cannot spell normalize_seed's 64-bit mask as an int64_t constant.
    masks = [n for g in counter.graphs for n in g.graph.nodes
             if n.target is operator.and_ and isinstance(n.meta.get("example_value"), torch.SymInt)]
    assert not masks, masks


def assert_new_seeds_reuse_the_graph(sample, device: str, shape: tuple[int, ...], requires_grad: bool,
                                     steps: int = 10) -> None:
    """torch.compile(fullgraph=True) of `sample` (logits, seed -> y) over a
    seed per step (seed=step, small and 64-bit values): every step's output
    (and gradient, where y has one) equals eager's, and at most two graphs are
    compiled (dynamo makes the int symbolic at its first change). One graph
    per seed would hit the recompile limit, an error with fullgraph=True, after
    8 steps. (Inference graphs and training graphs see the seed differently:
    test both. aot_eager: a seed's specialization happens in dynamo and AOT
    autograd, before Inductor, which would add minutes of compiling on a
    GPU machine.)"""
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(sample, backend=counter, fullgraph=True)
    x = torch.randn(shape, device=device, requires_grad=requires_grad)
    for step in range(steps):
        seed = (step * (2**40 + 3), step, -step)[step % 3]
        y, eager = compiled(x, seed), sample(x, seed)
        torch.testing.assert_close(y, eager, rtol=0, atol=0)
        if y.requires_grad:
            g = torch.randn_like(y)
            torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(eager, x, g)[0])
    assert counter.frame_count <= 2, counter.frame_count
    # The seed reaches the op as the graph input it is: Inductor's C++ wrapper
    # cannot spell normalize_seed's 64-bit mask as an int64_t constant.
    masks = [n for g in counter.graphs for n in g.graph.nodes
             if n.target is operator.and_ and isinstance(n.meta.get("example_value"), torch.SymInt)]
    assert not masks, masks


def assert_double_backward_refused(sample, device: str) -> None:
    """`sample` (logits -> y) on a fused backend: first-order gradients work, and
    a second derivative raises NotImplementedError instead of coming out wrong
    (autograd treats a backward operator it cannot differentiate as a
    constant), whether the backward reads the sample, the logits or a kept soft
    sample."""
    x = torch.randn(3, 7, dtype=torch.float64, device=device, requires_grad=True)
    y = sample(x)
    w = torch.randn_like(y)
    (g,) = torch.autograd.grad((y * w).sum(), x)
    assert torch.isfinite(g).all()
    # The message of fused_gumbel._autograd, which csrc/autograd.cpp repeats.
    with pytest.raises(NotImplementedError, match=re.escape(_DOUBLE_BACKWARD)):
        torch.autograd.grad((sample(x) * w).sum(), x, create_graph=True)


def assert_bad_tau_refused_under_compile(sample, device: str, tau_name: str = "tau") -> None:
    """torch.compile of `sample` (logits, tau -> y), fullgraph or not: a bad
    tau raises ValueError naming it (`tau_name`) from the compiled graph
    (every backend checks it at run time), at the first call (tau a constant
    of the graph) and after (tau symbolic), and a good tau afterwards still
    runs."""
    x = torch.randn(4, 6, device=device)
    for fullgraph in (False, True):
        torch._dynamo.reset()
        compiled = torch.compile(sample, fullgraph=fullgraph)
        with pytest.raises(ValueError, match=f"{tau_name} must be a positive finite"):
            compiled(x, -1.0)
        compiled(x, 1.0), compiled(x, 0.5)
        for tau in (float("inf"), float("nan"), 0.0, -2.0):
            with pytest.raises(ValueError, match=f"{tau_name} must be a positive finite"):
                compiled(x, tau)
        torch.testing.assert_close(compiled(x, 0.25), sample(x, 0.25))


class RecordOps(TorchDispatchMode):
    """The names of the operators dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))
