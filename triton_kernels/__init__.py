"""The Triton backend of fused_gumbel (installed as fused_gumbel.triton_kernels).

Importing it registers torch.ops.fused_gumbel.st_softmax_triton,
st_softmax_triton_backward, sample_triton, st_softmax_shard_triton,
gumbel_topk_triton and gumbel_topk_triton_backward when triton is importable,
and the *_tau_tensor siblings of the st_softmax and gumbel_topk ones (tau as a
tensor, for torch.compile).
The public API calls
``st_softmax_triton(logits, tau, hard, dim, seed)`` after checking
``is_available()``.
"""

from __future__ import annotations

try:
    import triton  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    _TRITON_ERROR: ImportError | None = exc
else:
    _TRITON_ERROR = None

if _TRITON_ERROR is None:
    from .noise import fill_gumbel_noise
    from .op import interpreting, is_available, st_softmax_triton
    from .sample import sample_triton
    from .shard import st_softmax_shard_triton
    from .topk_op import gumbel_topk_triton
else:  # pragma: no cover - depends on the install

    def interpreting() -> bool:
        return False

    def is_available() -> tuple[bool, str]:
        return False, f"triton is not importable ({_TRITON_ERROR}); pip install triton"

    def st_softmax_triton(*args, **kwargs):
        raise RuntimeError(f"fused_gumbel: backend 'triton' is not available: {is_available()[1]}")

    def fill_gumbel_noise(*args, **kwargs):
        raise RuntimeError(f"fused_gumbel: backend 'triton' is not available: {is_available()[1]}")

    def sample_triton(*args, **kwargs):
        raise RuntimeError(f"fused_gumbel: backend 'triton' is not available: {is_available()[1]}")

    def st_softmax_shard_triton(*args, **kwargs):
        raise RuntimeError(f"fused_gumbel: backend 'triton' is not available: {is_available()[1]}")

    def gumbel_topk_triton(*args, **kwargs):
        raise RuntimeError(f"fused_gumbel: backend 'triton' is not available: {is_available()[1]}")

__all__ = ["fill_gumbel_noise", "gumbel_topk_triton", "interpreting", "is_available", "sample_triton",
           "st_softmax_shard_triton", "st_softmax_triton"]
