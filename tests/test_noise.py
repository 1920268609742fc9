"""The noise specification: the compiled Philox and Gumbel transform against
two independent Philox implementations (PyTorch's at::Philox4_32 and Triton's
tl.philox) and the README's NumPy code, and the noise's distribution."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import fused_gumbel as fg
import numpy_noise
from numpy_noise import gumbel_from_bits, gumbel_noise, philox4x32_10

SEEDS = [0, 5, 2**32 + 5, 2**63 + 12345, 0xFFFFFFFFFFFFFFFF]


def philox_bits(seed: int, counter: int, n: int, device: str = "cpu") -> np.ndarray:
    out = torch.empty(n, 4, dtype=torch.int32, device=device)
    torch.ops.fused_gumbel.philox_bits(out, fg._checks.normalize_seed(seed), fg._checks.normalize_seed(counter))
    return out.cpu().numpy().view(np.uint32)


def test_the_readme_states_the_constants_of_the_specification():
    """The README's mapping is complete: its polynomial coefficients and ln 2
    are the NumPy specification's, in order."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## The noise, exactly"):]
    stated = re.findall(r"-?0x1\.[0-9a-f]+p-?\d+", section[:section.index("So the noise")])
    assert [float.fromhex(h) for h in stated] == [float(c) for c in (*numpy_noise.P, numpy_noise.LN2)]


@pytest.mark.parametrize("seed", SEEDS)
def test_noise_matches_numpy_specification_bit_for_bit(seed):
    n = 10_007
    got = fg.gumbel_noise((n,), seed).numpy()
    assert np.array_equal(got.view(np.uint32), gumbel_noise(n, seed).view(np.uint32))


@pytest.mark.parametrize("counter", [0, 2**32 - 3, 2**63 + 1])
def test_philox_matches_numpy_specification(counter):
    seed = 0x0123456789ABCDEF
    got = philox_bits(seed, counter, 64)
    expect = philox4x32_10(seed, (np.uint64(counter) + np.arange(64, dtype=np.uint64)))
    assert np.array_equal(got, expect)


_ATEN_PHILOX = r"""
#include <torch/extension.h>
#include <ATen/core/PhiloxRNGEngine.h>
torch::Tensor aten_philox(int64_t seed, int64_t counter, int64_t n) {
  auto out = torch::empty({n, 4}, torch::kInt32);
  auto* p = reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>());
  for (int64_t i = 0; i < n; ++i) {
    // counter words (offset_lo, offset_hi, subsequence_lo, subsequence_hi)
    at::Philox4_32 engine(static_cast<uint64_t>(seed), 0,
                          static_cast<uint64_t>(counter) + static_cast<uint64_t>(i));
    for (int k = 0; k < 4; ++k) p[4 * i + k] = engine();
  }
  return out;
}
"""


def test_philox_matches_aten_philox4_32(tmp_path):
    from torch.utils.cpp_extension import load_inline

    module = load_inline(
        "fused_gumbel_aten_philox_check",
        cpp_sources=_ATEN_PHILOX,
        functions=["aten_philox"],
        build_directory=str(tmp_path),
        extra_cflags=["-O1"],
    )
    for seed, counter in [(0, 0), (2**32 + 5, 2**32 - 2), (-1, 12345)]:
        got = philox_bits(seed, counter, 100)
        expect = module.aten_philox(seed, counter, 100).numpy().view(np.uint32)
        assert np.array_equal(got, expect)


