"""``cupy.cuda.nccl`` of the double: NCCL between processes, simulated through MPI.

A test instrument, not NCCL: each rank is its own process (``mpiexec -n N``) with its own
double and simulated devices; a collective copies the simulated device memory to the host and
exchanges it with mpi4py over MPI_COMM_WORLD (so one communicator spans every process, in rank
order). What it keeps of NCCL, with CuPy 14.2's signatures and constants: bare pointers
(``array.data.ptr``), a communicator bound to the device current when it was made, buffers on
another device refused (ncclInvalidArgument), two ranks on one device refused
(ncclInvalidUsage), a count past the end of a buffer refused (where NCCL would fault). Stricter
than NCCL: a datatype other than the buffer's dtype is refused (NCCL would reinterpret bytes).
"""

from __future__ import annotations

import os as _os
from typing import Any as _Any

import numpy as _numpy

from cupy import _core, _sim

available = True

NCCL_INT8 = NCCL_CHAR = 0
NCCL_UINT8 = 1
NCCL_INT32 = NCCL_INT = 2
NCCL_UINT32 = 3
NCCL_INT64 = 4
NCCL_UINT64 = 5
NCCL_FLOAT16 = NCCL_HALF = 6
NCCL_FLOAT32 = NCCL_FLOAT = 7
NCCL_FLOAT64 = NCCL_DOUBLE = 8
NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN, NCCL_AVG = 0, 1, 2, 3, 4

_DTYPES = {NCCL_INT8: "int8", NCCL_UINT8: "uint8", NCCL_INT32: "int32", NCCL_UINT32: "uint32",
           NCCL_INT64: "int64", NCCL_UINT64: "uint64", NCCL_FLOAT16: "float16",
           NCCL_FLOAT32: "float32", NCCL_FLOAT64: "float64"}
# ncclResult_t: CuPy's NcclError text is the result's name and ncclGetErrorString's text.
_ERRORS = {1: ("NCCL_ERROR_UNHANDLED_CUDA_ERROR", "unhandled cuda error"),
           2: ("NCCL_ERROR_SYSTEM_ERROR", "unhandled system error"),
           4: ("NCCL_ERROR_INVALID_ARGUMENT", "invalid argument"),
           5: ("NCCL_ERROR_INVALID_USAGE", "invalid usage")}
_UNIQUE_ID_BYTES = 128


class NcclError(RuntimeError):
    def __init__(self, status: int, *, _detail: str = "") -> None:
        self.status = status
        name, text = _ERRORS.get(status, (f"NCCL_ERROR_{status}", "unknown result code"))
        super().__init__(f"{name}: {text} (run with NCCL_DEBUG=WARN for details)"
                         + (f" [CuPy double: {_detail}]" if _detail else ""))

    def __reduce__(self):
        return (type(self), (self.status,))


def get_unique_id() -> bytes:
    """128 bytes naming a new communicator (CuPy 14 returns bytes; earlier, a tuple)."""
    return _os.urandom(_UNIQUE_ID_BYTES)


def get_version() -> int:
    return 22503


def get_build_version() -> int:
    return 22503


