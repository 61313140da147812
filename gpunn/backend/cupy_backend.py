"""The CUDA backend: CuPy arrays, with our kernels from kernels/ for the elementwise ops.

Only the ops a kernel speeds up are overridden; everything else is the NumPy backend's code
running on ``cupy`` through ``self.xp``. Kernels exist for float32 and float64; other dtypes
fall back to the generic op.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy

from gpunn.backend import kernels
from gpunn.backend.numpy_backend import NumpyBackend, _check_bias
from gpunn.errors import DeviceUnavailableError, InvalidArgumentError

INSTALL_HINT = (
    "Install the CuPy build for your CUDA driver: pip install 'gpunn[cuda12]' or "
    "'gpunn[cuda13]' (nvidia-smi shows the CUDA version the driver supports)."
)
BLOCK = 256
_modules: dict[str, Any] = {}  # kernel file -> cupy.RawModule, compiled once per process


def import_cupy() -> Any:
    """Import CuPy, or say why CUDA cannot be had."""
    try:
        import cupy
    except ImportError as error:
        raise DeviceUnavailableError(f"CUDA is not available: CuPy is not installed ({error}). "
                                     f"{INSTALL_HINT}") from error
    return cupy


def driver_version(cupy: Any) -> int:
    """The CUDA version the NVIDIA driver supports (e.g. 12080), or 0 when there is no driver."""
    try:
        return int(cupy.cuda.runtime.driverGetVersion())
    except Exception:  # CUDARuntimeError, or a broken install
        return 0


def count_devices(cupy: Any) -> int:
    """How many CUDA devices answer, or DeviceUnavailableError saying why none do."""
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception as error:  # CuPy raises CUDARuntimeError; a broken install raises others
        text = str(error)
        if "InsufficientDriver" in text and driver_version(cupy) == 0:
            # Without libcuda the runtime reports an "insufficient" driver of version 0.
            reason = ("no NVIDIA driver found. Install the NVIDIA driver for your GPU "
                      "(nvidia-smi must work), or use --device cpu.")
        elif "InsufficientDriver" in text:
            version = driver_version(cupy)
            reason = (f"the NVIDIA driver is too old for this CuPy build (the driver supports "
                      f"CUDA {version // 1000}.{version % 1000 // 10}). Update the driver, or "
                      f"install the CuPy build for an older CUDA.")
        elif "NoDevice" in text:
            reason = "no CUDA device was found."
        else:
            reason = f"the CUDA runtime failed to start ({text})."
        raise DeviceUnavailableError(f"CUDA is not available: {reason} {INSTALL_HINT}") from error


class CupyBackend(NumpyBackend):
    """Arrays on one CUDA device; elementwise ops by our kernels."""

    name = "cupy"

    def __init__(self, index: int) -> None:
        cupy = import_cupy()
        count = count_devices(cupy)
        if count == 0:
            raise DeviceUnavailableError(f"CUDA is not available: no CUDA device was found. "
                                         f"{INSTALL_HINT}")
        if index >= count:
            raise DeviceUnavailableError(
                f"cuda:{index} was requested but this machine has {count} CUDA device(s): "
                f"use one of cuda:0 to cuda:{count - 1}."
            )
        self.xp = cupy
        self.index = index
        self.device = f"cuda:{index}"
        self._cuda_device = cupy.cuda.Device(index)
        with self._cuda_device:
            self.random = cupy.random.default_rng()
            sms = self._cuda_device.attributes["MultiProcessorCount"]
        self.max_blocks = sms * 32  # enough blocks to fill the device; the loop covers the rest
        self.out_of_memory_errors = (cupy.cuda.memory.OutOfMemoryError, MemoryError)
        self._ones_cache = {}
        self._functions: dict[tuple[str, str], Any] = {}  # (kernel, dtype) -> loaded kernel
        self._check_kernels()

    def _check_kernels(self) -> None:
        """Compile and load the kernels now, so a CuPy that cannot (no CUDA headers or NVRTC
        library: a plain CuPy wheel on a machine with only the driver) fails at device choice
        with the fix, not in the middle of the first epoch."""
        try:
            for kernel in kernels.KERNELS:
                for dtype in kernels.DTYPES:
                    self._function(kernel, dtype)
        except Exception as error:  # CompileException, RuntimeError, OSError, ImportError, ...
            raise DeviceUnavailableError(
                f"{self.device} cannot run gpunn's CUDA kernels: CuPy failed to compile or load "
                f"them ({type(error).__name__}: {' '.join(str(error).split())[:300]}). CuPy "
                f"needs the CUDA headers and NVRTC; install them from wheels with "
                f"pip install 'gpunn[cuda12]' (or 'gpunn[cuda13]'), which brings CuPy's ctk "
                f"extra, or install the CUDA toolkit.") from error

    def is_out_of_memory(self, error: BaseException) -> bool:
        # cuBLAS allocates its workspace outside CuPy's pool and reports a failure as
        # CUBLASError CUBLAS_STATUS_ALLOC_FAILED (status 3) instead of OutOfMemoryError.
        return super().is_out_of_memory(error) or (
            type(error).__name__ == "CUBLASError" and getattr(error, "status", None) == 3)

    def __repr__(self) -> str:
        return f"<gpunn backend {self.device}>"

    def activate(self) -> contextlib.AbstractContextManager:
        return self._cuda_device

    def synchronize(self) -> None:
        self._cuda_device.synchronize()

    def asarray(self, data: Any, dtype: Any = None) -> Any:
        with self._cuda_device:
            return self.xp.asarray(data, dtype=dtype)

    def to_numpy(self, array: Any) -> numpy.ndarray:
        if isinstance(array, self.xp.ndarray):
            return self.xp.asnumpy(array)
        return numpy.asarray(array)

    def holds(self, nbytes: int) -> bool:
        # A quarter of the free memory at most, leaving the rest for activations and gradients;
        # larger data stays on the host and moves over a batch at a time.
        with self._cuda_device:
            free, _ = self.xp.cuda.runtime.memGetInfo()
        return nbytes <= free // 4

    def seed(self, seed: int) -> None:
        with self._cuda_device:
            self.random = self.xp.random.default_rng(seed)

    # ---- kernel-backed ops -----------------------------------------------------------------

    # Each runs wholly on this backend's device (copies, the output and the launch), whatever
    # device is current; the generic ops above run on the current one, which the model sets.

    def relu(self, x: Any, out: Any = None) -> Any:
        with self._cuda_device:
            if not self._has_kernel(x):
                return super().relu(x, out=out)
            x, out = self._contiguous(x), self._output(x, out)
            self._launch("relu", x.dtype, x.size, (x, out, numpy.int64(x.size)))
            return out

    def relu_backward(self, dvalues: Any, inputs: Any, out: Any = None) -> Any:
        with self._cuda_device:
            if not self._has_kernel(dvalues) or inputs.dtype != dvalues.dtype:
                return super().relu_backward(dvalues, inputs, out=out)
            dvalues, inputs = self._contiguous(dvalues), self._contiguous(inputs)
            out = self._output(dvalues, out)
            n = dvalues.size
            self._launch("relu_backward", dvalues.dtype, n,
                         (dvalues, inputs, out, numpy.int64(n)))
            return out

    def bias_add(self, x: Any, biases: Any, out: Any = None) -> Any:
        return self._bias_op("bias_add", x, biases, out)

    def bias_relu(self, x: Any, biases: Any, out: Any = None) -> Any:
        return self._bias_op("bias_relu", x, biases, out)

    # ---- launching -------------------------------------------------------------------------

    def _bias_op(self, kernel: str, x: Any, biases: Any, out: Any) -> Any:
        _check_bias(x, biases)
        with self._cuda_device:
            if not self._has_kernel(x) or biases.dtype != x.dtype:
                return getattr(super(), kernel)(x, biases, out=out)
            x, biases = self._contiguous(x), self._contiguous(biases)
            out = self._output(x, out)
            n, cols = x.size, x.shape[1]
            self._launch(kernel, x.dtype, n,
                         (x, biases, out, numpy.int64(n), numpy.int64(cols)))
            return out

    def _has_kernel(self, x: Any) -> bool:
        return x.dtype.name in kernels.DTYPES

    def _contiguous(self, x: Any) -> Any:
        return self.xp.ascontiguousarray(x)

    def _output(self, like: Any, out: Any) -> Any:
        if out is None:
            return self.xp.empty_like(like)
        if not out.flags.c_contiguous or out.shape != like.shape or out.dtype != like.dtype:
            raise InvalidArgumentError(f"out must be a C-contiguous {like.dtype} array of shape "
                             f"{like.shape}; received {out.dtype} {out.shape}")
        return out

    def _launch(self, kernel: str, dtype: Any, n: int, args: tuple) -> None:
        if n == 0:
            return
        function = self._function(kernel, numpy.dtype(dtype).name)
        grid = min((n + BLOCK - 1) // BLOCK, self.max_blocks)
        function((grid,), (BLOCK,), args)  # the callers made this backend's device current

    def _function(self, kernel: str, dtype: str) -> Any:
        """The loaded kernel for this backend's device: looked up once (CuPy makes a new
        kernel object on every get_function)."""
        function = self._functions.get((kernel, dtype))
        if function is None:
            filename = kernels.KERNELS[kernel]
            module = _modules.get(filename)
            if module is None:
                module = self.xp.RawModule(
                    code=kernels.read_source(filename),
                    options=kernels.NVRTC_OPTIONS,
                    name_expressions=kernels.name_expressions(filename),
                )
                _modules[filename] = module
            with self._cuda_device:
                function = module.get_function(kernels.name_expression(kernel, dtype))
            self._functions[(kernel, dtype)] = function
        return function
