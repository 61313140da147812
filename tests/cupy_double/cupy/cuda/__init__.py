"""``cupy.cuda`` of the double: simulated devices (``cuda-sim:N``), a current-device stack."""

from __future__ import annotations

from typing import Any as _Any

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
        _sim.sync("Device.synchronize")

    @property
    def attributes(self) -> dict[str, int]:
        return {"MultiProcessorCount": 132, "MaxThreadsPerBlock": 1024, "WarpSize": 32}

    @property
    def compute_capability(self) -> str:
        return "90"

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


class Stream:
    """The null stream only (``Stream.null``, ``ptr`` 0): the double runs everything in order."""

    null: Stream

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False,
                 priority: _Any = None) -> None:
        if not null:
            raise NotImplementedError("the CuPy double models only the null stream")
        self.ptr = 0

    def synchronize(self) -> None:
        _sim.sync("Stream.synchronize")


Stream.null = Stream(null=True)


def get_current_stream(device_id: int = -1) -> Stream:
    """The current stream: always the null stream in the double."""
    return Stream.null


def get_device_id() -> int:
    """The current device's index."""
    return _sim.current()


_core.verify_namespace("cupy.cuda", globals())
