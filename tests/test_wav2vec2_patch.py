"""Hugging Face's Wav2Vec2ForPreTraining under fused_gumbel.patch() (examples/wav2vec2_patch.py):
it trains, and given the same noise its quantizer picks the same codevectors as
the unpatched model, with the same losses and gradients."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

import fused_gumbel as fg  # noqa: E402
from fused_gumbel.patching import torch_gumbel_softmax  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "wav2vec2_patch.py"
SMALL = dict(batch_size=2, samples=800)


def _load():
    # examples/ is not a package, so the script is loaded from its path.
    spec = importlib.util.spec_from_file_location("examples_wav2vec2_patch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load()


def test_same_noise_gives_the_same_codevectors(one_cpu_thread):
    exponential_ = torch.Tensor.exponential_
    cmp = demo.compare_with_original(seed=99, **SMALL)
    original, patched = cmp["runs"]["original"], cmp["runs"]["patched"]
    assert F.gumbel_softmax is torch_gumbel_softmax and torch.Tensor.exponential_ is exponential_
    # exactly one noise draw on each side, of the quantizer's [tokens * groups, codes]
    config = demo.tiny_config()
    frames = original["codevectors"].shape[0] * original["codevectors"].shape[1]
    assert original["noise_draws"] == [(frames * config.num_codevector_groups, config.num_codevectors_per_group)]
    assert patched["noise_draws"] == 1
    codes = [demo.code_indices(run["codevectors"], cmp["codebook"], cmp["groups"]) for run in (original, patched)]
    assert torch.equal(codes[0], codes[1])
    assert len(codes[0].unique()) > 1  # the noise is not drowned by the logits
    torch.testing.assert_close(patched["codevectors"], original["codevectors"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(patched["perplexity"], original["perplexity"])
    torch.testing.assert_close(patched["diversity"], original["diversity"])
    torch.testing.assert_close(patched["contrastive"], original["contrastive"], atol=1e-3, rtol=1e-5)
    # the backward through the patched quantizer: the same straight-through gradients
    assert patched["grads"].keys() == original["grads"].keys()
    assert "quantizer.weight_proj.weight" in patched["grads"]
    for name, grad in original["grads"].items():
        torch.testing.assert_close(patched["grads"][name], grad, atol=1e-4, rtol=1e-3, msg=name)


def test_noise_feed_is_what_the_patch_adds():
    # original_fed_noise makes F.gumbel_softmax's -log(exponential_()) equal fg.gumbel_noise
    logits = torch.randn(64, 16)
    with demo.original_fed_noise(5):
        y = torch_gumbel_softmax(logits, tau=0.5, hard=True)
    assert torch.equal(y.argmax(-1), fg.gumbel_softmax(logits, 0.5, True, seed=5).argmax(-1))


def test_trains_under_the_patch(one_cpu_thread):
    result = demo.train(steps=4, log_every=0, **SMALL)
    losses = result["losses"]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    model = result["model"]
    assert "quantizer.weight_proj.weight" in result["grads_seen"]
    moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), result["before"][n])]
    assert "quantizer.weight_proj.weight" in moved and "quantizer.codevectors" in moved
    assert F.gumbel_softmax is torch_gumbel_softmax  # the patch is gone afterwards


def test_patched_quantizer_compiles_whole(one_cpu_thread):
    torch._dynamo.reset()
    quantizer = demo.tiny_model(0).quantizer
    features = torch.randn(2, 9, quantizer.weight_proj.in_features)
    with fg.patch():
        compiled = torch.compile(quantizer, fullgraph=True, backend="aot_eager")  # no C++ codegen: fast
        torch.manual_seed(3)
        codevectors, perplexity = compiled(features)
        codevectors.sum().backward()
        torch.manual_seed(3)
        expected, expected_perplexity = quantizer(features)
    torch.testing.assert_close(codevectors, expected)
    torch.testing.assert_close(perplexity, expected_perplexity)
    assert quantizer.weight_proj.weight.grad.abs().sum() > 0
