"""Data-parallel training across processes: communicators with one small interface.

``comm = gpunn.distributed.init()`` in every process that ``mpiexec -n N`` (or Slurm's
``srun``) started; a plain ``python`` process gets ``SingleProcess``, whose operations do
nothing, and nothing beyond gpunn is imported. Every communicator has ``rank``, ``size``,
``local_rank``, ``local_size`` (on this machine), ``name`` and ``device`` (the device this rank
should train on) and the same methods:

    comm.broadcast(parameters, root=0)   # in place: rank 0's values everywhere
    comm.allreduce(gradients)            # in place SUM of a flat contiguous buffer
    comm.allreduce_values([loss, n])     # host floats, summed: metrics
    comm.agree("model", layers)          # GpunnError on every rank when the ranks differ
    comm.any_rank(stop_requested)        # True on every rank when one rank says True

``MpiCommunicator`` moves host arrays with mpi4py (device arrays through the host);
``NcclCommunicator`` moves device arrays with NCCL through CuPy and the rest through MPI.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import numpy

from gpunn.errors import GpunnError, InvalidArgumentError

MPI_HINT = "pip install 'gpunn[mpi]'"
ABORT_GRACE_SECONDS = 0.5
# How long a failing rank waits for the others to fail at the same point (a bad option or data
# file fails every rank alike) before it ends the job alone.
FAIL_TOGETHER_SECONDS = 5.0
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# What each launcher sets in every process it starts: the number of processes. Read before
# mpi4py is imported, so a plain run never loads MPI. (mpiexec of MPICH, Intel MPI and Slurm's
# PMI plugins: PMI_SIZE; Open MPI: OMPI_COMM_WORLD_SIZE; MVAPICH: MV2_COMM_WORLD_SIZE;
# Slurm's PMIx plugin: PMIX_RANK beside SLURM_STEP_NUM_TASKS.)
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_size(environ: dict[str, str] | None = None) -> tuple[int, str]:
    """How many processes the launcher started, and the variable that says so (1, "" alone)."""
    environ = os.environ if environ is None else environ
    for variable in SIZE_VARIABLES:
        if environ.get(variable, "").isdigit():
            return int(environ[variable]), variable
    if "PMIX_RANK" in environ and environ.get("SLURM_STEP_NUM_TASKS", "").isdigit():
        return int(environ["SLURM_STEP_NUM_TASKS"]), "SLURM_STEP_NUM_TASKS"
    return 1, ""


RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMIX_RANK")


def launched_rank(environ: dict[str, str] | None = None) -> int:
    """This process's rank as the launcher's environment says, before MPI starts (0 alone)."""
    environ = os.environ if environ is None else environ
    for variable in RANK_VARIABLES:
        if environ.get(variable, "").isdigit():
            return int(environ[variable])
    return 0


def threads_per_rank(local_size: int, cores: int | None = None) -> int:
    """The BLAS threads each of ``local_size`` ranks on one machine may use: the cores shared
    out, at least one. Example: ``threads_per_rank(2, cores=16)`` is 8."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, local_size))


_limiter: Any = None  # threadpoolctl's limiter, kept so the limit holds for the process


def limit_blas_threads(threads: int) -> str:
    """Give this process's BLAS ``threads`` threads, unless the user chose already (one of
    THREAD_VARIABLES set). The variables reach libraries loaded later and child processes;
    OpenBLAS reads them only when it loads, which ``import numpy`` did already, so the running
    BLAS is limited through threadpoolctl (part of the mpi extra). Says what was done."""
    global _limiter
    chosen = [name for name in THREAD_VARIABLES if name in os.environ]
    if chosen:
        return f"kept {chosen[0]}={os.environ[chosen[0]]}"
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    try:
        import threadpoolctl
    except ImportError:
        return (f"set {'/'.join(THREAD_VARIABLES)}={threads}; the BLAS NumPy loaded keeps its "
                f"threads (install threadpoolctl, or set OPENBLAS_NUM_THREADS before starting)")
    _limiter = threadpoolctl.threadpool_limits(limits=threads, user_api="blas")
    return f"BLAS limited to {threads} thread(s) per rank"


