"""fused_gumbel.patch(): F.gumbel_softmax replaced, restored, nested, compiled."""

import inspect
import threading
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fused_gumbel as fg
from fused_gumbel.ops import BACKENDS
from fused_gumbel.patching import torch_gumbel_softmax


@pytest.fixture(autouse=True)
def _no_patch_left():
    assert F.gumbel_softmax is torch_gumbel_softmax
    yield
    leaked = F.gumbel_softmax is not torch_gumbel_softmax
    fg.unpatch()
    assert not leaked, "a test left F.gumbel_softmax patched"


def _parameters(function):
    return [(p.name, p.default, p.kind) for p in inspect.signature(function).parameters.values()]


def test_context_manager_replaces_and_restores():
    with fg.patch() as handle:
        assert F.gumbel_softmax is handle.function and handle.active
        assert _parameters(F.gumbel_softmax) == _parameters(torch_gumbel_softmax)
    assert F.gumbel_softmax is torch_gumbel_softmax and not handle.active


def test_restored_on_exception():
    with pytest.raises(KeyError):
        with fg.patch():
            raise KeyError("boom")
    assert F.gumbel_softmax is torch_gumbel_softmax


def test_plain_call_until_undo_and_unpatch():
    handle = fg.patch()
    assert F.gumbel_softmax is handle.function
    handle.undo()
    handle.undo()  # a no-op the second time
    assert F.gumbel_softmax is torch_gumbel_softmax
    fg.patch(), fg.patch()
    fg.unpatch()
    assert F.gumbel_softmax is torch_gumbel_softmax


def test_as_a_decorator_patched_only_while_the_function_runs():
    seen = []

    @fg.patch(backend="reference", seed=7)
    def step(x, depth=0):
        seen.append(F.gumbel_softmax is not torch_gumbel_softmax)
        if depth == 0:
            step(x, depth + 1)  # a recursive call leaves the patch to the outer one
            seen.append(F.gumbel_softmax is not torch_gumbel_softmax)
        return F.gumbel_softmax(x)

    assert F.gumbel_softmax is torch_gumbel_softmax
    x = torch.randn(3, 5)
    y = step(x)
    assert seen == [True, True, True] and F.gumbel_softmax is torch_gumbel_softmax
    # the recursive call drew seed 7, this one seed 8
    torch.testing.assert_close(y, fg.gumbel_softmax(x, seed=8, backend="reference"))
    with pytest.raises(ZeroDivisionError):
        fg.patch()(lambda: 1 / 0)()
    assert F.gumbel_softmax is torch_gumbel_softmax

    def generator():
        yield F.gumbel_softmax

    async def coroutine():
        return F.gumbel_softmax

    for fn in (generator, coroutine):  # their bodies run after the call returns
        with pytest.raises(TypeError, match="plain function"):
            fg.patch()(fn)
        assert F.gumbel_softmax is torch_gumbel_softmax


def test_a_handle_stays_until_its_last_block_or_call_exits():
    """`with` blocks and decorated calls of one handle nest, and may run in
    several threads: the patch is undone when the last one exits."""
    handle = fg.patch(backend="reference")
    with handle:
        with handle:
            pass
        assert F.gumbel_softmax is handle.function
    assert F.gumbel_softmax is torch_gumbel_softmax
    inside, release = threading.Barrier(2), threading.Event()
    seen = []

    @handle
    def slow():
        inside.wait()
        release.wait()
        seen.append(F.gumbel_softmax is handle.function)

    @handle
    def fast():
        inside.wait()
        seen.append(F.gumbel_softmax is handle.function)

    first = threading.Thread(target=slow)
    first.start()
    fast()  # returns while slow() still runs: the patch stays for it
    release.set()
    first.join()
    assert seen == [True, True] and F.gumbel_softmax is torch_gumbel_softmax


