"""The package's Triton kernels compiled for sm_90 on a machine without a GPU
(Triton's NVIDIA backend and its own ptxas need no device): what the compile
tests (tests/test_triton.py, tests/test_topk.py, run in a process without
TRITON_INTERPRET) and scripts/triton_sass.py build from."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TARGET = GPUTarget("cuda", 90, 32)
PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


def compile_sm90(fn, signature: dict, constexprs: dict, num_warps: int, attrs: dict | None = None):
    """fn compiled for sm_90 with the options the launches use (no FMA
    contraction: the noise's arithmetic is specified operation by operation)."""
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=TARGET,
                          options=dict(num_warps=num_warps, enable_fp_fusion=False))


def build(fn, dt: str, constexprs: dict, num_warps: int):
    """fn compiled with the element type dt ("fp32", "bf16", ...) for its data
    pointers, the accumulation type for its statistics (fp64 for fp64, else
    fp32), 64-bit seeds and row strides, and i32 for its other arguments."""
    acc = "fp64" if dt == "fp64" else "fp32"
    types = dict(x_ptr="*" + dt, y_ptr="*" + dt, grad_ptr="*" + dt, out_ptr="*" + dt,
                 index_ptr="*i64", part_arg_ptr="*i64", rng_state_ptr="*i64",
                 stats_ptr="*" + acc, part_ptr="*" + acc, cache_ptr="*" + acc, seed="i64", tau="fp64",
                 tau_ptr="*fp64",
                 x_row_stride="i64", y_row_stride="i64", grad_row_stride="i64")
    signature = {a: "constexpr" if a in constexprs else types.get(a, "i32") for a in fn.arg_names}
    return compile_sm90(fn, signature, constexprs, num_warps)


def spill_bytes(kernel) -> int:
    """The spill stores ptxas reports for a compiled kernel's PTX."""
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(kernel.asm["ptx"])
    try:
        report = subprocess.run([PTXAS, "-arch=sm_90a", "-v", f.name, "-o", os.devnull],
                                capture_output=True, text=True).stderr
    finally:
        os.unlink(f.name)
    return int(re.search(r"(\d+) bytes spill stores", report).group(1))
