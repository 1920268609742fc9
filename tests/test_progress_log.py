"""scripts/pytest_progress_log.py, the plugin that keeps the GPU check's test
failures when its time limit stops pytest before the summary: it must write
each failure, setup error and collection error with its traceback, and only
those tests slower than its threshold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def test_failures_and_slow_tests_are_logged_as_they_happen(tmp_path: Path) -> None:
    (tmp_path / "test_demo.py").write_text(
        "import pytest\n"
        "import pytest_progress_log\n"
        "pytest_progress_log.SLOW_S = 0.2\n\n"
        "@pytest.fixture\n"
        "def broken():\n"
        "    raise RuntimeError('fixture broke')\n\n"
        "def test_passes():\n"
        "    pass\n\n"
        "def test_fails():\n"
        "    assert 1 + 1 == 3, 'arithmetic'\n\n"
        "def test_errors(broken):\n"
        "    pass\n\n"
        "def test_slow():\n"
        "    import time\n"
        "    time.sleep(0.4)\n")
    (tmp_path / "test_unimportable.py").write_text("import no_such_module_for_the_log\n")
    log = tmp_path / "progress.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SCRIPTS), os.environ.get("PYTHONPATH", "")]),
               FUSED_GUMBEL_PROGRESS_LOG=str(log))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", "-p", "pytest_progress_log", str(tmp_path)]
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    text = log.read_text()
    assert "FAILED test_demo.py::test_fails (call," in text and "arithmetic" in text
    assert "FAILED test_demo.py::test_errors (setup," in text and "fixture broke" in text
    assert "COLLECTION FAILED test_unimportable.py" in text and "no_such_module_for_the_log" in text
    slow = [line for line in text.splitlines() if line.startswith("slow")]
    assert len(slow) == 1 and slow[0].endswith("test_demo.py::test_slow")
    assert "test_passes" not in text
