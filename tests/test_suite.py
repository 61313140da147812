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
