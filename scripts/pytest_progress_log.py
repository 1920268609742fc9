"""A pytest plugin for runs that may be stopped at a time limit.

pytest prints its failures and durations at the end of the session, and a
run killed at its limit (scripts/gpu_check.sh gives each step one) prints
neither. This plugin appends to the file named by FUSED_GUMBEL_PROGRESS_LOG,
as each test ends: the full report of every failure or error (collection
errors too), and one line for every test that took longer than SLOW_S
seconds. Under pytest-xdist the reports reach the controller process, which
writes them.

Usage: PYTHONPATH=scripts FUSED_GUMBEL_PROGRESS_LOG=progress.log \
       python -m pytest -p pytest_progress_log ...
"""

from __future__ import annotations

import os

import pytest

SLOW_S = 10.0
_path: str | None = None


@pytest.hookimpl
def pytest_configure(config: pytest.Config) -> None:
    global _path
    # xdist workers send their reports on to the controller: only it writes.
    if not hasattr(config, "workerinput"):
        _path = os.environ.get("FUSED_GUMBEL_PROGRESS_LOG")


def _write(text: str) -> None:
    if _path:
        with open(_path, "a") as f:
            f.write(text)


@pytest.hookimpl
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        _write(f"FAILED {report.nodeid} ({report.when}, {report.duration:.1f} s)\n{report.longreprtext}\n\n")
    elif report.when == "call" and report.duration > SLOW_S:
        _write(f"slow {report.duration:6.1f} s {report.nodeid}\n")


@pytest.hookimpl
def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _write(f"COLLECTION FAILED {report.nodeid}\n{report.longreprtext}\n\n")
