"""fused_gumbel: Gumbel-Softmax and straight-through Gumbel-Softmax as one fused
kernel (CPU, CUDA, Triton), registered as torch.ops.fused_gumbel.st_softmax.

    import fused_gumbel as fg
    y = fg.gumbel_softmax(logits, tau=1.0, hard=True)   # drop-in for F.gumbel_softmax
    y = fg.gumbel_topk(logits, k=4, tau=1.0)            # k-hot, without replacement
"""

from . import distributed
from . import ops as _ops  # registers the fake kernels
from .noise import gumbel_noise
from .nn import GumbelRouter, GumbelSoftmax, RouterOutput, TemperatureSchedule
from .ops import available_backends, gumbel_softmax
from .patching import GumbelSoftmaxPatch, patch, unpatch
from .reference import gumbel_softmax_reference, gumbel_topk_reference
from .sample import sample, sample_reference
from .topk import gumbel_topk

__all__ = [
    "GumbelRouter",
    "GumbelSoftmax",
    "GumbelSoftmaxPatch",
    "RouterOutput",
    "TemperatureSchedule",
    "available_backends",
    "distributed",
    "gumbel_noise",
    "gumbel_softmax",
    "gumbel_softmax_reference",
    "gumbel_topk",
    "gumbel_topk_reference",
    "patch",
    "sample",
    "sample_reference",
    "unpatch",
]
__version__ = "0.1.0"
