"""Fails when ptxas reports register spills or local-memory stack frames for any
kernel in a build log made with FUSED_GUMBEL_PTXAS_VERBOSE=1 (nvcc -Xptxas -v).

    python scripts/check_ptxas.py build/build.log
"""

import re
import sys


def main(path: str) -> int:
    text = open(path, errors="replace").read()
    current = None
    kernels, bad = 0, []
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+)'", line)
        if m:
            current = f"{m.group(1)} ({m.group(2)})"
            kernels += 1
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and current is not None:
            frame, stores, loads = map(int, m.groups())
            if frame or stores or loads:
                bad.append(f"{current}: {frame} B stack frame, {stores} B spill stores, {loads} B spill loads")
            current = None
    if kernels == 0:
        print(f"check_ptxas: no ptxas report in {path} (was the build made with FUSED_GUMBEL_PTXAS_VERBOSE=1 and nvcc?)")
        return 1
    for b in bad:
        print("check_ptxas: " + b)
    print(f"check_ptxas: {kernels} kernel compilations, {len(bad)} with spills or local memory")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