def test_threads_sharing_a_seeded_patch_never_draw_the_same_seed(monkeypatch):
    """nn.DataParallel's replicas call F.gumbel_softmax from several threads:
    each call of a seeded patch takes a seed of its own. A thread switch is
    forced where the seed is normalized (between reading and advancing the
    count, were it not locked)."""
    normalize_seed = fg.patching.normalize_seed

    def switching(seed):
        time.sleep(0)
        return normalize_seed(seed)

    monkeypatch.setattr(fg.patching, "normalize_seed", switching)
    x, threads, calls = torch.randn(2, 64), 4, 50
    samples = []
    with fg.patch(seed=11, backend="cpu") as handle:
        def replica():
            samples.extend(F.gumbel_softmax(x, 0.5) for _ in range(calls))

        workers = [threading.Thread(target=replica) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    assert handle.calls == threads * calls
    expected = {fg.gumbel_softmax(x, 0.5, seed=11 + n, backend="cpu").numpy().tobytes()
                for n in range(threads * calls)}
    assert {y.numpy().tobytes() for y in samples} == expected


def test_a_bool_tau_runs_as_pytorch_takes_it():
    """A model calling F.gumbel_softmax(x, True) (tau = 1 for PyTorch) runs
    unchanged under the patch, with a warning."""
    x = torch.randn(3, 5)
    with fg.patch(seed=4):
        with pytest.warns(UserWarning, match="hard is the third argument"):
            y = F.gumbel_softmax(x, True)
    torch.testing.assert_close(y, fg.gumbel_softmax(x, 1.0, seed=4))


def test_nesting_and_out_of_order_undo():
    outer = fg.patch(backend="reference")
    with fg.patch(seed=3) as inner:
        assert F.gumbel_softmax is inner.function
        outer.undo()  # the inner patch stays in place
        assert F.gumbel_softmax is inner.function
    assert F.gumbel_softmax is torch_gumbel_softmax
    with outer:  # a handle can go back in
        assert F.gumbel_softmax is outer.function
    assert F.gumbel_softmax is torch_gumbel_softmax


def test_fallback_device_after_out_of_order_reentry_does_not_recurse():
    """On a device with no fused kernel (meta here, as mps or xpu) a patch
    calls the function the patches replaced: after an out-of-order undo and
    re-entry, the one it replaced last was another patch, which called back."""
    x = torch.randn(4, 8, device="meta")
    outer = fg.patch()
    with fg.patch(seed=1):
        outer.undo()
        with outer:
            assert F.gumbel_softmax(x, hard=True).shape == x.shape


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_unseeded_patch_under_activation_checkpointing(hard):
    """The recompute of torch.utils.checkpoint draws the noise of the forward
    (the checkpoint restores PyTorch's random state), so the gradient is the
    returned sample's (the README keeps seeded patches away from it)."""
    from torch.utils.checkpoint import checkpoint

    x = torch.randn(4, 8)
    w0 = torch.randn(8, 8)
    upstream = torch.randn(4, 8)
    results = []
    for use_checkpoint in (False, True):
        w = w0.clone().requires_grad_()
        block = lambda inp: F.gumbel_softmax(inp @ w, tau=0.5, hard=hard)
        torch.manual_seed(3)
        with fg.patch():
            y = checkpoint(block, x, use_reentrant=False) if use_checkpoint else block(x)
            (y * upstream).sum().backward()
        results.append((y.detach(), w.grad))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_patched_calls_are_fused_with_the_same_arguments():
    x = torch.randn(6, 5, 4)
    with fg.patch(seed=7):
        y = F.gumbel_softmax(x, 0.5, True, 1e-10, 1)
        y2 = nn.functional.gumbel_softmax(x, tau=0.5, hard=True, dim=1)
    assert torch.equal(y, fg.gumbel_softmax(x, 0.5, True, dim=1, seed=7))
    assert torch.equal(y2, fg.gumbel_softmax(x, 0.5, True, dim=1, seed=8))  # the seed advances per call
    with fg.patch(seed=7):  # a new patch starts again at its seed
        assert torch.equal(F.gumbel_softmax(x, 0.5, True, dim=1), y)


def test_unseeded_patch_follows_torch_manual_seed():
    x = torch.randn(8, 10)
    with fg.patch():
        torch.manual_seed(0)
        a = F.gumbel_softmax(x)
        b = F.gumbel_softmax(x)
        torch.manual_seed(0)
        assert torch.equal(F.gumbel_softmax(x), a) and not torch.equal(a, b)


def test_fused_gumbel_itself_works_while_patched():
    x = torch.randn(4, 9, requires_grad=True)
    with fg.patch(backend="reference"):
        # the reference is plain PyTorch: it must not call the patched function
        y = F.gumbel_softmax(x, hard=True)
        y.sum().backward()
        ref = fg.gumbel_softmax_reference(x.detach(), seed=1)
    assert ((y == 0) | (y == 1)).all() and x.grad is not None and ref.shape == x.shape


def test_bad_arguments():
    with pytest.raises(ValueError, match="backend"):
        fg.patch(backend="gpu")
    for backend in BACKENDS[1:]:  # warned about at once (mps or xpu tensors would still run)
        if backend not in fg.available_backends():
            with pytest.warns(UserWarning, match=f"backend '{backend}' is not available here"):
                fg.patch(backend=backend).undo()
    with pytest.raises(TypeError, match="seed"):
        fg.patch(seed="1")
    with fg.patch():
        with pytest.raises(ValueError, match="tau"):
            F.gumbel_softmax(torch.randn(3, 4), tau=0.0)
    assert F.gumbel_softmax is torch_gumbel_softmax


class _Sampler(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 16)

    def forward(self, x):
        return nn.functional.gumbel_softmax(self.proj(x), tau=0.7, hard=True)


def test_compiled_patched_model():
    torch._dynamo.reset()
    model = _Sampler()
    x = torch.randn(32, 8)
    with fg.patch():
        compiled = torch.compile(model, fullgraph=True)
        torch.manual_seed(1)
        y = compiled(x)
        (y * torch.randn(16)).sum().backward()
        torch.manual_seed(1)
        expected = fg.gumbel_softmax(model.proj(x), 0.7, True)
    torch.testing.assert_close(y, expected)
    assert ((y == 0) | (y == 1)).all() and y.sum(-1).eq(1).all()
    assert model.proj.weight.grad is not None and model.proj.weight.grad.abs().sum() > 0


def test_a_seeded_patch_runs_under_fullgraph_compile():
    """The seed count's lock is left out of the traced code (dynamo cannot
    trace one); each compiled call still takes the next seed."""
    torch._dynamo.reset()
    x = torch.randn(4, 8)
    with fg.patch(seed=3, backend="cpu") as handle:
        compiled = torch.compile(lambda t: F.gumbel_softmax(t, 0.5), fullgraph=True)
        first, second = compiled(x), compiled(x)
    assert handle.calls == 2
    torch.testing.assert_close(first, fg.gumbel_softmax(x, 0.5, seed=3, backend="cpu"))
    torch.testing.assert_close(second, fg.gumbel_softmax(x, 0.5, seed=4, backend="cpu"))
