"""``cupy.cuda.runtime`` of the double: what the CUDA runtime answers about simulated devices."""

from typing import Any as _Any

from cupy import _core, _sim

# What a real CUDA 12.8 runtime and driver would report; the device name says "simulated".
_VERSION = 12080


class CUDARuntimeError(RuntimeError):
    """CuPy's error for a failed CUDA runtime call; ``status`` is the cudaError_t."""

    _NAMES = {35: "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA "
                  "runtime version", 100: "cudaErrorNoDevice: no CUDA-capable device is detected",
              101: "cudaErrorInvalidDevice: invalid device ordinal",
              2: "cudaErrorMemoryAllocation: out of memory",
              900: "cudaErrorStreamCaptureUnsupported: operation not permitted when stream is "
                   "capturing",
              901: "cudaErrorStreamCaptureInvalidated: operation failed due to a previous error "
                   "during capture"}

    def __init__(self, status: int) -> None:
        self.status = status
        name = self._NAMES.get(status, f"cudaError{status}")
        super().__init__(f"{name} [CuPy double: simulated]")

    def __reduce__(self) -> _Any:
        return (type(self), (self.status,))


def _driver() -> None:
    if not _sim.driver_version:
        raise CUDARuntimeError(35)


def getDeviceCount() -> int:
    _driver()
    return len(_sim.devices)


def getDevice() -> int:
    return _sim.current()


def setDevice(device: int) -> None:
    if not 0 <= device < len(_sim.devices):
        raise CUDARuntimeError(101)
    _sim.set_current(device)


def deviceSynchronize() -> None:
    if _sim.capture is not None:
        raise CUDARuntimeError(900)
    _sim.sync("deviceSynchronize")


def memGetInfo() -> tuple[int, int]:
    _driver()
    state = _sim.devices[_sim.current()]
    return state.capacity - state.allocated, state.capacity


def getDeviceProperties(device: int) -> dict[str, _Any]:
    if not 0 <= device < len(_sim.devices):
        raise CUDARuntimeError(101)
    return {"name": _sim.NAME.encode(), "totalGlobalMem": _sim.devices[device].capacity,
            "multiProcessorCount": 132, "major": int(_sim.compute_capability[:-1]),
            "minor": int(_sim.compute_capability[-1]),
            "pciBusID": _sim.devices[device].physical}


def profilerStart() -> None:
    """cudaProfilerStart: a profiler attached to the process (ncu --profile-from-start off)
    starts collecting here; the double has none."""
    _driver()


def profilerStop() -> None:
    _driver()


def runtimeGetVersion() -> int:
    return _VERSION


def driverGetVersion() -> int:
    return _sim.driver_version


_core.verify_namespace("cupy.cuda.runtime", globals())
