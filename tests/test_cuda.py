"""The CUDA kernels (csrc/cuda/): parity with the reference over every row
layout the launcher picks (short rows sharing a warp, a block per row, rows
split over several blocks), bit-identity with the CPU kernels, the random state
(CUDA graphs, torch.manual_seed, devices) and the registered op on CUDA."""

import math

import numpy as np
import pytest
import torch

import fused_gumbel as fg
from fused_gumbel.ops import backend_status

from numpy_noise import gumbel_noise as numpy_gumbel_noise
from utils import DTYPES, reference, tolerance

_CUDA_OK, _CUDA_WHY = backend_status("cuda", "cuda" if torch.cuda.is_available() else None)
pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the CUDA kernels need a GPU"),
    pytest.mark.skipif(not _CUDA_OK, reason=f"CUDA backend unavailable: {_CUDA_WHY}"),
]

OP = torch.ops.fused_gumbel.st_softmax
BACKWARD = torch.ops.fused_gumbel.st_softmax_backward

# (rows, cols): each of the launcher's layouts. cols 1 and 7 misalign every row
# start against the 4-wide Philox groups; 64 puts several rows in a warp; 4096
# takes a block per row; 20001, 32768 and 65540 a block per row (on sm_80; the
# cache of 32768 fills most of shared memory, 65540's is split into chunks as
# long as the kernels allow, kSplitChunkMax) or, on sm_90, a cluster of 4, 4
# and 8 blocks (20001: rows misaligned against the unit); 2**17 + 3 and 2**20
# (few rows) are split into more chunks, all merged. The hard forward streams
# every row of more than 128 units.
SHAPES = [(37, 1), (33, 7), (130, 64), (300, 4096), (140, 20001), (140, 32768), (140, 65540),
          (3, 2**17 + 3), (1, 2**20)]


def _logits(shape, dtype, *, seed=0, scale=3.0, contiguous=True):
    gen = torch.Generator().manual_seed(seed)
    if contiguous:
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    else:  # every other column of a wider tensor: odd row stride, no 16-byte loads
        x = (torch.randn((*shape[:-1], 2 * shape[-1] + 1), generator=gen, dtype=torch.float64) * scale)[..., 1::2]
    return x.to(device="cuda", dtype=dtype)


def _check_against_reference(x, tau, hard, dim, seed, *, grad_check=True):
    x = x.detach().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y, index = fg.gumbel_softmax(x, tau, hard, dim=dim, seed=seed, return_index=True, backend="cuda")
    y_ref, index_ref = reference(x_ref, tau, hard, dim, seed)
    torch.testing.assert_close(index, index_ref, rtol=0, atol=0)
    atol, rtol = tolerance(x.dtype)
    if hard:
        torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    else:
        torch.testing.assert_close(y, y_ref, atol=atol, rtol=rtol)
    if grad_check:
        upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        upstream = upstream.to(device="cuda", dtype=x.dtype)
        (grad,) = torch.autograd.grad(y, x, upstream)
        (grad_ref,) = torch.autograd.grad(y_ref, x_ref, upstream)
        torch.testing.assert_close(grad, grad_ref, atol=4 * atol, rtol=4 * rtol)


def test_cuda_backend_is_available_and_chosen_by_auto():
    assert "cuda" in fg.available_backends("cuda")
    x = _logits((4, 10), torch.float32)
    torch.testing.assert_close(fg.gumbel_softmax(x, seed=1), fg.gumbel_softmax(x, seed=1, backend="cuda"),
                               rtol=0, atol=0)


# ------------------------------------------------------------ parity
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_row_layout_matches_reference(dtype, shape, hard):
    _check_against_reference(_logits(shape, dtype, seed=shape[1]), 0.7, hard, -1, 1234)


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("dtype,cols", [(torch.float32, 12288), (torch.float32, 12200),
                                        (torch.bfloat16, 12288), (torch.float64, 6144)], ids=str)
