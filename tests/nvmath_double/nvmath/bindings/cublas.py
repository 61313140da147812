"""``nvmath.bindings.cublas`` of the double: handles, streams, workspaces and ``gemm_ex`` on the
CuPy double's simulated devices, with the real binding's names and parameters.

A product computes with NumPy on the simulated memory behind the device pointers it is given,
read as cuBLAS reads them (column-major, leading dimensions), counts one launch, and inside a
capture of the handle's stream is recorded for the graph to replay. Refused, as cuBLAS or the
GPU would refuse them (``cuBLASError`` with cuBLAS's status), with "[nvmath double: ...]" saying
why: a pointer that is not device memory on the handle's device, an operand reaching past its
buffer, a stream of another device, a product on the legacy default stream during a capture,
and, the hazard a graph cannot survive, a product captured while the handle has no workspace of
its own (cuBLAS would take one from its pool during the capture; cublasSetStream resets the
workspace, so it must be set again after every change of stream), and a workspace whose address
is not a multiple of 256 bytes (cublasSetWorkspace refuses it).

Not NumPy's arithmetic, where a GPU's is not (models, not measurements; see the README): the sum
over k runs backwards and, for a 16-bit output with a workspace, split-K in _SPLIT_K slices from
_K_TO_SPLIT, so the bits differ from NumPy's dot as a GPU's do; under the default math mode the
slices of a 16-bit product are added in its 16-bit output type (CUBLAS_MATH_DISALLOW_REDUCED_
PRECISION_REDUCTION keeps them in float32); COMPUTE_32F_FAST_TF32 rounds its operands to TF32
(10 mantissa bits) first.
"""

from __future__ import annotations

import ctypes
import itertools

import ml_dtypes
import numpy
from cupy import _sim

from nvmath import _api

_NAMESPACE = "nvmath.bindings.cublas"
Operation = _api.real_enum(_NAMESPACE, "Operation")
ComputeType = _api.real_enum(_NAMESPACE, "ComputeType")
GemmAlgo = _api.real_enum(_NAMESPACE, "GemmAlgo")
Status = _api.real_enum(_NAMESPACE, "Status")
Math = _api.real_enum(_NAMESPACE, "Math")

# The double's order of summation (a GPU's kernels choose theirs; this only makes it another
# order than NumPy's): k summed backwards; with a workspace and k >= _K_TO_SPLIT, _SPLIT_K slices
# of k summed apart, then reduced.
_SPLIT_K, _K_TO_SPLIT = 4, 256
_WORKSPACE_ALIGNMENT = 256  # bytes (cublasSetWorkspace: INVALID_VALUE otherwise)

# CUDA_R_32F, CUDA_R_64F, CUDA_R_16F, CUDA_R_16BF (bfloat16 is ml_dtypes', as CuPy 14's)
_DTYPES = {0: numpy.dtype("float32"), 1: numpy.dtype("float64"), 2: numpy.dtype("float16"),
           14: numpy.dtype(ml_dtypes.bfloat16)}
_HALF = (2, 14)
_SCALAR = {int(ComputeType.COMPUTE_32F): ctypes.c_float,
           int(ComputeType.COMPUTE_32F_FAST_TF32): ctypes.c_float,
           int(ComputeType.COMPUTE_32F_PEDANTIC): ctypes.c_float,
           int(ComputeType.COMPUTE_64F): ctypes.c_double,
           int(ComputeType.COMPUTE_64F_PEDANTIC): ctypes.c_double}


class cuBLASError(Exception):  # noqa: N801 (the real name)
    """A cuBLAS status other than success."""

    def __init__(self, status, why: str = "") -> None:
        self.status = int(status)
        super().__init__(f"{Status(self.status).name}" + (f" [nvmath double: {why}]" if why
                                                          else ""))

    def __reduce__(self):
        return (type(self), (self.status,))


class _Handle:
    def __init__(self) -> None:
        self.device = _sim.current()
        self.stream = None  # the legacy default stream, as after cublasCreate
        self.workspace: tuple | None = None  # (memory, bytes) set by set_workspace
        self.math_mode = int(Math.DEFAULT_MATH)  # as after cublasCreate


_handles: dict[int, _Handle] = {}
_numbers = itertools.count(0x5100)


def _handle(handle) -> _Handle:
    found = _handles.get(int(handle))
    if found is None:
        raise cuBLASError(Status.NOT_INITIALIZED, f"no live handle {handle}")
    return found


def create():
    handle = next(_numbers)
    _handles[handle] = _Handle()
    return handle


def destroy(handle):
    _handle(handle)
    del _handles[int(handle)]


def set_stream(handle, stream_id):
    state = _handle(handle)
    if int(stream_id) == 0:
        state.stream = None
    else:
        stream = _sim.streams.get(int(stream_id))
        if stream is None:
            raise cuBLASError(Status.INVALID_VALUE, f"{stream_id} is no live stream")
        state.stream = stream
    state.workspace = None  # cublasSetStream resets the workspace to cuBLAS's own pool


