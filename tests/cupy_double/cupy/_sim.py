"""The simulation behind the CuPy double: devices, memory, counters. Not part of CuPy's API.

Tests reach it as ``cupy._sim``: ``counters`` (device-to-host synchronisations and kernel
launches), ``reset_counters()``, ``set_capacity(device, bytes)``. Devices are named
``cuda-sim:N`` wherever the double names them, so a simulated pass is never taken for a GPU.
"""

from __future__ import annotations

import collections
import os
import weakref
from typing import Any

import numpy

GIB = 2**30
DEVICE_COUNT = int(os.environ.get("GPUNN_CUPY_DOUBLE_DEVICES", "2"))  # the simulated machine's
DEFAULT_CAPACITY = int(float(os.environ.get("GPUNN_CUPY_DOUBLE_MEMORY_GIB", "16")) * GIB)
NAME = "gpunn CuPy double (simulated device, not a GPU)"
VERSION = "14.2.0"  # the CuPy release whose API the double copies (cupy_api.json)

# The CUDA version the simulated driver supports; 0 simulates a machine with no NVIDIA driver
# (CUDA then reports cudaErrorInsufficientDriver and a driver version of 0).
driver_version = 12080
# The simulated GPUs' compute capability, as CuPy's Device.compute_capability writes it (major
# and minor digits: "90" for an H100 or H200); "52" simulates a Maxwell GPU.
compute_capability = "90"
# cuBLAS allocates its workspace outside CuPy's pool; with less free memory than this a matrix
# product fails with CUBLASError CUBLAS_STATUS_ALLOC_FAILED, as it does on a full GPU.
CUBLAS_WORKSPACE = 4 * 2**20

# "sync": every device-to-host synchronisation; "launch": every kernel launch (CuPy's own
# operations count one each, RawKernel launches too, also under "raw_launch"); "h2d": copies
# from the host; "d2h": asynchronous copies to the host (MemoryPointer.copy_to_host_async, no
# synchronisation); "get_function": RawModule.get_function calls; "module_load": modules loaded.
counters: collections.Counter = collections.Counter()
sync_reasons: collections.Counter = collections.Counter()


def reset_counters() -> None:
    counters.clear()
    sync_reasons.clear()


def capturing(stream: Any = None) -> bool:
    """Whether ``stream`` (default: the current one) is capturing: CuPy asks
    runtime.streamIsCapturing(stream_ptr) before each call it refuses in a capture."""
    if stream is None:
        stream = current_stream()  # None: the legacy default stream, which never captures
    return capture is not None and capture.stream is stream


def library_call(library: str, what: str) -> None:
    """A call into a CUDA library's host API. cuBLAS, cuRAND, cuSOLVER and cuSPARSE each set the
    current stream first (their setStream: cupy_backends/cuda/libs/cublas.pyx:642,
    curand.pyx:140, cusolver.pyx:1495, cusparse.pyx:1331 in CuPy 14.2.0), and that refuses a
    capturing stream. The double exposes only cuBLAS (cupy._linalg)."""
    if capturing():
        raise NotImplementedError(f"calling {library} API during stream capture is currently "
                                  f"unsupported [CuPy double: {what} inside a simulated CUDA "
                                  f"graph capture]")


def sync(reason: str) -> None:
    if capture is not None:  # CuPy's check before every device-to-host copy
        raise RuntimeError("the current stream is capturing, so D2H transfers are disallowed "
                           f"[CuPy double: {reason} inside a simulated CUDA graph capture]")
    counters["sync"] += 1
    sync_reasons[reason] += 1


def host_to_device() -> None:
    if capture is not None:
        raise RuntimeError("the current stream is capturing, so H2D transfers are disallowed "
                           "[CuPy double: inside a simulated CUDA graph capture]")
    counters["h2d"] += 1


