"""fused_gumbel.patch(): makes torch.nn.functional.gumbel_softmax run the fused
kernel, so that existing models pick it up without a code change.

    with fg.patch():                 # restored on exit, exceptions included
        loss = model(batch)          # its F.gumbel_softmax(...) calls are fused

    @fg.patch()                      # patched while each call of train_step runs
    def train_step(batch): ...

    handle = fg.patch(backend="cpu") # or as a plain call: active until undone
    ...
    handle.undo()                    # or fg.unpatch(), which undoes every patch

Only calls that look the function up on the module when they run
(``F.gumbel_softmax(...)``, ``nn.functional.gumbel_softmax(...)``) see the
patch; a name bound earlier (``from torch.nn.functional import gumbel_softmax``)
keeps PyTorch's function, as with any monkey-patch.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import warnings
from typing import Callable, ParamSpec, TypeVar

import torch
import torch.nn.functional as F

from ._checks import normalize_seed
from .ops import BACKENDS, backend_status, gumbel_softmax

# PyTorch's own function, as it was when fused_gumbel was imported: what the
# benchmarks compare against, whatever is patched when they run.
torch_gumbel_softmax = F.gumbel_softmax

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.RLock()
_active: list[GumbelSoftmaxPatch] = []
_restore_to: list = [None]  # what F.gumbel_softmax was before the first active patch


def _install_top() -> None:
    """F.gumbel_softmax becomes the newest active patch's function, or, with
    none active, what the first of them replaced. (Undoing out of order, e.g.
    an outer handle while an inner `with` block runs, keeps the inner one.)"""
    F.gumbel_softmax = _active[-1].function if _active else _restore_to[0]


class GumbelSoftmaxPatch:
    """One installed replacement of ``torch.nn.functional.gumbel_softmax``.

    Returned by :func:`patch`; usable as a context manager (undone on exit),
    as a function decorator (in place while the function runs), or kept and
    undone with :meth:`undo`. Patches nest: undoing one restores what
    the remaining ones, or the original, say.

    Attributes:
        function: the replacement, with F.gumbel_softmax's signature
            ``(logits, tau=1, hard=False, eps=1e-10, dim=-1)``.
        backend: the fused_gumbel backend it calls.
        seed: None, or the seed of its first call (call n uses seed + n).
        calls: how many calls it has served (counted only with a seed).
    """

    def __init__(self, backend: str = "auto", seed: int | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"fused_gumbel.patch: unknown backend {backend!r}; choose from {BACKENDS}")
        ok, why = (True, "") if backend == "auto" else backend_status(backend)
        if not ok:
            # A warning, not an error: tensors on devices without a fused kernel
            # (mps, xpu) still go to the function the patch replaced.
            warnings.warn(f"fused_gumbel.patch: backend {backend!r} is not available here ({why}); "
                          "F.gumbel_softmax of CPU and CUDA tensors will raise", stacklevel=3)
        self.backend, self.seed, self.calls = backend, normalize_seed(seed), 0
        self._entered = 0  # `with` blocks and decorated calls running, in every thread
        self.function = self._make_function()

    def _make_function(self):
        backend, handle = self.backend, self

        def gumbel_softmax_fused(logits: torch.Tensor, tau: float = 1, hard: bool = False,
                                 eps: float = 1e-10, dim: int = -1) -> torch.Tensor:
            # Devices with neither a fused kernel nor the noise kernel (mps,
            # xpu, ...) keep the function the patches replaced: not the one
            # this patch replaced, which may be another patch, and after an
            # out-of-order undo and re-entry, one that calls back this one.
            if isinstance(logits, torch.Tensor) and logits.device.type not in ("cpu", "cuda"):
                return (_restore_to[0] or torch_gumbel_softmax)(logits, tau, hard, eps, dim)
            return gumbel_softmax(logits, tau, hard, eps, dim, seed=handle._next_seed(), backend=backend)

        gumbel_softmax_fused.__name__ = gumbel_softmax_fused.__qualname__ = "gumbel_softmax"
        gumbel_softmax_fused.__doc__ = (
            f"fused_gumbel.gumbel_softmax(..., backend={backend!r}) installed as "
            "torch.nn.functional.gumbel_softmax by fused_gumbel.patch().")
        return gumbel_softmax_fused

    def _next_seed(self) -> int | None:
        # A fixed seed would add the same noise at every call (and every
        # layer); advancing it keeps the calls independent yet reproducible.
        # With seed=None nothing is counted, so a compiled model keeps no
        # Python state to guard on.
        if self.seed is None:
            return None
        # Counted under the lock, so that threads sharing the patch
        # (nn.DataParallel's replicas) never draw the same seed; dynamo cannot
        # trace a lock, and a compiled call's seed is a constant of its graph.
        with contextlib.nullcontext() if torch.compiler.is_compiling() else _lock:
            n = self.calls
            self.calls += 1
        return normalize_seed(self.seed + n)

    @property
    def active(self) -> bool:
        return self in _active

    def install(self) -> GumbelSoftmaxPatch:
        """Puts this patch (back) in place; patch() already calls it."""
        with _lock:
            if self not in _active:
                if not _active:
                    _restore_to[0] = F.gumbel_softmax
                _active.append(self)
                _install_top()
        return self

    def undo(self) -> None:
        """Removes this patch; a no-op when it is not active."""
        with _lock:
            if self in _active:
                _active.remove(self)
                _install_top()

    def __enter__(self) -> GumbelSoftmaxPatch:
        with _lock:
            self._entered += 1
            return self.install()

    def __exit__(self, *exc_info) -> None:
        # Undone when the last `with` block or decorated call of this handle
        # exits (they may nest, or run in several threads).
        with _lock:
            self._entered -= 1
            if self._entered == 0:
                self.undo()

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """As a decorator (``@fg.patch()``): the patch is in place while calls
        of `fn` run, not from the decoration on (decorating takes back what
        patch() installed). A generator or coroutine function is refused: its
        body runs after the call has returned."""
        with _lock:
            if self._entered == 0:
                self.undo()
        if inspect.isgeneratorfunction(fn) or inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError("fused_gumbel.patch: as a decorator it takes a plain function (the body of a "
                            f"generator or coroutine runs after the call returns); got {fn!r}: use "
                            "`with fg.patch():` inside it")

        @functools.wraps(fn)
        def patched(*args: P.args, **kwargs: P.kwargs) -> R:
            with self:
                return fn(*args, **kwargs)

        return patched

    def __repr__(self) -> str:
        state = "active" if self.active else "inactive"
        return f"GumbelSoftmaxPatch(backend={self.backend!r}, seed={self.seed}, {state})"


def patch(*, backend: str = "auto", seed: int | None = None) -> GumbelSoftmaxPatch:
    """Replaces ``torch.nn.functional.gumbel_softmax`` with
    :func:`fused_gumbel.gumbel_softmax` (same signature, same results up to the
    noise; see the README's contract).

    The patch is in place as soon as this returns. As a context manager
    (``with fg.patch(): ...``) it is undone when the block exits, also on an
    exception; as a decorator (``@fg.patch()``) it is in place only while the
    decorated function runs; as a plain call it stays until ``handle.undo()``
    or :func:`unpatch`. Patches nest. A backend that cannot run here is
    warned about at once.

    Args:
        backend: the fused_gumbel backend ("auto", "cpu", "cuda", "triton",
            "reference").
        seed: None (default) draws the noise from PyTorch's generator, as
            F.gumbel_softmax does, so ``torch.manual_seed`` reproduces a run.
            An int makes the n-th call (0-based) of this patch use seed ``seed + n``:
            reproducible, bit-identical across backends, and independent from
            call to call. For eager runs: under torch.compile a seed that
            changes every call is a new constant, and retraces the graph.

    Returns:
        The GumbelSoftmaxPatch handle.
    """
    return GumbelSoftmaxPatch(backend, seed).install()


def unpatch() -> None:
    """Undoes every active patch: ``F.gumbel_softmax`` is what it was before
    the first of them."""
    with _lock:
        if _active:
            _active.clear()
            _install_top()
