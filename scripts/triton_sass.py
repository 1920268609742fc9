"""Instruction counts of the Triton looped kernels' loops, from the sm_90 SASS
that this machine's Triton builds without a GPU: the measure the Triton
changes of the ninth session were made by (the forwards are issue-bound).

    python scripts/triton_sass.py [--rows 4096] [--cols 32768] [--opcodes]

Each kernel is compiled as the JIT would compile it for a float32 problem of
that shape: integer arguments equal to 1 become constants, multiples of 16
get Triton's divisibility hint, pointers are 16-byte aligned. Prints, per
kernel, its registers and each loop of more than 50 instructions with its
count per element (a 2048-wide block over 256 threads: 8 elements each).
Run from the repository root (the package's Triton kernels are imported from
this checkout).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

import triton

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sass_loops  # noqa: E402
from triton_sm90 import compile_sm90  # noqa: E402

from fused_gumbel.triton_kernels import st_softmax as K  # noqa: E402

POINTERS = dict(x_ptr="*fp32", y_ptr="*fp32", grad_ptr="*fp32", out_ptr="*fp32", index_ptr="*i64",
                part_arg_ptr="*i64", rng_state_ptr="*i64", stats_ptr="*fp32", part_ptr="*fp32",
                tau_ptr="*fp64", cache_ptr="*fp32")


def compile_like_jit(fn, constexprs: dict, ints: dict, num_warps: int, data: str = "fp32"):
    """fn compiled for sm_90 with the JIT's specialization of these int values,
    for logits and outputs of element type `data`."""
    signature, attrs, constexprs = {}, {}, dict(constexprs)
    pointers = dict(POINTERS, **{k: "*" + data for k in ("x_ptr", "y_ptr", "grad_ptr", "out_ptr")})
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = pointers[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name == "tau":
            signature[name] = "fp64"
        elif name == "seed":
            signature[name] = "i64"
        elif ints.get(name, 3) == 1:
            constexprs[name] = 1
            signature[name] = "constexpr"
        else:
            signature[name] = "i64" if name.endswith("row_stride") else "i32"
            if ints.get(name, 3) % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return compile_sm90(fn, signature, constexprs, num_warps, attrs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=32768)
    parser.add_argument("--opcodes", action="store_true", help="also the opcode counts of each loop")
    args = parser.parse_args(argv)
    ints = dict(rows=args.rows, cols=args.cols, x_row_stride=args.cols, y_row_stride=args.cols,
                grad_row_stride=args.cols, noise_stride=args.cols, noise_offset=0,
                blocks_per_split=triton.cdiv(args.cols, K.LOOP_BLOCK), n_splits=1, programs=args.rows)
    flags = dict(ALIGNED=args.cols % 4 == 0, TAU_IN_MEMORY=False, PHASE=0, BLOCK=K.LOOP_BLOCK)
    forward = dict(flags, SEED_IN_STATE=True, PERSISTENT=False)
    kernels = {
        "forward hard": (K._forward_long_kernel, dict(forward, HARD=True, CACHE_S=False), "fp32"),
        "forward soft (CACHE_S)": (K._forward_long_kernel, dict(forward, HARD=False, CACHE_S=True), "fp32"),
        "forward soft bfloat16 (CACHE_S, PERSISTENT)": (
            K._forward_long_kernel, dict(forward, HARD=False, CACHE_S=True, PERSISTENT=True), "bf16"),
        "backward hard (CACHE_Y)": (
            K._backward_long_kernel, dict(flags, FROM_LOGITS=True, CACHE_Y=True, PERSISTENT=False), "fp32"),
        "backward hard bfloat16 (CACHE_Y, PERSISTENT)": (
            K._backward_long_kernel, dict(flags, FROM_LOGITS=True, CACHE_Y=True, PERSISTENT=True), "bf16"),
        "backward soft": (
            K._backward_long_kernel, dict(flags, FROM_LOGITS=False, CACHE_Y=False, PERSISTENT=False), "fp32"),
        "backward soft (PERSISTENT)": (
            K._backward_long_kernel, dict(flags, FROM_LOGITS=False, CACHE_Y=False, PERSISTENT=True), "fp32"),
    }
    per_thread = K.LOOP_BLOCK // (8 * 32)
    with tempfile.TemporaryDirectory() as tmp:
        for label, (fn, constexprs, data) in kernels.items():
            kernel = compile_like_jit(fn, constexprs, ints, num_warps=8, data=data)
            path = os.path.join(tmp, "k.cubin")
            with open(path, "wb") as f:
                f.write(kernel.asm["cubin"])
            usage = subprocess.run([sass_loops.cuobjdump(), "-res-usage", path], capture_output=True,
                                   text=True).stdout
            regs = re.search(r"REG:(\d+)", usage)
            sass = subprocess.run([sass_loops.cuobjdump(), "-sass", path], check=True, capture_output=True,
                                  text=True).stdout
            print(f"{label} (triton {triton.__version__}): {regs.group(1) if regs else '?'} registers")
            for body in sass_loops.functions(sass).values():
                for lo, hi, ins in sass_loops.loops(body):
                    if len(ins) <= 50:
                        continue
                    print(f"  loop {lo:#06x}..{hi:#06x}: {len(ins)} instructions, "
                          f"{len(ins) / per_thread:.1f} per element")
                    if args.opcodes:
                        counts = collections.Counter(sass_loops.OPCODE.match(i).group(1) for i in ins)
                        print("    " + ", ".join(f"{op} {n}" for op, n in counts.most_common()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