def launch(raw: bool = False, replay: Any = None) -> None:
    """Count a kernel launch. ``replay``: a function that does the launch's work again, into
    the same buffers, for a CUDA graph captured around it (every launch site passes one)."""
    if capture is not None:
        capture.record(replay)
        return  # captured work is not counted: the graph's launch is
    counters["launch"] += 1
    if raw:
        counters["raw_launch"] += 1


# ---- CUDA graphs ------------------------------------------------------------------------------
# On a GPU, work issued to a capturing stream is recorded, not run, and the graph then replays it
# into the same memory. The double runs each operation at once (it needs the shapes) and records
# how to redo it; at the end of the capture every buffer that existed before gets its contents
# back and every buffer made during the capture is filled with garbage, so the capture itself
# changes nothing, as on a GPU. Stricter than CuPy on one hazard: allocating from the default
# memory pool during a capture is refused, because that memory goes back to the pool when the
# array is freed and is then handed to other arrays while the graph still writes to it (a
# capture must allocate from a pool of its own: cupy.cuda.using_allocator(MemoryPool().malloc)).

capture: Any = None  # the Capture in progress
stream_stack: list = []  # the current stream (None: the legacy default stream)
allocator_stack: list = []  # allocators set by cupy.cuda.using_allocator
default_allocator: object = None  # cupy.cuda.set_allocator's; memory is tracked per device anyway
_buffers: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # live device buffers
generators: weakref.WeakSet = weakref.WeakSet()  # every cupy.random.Generator


def current_stream() -> Any:
    return stream_stack[-1] if stream_stack else None


class Capture:
    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.operations: list = []
        self.made: list = []
        self._saved = [(buffer, buffer.copy()) for buffer in list(_buffers.values())]
        self._states = [(g, g._numpy.bit_generator.state) for g in list(generators)]

    def record(self, replay: Any) -> None:
        if current_stream() is not self.stream:
            raise RuntimeError("cudaErrorStreamCaptureImplicit: operation not permitted when "
                               "stream is capturing [CuPy double: work issued to another stream "
                               "than the capturing one]")
        if replay is None:
            raise NotImplementedError("the CuPy double cannot replay this operation in a "
                                      "simulated CUDA graph")
        self.operations.append(replay)

    def allocated(self, array: numpy.ndarray) -> None:
        allocator = allocator_stack[-1] if allocator_stack else None
        if type(getattr(allocator, "__self__", None)).__name__ != "MemoryPool":
            raise RuntimeError(
                f"[CuPy double] {array.nbytes} bytes allocated from the default memory pool "
                f"during a CUDA graph capture: freed later, that memory would be reused while "
                f"the graph still writes to it. Capture under "
                f"cupy.cuda.using_allocator(MemoryPool().malloc).")
        self.made.append(array)

    def finish(self) -> list:
        for buffer, saved in self._saved:
            numpy.copyto(buffer, saved)
        for generator, state in self._states:
            generator._numpy.bit_generator.state = state
        for buffer in self.made:  # not computed yet on a GPU
            if buffer.dtype.kind == "f":
                buffer.fill(numpy.nan)
            elif buffer.dtype.kind in "iub":
                buffer.reshape(-1).view(numpy.uint8).fill(0xA5)
        return self.operations


# ---- copies from pinned host memory -------------------------------------------------------------
# On a GPU a copy from page-locked (pinned) host memory is asynchronous: the GPU reads the host
# buffer until the copy is done, and pinned memory freed before then goes back to CuPy's pool
# (whose next user writes it while the copy still reads it). The host knows a copy is done only
# once it waited for it: a synchronize of its stream or device, of an event recorded on its
# stream after it, or a device-to-host copy on its stream. The double runs each copy at once but
# keeps it in flight until such a wait; pinned memory freed with a copy in flight is a hazard,
# kept in ``hazards``: tests/conftest.py fails the test that left one. Stricter than CUDA: a
# wait on another stream that waited for the copy's stream (Stream.wait_event) does not count.

hazards: list[str] = []


class Copy:
    """A copy from pinned memory on ``stream`` (None: the legacy default stream)."""

    def __init__(self, stream: Any, device: int) -> None:
        self.stream, self.device, self.done = stream, device, False


