"""Instruction counts of the loops of the CUDA kernels, from their SASS: a
measure of the arithmetic per element that needs no GPU (the forward kernels
are issue-bound, so fewer instructions per element is less time).

    python scripts/sass_loops.py [--arch 90] [--kernel forward_segments] [SO]

SO is the built extension (default fused_gumbel/_C*.so). cuobjdump comes from
the CUDA toolkit or from Triton's bundled binaries. Each loop is the body
between a backward branch and its target; the counts are static, so a loop
body that holds a cold path (the element-wise load of a row edge, say) counts
it too. Group the counts by opcode with --opcodes.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")
TARGET = re.compile(r"0x([0-9a-f]+)")
OPCODE = re.compile(r"(?:@!?U?P\w+\s+)?([A-Z0-9_]+)")


def cuobjdump() -> str:
    """The cuobjdump of the toolkit, else the one Triton ships."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import triton

        bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        if os.path.exists(bundled):
            return bundled
    except ImportError:
        pass
    sys.exit("sass_loops: no cuobjdump (install the CUDA toolkit or triton)")


def functions(sass: str) -> dict[str, list[tuple[int, str]]]:
    """Kernel name -> [(address, instruction)]."""
    out = {}
    for chunk in re.split(r"\n\s+Function : ", sass)[1:]:
        name = chunk.split("\n", 1)[0].strip()
        out[name] = [(int(a, 16), ins.strip()) for a, ins in INSTRUCTION.findall(chunk)]
    return out


def loops(body: list[tuple[int, str]]) -> list[tuple[int, int, list[str]]]:
    """(first address, last address, instructions) of every backward branch's loop."""
    found = []
    for addr, ins in body:
        if "BRA" not in ins:
            continue
        target = TARGET.search(ins)
        if target and int(target.group(1), 16) <= addr:
            lo = int(target.group(1), 16)
            found.append((lo, addr, [i for a, i in body if lo <= a <= addr]))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("so", nargs="?", default=None, help="the extension (default fused_gumbel/_C*.so)")
    parser.add_argument("--arch", default="90", help="SASS of sm_<arch> (default 90)")
    parser.add_argument("--kernel", default="", help="only kernels whose name contains this")
    parser.add_argument("--opcodes", action="store_true", help="also the opcode counts of each loop")
    args = parser.parse_args(argv)
    so = args.so or next(iter(sorted(glob.glob(os.path.join(ROOT, "fused_gumbel", "_C*.so")))), None)
    if so is None:
        sys.exit("sass_loops: no built extension (run `make build` first)")
    sass = subprocess.run([cuobjdump(), "-sass", "-arch", f"sm_{args.arch}", so],
                          check=True, capture_output=True, text=True).stdout
    for name, body in functions(sass).items():
        if args.kernel not in name:
            continue
        print(f"{name}  ({len(body)} instructions)")
        for lo, hi, ins in loops(body):
            print(f"  loop {lo:#06x}..{hi:#06x}: {len(ins)} instructions")
            if args.opcodes:
                counts = collections.Counter(OPCODE.match(i).group(1) for i in ins)
                print("    " + ", ".join(f"{op} {n}" for op, n in counts.most_common()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