def get_stream(handle):
    stream = _handle(handle).stream
    return 0 if stream is None else stream.ptr


def set_math_mode(handle, mode):
    state = _handle(handle)
    known = 0
    for member in Math:
        known |= int(member)
    if int(mode) & ~known:
        raise cuBLASError(Status.INVALID_VALUE, f"math mode {mode}")
    state.math_mode = int(mode)


def get_math_mode(handle):
    return _handle(handle).math_mode


def set_workspace(handle, workspace, workspace_size_in_bytes):
    state = _handle(handle)
    memory = _memory(state, workspace, "workspace")
    offset = _offset(workspace)
    if offset % _WORKSPACE_ALIGNMENT:
        raise cuBLASError(Status.INVALID_VALUE, f"a workspace at {offset} bytes from the start of "
                          f"its allocation: cuBLAS needs it aligned to {_WORKSPACE_ALIGNMENT} "
                          f"bytes (the double takes allocations as aligned, as CuPy's are)")
    if int(workspace_size_in_bytes) > memory.nbytes:
        raise cuBLASError(Status.INVALID_VALUE, f"a workspace of {workspace_size_in_bytes} "
                          f"bytes in a buffer of {memory.nbytes}")
    state.workspace = (memory, int(workspace_size_in_bytes))


def gemm_ex(handle, transa, transb, m, n, k, alpha, a, atype, lda, b, btype, ldb, beta, c,
            ctype, ldc, compute_type, algo):
    """C (m x n) = alpha op(A) op(B) + beta C, column-major, as cublasGemmEx."""
    state = _handle(handle)
    # cublasGemmEx's table of supported types, as far as gpunn uses it: A and B of one type;
    # C of that type, or float32 for 16-bit A and B; 16-bit types with COMPUTE_32F (fast TF32
    # and pedantic are for float32 data only)
    atype, btype, ctype = int(atype), int(btype), int(ctype)
    if atype != btype or atype not in _DTYPES or not (
            ctype == atype or (atype in _HALF and ctype == 0)):
        raise cuBLASError(Status.NOT_SUPPORTED, f"the double multiplies float32, float64, "
                          f"float16 or bfloat16 operands of one type into that type (or 16-bit "
                          f"ones into float32); received A {atype}, B {btype}, C {ctype}")
    scalar = _SCALAR.get(int(compute_type))
    if scalar is None or (scalar is ctypes.c_double) != (atype == 1) or (
            atype in _HALF and int(compute_type) != int(ComputeType.COMPUTE_32F)):
        raise cuBLASError(Status.NOT_SUPPORTED, f"compute type {compute_type} for data type "
                          f"{atype}")
    if min(m, n, k) < 0 or lda < max(1, m if transa == Operation.N else k) \
            or ldb < max(1, k if transb == Operation.N else n) or ldc < max(1, m):
        raise cuBLASError(Status.INVALID_VALUE, "a negative size or a leading dimension too "
                          "small")
    dtype, out_dtype = _DTYPES[atype], _DTYPES[ctype]
    rows_a, cols_a = (m, k) if transa == Operation.N else (k, m)
    rows_b, cols_b = (k, n) if transb == Operation.N else (n, k)
    A = _matrix(state, a, rows_a, cols_a, lda, dtype, "A")
    B = _matrix(state, b, rows_b, cols_b, ldb, dtype, "B")
    C = _matrix(state, c, m, n, ldc, out_dtype, "C")
    one = scalar.from_address(int(alpha)).value  # host pointer mode: read at the call
    zero = scalar.from_address(int(beta)).value
    op_a = A if transa == Operation.N else A.T
    op_b = B if transb == Operation.N else B.T

    reduce_in_output = (ctype in _HALF and not state.math_mode
                        & int(Math.DISALLOW_REDUCED_PRECISION_REDUCTION))
    # split-K modelled where the math mode changes its result: products into a 16-bit type
    split = state.workspace is not None and k >= _K_TO_SPLIT and ctype in _HALF
    tf32 = int(compute_type) == int(ComputeType.COMPUTE_32F_FAST_TF32)

    def product() -> None:
        with numpy.errstate(all="ignore"):
            if atype in _HALF:  # float32 products of the 16-bit values
                left, right = op_a.astype(numpy.float32), op_b.astype(numpy.float32)
            else:
                left, right = (_tf32(op_a), _tf32(op_b)) if tf32 else (op_a, op_b)
            slices = _slices(k, split)
            partial = [_reversed(left[:, part], right[part]) for part in slices]
            if reduce_in_output:  # each slice rounded to the 16-bit output, added there
                result = partial[0].astype(out_dtype)
                for more in partial[1:]:
                    result = (result + more.astype(out_dtype)).astype(out_dtype)
                result = result.astype(numpy.float32)
            else:
                result = partial[0]
                for more in partial[1:]:
                    result = result + more
            if atype in _HALF:
                if (one, zero) != (1, 0):
                    result = result * numpy.float32(one) + numpy.float32(zero) * C.astype(
                        numpy.float32)
            else:
                if one != 1:
                    result = result * dtype.type(one)
                if zero != 0:
                    result = result + dtype.type(zero) * C
        C[...] = result

    _issue(state, product)


