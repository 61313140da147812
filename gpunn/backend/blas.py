"""Matrix products that a CUDA graph can capture: cuBLAS called directly.

CuPy 14 refuses every cuBLAS call while the current stream is capturing (its ``setStream``
raises ``NotImplementedError: calling cuBLAS API during stream capture is currently
unsupported``; cupy_backends/cuda/libs/cublas.pyx), so a training step whose Dense layers use
``cupy.dot`` can never become a CUDA graph. cuBLAS itself can be captured (NVIDIA's cuBLAS
guide, "CUDA Graphs Support") when the handle has a workspace of its own: without one it takes
memory from its default workspace pool during the capture. This module calls cuBLAS through
NVIDIA's low-level bindings in nvmath-python (``nvmath.bindings.cublas``, an extra of gpunn's
CUDA install): one handle per device, bound to the stream that trains, with a persistent
workspace set again after every change of stream (``cublasSetStream`` resets it).

The product is ``cublasGemmEx`` with the arguments CuPy's own ``dot`` passes (cupy/_core/
_routines_linalg.pyx, tensordot_core_v11): the same transposes, leading dimensions, compute type
(32F, or 32F_FAST_TF32 when CUPY_TF32 is set; 64F for float64). The algorithm is
CUBLAS_GEMM_DEFAULT: cuBLAS picks tensor cores by the compute type (GEMM_DEFAULT_TENSOR_OP, which
CuPy still passes from compute capability 8.0, is deprecated since CUDA 11 and means the same).
Row-major C = op(A) @ op(B) is computed as the column-major C^T = op(B)^T op(A)^T, so no operand
is copied. Every CUDA product of a backend goes here once nvmath-python loads, inside a capture
or not, so a graphed and a plain run compute alike (CuPy's dot passes other flags for size-1
shapes and reduces 1x1 products with a kernel of its own).

The handle's math mode is CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION: under cuBLAS's
default a split-K product may add its partial sums in the output's 16-bit type; with it they are
added in float32, so a 16-bit product is accumulated in float32 and rounded once into its output
(what gpunn.precision promises; NVIDIA's cuBLAS guide, cublasMath_t). The order of the sums is
cuBLAS's: a GPU's product differs from NumPy's dot of the same values by rounding (compare them
with a tolerance, tests/helpers.py's product_tolerance).

Beyond CuPy's dot, for gpunn.precision: 16-bit operands (float16, bfloat16) with float32
accumulation into a 16-bit or a float32 result, and TF32 chosen per product (CuPy reads
CUPY_TF32 once per process and caches it, so it cannot be switched for one model's products).
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import Any

import numpy

from gpunn.errors import InvalidArgumentError

# cuBLAS's own default workspace on Hopper and Blackwell is 32 MiB (4 MiB before): the same
# size keeps its choice of algorithms the same inside and outside a capture.
WORKSPACE_BYTES = 32 * 2**20
INSTALL_HINT = ("pip install 'gpunn[cuda12]' (or 'gpunn[cuda13]') brings it, or "
                "pip install nvmath-python")
# What nvmath-python 1.0.1 needs beside it (its wheel's Requires-Dist): with cuda-core 0.4 its
# import fails (cannot import name 'Stream' from 'cuda.core').
NEEDS = {"cuda-core": ">=0.5.0,<2", "cuda-pathfinder": ">=1.5.1,<2.0", "cuda-bindings": "",
         "ml-dtypes": ""}


def versions() -> dict[str, str]:
    """The installed versions of nvmath-python and what it and gpunn's products import."""
    found = {}
    for name in ("nvmath-python", *NEEDS):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def load() -> Any:
    """``nvmath`` and ``nvmath.bindings.cublas``, or ImportError saying what failed to import,
    why, and how to fix it. (``import nvmath`` imports the whole package and tries to load
    cuBLAS, cuFFT, cuRAND, cuSOLVER, cuSPARSE and cuTENSOR; nvmath-python 1.0.1 has no way to
    import its cuBLAS bindings alone.)"""
    try:
        import ml_dtypes  # noqa: F401 (bfloat16 operands; CuPy 14 needs it for bfloat16 too)
        import nvmath
        from nvmath.bindings import cublas
    except Exception as error:  # ImportError; a library loader's RuntimeError or OSError
        raise ImportError(explain(error)) from error
    return nvmath, cublas


def explain(error: BaseException) -> str:
    """Why the cuBLAS bindings did not import, from the error and the installed versions."""
    found = versions()
    what = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
    if found["nvmath-python"] == "not installed":
        return f"nvmath-python is not installed ({what}); {INSTALL_HINT}"
    needs = ", ".join(f"{name}{bound} (found {found[name]})" for name, bound in NEEDS.items())
    return (f"nvmath-python {found['nvmath-python']} is installed but did not import ({what}). "
            f"It needs {needs}: pip install 'cuda-core>=0.5' 'cuda-pathfinder>=1.5.1' "
            f"ml_dtypes brings what is missing or too old.")