def test_row_caches_at_the_48_kb_default_limit(dtype, cols, hard):
    """Row caches of up to 48 KB, with enough rows (a block each, at least one
    per SM) not to be split: without the opt-in, the kernels' static shared
    memory counts against the default 48 KB and the launch fails (a reviewer
    found it by reading). On sm_90 the float32 and bfloat16 rows run as
    clusters of two 24 KB chunks; float64's 6144 columns stay one block."""
    rows = max(256, torch.cuda.get_device_properties(0).multi_processor_count)
    _check_against_reference(_logits((rows, cols), dtype, seed=cols), 0.7, hard, -1, 99)


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,dim,contiguous", [
    ((64, 33), 0, True),          # dim 0: the wrapper moves it last
    ((4, 300, 6), 1, True),
    ((50, 129), -1, False),       # odd row stride: the element-wise path
    ((6, 20001), -1, False),      # ... on split rows
    ((2, 3, 4096), -1, False),
    ((140, 9000), -1, False),     # ... on clusters (sm_90)
])
def test_dims_and_strided_inputs_match_reference(dtype, shape, dim, contiguous, hard):
    _check_against_reference(_logits(shape, dtype, seed=7, contiguous=contiguous), 1.3, hard, dim, 99)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_misaligned_storage_offsets_match_reference(dtype):
    """Row pointers that are not 16-byte aligned (a view starting one element in,
    rows padded by one element) take the element-wise loads."""
    wide = _logits((70, 1001), dtype, seed=3)
    for x in (wide[:, 1:], wide[1:, :-1], wide.view(-1)[1:70001].view(70, 1000)):
        _check_against_reference(x, 0.9, False, -1, 5)


