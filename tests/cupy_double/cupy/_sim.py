"""The simulation behind the CuPy double: devices, memory, counters. Not part of CuPy's API.

Tests reach it as ``cupy._sim``: ``counters`` (device-to-host synchronisations and kernel
launches), ``reset_counters()``, ``set_capacity(device, bytes)``. Devices are named
``cuda-sim:N`` wherever the double names them, so a simulated pass is never taken for a GPU.
"""

from __future__ import annotations

import collections
import os
import weakref

import numpy

GIB = 2**30
DEVICE_COUNT = int(os.environ.get("GPUNN_CUPY_DOUBLE_DEVICES", "2"))
DEFAULT_CAPACITY = int(float(os.environ.get("GPUNN_CUPY_DOUBLE_MEMORY_GIB", "16")) * GIB)
NAME = "gpunn CuPy double (simulated device, not a GPU)"
VERSION = "14.2.0"  # the CuPy release whose API the double copies (cupy_api.json)

# The CUDA version the simulated driver supports; 0 simulates a machine with no NVIDIA driver
# (CUDA then reports cudaErrorInsufficientDriver and a driver version of 0).
driver_version = 12080
# cuBLAS allocates its workspace outside CuPy's pool; with less free memory than this a matrix
# product fails with CUBLASError CUBLAS_STATUS_ALLOC_FAILED, as it does on a full GPU.
CUBLAS_WORKSPACE = 4 * 2**20

# "sync": every device-to-host synchronisation; "launch": every kernel launch (CuPy's own
# operations count one each, RawKernel launches too, also under "raw_launch"); "h2d": copies
# from the host; "get_function": RawModule.get_function calls; "module_load": modules loaded.
counters: collections.Counter = collections.Counter()
sync_reasons: collections.Counter = collections.Counter()


def reset_counters() -> None:
    counters.clear()
    sync_reasons.clear()


def sync(reason: str) -> None:
    counters["sync"] += 1
    sync_reasons[reason] += 1


def launch(raw: bool = False) -> None:
    counters["launch"] += 1
    if raw:
        counters["raw_launch"] += 1


class Device:
    def __init__(self, index: int) -> None:
        self.index = index
        self.capacity = DEFAULT_CAPACITY
        self.allocated = 0

    @property
    def label(self) -> str:
        return f"cuda-sim:{self.index}"


devices = [Device(i) for i in range(DEVICE_COUNT)]
# The arrays whose ``.data.ptr`` was taken, by address: how the double's NCCL, handed bare
# pointers as the real one is, finds the memory (and device) behind them.
pointers: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_current = [0]  # the current device (CUDA keeps one per thread; the double keeps one)


def current() -> int:
    return _current[0]


def set_current(index: int) -> None:
    _current[0] = index


def set_capacity(index: int, nbytes: int) -> None:
    """Give simulated device ``index`` a memory capacity of ``nbytes`` (default 16 GiB)."""
    devices[index].capacity = int(nbytes)


def allocate(array: numpy.ndarray, device: int) -> None:
    """Account for a new device buffer; raise CuPy's OutOfMemoryError past the capacity."""
    from cupy.cuda.memory import OutOfMemoryError

    state = devices[device]
    nbytes = max(int(array.nbytes), 0)
    if state.allocated + nbytes > state.capacity:
        raise OutOfMemoryError(nbytes, state.allocated)
    state.allocated += nbytes
    weakref.finalize(array, _release, device, nbytes)


def _release(device: int, nbytes: int) -> None:
    devices[device].allocated -= nbytes


def cublas_workspace() -> None:
    """Raise CUBLASError(CUBLAS_STATUS_ALLOC_FAILED) when the workspace does not fit."""
    from cupy_backends.cuda.libs.cublas import CUBLASError

    state = devices[current()]
    if state.capacity - state.allocated < CUBLAS_WORKSPACE:
        raise CUBLASError(3)
