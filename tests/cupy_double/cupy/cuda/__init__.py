"""``cupy.cuda`` of the double: simulated devices (``cuda-sim:N``), a current-device stack."""

from __future__ import annotations

import ctypes as _ctypes
import time as _time
import weakref as _weakref
from typing import Any as _Any

import numpy as _numpy

from cupy import _core, _sim
from cupy.cuda import compiler, memory, runtime  # noqa: F401


class Device:
    """A simulated CUDA device. As a context manager it is current until the block ends (the
    previous one comes back); ``use()`` makes it current for good."""

    def __init__(self, device: _Any = None) -> None:
        index = _sim.current() if device is None else int(device)
        if not 0 <= index < len(_sim.devices):
            raise runtime.CUDARuntimeError(101)  # cudaErrorInvalidDevice
        self.id = index
        self._previous: list[int] = []

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id} (simulated: cuda-sim:{self.id})>"

    def __int__(self) -> int:
        return self.id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __enter__(self) -> Device:
        self._previous.append(_sim.current())
        _sim.set_current(self.id)
        return self

    def __exit__(self, *exc: _Any) -> None:
        _sim.set_current(self._previous.pop())

    def use(self) -> None:
        _sim.set_current(self.id)

    def synchronize(self) -> None:
        _synchronize("Device.synchronize")
        _sim.waited([copy for copy in _sim.in_flight if copy.device == self.id])

    @property
    def attributes(self) -> dict[str, int]:
        return {"MultiProcessorCount": 132, "MaxThreadsPerBlock": 1024, "WarpSize": 32}

    @property
    def compute_capability(self) -> str:
        return _sim.compute_capability

    @property
    def mem_info(self) -> tuple[int, int]:
        state = _sim.devices[self.id]
        return state.capacity - state.allocated, state.capacity


