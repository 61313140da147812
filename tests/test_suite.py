"""The test suite's own options (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cuda_available

TESTS = Path(__file__).resolve().parent


def test_pytest_device_cuda_without_a_gpu_is_a_usage_error():
    if cuda_available() and "cupy_double" not in str(sys.modules["cupy"].__file__):
        pytest.skip("CUDA answers here: pytest --device cuda is a valid request")
    # Once a 40-line INTERNALERROR; now pytest's usage error (exit status 4) with the fix.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--device", "cuda", "--collect-only", "-q",
         "-p", "no:cacheprovider", str(TESTS / "test_suite.py")],
        capture_output=True, text=True, timeout=120, cwd=TESTS.parent, env=env)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "INTERNALERROR" not in result.stdout + result.stderr
    assert "--device cuda: CUDA is not available" in result.stderr
    assert "pytest --cupy-double" in result.stderr


def test_the_double_session_leaves_ignore_to_pytest():
    # The hook answered False ("collect it") for the double-only files under --cupy-double, which
    # overrode --ignore: the rehearsal then ran (746 MB into .rehearsal/) for a developer who
    # had ignored it. It answers True outside that session and None ("not ours to say") in it.
    import conftest

    class Config:
        def __init__(self, double):
            self.double = double

        def getoption(self, name):
            assert name == "--cupy-double"
            return self.double

    rehearsal, other = Path("tests/test_gpu_rehearsal.py"), Path("tests/test_model.py")
    assert conftest.pytest_ignore_collect(rehearsal, Config(True)) is None
    assert conftest.pytest_ignore_collect(rehearsal, Config(False)) is True
    assert conftest.pytest_ignore_collect(other, Config(True)) is None


def test_no_twin_comparison_runs_on_the_cpu():
    # On the CPU a kernel's "twin" is the op itself: those comparisons passed with a 1% error
    # planted in a twin. They run where there is a kernel (CUDA, the double), not on the CPU.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONPATH"] = str(TESTS.parent)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--device", "cpu", "-q", "-p", "no:cacheprovider",
         str(TESTS / "test_backend.py"), "-k", "match_the_twin or matches_the_twin"],
        capture_output=True, text=True, timeout=300, cwd=TESTS.parent, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert " passed" not in result.stdout.splitlines()[-1], result.stdout[-500:]
    assert "skipped" in result.stdout.splitlines()[-1]
