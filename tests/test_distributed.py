"""Vocabulary-parallel sampling (fused_gumbel.distributed) with 2 and 4 gloo
processes on the CPU: every rank's shard of the sample, the index and the
gradient equal the single-process result for the same seed."""

import os
import tempfile

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.distributed as dist
import torch.multiprocessing as mp

import fused_gumbel as fg
from fused_gumbel.ops import backend_status

# (leading shape, vocabulary, dtype, tau, hard, backend, shards in reverse rank order)
CASES = [
    ((5,), 37, torch.float32, 0.7, False, "cpu", False),
    ((5,), 37, torch.float32, 0.7, True, "cpu", False),
    ((2, 3), 1030, torch.float64, 1.3, True, "cpu", True),
    ((4,), 301, torch.bfloat16, 0.5, False, "cpu", False),
    ((3,), 64, torch.float32, 2.0, True, "reference", True),
    ((2,), 40000, torch.float32, 1.0, False, "cpu", False),
]
# The Triton shard kernel (in the CPU interpreter here: small shapes).
if backend_status("triton", "cpu")[0]:
    CASES.append(((3,), 45, torch.float32, 0.9, True, "triton", False))
    CASES.append(((2,), 30, torch.bfloat16, 1.1, False, "triton", True))
TOL = {torch.float32: (2e-6, 2e-5), torch.float64: (1e-12, 1e-10), torch.bfloat16: (1.6e-2, 1.6e-2)}