class Blas:
    """cuBLAS products on one device, on whatever stream is current when they are issued.

    Example: ``Blas(cupy, 0).gemm(x, w, out)`` is ``cupy.dot(x, w, out=out)``, capturable.
    """

    def __init__(self, cupy: Any, device: Any) -> None:
        nvmath, self.cublas = load()
        import ml_dtypes

        self.cupy, self.device = cupy, device
        cublas = self.cublas
        float32, float64 = numpy.dtype("float32"), numpy.dtype("float64")
        float16, bfloat16 = numpy.dtype("float16"), numpy.dtype(ml_dtypes.bfloat16)
        self.types = {float32: int(nvmath.CudaDataType.CUDA_R_32F),
                      float64: int(nvmath.CudaDataType.CUDA_R_64F),
                      float16: int(nvmath.CudaDataType.CUDA_R_16F),
                      bfloat16: int(nvmath.CudaDataType.CUDA_R_16BF)}
        self.tf32 = int(os.environ.get("CUPY_TF32", "0") or 0) > 0  # what CuPy's dot reads
        self.compute_32f = int(cublas.ComputeType.COMPUTE_32F)
        self.compute_tf32 = int(cublas.ComputeType.COMPUTE_32F_FAST_TF32)
        # 16-bit products accumulate in float32 (gpunn.precision), float64 ones in float64
        self.compute = {float16: self.compute_32f, bfloat16: self.compute_32f,
                        float64: int(cublas.ComputeType.COMPUTE_64F)}
        # alpha = 1 and beta = 0 read from host memory at each call (and baked into a graph):
        # float32 scalars for every compute type but 64F
        single = (numpy.ones(1, "float32"), numpy.zeros(1, "float32"))
        self.scalars = {float32: single, float16: single, bfloat16: single,
                        float64: (numpy.ones(1, "float64"), numpy.zeros(1, "float64"))}
        self.op = (int(cublas.Operation.N), int(cublas.Operation.T))
        self.algo = int(cublas.GemmAlgo.DEFAULT)
        with device:
            self.workspace = cupy.empty(WORKSPACE_BYTES, dtype="uint8")
            self.handle = cublas.create()
            cublas.set_math_mode(self.handle,
                                 int(cublas.Math.DISALLOW_REDUCED_PRECISION_REDUCTION))
        self.stream_ptr: int | None = None
        self.stream: Any = None

    def bind(self, stream: Any) -> None:
        """Issue the products to ``stream`` (with the workspace, which binding resets)."""
        if stream.ptr != self.stream_ptr:
            self.cublas.set_stream(self.handle, stream.ptr)
            self.cublas.set_workspace(self.handle, self.workspace.data.ptr, WORKSPACE_BYTES)
            self.stream_ptr, self.stream = stream.ptr, stream  # kept alive while bound

    def gemm(self, a: Any, b: Any, out: Any, trans_a: bool, trans_b: bool,
             tf32: bool = False) -> Any:
        """``op(a) @ op(b)`` into ``out`` (C-contiguous; ``op`` transposes where asked): one
        cuBLAS launch on the current stream. ``a`` and ``b`` of one dtype (float32, float64,
        float16 or bfloat16); ``out`` of that dtype, or float32 for 16-bit operands (the
        gradients of a 16-bit policy's master weights). ``tf32``: a float32 product on TF32
        tensor cores (gpunn.precision's tf32 policy; also on when CUPY_TF32 is set, as for
        CuPy's dot)."""
        dtype = a.dtype
        if dtype not in self.types or b.dtype != dtype or not (
                out.dtype == dtype or (dtype.itemsize == 2 and out.dtype == numpy.float32)):
            raise InvalidArgumentError(
                f"gemm multiplies float32, float64, float16 or bfloat16 arrays of one dtype "
                f"into that dtype (16-bit ones also into float32); received {a.dtype}, "
                f"{b.dtype} into {out.dtype}.")
        if not (a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous):
            raise InvalidArgumentError("gemm needs C-contiguous operands and output.")
        rows, inner = a.shape[::-1] if trans_a else a.shape
        inner_b, cols = b.shape[::-1] if trans_b else b.shape
        if inner != inner_b or out.shape != (rows, cols):
            raise InvalidArgumentError(
                f"gemm: op(a) is ({rows}, {inner}) and op(b) ({inner_b}, {cols}); they do not "
                f"multiply into out of shape {tuple(out.shape)}.")
        if rows == 0 or cols == 0:
            return out
        if inner == 0:
            out.fill(0)
            return out
        self.bind(self.cupy.cuda.get_current_stream())
        one, zero = self.scalars[dtype]
        kind, out_kind = self.types[dtype], self.types[out.dtype]
        if dtype == numpy.float32:
            compute = self.compute_tf32 if tf32 or self.tf32 else self.compute_32f
        else:
            compute = self.compute[dtype]
        # Column-major C^T (cols x rows) = op(B)^T (cols x inner) op(A)^T (inner x rows):
        # a row-major matrix is its own transpose in column-major order, leading dimension
        # its row length.
        self.cublas.gemm_ex(
            self.handle, self.op[trans_b], self.op[trans_a], cols, rows, inner,
            one.ctypes.data, b.data.ptr, kind, b.shape[1], a.data.ptr, kind, a.shape[1],
            zero.ctypes.data, out.data.ptr, out_kind, cols, compute, self.algo)
        return out
