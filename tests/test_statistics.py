"""The method's statistical claims, checked on every fused backend: Gumbel-max
samples the softmax exactly, and the soft sample concentrates as tau falls."""

import pytest
import torch
from scipy import stats

import fused_gumbel as fg

from utils import FUSED_BACKENDS, backend_param, device_of

BACKENDS = FUSED_BACKENDS + [backend_param("reference")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_argmax_frequencies_follow_softmax(backend, dtype):
    """Gumbel-max: argmax(logits + g) ~ Categorical(softmax(logits)). 40,000
    rows of the same 10 logits, one chi-square test."""
    device = device_of(backend)
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, 1.5, 0.25, -3.0])
    logits = logits.to(dtype).float()  # the distribution of the rounded logits
    x = logits.to(dtype).expand(40_000, 10).to(device)
    _, index = fg.gumbel_softmax(x, 1.0, True, seed=2718, return_index=True, backend=backend)
    counts = torch.bincount(index.cpu(), minlength=10).double()
    expected = torch.softmax(logits.double(), 0) * counts.sum()
    p = stats.chisquare(counts.numpy(), expected.numpy()).pvalue
    assert p > 1e-4, (p, counts, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_frequencies_ignore_tau(backend):
    """The argmax does not depend on tau: same seed, same index."""
    x = torch.randn(500, 30, device=device_of(backend))
    _, i1 = fg.gumbel_softmax(x, 0.1, seed=3, return_index=True, backend=backend)
    _, i2 = fg.gumbel_softmax(x, 10.0, seed=3, return_index=True, backend=backend)
    assert torch.equal(i1, i2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_low_tau_approaches_one_hot(backend):
    x = torch.randn(2000, 8, device=device_of(backend))
    hot = [fg.gumbel_softmax(x, tau, seed=5, backend=backend).max(-1).values.mean().item() for tau in (5.0, 1.0, 0.1)]
    assert hot[0] < hot[1] < hot[2] and hot[2] > 0.9
