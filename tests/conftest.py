"""One device fixture for the whole suite, and the rule for tests that need a compiler.

``pytest`` runs every device test on the CPU and, when CUDA answers, on the GPU too;
``pytest --device cuda`` (or cpu, cuda:N, auto) runs them on that device alone.
``pytest --cupy-double`` runs the suite as on a machine with two GPUs that are simulated by the
strict CuPy double in tests/cupy_double (devices cuda-sim:0 and cuda-sim:1): not a GPU result.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

import pytest

import gpunn

TESTS = Path(__file__).resolve().parent
CUPY_DOUBLE = TESTS / "cupy_double"
NVMATH_DOUBLE = TESTS / "nvmath_double"  # nvmath-python's cuBLAS bindings on the same devices


def pytest_addoption(parser):
    parser.addoption("--device", default="all",
                     help="all (cpu, plus cuda when present; default), cpu, cuda, cuda:N or auto")
    parser.addoption("--cupy-double", action="store_true",
                     help="import tests/cupy_double as cupy: CUDA on simulated devices "
                     "(cuda-sim:N), strict as CuPy, not a GPU")


def install_cupy_double() -> None:
    """Make ``import cupy`` (and ``import nvmath``) find the doubles, here and in subprocesses
    the tests start."""
    for name, double in (("cupy", CUPY_DOUBLE), ("nvmath", NVMATH_DOUBLE)):
        module = sys.modules.get(name)
        if module is not None and not str(getattr(module, "__file__", "")).startswith(
                str(double)):
            raise pytest.UsageError(f"--cupy-double: the real {name} is already imported")
    doubles = [str(CUPY_DOUBLE), str(NVMATH_DOUBLE)]
    sys.path[:0] = doubles
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [*doubles, *filter(None, [os.environ.get("PYTHONPATH")])])


def pytest_ignore_collect(collection_path, config):
    """The double's own tests, gpunn's under faults only the double can make, and the rehearsal
    of the GPU check run in the --cupy-double session, where ``cupy`` is the double. There the
    decision is left to pytest (None), so ``--ignore`` still ignores them."""
    if collection_path.name in ("test_cupy_double.py", "test_cupy_double_capture.py",
                                "test_nvmath_double.py", "test_simulated.py",
                                "test_gpu_rehearsal.py"):
        return None if config.getoption("--cupy-double") else True
    return None


def simulated() -> bool:
    """Whether ``cupy`` is the double (devices cuda-sim:N), not the real CuPy."""
    return hasattr(sys.modules.get("cupy"), "_sim")


def device_id(name: str) -> str:
    """A device's name in test ids and reports: cuda-sim:N on the double."""
    return name.replace("cuda:", "cuda-sim:") if simulated() else name


def _devices(config) -> list[str]:
    choice = config.getoption("--device")
    if choice != "all":
        try:
            return [gpunn.device(choice).device]
        except gpunn.GpunnError as error:  # one usage line, not pytest's INTERNALERROR trace
            raise pytest.UsageError(f"--device {choice}: {error} (without a GPU: pytest "
                                    f"--device cpu, or pytest --cupy-double for the CuPy "
                                    f"double's simulated devices)") from None
    devices = ["cpu"]
    try:
        devices.append(gpunn.device("cuda").device)
    except gpunn.DeviceUnavailableError:
        pass
    return devices


def pytest_configure(config):
    if config.getoption("--cupy-double"):
        install_cupy_double()
    config.gpunn_devices = _devices(config)


def pytest_report_header(config):
    names = ", ".join(map(device_id, config.gpunn_devices))
    if simulated():
        return (f"gpunn devices: {names} (CUDA simulated by the CuPy double in "
                f"{CUPY_DOUBLE}; not a GPU)")
    return f"gpunn devices: {names}"


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", metafunc.config.gpunn_devices, indirect=True,
                             ids=[device_id(name) for name in metafunc.config.gpunn_devices])


@pytest.fixture(autouse=True)
def _pinned_copies_are_waited_for():
    """On the double, a test fails if pinned host memory was freed while a copy from it could
    still run on a GPU (see tests/cupy_double/cupy/_sim.py)."""
    yield
    if simulated():
        hazards = sys.modules["cupy"]._sim.take_hazards()
        assert not hazards, "\n".join(hazards)


@pytest.fixture
def second_cuda_device():
    """A second CUDA device (cuda:1) for the multi-device tests; on the double, cuda-sim:1."""
    try:
        return gpunn.device("cuda:1")
    except gpunn.DeviceUnavailableError as error:
        pytest.skip(f"no second CUDA device ({error}); runs with pytest --cupy-double or on a "
                    f"machine with two GPUs")


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
        pytest.fail(f"{reason} (CI=true: what a test needs must be installed; it fails, not skips)")
    pytest.skip(reason)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """After a run that included a CUDA device, record it under benchmarks/results/: the only
    evidence that the CuPy half works, so every such run leaves a file to commit."""
    cuda = [name for name in config.gpunn_devices if name.startswith("cuda")]
    if not cuda:
        return
    if simulated():
        _report_simulated(terminalreporter)
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
    # benchmarks/gpu_check.py keeps it with the rest of its results (GPUNN_RESULTS_DIR); else
    # the machine's folder of benchmarks/results (benchmarks/index.py)
    folder = os.environ.get("GPUNN_RESULTS_DIR")
    if folder is None:
        sys.path.insert(0, str(TESTS.parent))
        from benchmarks import machine

        folder = TESTS.parent / "benchmarks" / "results" / machine.result_name(record["device"])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = record["date"].replace(":", "").replace("-", "")[:15]
    name = record["device"].replace(" ", "-")
    path = folder / f"pytest-{name}-{stamp}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    terminalreporter.write_line(f"gpunn: recorded this CUDA run in {path}")


def _report_simulated(terminalreporter) -> None:
    """The count of tests that ran on simulated devices, said as such; nothing is recorded
    under benchmarks/results, which holds real GPU results only."""
    counts = {key: sum(1 for report in terminalreporter.stats.get(key, [])
                       if "cuda-sim" in report.nodeid or "cuda-sim" in str(report.keywords))
              for key in ("passed", "failed", "skipped")}
    total = {key: len(terminalreporter.stats.get(key, [])) for key in ("passed", "failed")}
    terminalreporter.write_line(
        f"gpunn: CuPy double (simulated devices cuda-sim:0, cuda-sim:1; NOT a GPU): "
        f"{counts['passed']} device tests passed on cuda-sim, {counts['failed']} failed, "
        f"{counts['skipped']} skipped; the whole session, run with cupy = the double: "
        f"{total['passed']} passed, {total['failed']} failed")