def _shards(vocab: int, world: int) -> list[tuple[int, int]]:
    """Uneven contiguous (start, width) slices, so shard starts are not 4-aligned."""
    widths = [vocab // world + (1 if r < vocab % world else 0) for r in range(world)]
    starts = [sum(widths[:r]) for r in range(world)]
    return list(zip(starts, widths))


def _check_case(rank: int, world: int, case_id: int) -> None:
    lead, vocab, dtype, tau, hard, backend, reverse = CASES[case_id]
    gen = torch.Generator().manual_seed(case_id)
    full = (torch.randn(*lead, vocab, generator=gen, dtype=torch.float64) * 3).to(dtype)
    full[..., 5] = float("-inf")  # masked columns stay exactly 0
    full.reshape(-1, vocab)[0, :vocab // 2 + 1] = float("-inf")  # a whole shard of a row masked
    upstream = torch.randn(*lead, vocab, generator=gen, dtype=torch.float64).to(dtype)
    start, width = _shards(vocab, world)[world - 1 - rank if reverse else rank]
    shard = full[..., start:start + width].clone().requires_grad_()
    y, index = fg.distributed.gumbel_softmax(
        shard, tau, hard, seed=2**40 + case_id, vocab_start=start,
        vocab_size=None if case_id == 0 else vocab, return_index=True, backend=backend)
    (y.double() * upstream[..., start:start + width].double()).sum().backward()

    whole = full.clone().requires_grad_()
    y1, index1 = fg.gumbel_softmax(whole, tau, hard, seed=2**40 + case_id, return_index=True, backend="cpu")
    (y1.double() * upstream.double()).sum().backward()
    atol, rtol = TOL[dtype]
    assert torch.equal(index, index1), (rank, case_id)
    torch.testing.assert_close(y, y1[..., start:start + width].detach(), atol=atol, rtol=rtol)
    torch.testing.assert_close(shard.grad, whole.grad[..., start:start + width], atol=atol, rtol=rtol)
    if hard:
        assert set(torch.unique(y.float()).tolist()) <= {0.0, 1.0}


def _worker(rank: int, world: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for case_id in range(len(CASES)):
            _check_case(rank, world, case_id)
        # a NaN row is NaN on every rank, the other rows unaffected
        x = torch.randn(3, 8)
        x[1, 2] = float("nan")
        y = fg.distributed.gumbel_softmax(x, 1.0, True, seed=1, vocab_start=8 * rank, vocab_size=8 * world)
        assert torch.isnan(y[1]).all() and not torch.isnan(y[[0, 2]]).any()
        # a huge tau: a uniform sample over the unmasked classes on every backend
        x[1, 2] = float("-inf")
        for backend in ("cpu", "reference"):
            y = fg.distributed.gumbel_softmax(x, 1e39, seed=1, vocab_start=8 * rank, vocab_size=8 * world,
                                              backend=backend)
            assert not torch.isnan(y).any() and y[1, 2] == 0
        # a second derivative is refused (the all_reduce has no autograd), not wrong
        x = torch.randn(3, 8, requires_grad=True)
        y = fg.distributed.gumbel_softmax(x, 0.7, seed=1, vocab_start=8 * rank, vocab_size=8 * world)
        with pytest.raises(NotImplementedError, match="double backward"):
            torch.autograd.grad((y * torch.randn(3, 8)).sum(), x, create_graph=True)
        # a tau that requires grad is refused, not silently detached
        with pytest.raises(NotImplementedError, match="tau"):
            fg.distributed.gumbel_softmax(x, torch.tensor(0.5, requires_grad=True), seed=1,
                                          vocab_start=8 * rank, vocab_size=8 * world)
        # so are dual logits (its autograd Function has no jvp)
        with fwAD.dual_level(), pytest.raises(NotImplementedError, match="forward-mode"):
            fg.distributed.gumbel_softmax(fwAD.make_dual(x.detach(), torch.randn(3, 8)), 0.5, seed=1,
                                          vocab_start=8 * rank, vocab_size=8 * world)
        _check_misuse(rank, world)
    finally:
        dist.destroy_process_group()


def _check_misuse(rank: int, world: int) -> None:
    """Arguments that differ between ranks, and one rank's rejected ones: every
    rank raises at once (none waits in a collective that another left), with
    or without vocab_size; afterwards the group samples as before."""
    full = torch.randn(3, 8 * world, generator=torch.Generator().manual_seed(0))
    x = full[:, 8 * rank:8 * rank + 8]
    rejected = r"rank\(s\) \[1\]"  # the other ranks' message when rank 1 rejected its arguments
    # (arguments, then per vocab_size None and given: the error and its message)
    tiling = ValueError, "without gaps or overlaps"
    cases = [
        (dict(seed=1 + rank), [(ValueError, "seed must be the same")] * 2),
        (dict(tau=0.5 + rank), [(ValueError, "tau must be the same")] * 2),
        (dict(vocab_start=0), [tiling] * 2),
        (dict(seed=None if rank == 1 else 1),
         [(TypeError, "seed must be an int") if rank == 1 else (RuntimeError, rejected)] * 2),
        (dict(vocab_start=8 * world - 3 if rank == 1 else 8 * rank),  # past the vocabulary, when it is given
         [tiling, (ValueError, "must lie inside") if rank == 1 else (RuntimeError, rejected)]),
    ]
    for kwargs, expected in cases:
        for vocab_size, (error, match) in zip((None, 8 * world), expected):
            args = dict(seed=1, vocab_start=8 * rank, tau=1.0) | kwargs
            with pytest.raises(error, match=match):
                fg.distributed.gumbel_softmax(x, args.pop("tau"), True, vocab_size=vocab_size, backend="cpu",
                                              **args)
    # Where the forward's all-gather carries no arguments (CUDA tensors: no
    # host copy and synchronization per call), a rank that rejects its own
    # raises and the others get NaN rows and index -1.
    distributed, in_forward = fg.distributed, fg.distributed._checks_in_forward
    distributed._checks_in_forward = lambda device: False
    try:
        for hard in (True, False):
            if rank == 1:
                with pytest.raises(TypeError, match="seed must be an int"):
                    distributed.gumbel_softmax(x, 1.0, hard, seed=None, vocab_start=8, vocab_size=8 * world)
            else:
                y, index = distributed.gumbel_softmax(x, 1.0, hard, seed=1, vocab_start=8 * rank,
                                                      vocab_size=8 * world, return_index=True)
                assert torch.isnan(y).all() and (index == -1).all()
    finally:
        distributed._checks_in_forward = in_forward
    y, index = fg.distributed.gumbel_softmax(x, 1.0, True, seed=1, vocab_start=8 * rank, vocab_size=8 * world,
                                             return_index=True, backend="cpu")
    y1, index1 = fg.gumbel_softmax(full, 1.0, True, seed=1, return_index=True, backend="cpu")
    assert torch.equal(index, index1) and torch.equal(y, y1[:, 8 * rank:8 * rank + 8])


@pytest.mark.skipif(not dist.is_available() or not backend_status("cpu")[0],
                    reason="needs torch.distributed and the compiled CPU kernels")
@pytest.mark.parametrize("world", [2, 4])
def test_sharded_equals_single_process(world):
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, os.path.join(tmp, "store")), nprocs=world, join=True)


def _cuda_worker(rank: int, init_file: str) -> None:
    """One NCCL rank holding the whole vocabulary: the path of CUDA tensors
    (the Triton shard kernel; with vocab_size given, no arguments exchanged)."""
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=1)
    try:
        torch.cuda.set_device(0)
        x = torch.randn(6, 1000, device="cuda", requires_grad=True)
        upstream = torch.randn(6, 1000, device="cuda")
        atol, rtol = TOL[torch.float32]
        for vocab_size in (None, 1000):
            for hard in (False, True):
                y, index = fg.distributed.gumbel_softmax(x, 0.7, hard, seed=5, vocab_start=0,
                                                         vocab_size=vocab_size, return_index=True)
                y1, index1 = fg.gumbel_softmax(x, 0.7, hard, seed=5, return_index=True, backend="triton")
                assert torch.equal(index, index1)
                torch.testing.assert_close(y, y1, atol=atol, rtol=rtol)
                grad, = torch.autograd.grad((y * upstream).sum(), x)
                grad1, = torch.autograd.grad((y1 * upstream).sum(), x)
                torch.testing.assert_close(grad, grad1, atol=atol, rtol=rtol)
        for vocab_size in (None, 1000):
            with pytest.raises(TypeError, match="seed must be an int"):
                fg.distributed.gumbel_softmax(x, 0.7, seed=None, vocab_start=0, vocab_size=vocab_size)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.cuda.is_available() or not dist.is_available() or not dist.is_nccl_available()
                    or not backend_status("triton", "cuda")[0], reason="needs a CUDA device, NCCL and Triton")