def _slices(k: int, split: bool) -> list[slice]:
    """The ranges of k summed apart (split-K), or all of k in one."""
    if not split:
        return [slice(0, k)]
    size = -(-k // _SPLIT_K)
    return [slice(start, min(start + size, k)) for start in range(0, k, size)]


def _reversed(left: numpy.ndarray, right: numpy.ndarray) -> numpy.ndarray:
    """left @ right with k summed from its last term to its first (NumPy's dot of the operands
    reversed along k): another order than NumPy's, at the cost of one dot."""
    # as (right^T left^T)^T: the column-major operands' transposes are row-major, so the
    # copies that reverse k are plain ones and the dot is BLAS's
    return numpy.dot(numpy.ascontiguousarray(right.T[:, ::-1]),
                     numpy.ascontiguousarray(left.T[::-1])).T


def _tf32(values: numpy.ndarray) -> numpy.ndarray:
    """float32 values rounded to TF32 (10 mantissa bits, to nearest even), as tensor cores take
    them; infinities and NaNs unchanged."""
    bits = numpy.ascontiguousarray(values, dtype=numpy.float32).view(numpy.uint32)
    rounded = (bits + numpy.uint32(0xFFF) + ((bits >> numpy.uint32(13)) & numpy.uint32(1))) \
        & numpy.uint32(0xFFFFE000)
    finite = numpy.isfinite(values)
    return numpy.where(finite, rounded.view(numpy.float32), values).astype(numpy.float32)


def _issue(state: _Handle, work) -> None:
    if state.device != _sim.current():
        raise cuBLASError(Status.EXECUTION_FAILED, f"the handle belongs to cuda-sim:"
                          f"{state.device}, the current device is cuda-sim:{_sim.current()}")
    if state.stream is not None and state.stream.device_id != state.device:
        raise cuBLASError(Status.EXECUTION_FAILED, f"the handle's stream is on cuda-sim:"
                          f"{state.stream.device_id}, the handle on cuda-sim:{state.device}")
    capture = _sim.capture
    if capture is not None and state.stream is None:
        raise cuBLASError(Status.EXECUTION_FAILED, "cudaErrorStreamCaptureImplicit: work on "
                          "the legacy default stream while another stream captures")
    if capture is not None and state.stream is capture.stream:
        if state.workspace is None:
            raise cuBLASError(Status.ALLOC_FAILED, "a product captured while the handle has "
                              "no workspace of its own: cuBLAS would allocate one during the "
                              "capture (cublasSetWorkspace after every cublasSetStream)")
        work()
        capture.operations.append(work)
        return
    work()
    _sim.counters["launch"] += 1
    _sim.counters["cublas"] += 1


def _memory(state: _Handle, pointer, what: str) -> numpy.ndarray:
    """The simulated device memory from ``pointer`` to the end of its buffer, as bytes."""
    array = _sim.pointers.get(int(pointer))
    if array is None:
        raise cuBLASError(Status.EXECUTION_FAILED, f"{what} at {pointer:#x} is not device "
                          f"memory (an illegal address on a GPU; the double knows the pointers "
                          f"taken from ndarray.data.ptr)")
    if array._device != state.device:
        raise cuBLASError(Status.EXECUTION_FAILED, f"{what} lives on cuda-sim:{array._device}, "
                          f"the handle on cuda-sim:{state.device}")
    if not array._a.flags.c_contiguous:
        raise cuBLASError(Status.EXECUTION_FAILED, f"{what} is a strided view; the double "
                          f"resolves pointers of contiguous arrays only")
    return array._a.reshape(-1).view(numpy.uint8)


def _offset(pointer) -> int:
    """How far ``pointer`` lies from the start of its allocation, in bytes."""
    buffer = _sim.pointers[int(pointer)]._a
    while isinstance(buffer.base, numpy.ndarray):
        buffer = buffer.base
    return int(pointer) - int(buffer.ctypes.data)


def _matrix(state: _Handle, pointer, rows: int, cols: int, ld: int, dtype, what: str):
    """The column-major rows x cols matrix at ``pointer`` with leading dimension ``ld``."""
    memory = _memory(state, pointer, what)
    needed = ((cols - 1) * ld + rows) * dtype.itemsize if rows and cols else 0
    if needed > memory.nbytes:
        raise cuBLASError(Status.EXECUTION_FAILED, f"{what} ({rows} x {cols}, ld {ld}) reaches "
                          f"{needed} bytes into a buffer of {memory.nbytes} (an illegal memory "
                          f"access on a GPU)")
    flat = memory.view(dtype)
    return numpy.lib.stride_tricks.as_strided(flat, shape=(rows, cols),
                                              strides=(dtype.itemsize, ld * dtype.itemsize))


_api.verify(_NAMESPACE, globals())