def test_philox_matches_triton_philox():
    triton = pytest.importorskip("triton")
    import triton.language as tl

    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("triton needs a GPU or TRITON_INTERPRET=1 (set by conftest.py before triton is imported)")
    device = "cuda" if torch.cuda.is_available() else "cpu"

    @triton.jit
    def philox_kernel(out_ptr, seed, lo_ptr, hi_ptr, N: tl.constexpr):
        i = tl.arange(0, N)
        c0 = tl.load(lo_ptr + i)
        c1 = tl.load(hi_ptr + i)
        zero = c0 * 0
        w0, w1, w2, w3 = tl.philox(seed, c0, c1, zero, zero)
        tl.store(out_ptr + 4 * i + 0, w0)
        tl.store(out_ptr + 4 * i + 1, w1)
        tl.store(out_ptr + 4 * i + 2, w2)
        tl.store(out_ptr + 4 * i + 3, w3)

    n, seed, counter = 64, 2**40 + 77, 2**32 - 5
    counters = np.uint64(counter) + np.arange(n, dtype=np.uint64)
    lo = torch.from_numpy((counters & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32)).to(device)
    hi = torch.from_numpy((counters >> np.uint64(32)).astype(np.uint32).view(np.int32)).to(device)
    out = torch.empty(n * 4, dtype=torch.int32, device=device)
    philox_kernel[(1,)](out, seed, lo.to(torch.uint32), hi.to(torch.uint32), N=n)
    got = out.cpu().numpy().view(np.uint32).reshape(n, 4)
    assert np.array_equal(got, philox_bits(seed, counter, n))


_ISA_SCRIPT = r"""
import json, sys, torch, fused_gumbel as fg
out = {"isa": torch.ops.fused_gumbel.cpu_noise_isa(),
       "capability": torch.backends.cpu.get_cpu_capability(), "runs": []}
# Runs that start and end inside a step, so the partial-step path is checked too.
for seed, first, n in json.loads(sys.argv[1]):
    x = torch.zeros(1, n)
    key = fg._checks.normalize_seed(seed)
    y, index, stats = torch.ops.fused_gumbel.st_softmax_shard(x, 1.0, key, first, first + n)
    out["runs"].append((stats[0, 0].item(), index.item()))
    out.setdefault("noise", []).append(fg.gumbel_noise((n,), seed).numpy().view("uint32").tolist())
# One-column shards: row r's max is the noise at r * stride + start exactly, each
# one fetched as a partial step at a position that is not a multiple of 4.
rows, start, stride = 301, 2**34 - 45, 2**34 + 3
_, _, stats = torch.ops.fused_gumbel.st_softmax_shard(torch.zeros(rows, 1), 1.0, 7, start, stride)
out["scattered"] = stats[:, 0].numpy().view("uint32").tolist()
print(json.dumps(out))
"""

_ISA_RUNS = [(7, 0, 1000), (2**63 + 9, 2**32 * 4 - 37, 301), (0xFFFFFFFFFFFFFFFF, 5, 64)]