class SingleProcess:
    """One process, the default: every collective operation leaves its arguments as they are."""

    name = "single"
    rank, size, local_rank, local_size = 0, 1, 0, 1

    def __init__(self, device: str | None = None) -> None:
        self.device = device

    def __repr__(self) -> str:
        return f"<gpunn {self.name} communicator rank {self.rank} of {self.size}>"

    def broadcast(self, array: Any, root: int = 0) -> None:
        """Give every rank ``root``'s values of ``array`` (in place)."""

    def allreduce(self, array: Any) -> None:
        """Replace ``array`` (flat, contiguous) by its sum over the ranks, in place."""

    def allreduce_values(self, values: list[float]) -> list[float]:
        """The sums over the ranks of host numbers, such as a loss and a sample count."""
        return [float(value) for value in values]

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any: all stop at the same step."""
        return bool(flag)

    def agree(self, what: str, value: Any) -> None:
        """Raise GpunnError on every rank unless all ranks pass the same ``value`` (JSON-able)."""

    def barrier(self) -> None:
        """Wait until every rank gets here."""

    def abort(self, code: int, message: str) -> None:
        """Print ``gpunn: rank R <message>`` and end every rank with exit status ``code`` now
        (no cleanup, no hang)."""
        _say(f"gpunn: rank {self.rank} {message}")
        os._exit(code)

    def all_failing(self) -> bool:
        """Whether every rank reaches this call within FAIL_TOGETHER_SECONDS: then they failed
        alike and can end normally, one of them saying why, instead of one aborting the job."""
        return True


class MpiCommunicator(SingleProcess):
    """Ranks started by an MPI launcher, talking through mpi4py. Device arrays go through the
    host (one copy each way)."""

    name = "mpi"

    def __init__(self, MPI: Any, device: str | None = "cpu") -> None:
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        machine = self.comm.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks sharing this machine
        self.local_rank, self.local_size = machine.Get_rank(), machine.Get_size()
        machine.Free()
        self.device = device

    def broadcast(self, array: Any, root: int = 0) -> None:
        host = _host_buffer(array, "broadcast")
        self.comm.Bcast(host, root=root)
        if host is not array:
            array.set(host)

    def allreduce(self, array: Any) -> None:
        host = _host_buffer(array, "allreduce")
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        if host is not array:
            array.set(host)

    def allreduce_values(self, values: list[float]) -> list[float]:
        buffer = numpy.array(values, dtype=numpy.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        return buffer.tolist()

    def any_rank(self, flag: bool) -> bool:
        return bool(self.comm.allreduce(int(bool(flag)), op=self.MPI.MAX))

    def agree(self, what: str, value: Any) -> None:
        texts = self.comm.allgather(json.dumps(value, sort_keys=True, default=repr))
        differing = [rank for rank, text in enumerate(texts) if text != texts[0]]
        if differing:
            shown = "; ".join(f"rank {rank}: {_short(texts[rank])}" for rank in [0, *differing])
            raise GpunnError(f"The ranks disagree on {what}: {shown}. Every rank must start "
                             f"with the same {what}; check the command line and the files "
                             f"each machine reads.")

    def barrier(self) -> None:
        self.comm.Barrier()

    def all_failing(self) -> bool:
        # A non-blocking barrier, so a rank that is elsewhere (still training, or in another
        # collective) cannot make this one wait for ever: after the wait it aborts the job.
        request = self.comm.Ibarrier()
        deadline = time.monotonic() + FAIL_TOGETHER_SECONDS
        while not request.Test():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def abort(self, code: int, message: str) -> None:
        _say(f"gpunn: rank {self.rank} {message}")
        # mpiexec forwards each rank's output on its own time and drops what is still on the
        # way when the job is aborted (seen: a traceback cut after its first line).
        time.sleep(ABORT_GRACE_SECONDS)
        self.comm.Abort(code)


def rank_device(local_rank: int, visible: int) -> str:
    """The GPU a rank trains on, of the ``visible`` ones it sees: cuda:(local_rank % visible).

    Under mpiexec every rank sees all the GPUs of its machine, and local rank r takes GPU r. A
    launcher that gives each rank GPUs of its own through CUDA_VISIBLE_DEVICES (Slurm's
    ``srun --gpus-per-task=1``) shows every rank its GPU as cuda:0, where taking cuda:r (as
    Horovod's and PyTorch's examples do, with their local rank) fails on every rank but the
    first. Two ranks left on one GPU (more ranks than GPUs) are refused by NCCL.

    Example: ``rank_device(3, 4)`` is "cuda:3"; ``rank_device(3, 1)`` is "cuda:0".
    """
    return f"cuda:{local_rank % max(visible, 1)}"


class NcclCommunicator(MpiCommunicator):
    """One GPU per rank (see rank_device), device arrays reduced by NCCL through CuPy; host
    arrays, metrics and configuration through MPI."""

    name = "nccl"

    def __init__(self, MPI: Any) -> None:
        super().__init__(MPI)
        from gpunn.backend import cupy_backend, device

        visible = cupy_backend.count_devices(cupy_backend.import_cupy())
        self.device = rank_device(self.local_rank, visible)
        self.backend = device(self.device)  # DeviceUnavailableError when the GPU is missing
        import cupy
        from cupy.cuda import nccl

        if not getattr(nccl, "available", False):
            raise GpunnError("CuPy cannot load NCCL, which moves arrays between GPUs: install "
                             "it with pip install 'gpunn[cuda12]' (or cuda13), which brings "
                             "the nvidia-nccl wheel CuPy looks for.")
        self.cupy, self.nccl = cupy, nccl
        unique_id = self.comm.bcast(nccl.get_unique_id() if self.rank == 0 else None, root=0)
        with self.backend.activate():  # NCCL binds the communicator to the current device
            try:
                self.communicator = nccl.NcclCommunicator(self.size, unique_id, self.rank)
            except Exception as error:  # NcclError: its text alone does not say which GPU
                raise GpunnError(
                    f"NCCL could not start on rank {self.rank} ({self.device}: local rank "
                    f"{self.local_rank} of {self.local_size} on this machine, which shows it "
                    f"{visible} GPU(s)): {_cause(error)}. NCCL refuses ranks that share a GPU "
                    f"(invalid usage); to avoid that, start at most one rank per GPU, or give "
                    f"each rank a GPU of its own (srun --gpus-per-task=1).") from error

    def broadcast(self, array: Any, root: int = 0) -> None:
        if isinstance(array, numpy.ndarray):
            return super().broadcast(array, root)
        with self.backend.activate():
            self.communicator.bcast(array.data.ptr, array.size, self._nccl_type(array, "broadcast"),
                                    root, self.cupy.cuda.get_current_stream().ptr)

    def allreduce(self, array: Any) -> None:
        if isinstance(array, numpy.ndarray):
            return super().allreduce(array)
        with self.backend.activate():
            pointer = array.data.ptr
            self.communicator.allReduce(pointer, pointer, array.size,
                                        self._nccl_type(array, "allreduce"), self.nccl.NCCL_SUM,
                                        self.cupy.cuda.get_current_stream().ptr)

    def abort(self, code: int, message: str) -> None:
        with contextlib.suppress(Exception):  # ends NCCL kernels waiting for a dead peer
            self.communicator.abort()
        super().abort(code, message)

    def _nccl_type(self, array: Any, operation: str) -> int:
        _check_flat(array, operation)
        if array.device.id != self.backend.index:
            raise InvalidArgumentError(
                f"{operation} on rank {self.rank} expects an array on {self.device}, this "
                f"rank's GPU; received one on cuda:{array.device.id}.")
        name = f"NCCL_{array.dtype.name.upper()}"
        if not hasattr(self.nccl, name):
            raise InvalidArgumentError(f"NCCL cannot {operation} {array.dtype} arrays; use "
                                       f"float32 or float64.")
        return getattr(self.nccl, name)


_current: SingleProcess = SingleProcess()


def init(backend: Any = None) -> SingleProcess:
    """The communicator of this process: MPI (or NCCL, for a CUDA ``backend`` such as "cuda")
    when an MPI launcher started several processes, otherwise SingleProcess. Under MPI it also
    shares the cores out among the ranks' BLAS threads and, for an uncaught exception, ends
    every rank with ``gpunn: rank R failed: <cause>``. Example::

        comm = gpunn.distributed.init()   # mpiexec -n 2 python train.py
    """
    global _current
    size, variable = launched_size()
    if size <= 1:
        _current = SingleProcess(_device_name(backend))
        return _current
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise GpunnError(f"This process is one of {size} started by an MPI launcher "
                         f"({variable}={size}), but mpi4py cannot be imported ({error}): "
                         f"{MPI_HINT}.") from error
    if MPI.COMM_WORLD.Get_size() != size:
        raise GpunnError(
            f"The launcher started {size} processes ({variable}={size}) but MPI sees "
            f"{MPI.COMM_WORLD.Get_size()}: mpi4py uses another MPI library "
            f"({MPI.Get_library_version().splitlines()[0].strip()}) than the mpiexec that "
            f"started it. Use the mpiexec of the environment that has mpi4py.")
    wants_cuda = _wants_cuda(backend)
    _current = NcclCommunicator(MPI) if wants_cuda else MpiCommunicator(MPI)
    limit_blas_threads(threads_per_rank(_current.local_size))
    _abort_on_uncaught_exceptions()
    return _current


def current() -> SingleProcess:
    """The communicator ``init`` made; SingleProcess when it was not called."""
    return _current


@contextlib.contextmanager
def guard(comm: SingleProcess | None = None) -> Iterator[SingleProcess]:
    """End every rank when the block raises on one, instead of leaving the others waiting in
    the next collective forever: prints the traceback, then ``gpunn: rank R failed: <cause>``,
    and aborts with status 1 (130 for Ctrl-C). In a single process the exception propagates."""
    comm = comm or current()
    try:
        yield comm
    except BaseException as error:
        if comm.size == 1 or (isinstance(error, SystemExit) and error.code in (0, None)):
            raise
        traceback.print_exc()
        comm.abort(130 if isinstance(error, KeyboardInterrupt) else 1, f"failed: {_cause(error)}")


def run_guarded(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` under ``guard()``."""
    with guard():
        return function(*args, **kwargs)