in_flight: list[Copy] = []


def pinned_owner(array: numpy.ndarray) -> Any:
    """The pinned memory (cupy.cuda.alloc_pinned_memory) under a host array, or None."""
    owner: Any = array
    while owner is not None and not hasattr(owner, "_copies"):
        owner = owner.obj if isinstance(owner, memoryview) else getattr(owner, "base", None)
    return owner


def copied_from_pinned(memory: Any, stream: Any) -> None:
    """A copy from ``memory`` issued on ``stream``: in flight until the host waits for it."""
    copy = Copy(stream, current())
    in_flight.append(copy)
    memory._copies[:] = [*(earlier for earlier in memory._copies if not earlier.done), copy]


def waited(copies: list[Copy]) -> None:
    """The host waited for ``copies``: their pinned memory may be reused or freed."""
    for copy in copies:
        copy.done = True
    in_flight[:] = [copy for copy in in_flight if not copy.done]


def pinned_freed(copies: list[Copy], nbytes: int) -> None:
    """Called when pinned memory is freed, with the copies ever issued from it."""
    pending = [copy for copy in copies if not copy.done]
    if pending:
        streams = ", ".join(sorted({"the default stream" if copy.stream is None
                                    else f"stream {copy.stream.ptr:#x}" for copy in pending}))
        copies = "a copy" if len(pending) == 1 else f"{len(pending)} copies"
        hazards.append(f"{nbytes} bytes of pinned host memory were freed while {copies} from "
                       f"them could still be running ({streams}): wait for them first (the "
                       f"stream's or an event's synchronize)")


def take_hazards() -> list[str]:
    """The hazards recorded since the last call, and forget them."""
    taken = hazards[:]
    hazards.clear()
    return taken


def visible_devices(value: str | None, count: int) -> list[int]:
    """The machine's GPUs a process sees, in order, as CUDA_VISIBLE_DEVICES picks them: a comma
    list of indices, read up to the first that names no GPU (or one already named)."""
    if value is None:
        return list(range(count))
    seen: list[int] = []
    for item in value.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) >= count or int(item) in seen:
            break
        seen.append(int(item))
    return seen


# A launcher may show each process GPUs of its own (Slurm's srun --gpus-per-task=1 sets
# CUDA_VISIBLE_DEVICES per rank): then device 0 of one process and device 0 of another are
# different GPUs (``physical``, which NCCL's duplicate check compares). The double reads its own
# variable, GPUNN_CUPY_DOUBLE_VISIBLE_DEVICES: the real CUDA_VISIBLE_DEVICES names real GPUs.
VISIBLE = visible_devices(os.environ.get("GPUNN_CUPY_DOUBLE_VISIBLE_DEVICES"), DEVICE_COUNT)


class Device:
    def __init__(self, index: int, physical: int) -> None:
        self.index, self.physical = index, physical
        self.capacity = DEFAULT_CAPACITY
        self.allocated = 0

    @property
    def label(self) -> str:
        return f"cuda-sim:{self.index}"


devices = [Device(i, physical) for i, physical in enumerate(VISIBLE)]
# The arrays whose ``.data.ptr`` was taken, by address: how the double's NCCL, handed bare
# pointers as the real one is, finds the memory (and device) behind them.
pointers: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
# Live streams by ``Stream.ptr``: how a library handed a bare stream pointer (the nvmath double's
# cublas.set_stream) finds the stream.
streams: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
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
    _buffers[id(array)] = array
    if capture is not None:
        capture.allocated(array)


def _release(device: int, nbytes: int) -> None:
    devices[device].allocated -= nbytes


def cublas_workspace() -> None:
    """Raise CUBLASError(CUBLAS_STATUS_ALLOC_FAILED) when the workspace does not fit."""
    from cupy_backends.cuda.libs.cublas import CUBLASError

    state = devices[current()]
    if state.capacity - state.allocated < CUBLAS_WORKSPACE:
        raise CUBLASError(3)