@pytest.mark.parametrize("capability", ["default", "avx2", "avx512"])
def test_every_cpu_noise_kernel_gives_the_specified_bits(capability):
    """The CPU noise kernel follows PyTorch's CPU capability (AVX-512 where
    torch uses it, else the build's AVX2 or scalar code): every one gives the
    NumPy specification's bits, for whole and partial steps and 64-bit counters
    that carry."""
    if capability == "avx512" and torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("this CPU (or ATEN_CPU_CAPABILITY) rules out AVX-512")
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
    done = subprocess.run([sys.executable, "-c", _ISA_SCRIPT, json.dumps(_ISA_RUNS)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["isa"] == "avx512" if capability == "avx512" else out["isa"] in ("avx2", "scalar")
    for (seed, first, n), (m, index), noise in zip(_ISA_RUNS, out["runs"], out["noise"]):
        spec = gumbel_noise(n, seed, first=first)
        # logits of zeros: the max of s is the max of the noise, at its argmax
        assert m == float(spec.max()) and index == first + int(np.argmax(spec))
        assert np.array_equal(np.asarray(noise, dtype=np.uint32), gumbel_noise(n, seed).view(np.uint32))
    pos = np.uint64(2**34 - 45) + np.arange(301, dtype=np.uint64) * np.uint64(2**34 + 3)
    words = philox4x32_10(7, pos >> np.uint64(2))
    spec = gumbel_from_bits(words[np.arange(pos.size), (pos & np.uint64(3)).astype(np.int64)])
    assert np.array_equal(np.asarray(out["scattered"], dtype=np.uint32), spec.view(np.uint32))


def test_transform_extremes_are_finite_and_reach_the_32_bit_tail():
    r = np.array([0, 1, 2**31 - 1, 2**31, 3 * 2**30, 2**32 - 2, 2**32 - 1], dtype=np.uint32)
    g = gumbel_from_bits(r)
    assert np.isfinite(g).all()
    assert g.max() == pytest.approx(33 * math.log(2), rel=1e-6)  # 22.8739...
    assert g.min() == pytest.approx(-math.log(33 * math.log(2)), rel=1e-6)
    # every 32-bit input: u = (r + 1/2) / 2**32 maps to -log(-log u) within
    # float32 accuracy (checked on a dense sample of the whole range).
    r = np.linspace(0, 2**32 - 1, 2_000_001).astype(np.uint64).astype(np.uint32)
    u = (r.astype(np.float64) + 0.5) / 2**32
    minus_log_u = np.where(u < 0.5, -np.log(u), -np.log1p(-(1 - u)))
    exact = -np.log(minus_log_u)
    err = np.abs(gumbel_from_bits(r).astype(np.float64) - exact)
    assert (err <= 4e-7 * np.maximum(np.abs(exact), 1)).all()


def test_noise_is_gumbel_distributed():
    g = fg.gumbel_noise((200_000,), 2024).double().numpy()
    ks = stats.kstest(g, stats.gumbel_r.cdf)
    assert ks.pvalue > 1e-3, ks
    assert np.isfinite(g).all() and g.max() < 22.88


def test_upper_tail_beyond_24_bit_limit():
    """Noise from 24-bit uniforms stops near 16.6; 32-bit resolution reaches
    ~22.87. Among 2**24 draws, the largest should exceed 16.6 with probability
    1 - (1 - e^-16.6)^(2**24) ~ 0.5; over 8 seeds some must."""
    tops = [fg.gumbel_noise((2**24,), s).max().item() for s in range(8)]
    assert max(tops) > 16.64


def test_seeds_are_64_bit():
    a = fg.gumbel_noise((1000,), 5)
    assert not torch.equal(a, fg.gumbel_noise((1000,), 2**32 + 5))
    assert not torch.equal(a, fg.gumbel_noise((1000,), 5 + 2**63))
    assert torch.equal(a, fg.gumbel_noise((1000,), 5 + 2**64))  # taken modulo 2**64
    assert torch.equal(fg.gumbel_noise((10,), -1), fg.gumbel_noise((10,), 2**64 - 1))


def test_noise_dtype_and_empty():
    assert fg.gumbel_noise((3, 4), 1, dtype=torch.float64).dtype == torch.float64
    torch.testing.assert_close(fg.gumbel_noise((3, 4), 1, dtype=torch.float64),
                               fg.gumbel_noise((3, 4), 1).double(), rtol=0, atol=0)
    assert fg.gumbel_noise((0, 5), 1).shape == (0, 5)


def test_positions_past_2_to_the_31():
    """Element positions are 64-bit: a tensor of more than 2**31 elements (a
    stride-0 view, so only the 4 GiB output is allocated) samples its last row
    from positions past 2**31, exactly as the specification says."""
    rows, cols = 2049, 2**20 + 1
    assert rows * cols > 2**31
    row = torch.randn(1, cols, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    x = row.expand(rows, cols)
    _, index = fg.gumbel_softmax(x, seed=31, return_index=True, backend="cpu")
    s = row[0].float().numpy() + gumbel_noise(cols, 31, first=(rows - 1) * cols)
    assert index[-1].item() == int(np.argmax(s))
