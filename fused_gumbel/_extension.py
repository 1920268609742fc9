"""Loads the compiled operators, with a message that names the fix when the
build is missing."""

from __future__ import annotations

import torch

_IMPORT_ERROR: Exception | None = None

try:
    from . import _C  # noqa: F401  (registers torch.ops.fused_gumbel.*)
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    _IMPORT_ERROR = exc


def require_extension() -> None:
    """Raises a RuntimeError naming the fix if fused_gumbel._C is not built."""
    if _IMPORT_ERROR is not None:
        raise RuntimeError(
            "fused_gumbel: the compiled extension fused_gumbel._C could not be "
            f"imported ({_IMPORT_ERROR}). Build it with "
            "`pip install --no-build-isolation -e .` (or `make build`) from the "
            "repository root; a C++17 compiler is required, nvcc optional."
        )


def extension_loaded() -> bool:
    return _IMPORT_ERROR is None


# Which (operator, dispatch key) kernels the library registered, read once at
# import: a constant torch.compile can trace through (the dispatcher query
# itself is a graph break).
_KERNELS = frozenset(
    (op, key)
    for op in ("st_softmax", "st_softmax_backward", "fill_gumbel_noise", "philox_bits",
               "sample", "st_softmax_shard", "gumbel_topk", "gumbel_topk_backward")
    for key in ("CPU", "CUDA")
    if _IMPORT_ERROR is None
    and torch._C._dispatch_has_kernel(f"fused_gumbel::{op}")
    and torch._C._dispatch_has_kernel_for_dispatch_key(f"fused_gumbel::{op}", key)
)


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether the compiled library registered `op` for `dispatch_key`."""
    return (op, dispatch_key) in _KERNELS