def test_cuda_tensors_through_nccl():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_cuda_worker, args=(os.path.join(tmp, "store"),), nprocs=1, join=True)


def test_needs_an_initialized_process_group():
    if dist.is_available() and dist.is_initialized():
        pytest.skip("a process group is already initialized")
    with pytest.raises(RuntimeError, match="not initialized"):
        fg.distributed.gumbel_softmax(torch.randn(2, 3), seed=1, vocab_start=0, vocab_size=3)


def test_shard_op_checks_its_columns():
    with pytest.raises(ValueError, match="vocab_size"):
        torch.ops.fused_gumbel.st_softmax_shard(torch.randn(2, 5), 1.0, 3, 4, 8)
    with pytest.raises(ValueError, match="tau"):
        torch.ops.fused_gumbel.st_softmax_shard(torch.randn(2, 5), 0.0, 3, 0, 8)


def test_the_gathered_index_is_exact_past_2_to_the_53():
    """The ranks' argmax columns travel through all_gather as int64 bits: as
    float64 values, 2**53 + 1 would arrive as 2**53."""
    from fused_gumbel.distributed import _merge, _pack

    base = 2**53 + 1
    mine = _pack(torch.tensor([[2.0, 1.0], [3.0, 1.0]]), torch.tensor([base, base + 2]))
    theirs = _pack(torch.tensor([[1.0, 1.0], [3.0, 1.0]]), torch.tensor([base + 4, base + 6]))
    for parts in ([mine, theirs], [theirs, mine]):
        _, _, winner = _merge(torch.stack(parts), 1.0)
        assert winner.dtype == torch.int64 and winner.tolist() == [base, base + 2]