def test_split_rows_agree_with_a_block_per_row():
    """A row gives the same sample whether it is one of many rows (a block per
    row) or alone (split over blocks, the states merged)."""
    x = _logits((512, 16384), torch.float32, seed=11)
    full, index_full = fg.gumbel_softmax(x, 0.8, seed=4, return_index=True, backend="cuda")
    alone, index_alone = fg.gumbel_softmax(x[:1], 0.8, seed=4, return_index=True, backend="cuda")
    assert index_full[0] == index_alone[0]
    torch.testing.assert_close(full[:1], alone, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("cols", [32768, 20001, 65540])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_hard_rows_stream_whole_or_in_chunks(dtype, cols):
    """Hard rows enough to give every SM four blocks of at most 32768 columns
    (kStreamChunkMax, kStreamBlocksPerSm) stream a whole row per block (32768;
    20001, misaligned against the unit) or uneven chunks of up to 32768
    merged by forward_finalize_kernel (65540: 3 chunks); the first row alone
    takes the split layout's chunks of at most 8192. Both give the
    reference's one-hot and index, and the gradient of the recomputed
    y_soft (from the stats these layouts write) matches."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    chunks = -(-cols // 32768)
    x = _logits((-(-4 * sms // chunks) + 8, cols), dtype, seed=13)
    _check_against_reference(x, 0.6, True, -1, 7)
    y, index = fg.gumbel_softmax(x, 0.6, True, seed=7, return_index=True, backend="cuda")
    alone, index_alone = fg.gumbel_softmax(x[:1], 0.6, True, seed=7, return_index=True, backend="cuda")
    assert index_alone[0] == index[0] and torch.equal(alone, y[:1])


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_rows_of_2_to_the_20_sum_to_one(hard):
    x = _logits((4, 2**20), torch.bfloat16, seed=12)
    y, index = fg.gumbel_softmax(x, 1.0, hard, seed=9, return_index=True, backend="cuda")
    sums = y.double().sum(-1)
    if hard:
        assert torch.equal(sums, torch.ones_like(sums)) and torch.equal(y.argmax(-1), index)
    else:
        torch.testing.assert_close(sums, torch.ones_like(sums), atol=2e-2, rtol=0)


def test_backward_recomputing_the_soft_sample_matches_reading_it():
    for shape in ((100, 50), (3, 200003)):
        x = _logits(shape, torch.float32, seed=13)
        grad = torch.randn(shape, device="cuda")
        y, _, stats, rng, _ = OP(x, 0.8, False, -1, 21)
        from_y = BACKWARD(grad, y, None, stats, rng, 0.8, -1)
        from_x = BACKWARD(grad, None, x, stats, rng, 0.8, -1)
        torch.testing.assert_close(from_x, from_y, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------ CPU identity
@pytest.mark.parametrize("n", [1, 3, 4, 5, 1000, 2**20 + 7])
def test_noise_is_bit_identical_to_cpu(n):
    for seed in (0, 5, 2**32 + 5, -1):
        cuda = fg.gumbel_noise((n,), seed, device="cuda").cpu()
        cpu = fg.gumbel_noise((n,), seed)
        assert torch.equal(cuda.view(torch.int32), cpu.view(torch.int32)), (n, seed)


def test_noise_into_a_misaligned_view():
    out = torch.empty(1003, device="cuda")[1:]
    torch.ops.fused_gumbel.fill_gumbel_noise(out, 17)
    assert torch.equal(out.cpu().view(torch.int32), fg.gumbel_noise((1002,), 17).view(torch.int32))


@pytest.mark.parametrize("counter", [0, 2**32 - 3, 2**62 + 11, -2])
def test_philox_bits_are_identical_to_cpu(counter):
    cuda = torch.empty(257, 4, dtype=torch.int32, device="cuda")
    cpu = torch.empty(257, 4, dtype=torch.int32)
    torch.ops.fused_gumbel.philox_bits(cuda, 2**40 + 3, counter)
    torch.ops.fused_gumbel.philox_bits(cpu, 2**40 + 3, counter)
    assert torch.equal(cuda.cpu(), cpu)


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(300, 7), (64, 4096), (2, 150001)], ids=str)
def test_same_seed_same_sample_as_cpu(dtype, shape, hard):
    x = _logits(shape, dtype, seed=21)
    y, index = fg.gumbel_softmax(x, 0.6, hard, seed=77, return_index=True, backend="cuda")
    y_cpu, index_cpu = fg.gumbel_softmax(x.cpu(), 0.6, hard, seed=77, return_index=True, backend="cpu")
    assert torch.equal(index.cpu(), index_cpu)
    atol, rtol = tolerance(dtype)
    torch.testing.assert_close(y.cpu(), y_cpu, atol=atol, rtol=rtol)


def test_positions_past_2_to_the_31():
    """64-bit positions: the last row of a stride-0 view with more than 2**31
    elements samples from positions past 2**31 (only the 4 GiB output is
    allocated)."""
    if torch.cuda.mem_get_info()[0] < 12 * 2**30:
        pytest.skip("needs 12 GiB of free GPU memory")
    rows, cols = 2049, 2**20 + 1
    row = torch.randn(1, cols, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    x = row.cuda().expand(rows, cols)
    y, index = fg.gumbel_softmax(x, seed=31, return_index=True, backend="cuda")
    s = row[0].double().numpy() + numpy_gumbel_noise(cols, 31, first=(rows - 1) * cols)
    assert index[-1].item() == int(np.argmax(s))
    expected = torch.softmax(torch.from_numpy(s), -1).to(torch.bfloat16)
    torch.testing.assert_close(y[-1].cpu(), expected, atol=1.6e-2, rtol=1.6e-2)
    del y


# ------------------------------------------------------------ random state
def _noise_from_rng_state(rng_state, shape):
    """The noise an op call used, from its rng_state (seed, counter base): the
    counter base shifts positions by 4 per counter."""
    seed, base = (int(v) for v in rng_state.cpu())
    n = math.prod(shape)
    return torch.from_numpy(numpy_gumbel_noise(n, seed, first=4 * (base % 2**64))).view(shape)


def test_seed_none_uses_the_generator_offset_and_calls_differ():
    x = _logits((16, 1000), torch.float32, seed=1)
    torch.cuda.manual_seed(123)
    first = OP(x, 1.0, False, -1, None)
    second = OP(x, 1.0, False, -1, None)
    assert not torch.equal(first[0], second[0])
    assert first[3][0] == second[3][0] and second[3][1] > first[3][1]
    for y, _, _, rng, _ in (first, second):
        s = x.cpu().double() + _noise_from_rng_state(rng, x.shape).double()
        torch.testing.assert_close(y.cpu(), torch.softmax(s, -1).float(), atol=2e-6, rtol=2e-5)
    torch.cuda.manual_seed(123)
    again = OP(x, 1.0, False, -1, None)
    assert torch.equal(again[0], first[0]) and torch.equal(again[3], first[3])


def _generator_offset():
    """The default CUDA generator's Philox offset (get_rng_state: seed, then offset)."""
    return int.from_bytes(torch.cuda.get_rng_state()[8:16].numpy().tobytes(), "little")


@pytest.mark.parametrize("op", ["st_softmax", "gumbel_topk", "sample"])
def test_seed_none_counters_stay_inside_what_the_call_reserved(op):
    """PyTorch counts the generator's offset in 32-bit draws, and its kernels
    start at counter offset / 4: the op's counters [base, base + numel / 4)
    must lie within the 4 * ceil(numel / 4) draws it reserved, or a later
    torch.rand or dropout draws the same words (thread 0 of it, in Philox
    subsequence 0). sample records no rng_state: its draws are those of
    st_softmax (same seed=None index)."""
    x = _logits((64, 1001), torch.float32, seed=1)
    reserved = 4 * math.ceil(x.numel() / 4)
    torch.cuda.manual_seed(5)
    for _ in range(3):
        before = _generator_offset()
        if op == "st_softmax":
            rng_state = OP(x, 1.0, False, -1, None)[3]
        elif op == "gumbel_topk":
            rng_state = torch.ops.fused_gumbel.gumbel_topk(x, 3, 1.0, True, -1, None)[3]
        else:
            state = torch.cuda.get_rng_state()
            index = torch.ops.fused_gumbel.sample(x, 1.0, -1, None)
            assert _generator_offset() - before == reserved
            torch.cuda.set_rng_state(state)
            _, st_index, _, rng_state = OP(x, 1.0, False, -1, None)[:4]
            assert torch.equal(index, st_index)
        after = _generator_offset()
        assert before % 4 == 0 and after - before == reserved
        assert int(rng_state[1]) == before // 4
        torch.rand(8, device=x.device)


def test_manual_seed_reproduces_and_draws_differ():
    x = _logits((32, 500), torch.bfloat16, seed=2)
    torch.manual_seed(0)
    a = fg.gumbel_softmax(x, hard=True, backend="cuda")
    b = fg.gumbel_softmax(x, hard=True, backend="cuda")
    torch.manual_seed(0)
    a2 = fg.gumbel_softmax(x, hard=True, backend="cuda")
    assert torch.equal(a, a2) and not torch.equal(a, b)


def _capture(fn, warmup=2):
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


@pytest.mark.parametrize("shape", [(64, 1000), (2, 300001)], ids=str)
def test_cuda_graph_replays_draw_fresh_noise(shape):
    x = _logits(shape, torch.float32, seed=3)
    graph, (y, _, _, rng, _) = _capture(lambda: OP(x, 0.9, False, -1, None))
    samples, states = [], []
    for _ in range(3):
        graph.replay()
        samples.append(y.clone())
        states.append(rng.clone())
    torch.cuda.synchronize()
    assert not torch.equal(samples[0], samples[1]) and not torch.equal(samples[1], samples[2])
    # each replay's sample is the one its recorded (seed, base) describes
    for sample, state in zip(samples, states):
        s = x.cpu().double() + _noise_from_rng_state(state, shape).double()
        torch.testing.assert_close(sample.cpu(), torch.softmax(s / 0.9, -1).float(), atol=2e-6, rtol=2e-5)


def test_cuda_graph_replays_follow_manual_seed():
    x = _logits((8, 4096), torch.float16, seed=4)
    graph, y = _capture(lambda: fg.gumbel_softmax(x, 0.5, hard=True, backend="cuda"))
    torch.manual_seed(7)
    graph.replay()
    a = y.clone()
    graph.replay()
    b = y.clone()
    torch.manual_seed(7)
    graph.replay()
    assert torch.equal(y, a) and not torch.equal(a, b)


def test_cuda_graph_captures_forward_and_backward():
    """No host synchronization anywhere: the forward and the backward, which
    regenerates the soft sample from the rng_state on the device, in one graph."""
    tau = 0.7
    x = _logits((16, 3000), torch.float32, seed=5).requires_grad_()
    w = torch.randn(16, 3000, device="cuda")

    def step():
        x.grad = None
        y, _, _, rng, _ = OP(x, tau, True, -1, None)
        (y * w).sum().backward()
        return y, rng

    graph, (y, rng) = _capture(step)
    graph.replay()
    torch.cuda.synchronize()
    # the straight-through gradient of the soft sample the replay's noise gives
    s = x.detach().cpu().double() + _noise_from_rng_state(rng, x.shape).double()
    y_soft = torch.softmax(s / tau, -1)
    w64 = w.cpu().double()
    expected = y_soft * (w64 - (w64 * y_soft).sum(-1, keepdim=True)) / tau
    torch.testing.assert_close(x.grad.cpu().double(), expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(y.argmax(-1).cpu(), s.argmax(-1))


def test_seed_none_on_a_second_device():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    x0 = _logits((20, 777), torch.float32, seed=6)
    x1 = x0.to("cuda:1")
    with torch.cuda.device(0):
        y1, index1 = fg.gumbel_softmax(x1, 0.8, seed=3, return_index=True, backend="cuda")
        y0, index0 = fg.gumbel_softmax(x0, 0.8, seed=3, return_index=True, backend="cuda")
        assert y1.device == torch.device("cuda:1") and index1.device == torch.device("cuda:1")
        assert torch.equal(index1.cpu(), index0.cpu())
        torch.testing.assert_close(y1.cpu(), y0.cpu(), atol=0, rtol=0)
        # seed=None draws from cuda:1's own generator
        torch.cuda.manual_seed_all(5)
        a = OP(x1, 1.0, False, -1, None)
        assert a[0].device == torch.device("cuda:1")
        torch.cuda.manual_seed_all(5)
        b = OP(x1, 1.0, False, -1, None)
        assert torch.equal(a[0], b[0])
        grad = torch.randn_like(x1)
        g1 = BACKWARD(grad, None, x1, a[2], a[3], 1.0, -1)
        assert g1.device == torch.device("cuda:1")


# ------------------------------------------------------------ contract on CUDA
def test_bad_inputs_raise_and_leave_inputs_unchanged():
    x = torch.randn(4, 9, device="cuda")
    before = x.clone()
    with pytest.raises((TypeError, RuntimeError), match="Int|int"):
        OP(torch.ones(3, 4, dtype=torch.int32, device="cuda"), 1.0, False, -1, 1)
    for tau in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="tau"):
            OP(x, tau, False, -1, 1)
    with pytest.raises(IndexError):
        OP(x, 1.0, False, 2, 1)
    assert torch.equal(x, before)
    y, _, stats, rng, _ = OP(x, 1.0, False, -1, 1)
    with pytest.raises(RuntimeError, match="rng_state"):
        BACKWARD(torch.ones_like(y), y, None, stats, rng.cpu(), 1.0, -1)


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("rows,cols", [(5, 7), (5, 64), (5, 5000), (400, 5000), (5, 200000)])
def test_special_values(rows, cols, hard):
    """A NaN, masked columns, an all -inf row and a dominant logit on every
    layout. At 400 x 5000 each hard row is one streaming block, which writes
    zeros before it knows whether the row has a sample; 5 x 5000 is split."""
    x = _logits((rows, cols), torch.float32, seed=8)
    x[1, 3] = math.nan
    x[2, ::3] = -math.inf
    x[3] = -math.inf
    x[4, 1] = 1e4
    y, index = fg.gumbel_softmax(x, 0.5, hard, seed=3, return_index=True, backend="cuda")
    assert torch.isnan(y[1]).all() and torch.isnan(y[3]).all()
    assert (y[2, ::3] == 0).all() and index[2] % 3 != 0 and torch.isfinite(y[2]).all()
    assert index[4] == 1 and y[4, 1] == 1 and torch.isfinite(y[[0, 2, 4]]).all()
    clean = x.clone()
    clean[1] = 0.0
    clean[3] = 0.0
    y_clean = fg.gumbel_softmax(clean, 0.5, hard, seed=3, backend="cuda")
    assert torch.equal(y[[0, 2, 4]], y_clean[[0, 2, 4]])


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("rows,cols", [(4, 700), (140, 20000), (4, 2**17 + 3)])
def test_ties_and_several_nans_give_the_first_column(rows, cols, hard):
    """Logits of 1e30 swallow the noise (its largest value, 22.9, is far below
    their float32 spacing), so those columns tie exactly: the index is the
    first of them across threads, blocks, cluster ranks (140 x 20000 soft, on
    sm_90), streaming blocks (hard) and split chunks (4 x 2**17 + 3); with
    several NaNs, the first NaN."""
    x = _logits((rows, cols), torch.float32, seed=5)
    tied = [cols - 50, cols // 2 + 1, cols // 2, 400]
    x[0, tied] = 1e30
    x[1, [3, 2, cols - 1]] = 1e30
    x[2, [cols - 50, 20, 333]] = math.nan
    x[3, 5] = math.nan
    x[3, 1] = 1e30
    y, index = fg.gumbel_softmax(x, 0.7, hard, seed=4, return_index=True, backend="cuda")
    _, index_ref = reference(x, 0.7, hard, -1, 4)
    assert index[:4].tolist() == [min(tied), 2, 20, 5]
    torch.testing.assert_close(index, index_ref, rtol=0, atol=0)
    assert torch.isnan(y[2:4]).all() and torch.isfinite(y[:2]).all()


def test_empty_inputs():
    for shape, dim in (((0, 5), -1), ((3, 0, 4), -1), ((4, 0), 0)):
        x = torch.randn(shape, device="cuda")
        y, index = fg.gumbel_softmax(x, dim=dim, return_index=True, backend="cuda")
        assert y.shape == x.shape and y.device == x.device and index.numel() == 0


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("dtype,shape,dim", [
    (torch.float32, (4, 9), -1),
    (torch.float64, (3, 5, 2), 1),
    (torch.bfloat16, (6, 33), 0),
    (torch.float16, (7,), 0),
])
def test_opcheck_on_cuda(dtype, shape, dim, hard):
    x = torch.randn(shape, dtype=dtype, device="cuda", requires_grad=dtype == torch.float64)
    torch.library.opcheck(OP, (x, 0.7, hard, dim, 42))
    y, _, stats, rng, _ = OP(x.detach(), 0.7, hard, dim, 42)
    grad = torch.randn_like(y)
    torch.library.opcheck(BACKWARD, (grad, None, x.detach(), stats, rng, 0.7, dim))


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_torch_compile_fullgraph_on_cuda(hard):
    torch._dynamo.reset()

    def model(x, w, tau):
        y = fg.gumbel_softmax(x @ w, tau=tau, hard=hard, seed=7, backend="cuda")
        return (y * torch.arange(y.shape[-1], device=y.device)).sum()

    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(64, 32, device="cuda")
    w = torch.randn(32, 1000, device="cuda", requires_grad=True)
    for tau in (0.5, 0.25):
        loss = compiled(x, w, tau)
        (grad,) = torch.autograd.grad(loss, w)
        loss_eager = model(x, w, tau)
        (grad_eager,) = torch.autograd.grad(loss_eager, w)
        torch.testing.assert_close(loss, loss_eager)
        torch.testing.assert_close(grad, grad_eager)
    fresh = torch.compile(lambda t: fg.gumbel_softmax(t, hard=True, backend="cuda"), fullgraph=True)
    z = torch.randn(64, 1000, device="cuda") * 0.01
    assert not torch.equal(fresh(z), fresh(z))
