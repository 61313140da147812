"""One device fixture for the whole suite, and the rule for tests that need a compiler.

``pytest`` runs every device test on the CPU and, when CUDA answers, on the GPU too;
``pytest --device cuda`` (or cpu, cuda:N, auto) runs them on that device alone.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

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


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """After a run that included a CUDA device, record it under benchmarks/results/: the only
    evidence that the CuPy half works, so every such run leaves a file to commit."""
    cuda = [name for name in config.gpunn_devices if name.startswith("cuda")]
    if not cuda:
        return
    import cupy

    backend = gpunn.device(cuda[0])
    properties = cupy.cuda.runtime.getDeviceProperties(backend.index)
    counts = {key: len(terminalreporter.stats.get(key, []))
              for key in ("passed", "failed", "skipped", "error", "xfailed")}
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": properties["name"].decode(), "devices_under_test": config.gpunn_devices,
        "cupy": cupy.__version__, "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cuda_driver": cupy.cuda.runtime.driverGetVersion(), "gpunn": gpunn.__version__,
        "numpy": __import__("numpy").__version__, "python": platform.python_version(),
        "exit_status": int(exitstatus), **counts,
        "failures": [report.nodeid for report in terminalreporter.stats.get("failed", [])],
    }
    folder = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = record["date"].replace(":", "").replace("-", "")[:15]
    name = record["device"].replace(" ", "-")
    path = folder / f"pytest-{name}-{stamp}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    terminalreporter.write_line(f"gpunn: recorded this CUDA run in {path}")