class MemoryPointer:
    """Where a device array's memory starts (``array.data``): ``ptr`` (the address of the
    simulated memory, which CuPy hands to libraries such as NCCL) and ``device_id``."""

    @classmethod
    def _of(cls, array: _Any) -> MemoryPointer:
        self = object.__new__(cls)
        self._array = array
        _sim.pointers[self.ptr] = array
        return self

    @property
    def ptr(self) -> int:
        return int(self._array._a.ctypes.data)

    @property
    def device_id(self) -> int:
        return self._array._device

    def _bytes(self, size: int) -> _numpy.ndarray:
        """The ``size`` bytes of simulated memory from ``ptr``, within the array's buffer."""
        buffer = self._array._a
        while isinstance(buffer.base, _numpy.ndarray):
            buffer = buffer.base
        start = self.ptr - buffer.ctypes.data
        flat = buffer.ravel(order="K").view(_numpy.uint8)
        if not 0 <= size <= flat.size - start:
            raise ValueError(f"copy of {size} bytes past the end of a buffer [CuPy double]")
        return flat[start:start + size]

    def _refuse_synchronous(self, what: str) -> None:
        # CuPy 14.2.0 cupy/cuda/memory.pyx:543 (copy_from_device), :590 (copy_from_host),
        # :688 (copy_to_host), :742 (memset): the calls on the legacy default stream.
        if _sim.capturing():
            raise RuntimeError(f"the current stream is capturing, so synchronous API calls are "
                               f"disallowed [CuPy double: MemoryPointer.{what} inside a "
                               f"simulated CUDA graph capture]")

    def copy_from_device(self, src: MemoryPointer, size: int) -> None:
        """Copy ``size`` bytes from ``src`` (synchronous: refused while capturing)."""
        self._refuse_synchronous("copy_from_device")
        self.copy_from_device_async(src, size)

    def copy_from_device_async(self, src: MemoryPointer, size: int, stream: _Any = None) -> None:
        """Copy ``size`` bytes from ``src`` (a device-to-device copy: one launch)."""
        if src.device_id != self.device_id:
            raise NotImplementedError("the CuPy double copies within one device only")
        target, source = self._bytes(size), src._bytes(size)

        def copy() -> None:
            target[...] = source

        copy()
        _sim.launch(replay=copy)

    def copy_from_host(self, mem: _Any, size: int) -> None:
        """Copy ``size`` bytes from host address ``mem`` (synchronous: refused while
        capturing)."""
        self._refuse_synchronous("copy_from_host")
        self._bytes(size)[...] = _host_bytes(mem, size)
        _sim.counters["h2d"] += 1

    def copy_from_host_async(self, mem: _Any, size: int, stream: _Any = None) -> None:
        """Copy ``size`` bytes from pinned host memory at ``mem`` on ``stream``."""
        if _sim.capturing(stream):  # memory.pyx:617
            raise RuntimeError("the current stream is capturing, so H2D transfers are "
                               "disallowed [CuPy double: MemoryPointer.copy_from_host_async "
                               "inside a simulated CUDA graph capture]")
        self._bytes(size)[...] = _host_bytes(mem, size)
        _sim.counters["h2d"] += 1

    def copy_from(self, mem: _Any, size: int) -> None:
        """copy_from_device for a MemoryPointer, else copy_from_host (both synchronous)."""
        if isinstance(mem, MemoryPointer):
            self.copy_from_device(mem, size)
        else:
            self.copy_from_host(mem, size)

    def copy_from_async(self, mem: _Any, size: int, stream: _Any = None) -> None:
        """copy_from_device_async for a MemoryPointer, else copy_from_host_async."""
        if isinstance(mem, MemoryPointer):
            self.copy_from_device_async(mem, size, stream)
        else:
            self.copy_from_host_async(mem, size, stream)

    def copy_to_host(self, mem: _Any, size: int) -> None:
        """Copy ``size`` bytes to host address ``mem`` (synchronous: one synchronisation,
        refused while capturing)."""
        self._refuse_synchronous("copy_to_host")
        _sim.sync("MemoryPointer.copy_to_host")
        _host_bytes(mem, size)[...] = self._bytes(size)

    def copy_to_host_async(self, mem: _Any, size: int, stream: _Any = None) -> None:
        """Copy ``size`` bytes to pinned host memory at ``mem`` on ``stream`` (no
        synchronisation; counted under "d2h")."""
        if _sim.capturing(stream):  # memory.pyx:715
            raise RuntimeError("the current stream is capturing, so D2H transfers are "
                               "disallowed [CuPy double: MemoryPointer.copy_to_host_async "
                               "inside a simulated CUDA graph capture]")
        _host_bytes(mem, size)[...] = self._bytes(size)
        _sim.counters["d2h"] += 1

    def memset(self, value: int, size: int) -> None:
        """Set ``size`` bytes to ``value`` (synchronous: refused while capturing)."""
        self._refuse_synchronous("memset")
        self.memset_async(value, size)

    def memset_async(self, value: int, size: int, stream: _Any = None) -> None:
        """Set ``size`` bytes to ``value`` on ``stream`` (one launch)."""
        target = self._bytes(size)

        def fill() -> None:
            target.fill(value & 0xFF)

        fill()
        _sim.launch(replay=fill)


def _host_bytes(mem: _Any, size: int) -> _numpy.ndarray:
    """``size`` bytes of host memory at ``mem`` (an int or a ctypes.c_void_p), as CuPy takes
    a host address."""
    if size == 0:
        return _numpy.empty(0, _numpy.uint8)
    address = mem if isinstance(mem, int) else mem.value
    return _numpy.ctypeslib.as_array((_ctypes.c_uint8 * size).from_address(address))


class Event:
    """A point in a stream's work; the double runs work at once, so every event is done. What
    it keeps is which copies from pinned memory its synchronize waits for (see cupy._sim), and
    its time is the host clock's when it was recorded (``get_elapsed_time``: no GPU time)."""

    def __init__(self, block: bool = False, disable_timing: bool = False,
                 interprocess: bool = False) -> None:
        self.done = True
        self._copies: list = []
        self._time: float | None = None

    def record(self, stream: _Any = None) -> None:
        stream = stream or get_current_stream()
        if _sim.capture is not None and stream is _sim.capture.stream:
            raise NotImplementedError("the CuPy double does not model events inside a capture")
        self._copies = [copy for copy in _sim.in_flight if copy.stream is stream._key()]
        self._time = _time.perf_counter()

    def synchronize(self) -> None:
        _synchronize("Event.synchronize")
        _sim.waited(self._copies)