class NcclCommunicator:
    """One rank of a communicator of ``ndev`` ranks, on the current (simulated) device."""

    def __init__(self, ndev: int, commId: bytes, rank: int, config: _Any = None) -> None:
        if not isinstance(commId, bytes):
            raise TypeError(f"Argument 'commId' has incorrect type (expected bytes, got "
                            f"{type(commId).__name__})")
        if len(commId) != _UNIQUE_ID_BYTES:
            raise ValueError(f"commId length {len(commId)} != {_UNIQUE_ID_BYTES}.")
        from mpi4py import MPI

        world = MPI.COMM_WORLD
        self._device, self._rank, self._size = _sim.current(), int(rank), int(ndev)
        peers = world.allgather((commId, self._rank, self._size,
                                 _sim.devices[self._device].physical))
        if len({peer[0] for peer in peers}) != 1 or {peer[2] for peer in peers} != {ndev}:
            raise NcclError(5, _detail="the ranks passed different unique ids or sizes")
        if ndev != world.Get_size() or sorted(peer[1] for peer in peers) != list(range(ndev)):
            raise NcclError(4, _detail=f"ranks {[peer[1] for peer in peers]} of {ndev}: the "
                                       f"double's communicator spans all "
                                       f"{world.Get_size()} MPI processes")
        gpus = [peer[3] for peer in peers]  # the machine's GPUs, whatever each rank calls them
        if len(set(gpus)) != len(gpus):
            raise NcclError(5, _detail=f"Duplicate GPU detected: the ranks are on the "
                                       f"simulated machine's GPUs {gpus}")
        self._comm = world.Split(0, self._rank)  # MPI ranks in NCCL rank order
        self._MPI = MPI

    def device_id(self) -> int:
        return self._device

    def rank_id(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size

    def destroy(self) -> None:
        if self._comm is not None:
            self._comm.Free()
        self._comm = None

    def abort(self) -> None:
        self._comm = None

    def allReduce(self, sendbuf: int, recvbuf: int, count: int, datatype: int, op: int,
                  stream: int) -> None:
        send = self._memory(sendbuf, count, datatype)
        recv = self._memory(recvbuf, count, datatype)
        _stream(stream)
        mpi_op = {NCCL_SUM: self._MPI.SUM, NCCL_PROD: self._MPI.PROD, NCCL_MAX: self._MPI.MAX,
                  NCCL_MIN: self._MPI.MIN, NCCL_AVG: self._MPI.SUM}.get(op)
        if mpi_op is None:
            raise NcclError(4, _detail=f"op {op}")
        result = send.copy()
        self._live().Allreduce(self._MPI.IN_PLACE, result, op=mpi_op)
        recv[...] = result / self._size if op == NCCL_AVG else result

    def bcast(self, buff: int, count: int, datatype: int, root: int, stream: int) -> None:
        self.broadcast(buff, buff, count, datatype, root, stream)

    def broadcast(self, sendbuff: int, recvbuff: int, count: int, datatype: int, root: int,
                  stream: int) -> None:
        recv = self._memory(recvbuff, count, datatype)
        _stream(stream)
        if not 0 <= root < self._size:
            raise NcclError(4, _detail=f"root {root} of {self._size} ranks")
        if self._rank == root:
            recv[...] = self._memory(sendbuff, count, datatype)
        self._live().Bcast(recv, root=root)

    def _live(self) -> _Any:
        if self._comm is None:
            raise NcclError(5, _detail="the communicator was destroyed or aborted")
        return self._comm

    def _memory(self, pointer: int, count: int, datatype: int) -> _numpy.ndarray:
        """The first ``count`` elements of the device memory at ``pointer``, checked."""
        array = _sim.pointers.get(int(pointer))
        if array is None:
            raise NcclError(1, _detail=f"{pointer:#x} is not the data.ptr of a live device "
                                       f"array")
        if array._device != self._device:
            raise NcclError(4, _detail=f"a buffer on cuda-sim:{array._device} given to a "
                                       f"communicator on cuda-sim:{self._device}")
        if _DTYPES.get(datatype) != array.dtype.name:
            raise NcclError(4, _detail=f"datatype {_DTYPES.get(datatype, datatype)} for a "
                                       f"{array.dtype} buffer")
        if not array._a.flags.c_contiguous or not 0 <= count <= array.size:
            raise NcclError(1, _detail=f"{count} elements from a buffer of {array.size} "
                                       f"(contiguous: {array._a.flags.c_contiguous}): an "
                                       f"illegal memory access on a GPU")
        return array._a.reshape(-1)[:count]


def _stream(stream: int) -> None:
    if not isinstance(stream, int):
        raise TypeError(f"an integer is required (stream), got {type(stream).__name__}")


_core.verify_namespace("cupy.cuda.nccl", globals())