def test_a_nan_on_one_rank_beats_an_inf_on_another():
    """The unsharded argmax takes the first NaN of a row; merged, a +inf of an
    earlier rank must not win the tie (a NaN counted as +inf did)."""
    from fused_gumbel.distributed import _merge, _pack

    inf, nan = float("inf"), float("nan")
    first = _pack(torch.tensor([[inf, 1.0], [inf, 1.0], [2.0, 1.0]]), torch.tensor([1, 1, 0]))
    second = _pack(torch.tensor([[nan, 1.0], [inf, 1.0], [inf, 1.0]]), torch.tensor([4, 5, 3]))
    M, _, winner = _merge(torch.stack([first, second]), 1.0)
    assert winner.tolist() == [4, 1, 3] and torch.isnan(M[0]) and M[1:].tolist() == [inf, inf]


@pytest.mark.parametrize("why, change, match", [
    ("rejected", dict(failed=1), r"rank\(s\) \[1\] of the group rejected"),
    ("seed", dict(seed=8), "seed must be the same"),
    ("tau", dict(tau=0.25), "tau must be the same"),
    ("hard", dict(hard=0), "hard must be the same"),
    ("vocab_size", dict(vocab_size=9), "vocab_size must be the same"),
    ("rows", dict(rows=5), "rows must be the same"),
    ("gap", dict(vocab_start=4, width=4), r"without gaps or overlaps; they are \[0, 3\), \[4, 8\)"),
    ("overlap", dict(vocab_start=2, width=6), "without gaps or overlaps"),
    ("short", dict(width=4), "without gaps or overlaps"),
])
def test_the_ranks_must_agree(why, change, match):
    """_agree, as every rank runs it on the gathered arguments: each way the
    ranks can disagree raises, naming it; agreeing ranks, in any order, with
    vocab_size given or found from the widths, do not."""
    from fused_gumbel.distributed import _agree, _arguments, _Arguments

    def gathered(*ranks):
        return torch.stack([_arguments(r) for r in ranks])

    good = [_Arguments(0, 0, 3, 7, 8, 1, 4, 0.5), _Arguments(0, 3, 5, 7, 8, 1, 4, 0.5)]
    for ranks in (good, good[::-1], [r._replace(vocab_size=-1) for r in good]):
        assert _agree(gathered(*ranks), None) == 8
    with pytest.raises((ValueError, RuntimeError), match=match):
        _agree(gathered(good[0], good[1]._replace(**change)), None)


SHARDS = [(7, 50, 13, 101), (3, 9000, 1001, 20000), (2, 16, 4, 40)]


@pytest.mark.parametrize("rows, cols, start, vocab", SHARDS)
def test_shard_op_matches_its_reference_and_opcheck(rows, cols, start, vocab):
    from fused_gumbel.distributed import _shard_reference

    x = torch.randn(rows, cols) * 2
    got = torch.ops.fused_gumbel.st_softmax_shard(x, 0.6, 77, start, vocab)
    want = _shard_reference(x, 0.6, 77, start, vocab)
    assert torch.equal(got[1], want[1])
    torch.testing.assert_close(got[0], want[0], atol=2e-6, rtol=2e-5)
    torch.testing.assert_close(got[2], want[2], atol=2e-6, rtol=2e-5)
    torch.library.opcheck(torch.ops.fused_gumbel.st_softmax_shard.default, (x, 0.6, 77, start, vocab))


@pytest.mark.skipif(not backend_status("triton", "cuda" if torch.cuda.is_available() else "cpu")[0],
                    reason="Triton cannot run here")
@pytest.mark.parametrize("rows, cols, start, vocab", SHARDS)
def test_triton_shard_op_matches_the_cpu_kernel(rows, cols, start, vocab):
    from fused_gumbel.triton_kernels import st_softmax_shard_triton

    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(rows, cols) * 2
    got = st_softmax_shard_triton(x.to(device), 0.6, 77, start, vocab)
    want = torch.ops.fused_gumbel.st_softmax_shard(x, 0.6, 77, start, vocab)
    assert torch.equal(got[1].cpu(), want[1])
    torch.testing.assert_close(got[0].cpu(), want[0], atol=2e-6, rtol=2e-5)
    torch.testing.assert_close(got[2].cpu(), want[2], atol=2e-6, rtol=2e-5)
