"""Run: python -m benchmarks.gpu_check --stage truth (which loads this as ``pytest -p
benchmarks.gpu_pytest``)

A pytest plugin for a test run that may be cut short: every test's outcome goes to a JSON-lines
file the moment it ends, so a run killed at its time limit still says what passed. Set by
environment variables (unset, it does nothing):

- ``GPUNN_CHECK_REPORT``: the JSON-lines file (nodeid, outcome, seconds, and for a failure its
  last lines and, when the failure is a warning that ``filterwarnings = error`` turned into an
  error, the warning's class: the warnings a machine's versions raise);
- ``GPUNN_CHECK_DEADLINE``: a Unix time after which no further test starts (the session stops
  as after ``-x``, writing its summary);
- ``GPUNN_CHECK_DEVICE_ONLY=1``: keep only the device tests, those that take the ``backend`` or
  ``second_cuda_device`` fixture or whose code asks for a CUDA device (the rest run the same on
  every machine: the CPU sessions have them);
- ``GPUNN_CHECK_FIRST``: test files, comma-separated, whose tests run first, in that order (a
  run cut short by its deadline has run those);
- ``GPUNN_CHECK_NO_POOL=1``: allocate every CuPy array with its own cudaMalloc instead of from
  CuPy's memory pool, so that compute-sanitizer's memcheck sees each array's own bounds (inside
  a pooled block an overrun lands in a neighbour, unseen).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import time
from typing import Any

import pytest

DEVICE_FIXTURES = ("backend", "second_cuda_device")
# A test that asks for a CUDA device in its own code: gpunn.device("cuda:1"), --device cuda...
CUDA_CODE = re.compile(r"""device\(["']cuda|device=["']cuda|--device["'],\s*["']cuda"""
                       r"|--device cuda|cuda_available\(\)|_cuda_only\(")


def _report_path() -> str | None:
    return os.environ.get("GPUNN_CHECK_REPORT")


def pytest_configure(config: Any) -> None:
    if os.environ.get("GPUNN_CHECK_NO_POOL") == "1":
        import cupy

        cupy.cuda.set_allocator(None)


def pytest_collection_modifyitems(config: Any, items: list) -> None:
    if os.environ.get("GPUNN_CHECK_DEVICE_ONLY") == "1":
        keep = [item for item in items if _on_a_device(item)]
        dropped = [item for item in items if item not in keep]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep
    path = _report_path()
    if path is not None:
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps({"outcome": "collected", "count": len(items)}) + "\n")
    first = [name for name in os.environ.get("GPUNN_CHECK_FIRST", "").split(",") if name]
    if first:
        def rank(item: Any) -> int:
            path = item.nodeid.split("::")[0]
            return first.index(path) if path in first else len(first)

        items.sort(key=rank)  # stable: each file keeps its own order


def _on_a_device(item: Any) -> bool:
    if any(name in getattr(item, "fixturenames", ()) for name in DEVICE_FIXTURES):
        return True
    try:
        return CUDA_CODE.search(inspect.getsource(item.obj)) is not None
    except (AttributeError, OSError, TypeError):
        return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and issubclass(call.excinfo.type, Warning):
        report.gpunn_warning = f"{call.excinfo.type.__name__}: {call.excinfo.value}"[:500]


def pytest_runtest_logreport(report: Any) -> None:
    path = _report_path()
    if path is None:
        return
    failed_setup = report.when == "setup" and not report.passed
    if report.when == "call" or failed_setup or (report.when == "teardown" and report.failed):
        entry: dict[str, Any] = {"nodeid": report.nodeid, "when": report.when,
                                 "outcome": report.outcome,
                                 "seconds": round(report.duration, 3)}
        if report.skipped and isinstance(report.longrepr, tuple):
            entry["reason"] = str(report.longrepr[2])[:300]
        elif report.failed:
            entry["failure"] = str(report.longrepr)[-1500:]
        if getattr(report, "gpunn_warning", None):
            entry["warning"] = report.gpunn_warning
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps(entry) + "\n")


def pytest_warning_recorded(warning_message: Any, when: str, nodeid: str,
                            location: Any) -> None:
    """Warnings shown rather than raised (those a filter lets through) go to the file too."""
    path = _report_path()
    if path is None:
        return
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps({"nodeid": nodeid, "when": when, "outcome": "warning",
                               "warning": f"{warning_message.category.__name__}: "
                                          f"{warning_message.message}"[:500]}) + "\n")


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    deadline = os.environ.get("GPUNN_CHECK_DEADLINE")
    if deadline and time.time() > float(deadline):
        session = _session.get("session")
        if session is not None:
            session.shouldstop = "gpu_check: the time budget for the tests is spent"


_session: dict[str, Any] = {}


def pytest_sessionstart(session: Any) -> None:
    _session["session"] = session