def _abort_on_uncaught_exceptions() -> None:
    previous = sys.excepthook

    def hook(kind: type, error: BaseException, trace: Any) -> None:
        previous(kind, error, trace)
        current().abort(130 if issubclass(kind, KeyboardInterrupt) else 1,
                        f"failed: {_cause(error)}")

    sys.excepthook = hook


def _wants_cuda(backend: Any) -> bool:
    """Whether the ranks train on GPUs: a CUDA backend or spec, or "auto" finding CuPy and a
    device (checked without opening one)."""
    name = _device_name(backend) or os.environ.get("GPUNN_DEVICE") or "auto"
    if name.startswith("cuda"):
        return True
    if name != "auto":
        return False
    from gpunn.backend import cupy_backend

    try:
        return cupy_backend.count_devices(cupy_backend.import_cupy()) > 0
    except GpunnError:
        return False


def _device_name(backend: Any) -> str | None:
    return getattr(backend, "device", backend)


def _host_buffer(array: Any, operation: str) -> numpy.ndarray:
    """``array`` itself when it is on the host, else a host copy of it."""
    _check_flat(array, operation)
    return array if isinstance(array, numpy.ndarray) else array.get()


def _check_flat(array: Any, operation: str) -> None:
    if not array.flags.c_contiguous:
        raise InvalidArgumentError(f"{operation} needs a contiguous array (such as the flat "
                                   f"parameter or gradient buffer); received one of shape "
                                   f"{array.shape} with strides {array.strides}.")


def _cause(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _say(line: str) -> None:
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
