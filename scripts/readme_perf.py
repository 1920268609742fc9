"""Regenerates the README's performance section from the committed benchmark
JSON (bench/results/), between the markers <!-- perf:begin --> and
<!-- perf:end -->.

    python scripts/readme_perf.py
"""

import contextlib
import io
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fused_gumbel import bench  # noqa: E402

RESULTS = [
    ("CPU: 2 cores (AMD EPYC), the issue's CPU shapes", "bench/results/cpu_epyc_2threads"),
    ("GPU: NVIDIA H200 (lent machine), the issue's CUDA shapes", "bench/results/cuda_h200_issue_shapes"),
]


def section() -> str:
    parts = []
    for title, stem in RESULTS:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            bench.main(["--markdown", stem + ".json"])
        parts.append(f"### {title}\n\n`{stem}.json` (its run, commit and command in the table's header).\n\n"
                     f"{out.getvalue().strip()}\n\n"
                     f"![speed-up]({stem}_speedup.png)\n![fraction of the limit]({stem}_limit.png)\n")
    return "\n".join(parts)


def main() -> int:
    path = "README.md"
    text = open(path).read()
    new, n = re.subn(r"(<!-- perf:begin -->\n).*?(<!-- perf:end -->)",
                     lambda m: m.group(1) + section() + m.group(2), text, flags=re.S)
    if n != 1:
        print("README.md has no <!-- perf:begin --> ... <!-- perf:end --> section", file=sys.stderr)
        return 1
    open(path, "w").write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