class Stream:
    """A CUDA stream. The double runs work as it is issued, so streams order nothing; what it
    models is which stream is current and capture into a CUDA graph (see cupy._sim)."""

    null: Stream

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False,
                 priority: _Any = None) -> None:
        self._null, self.is_non_blocking = null, non_blocking
        self.ptr = 0 if null else id(self)
        self.device_id = _sim.current()
        if not null:
            _sim.streams[self.ptr] = self

    def __enter__(self) -> Stream:
        _sim.stream_stack.append(None if self._null else self)
        return self

    def __exit__(self, *args: _Any) -> None:
        _sim.stream_stack.pop()

    def use(self) -> Stream:
        _sim.stream_stack[:] = [None if self._null else self]
        return self

    def synchronize(self) -> None:
        _synchronize("Stream.synchronize")
        _sim.waited([copy for copy in _sim.in_flight if copy.stream is self._key()])

    def _key(self) -> Stream | None:
        """How cupy._sim names this stream: None for the legacy default stream."""
        return None if self._null else self

    def record(self, event: _Any = None) -> Event:
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event: Event) -> None:
        pass  # work already ran; a real stream would wait here

    def begin_capture(self, mode: _Any = None) -> None:
        if self._null:
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if _sim.capture is not None:
            raise runtime.CUDARuntimeError(900)  # cudaErrorStreamCaptureUnsupported
        _sim.capture = _sim.Capture(self)

    def end_capture(self) -> Graph:
        capture, _sim.capture = _sim.capture, None
        if capture is None or capture.stream is not self:
            raise runtime.CUDARuntimeError(901)  # cudaErrorStreamCaptureInvalidated
        return Graph._captured(capture.finish(), capture.stream.device_id)

    def is_capturing(self) -> bool:
        return _sim.capture is not None and _sim.capture.stream is self


Stream.null = Stream(null=True)


def _synchronize(what: str) -> None:
    if _sim.capture is not None:  # CUDA refuses to synchronise a capturing stream
        raise runtime.CUDARuntimeError(900)
    _sim.sync(what)


class Graph:
    """A captured CUDA graph: ``launch`` replays the captured work (one launch)."""

    def __init__(self, *args: _Any, **kwargs: _Any) -> None:
        raise NotImplementedError("currently this class cannot be initiated by the user and "
                                  "must be created via stream capture")

    @classmethod
    def _captured(cls, operations: list, device: int) -> Graph:
        graph = object.__new__(cls)
        graph._operations, graph._device = operations, device
        return graph

    def launch(self, stream: _Any = None) -> None:
        if _sim.capture is not None:
            raise NotImplementedError("the CuPy double does not model graphs in a capture")
        _sim.counters["launch"] += 1
        _sim.counters["graph_launch"] += 1
        for operation in self._operations:
            operation()


class MemoryPool:
    """A memory pool of its own (for a graph capture: see cupy._sim). The double tracks device
    memory by device; the pool only tells the double that a capture allocates from it."""

    def __init__(self, allocator: _Any = None) -> None:
        self._allocator = allocator

    def malloc(self, size: int) -> _Any:
        raise NotImplementedError("the CuPy double makes arrays, not raw allocations")


def using_allocator(allocator: _Any = None) -> _Any:
    """Allocate from ``allocator`` (e.g. ``MemoryPool().malloc``) until the block ends."""
    import contextlib

    @contextlib.contextmanager
    def use() -> _Any:
        _sim.allocator_stack.append(allocator)
        try:
            yield
        finally:
            _sim.allocator_stack.pop()

    return use()


class _PinnedMemory(bytearray):
    """Page-locked host memory (here plain host memory): NumPy wraps it with frombuffer.
    ``_copies``: the copies from it, which must be waited for before it is freed."""


def alloc_pinned_memory(size: int) -> _PinnedMemory:
    pinned = _PinnedMemory(int(size))
    pinned._copies = []
    _weakref.finalize(pinned, _sim.pinned_freed, pinned._copies, int(size))
    return pinned


def get_elapsed_time(start_event: Event, end_event: Event) -> float:
    """Milliseconds between two recorded events: on the double, host time (work runs as it is
    issued), so a figure from it is no GPU's."""
    if start_event._time is None or end_event._time is None:
        raise runtime.CUDARuntimeError(600)  # cudaErrorNotReady: an event never recorded
    return (end_event._time - start_event._time) * 1000.0


def set_allocator(allocator: _Any = None) -> None:
    """Where arrays get their memory (None: a cudaMalloc each, no pool). The double tracks
    memory per device whatever the allocator, so this changes nothing it models."""
    _sim.default_allocator = allocator


def get_current_stream(device_id: int = -1) -> Stream:
    return _sim.current_stream() or Stream.null


def get_device_id() -> int:
    """The current device's index."""
    return _sim.current()


_core.verify_namespace("cupy.cuda", globals())
