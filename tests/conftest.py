"""One device fixture for the whole suite, and the rule for tests that need a compiler.

``pytest`` runs every device test on the CPU and, when CUDA answers, on the GPU too;
``pytest --device cuda`` (or cpu, cuda:N, auto) runs them on that device alone.
"""

from __future__ import annotations

import os

import pytest

import gpunn


def pytest_addoption(parser):
    parser.addoption("--device", default="all",
                     help="all (cpu, plus cuda when present; default), cpu, cuda, cuda:N or auto")


def _devices(config) -> list[str]:
    choice = config.getoption("--device")
    if choice != "all":
        return [gpunn.device(choice).device]  # an unavailable CUDA request fails loudly
    devices = ["cpu"]
    try:
        devices.append(gpunn.device("cuda").device)
    except gpunn.DeviceUnavailableError:
        pass
    return devices


def pytest_configure(config):
    config.gpunn_devices = _devices(config)


def pytest_report_header(config):
    return f"gpunn devices: {', '.join(config.gpunn_devices)}"


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", metafunc.config.gpunn_devices, indirect=True)


@pytest.fixture
def backend(request):
    """The backend of each device under test, freshly seeded."""
    gpunn.seed(1234)
    return gpunn.device(request.param)


def require(available: bool, reason: str) -> None:
    """Skip when ``reason`` holds, except under CI=true, where a missing tool fails the run."""
    if available:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: kernel checks must run, not skip)")
    pytest.skip(reason)
