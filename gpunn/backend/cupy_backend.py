"""The CUDA backend: CuPy arrays, with our kernels from kernels/ for the elementwise ops.

Only the ops a kernel speeds up are overridden; everything else is the NumPy backend's code
running on ``cupy`` through ``self.xp``. Kernels exist for float32 and float64, and the
elementwise ones and dropout for float16 and bfloat16 too (a second module, compiled on first
use: it includes CUDA's half-precision headers); other dtypes fall back to the generic op.
CuPy 14 compiles nothing without CUDA's headers, so then the device is refused when chosen.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy

from gpunn.backend import kernels
from gpunn.backend.numpy_backend import (
    NumpyBackend,
    _check_bias,
    _check_softmax_ce,
    scaler_settings,
)
from gpunn.errors import DeviceUnavailableError, InvalidArgumentError

INSTALL_HINT = (
    "Install the CuPy build for your CUDA driver: pip install 'gpunn[cuda12]' or "
    "'gpunn[cuda13]' (nvidia-smi shows the CUDA version the driver supports)."
)
BLOCK = 256
# Dropout's uniforms come from CuPy's XORWOW generator, whose kernels run one thread per
# generator state, and every thread reads and writes its 48-byte state on every draw, however
# few values are drawn. cupy.random.default_rng() makes 2,048 states per multiprocessor (CuPy's
# full occupancy: 270,336 on an H200's 132, 26 MB moved per draw). 512 (two of CuPy's 256-thread
# blocks) moves a quarter of that and, by estimate (not yet measured on a GPU), still keeps
# large draws at the memory's speed: 16 warps per multiprocessor hide the generator's
# arithmetic. CuPy launches ceil(states / 256) blocks of 256, so the count must be a multiple
# of 256 (its threads past the last state would read and write past the end).
RANDOM_STATES_PER_SM = 2 * 256
# The oldest GPUs the kernels run on: compute capability 6.0 (Pascal), the first with atomicAdd
# on doubles, which softmax_ce.cu sums the loss with.
MIN_COMPUTE_CAPABILITY = (6, 0)
# (kernel file, low precision) -> cupy.RawModule, compiled once per process
_modules: dict[tuple[str, bool], Any] = {}


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


def _check_compute_capability(device: str, found: str) -> None:
    """Refuse a GPU older than the kernels need; ``found`` as CuPy writes it ("52", "120")."""
    major, minor = divmod(int(found), 10)
    if (major, minor) < MIN_COMPUTE_CAPABILITY:
        needed = ".".join(map(str, MIN_COMPUTE_CAPABILITY))
        raise DeviceUnavailableError(
            f"{device} has compute capability {major}.{minor}; gpunn's CUDA kernels need "
            f"{needed} or newer (NVIDIA Pascal, 2016, and later GPUs). Train on the CPU "
            f"(--device cpu, or gpunn.Model(device='cpu')), or on a newer GPU.")


class CupyBackend(NumpyBackend):
    """Arrays on one CUDA device; elementwise ops and the fused training step by our kernels."""

    name = "cupy"
    fused = True

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
        _check_compute_capability(self.device, self._cuda_device.compute_capability)
        with self._cuda_device:
            self.sms = self._cuda_device.attributes["MultiProcessorCount"]
        self.max_blocks = self.sms * 32  # blocks enough to fill the device; the loop does the rest
        self.random = self._generator(None)
        self.out_of_memory_errors = (cupy.cuda.memory.OutOfMemoryError, MemoryError)
        self._ones_cache = {}
        self._functions: dict[tuple[str, str], Any] = {}  # (kernel, dtype) -> loaded kernel
        self._blas: Any = None  # gpunn.backend.blas.Blas, made on the first product
        self._blas_error: str | None = None  # why it could not be made: tried once per device
        self._blas_bound: Any = None  # the same while ``capturable`` is in force
        self._low_precision_error: str | None = None
        self._low_precision_checked = False
        self._check_kernels()

    def _check_kernels(self) -> None:
        """Compile and load the kernels now, so a CuPy that cannot (no CUDA headers or NVRTC
        library: a plain CuPy wheel on a machine with only the driver) fails at device choice
        with the fix, not in the middle of the first epoch."""
        try:
            for kernel in kernels.KERNELS:
                for dtype in kernels.dtypes(kernel):
                    self._function(kernel, dtype)
        except Exception as error:  # CompileException, RuntimeError, OSError, ImportError, ...
            raise DeviceUnavailableError(
                f"{self.device} cannot run gpunn's CUDA kernels: CuPy failed to compile or load "
                f"them ({type(error).__name__}: {' '.join(str(error).split())[:300]}). CuPy "
                f"needs the CUDA headers and NVRTC; install them from wheels with "
                f"pip install 'gpunn[cuda12]' (or 'gpunn[cuda13]'), which brings CuPy's ctk "
                f"extra, or install the CUDA toolkit.") from error

    def low_precision_error(self, dtype: str = "float16") -> str | None:
        """Why the float16 and bfloat16 kernels cannot run on this device, or None when they
        can. The first call compiles and loads them (they need CUDA's cuda_fp16.h and
        cuda_bf16.h, which float32 and float64 training never does); until they load, those
        ops run as the generic CuPy code. For ``dtype="bfloat16"`` CuPy must have bfloat16
        arrays at all: only with ml_dtypes and NumPy 2.1.2 or newer (cupy/_core/_scalar.pyx)."""
        if dtype == "bfloat16":
            reason = super().low_precision_error(dtype)
            if reason is not None:
                return reason
            try:
                with self._cuda_device:
                    self.xp.empty(0, dtype="bfloat16")
            except (ValueError, TypeError) as error:
                return (f"CuPy {self.xp.__version__} has no bfloat16 arrays here ({error}): it "
                        f"needs ml_dtypes and NumPy 2.1.2 or newer (found NumPy "
                        f"{numpy.__version__}); pip install 'numpy>=2.1.2' ml_dtypes")
        if not self._low_precision_checked:
            self._low_precision_checked = True
            try:
                for kernel in kernels.LOW_PRECISION_KERNELS:
                    for dtype in kernels.dtypes(kernel, low_precision=True):
                        self._function(kernel, dtype)
            except Exception as error:  # CompileException (no headers), RuntimeError, ...
                self._low_precision_error = (
                    f"{self.device} cannot run gpunn's float16 and bfloat16 kernels: CuPy failed "
                    f"to compile or load them ({type(error).__name__}: "
                    f"{' '.join(str(error).split())[:300]}). They need CUDA's cuda_fp16.h and "
                    f"cuda_bf16.h: pip install 'gpunn[cuda13]' (or 'gpunn[cuda12]'), which brings "
                    f"CuPy's ctk extra with the CUDA headers, or install the CUDA toolkit.")
        return self._low_precision_error

    def is_out_of_memory(self, error: BaseException) -> bool:
        # cuBLAS allocates its workspace outside CuPy's pool and reports a failure as
        # CUBLAS_STATUS_ALLOC_FAILED (status 3) instead of OutOfMemoryError: CuPy raises it as
        # CUBLASError, nvmath-python (gpunn.backend.blas) as cuBLASError.
        return super().is_out_of_memory(error) or (
            type(error).__name__.lower() == "cublaserror" and getattr(error, "status", None) == 3)

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
        self.random = self._generator(seed)

    def _generator(self, seed: int | None) -> Any:
        """A random generator on this device with RANDOM_STATES_PER_SM states per
        multiprocessor (see there), seeded from ``seed`` (None: fresh entropy from the OS)."""
        with self._cuda_device:
            states = self.xp.random.XORWOW(seed, size=RANDOM_STATES_PER_SM * self.sms)
            return self.xp.random.Generator(states)

    # ---- matrix products ---------------------------------------------------------------------

    def gemm(self, a: Any, b: Any, out: Any = None, *, trans_a: bool = False,
             trans_b: bool = False, tf32: bool = False) -> Any:
        # cuBLAS directly (gpunn.backend.blas) wherever nvmath-python loads, inside a capture or
        # not, so captured and uncaptured steps compute alike; 16-bit and TF32 products need it
        # too (CuPy's dot can neither write a 16-bit product into a float32 result nor switch
        # TF32 per product). Without nvmath-python, CuPy's dot (TF32 then as CUPY_TF32 says).
        blas = self._blas_bound
        if blas is None and self.why_no_cuda_graph() is None:
            blas = self._blas
        if blas is None or a.dtype != b.dtype or a.dtype not in blas.types:
            return super().gemm(a, b, out=out, trans_a=trans_a, trans_b=trans_b)
        with self._cuda_device:
            a, b = self._contiguous(a), self._contiguous(b)
            if out is None:
                out = self.xp.empty((a.shape[1] if trans_a else a.shape[0],
                                     b.shape[0] if trans_b else b.shape[1]), dtype=a.dtype)
            return blas.gemm(a, b, out, trans_a, trans_b, tf32=tf32)

    def cast(self, x: Any, dtype: Any = None, out: Any = None) -> Any:
        with self._cuda_device:
            return super().cast(x, dtype, out=out)

    def compute_capability(self) -> tuple[int, int]:
        return divmod(int(self._cuda_device.compute_capability), 10)

    def why_no_cuda_graph(self) -> str | None:
        if self._blas is None and self._blas_error is None:
            try:
                from gpunn.backend import blas

                self._blas = blas.Blas(self.xp, self._cuda_device)
            except Exception as error:  # ImportError; a cuBLAS that does not start
                reason = (f"matrix products cannot be captured on {self.device}: "
                          f"{' '.join(str(error).split())[:600]}")
                if self.is_out_of_memory(error):  # its workspace did not fit now; maybe later
                    return reason
                # remembered: every product asks, and a failed import is slow to fail again
                self._blas_error = reason
        return self._blas_error

    @contextlib.contextmanager
    def capturable(self, stream: Any) -> Any:
        """Within this block, matrix products are issued to cuBLAS directly on ``stream``, where
        a CUDA graph can capture them (CuPy refuses cuBLAS during a capture). Raises
        DeviceUnavailableError, saying why, when that cannot be had (nvmath-python missing)."""
        reason = self.why_no_cuda_graph()
        if reason is not None:
            raise DeviceUnavailableError(reason)
        with self._cuda_device:
            self._blas.bind(stream)
        self._blas_bound = self._blas
        try:
            yield
        finally:
            self._blas_bound = None

    # ---- kernel-backed ops -----------------------------------------------------------------

    # Each runs wholly on this backend's device (copies, the output and the launch), whatever
    # device is current; the generic ops above run on the current one, which the model sets.

    def relu(self, x: Any, out: Any = None) -> Any:
        with self._cuda_device:
            if not self._has_kernel(x, low_precision=True):
                return super().relu(x, out=out)
            x, out = self._contiguous(x), self._output(x, out)
            self._launch("relu", x.dtype, x.size, (x, out, numpy.int64(x.size)))
            return out

    def relu_backward(self, dvalues: Any, inputs: Any, out: Any = None) -> Any:
        with self._cuda_device:
            if (not self._has_kernel(dvalues, low_precision=True)
                    or inputs.dtype != dvalues.dtype):
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

    # ---- the fused training step -------------------------------------------------------------

    def softmax_ce(self, logits: Any, labels: Any, tally: Any, *, probs: Any = None,
                   dlogits: Any = None, scale_rows: int | None = None) -> tuple[Any, Any]:
        rows, cols = _check_softmax_ce(logits, labels, tally)
        with self._cuda_device:
            if not self._has_kernel(logits):
                return super().softmax_ce(logits, labels, tally, probs=probs, dlogits=dlogits,
                                          scale_rows=scale_rows)
            self._check_tally(tally)
            logits = self._contiguous(logits)
            if labels.dtype != numpy.int64 or not labels.flags.c_contiguous:
                labels = self.xp.ascontiguousarray(labels, dtype=numpy.int64)
            probs, dlogits = self._output(logits, probs), self._output(logits, dlogits)
            scale_rows = rows if scale_rows is None else scale_rows
            self._launch("softmax_ce", logits.dtype, rows,
                         (logits, labels, probs, dlogits, tally, numpy.int64(rows),
                          numpy.int64(cols), numpy.int64(scale_rows)))
            return probs, dlogits

    def dropout(self, x: Any, u: Any, keep: float, *, mask: Any = None,
                out: Any = None) -> tuple[Any, Any]:
        with self._cuda_device:
            if (not self._has_kernel(x, low_precision=True) or u.dtype != _accumulate(x.dtype)
                    or u.shape != x.shape):
                return super().dropout(x, u, keep, mask=mask, out=out)
            x, u = self._contiguous(x), self._contiguous(u)
            mask, out = self._output(x, mask), self._output(x, out)
            self._launch("dropout", x.dtype, x.size,
                         (x, u, mask, out, numpy.int64(x.size), float(keep)))
            return mask, out

    def optimizer_step(self, rule: str, parameters: Any, gradients: Any, state: dict,
                       hyper: dict, tally: Any) -> None:
        """One step of the update ``rule`` ("sgd", "sgd_momentum", "adagrad", "rmsprop" or
        "adam") on ``parameters`` and the ``state`` arrays in place ("momentums", "cache", as
        gpunn/optimizers.py names them), with the hyperparameters in ``hyper`` (learning_rate,
        decay, momentum, epsilon, rho, beta_1, beta_2, as the optimizer's config names them).
        The step count and the divergence flag come from ``tally`` on the device: after a
        non-finite loss nothing changes. Each optimizer's _update is the NumPy twin.

        Example: ``backend.optimizer_step("adam", params, grads, opt.state, opt.config(), t)``.
        """
        if rule not in kernels.OPTIMIZER_RULES:
            raise InvalidArgumentError(f"Unknown update rule {rule!r}: expected one of "
                                       f"{', '.join(map(repr, kernels.OPTIMIZER_RULES))}.")
        state_names, hyper_names = kernels.OPTIMIZER_RULES[rule]
        missing = [name for name in ("learning_rate", "decay", *hyper_names) if name not in hyper]
        missing += [name for name in state_names if name not in state]
        if missing:
            raise InvalidArgumentError(f"optimizer_step {rule!r} needs {', '.join(missing)}; "
                                       f"received state {sorted(state)}, hyper {sorted(hyper)}.")
        arrays = (parameters, gradients, *(state[name] for name in state_names))
        if not self._has_kernel(parameters) or any(
                not a.flags.c_contiguous or a.shape != parameters.shape
                or a.dtype != parameters.dtype for a in arrays):
            raise InvalidArgumentError(
                f"optimizer_step updates in place: parameters, gradients and "
                f"{', '.join(state_names) or 'no state'} must be C-contiguous float32 or float64 "
                f"arrays of one shape and dtype; received "
                f"{', '.join(f'{a.dtype} {a.shape}' for a in arrays)}.")
        with self._cuda_device:
            self._check_tally(tally)
            n = parameters.size
            # Python floats: CuPy passes them as C doubles (a NumPy float32 would be 4 bytes).
            scalars = (float(hyper[name]) for name in ("learning_rate", "decay", *hyper_names))
            self._launch(rule, parameters.dtype, n, (*arrays, numpy.int64(n), *scalars, tally))

    def unscale(self, gradients: Any, tally: Any) -> None:
        if gradients.dtype.name not in kernels.DTYPES or not gradients.flags.c_contiguous:
            raise InvalidArgumentError(
                f"unscale works in place on a C-contiguous float32 or float64 array; received "
                f"{gradients.dtype} {gradients.shape}"
                f"{'' if gradients.flags.c_contiguous else ' (not contiguous)'}.")
        with self._cuda_device:
            self._check_tally(tally)
            n = gradients.size
            self._launch("unscale", gradients.dtype, n, (gradients, numpy.int64(n), tally))

    def advance(self, tally: Any, scaler: Any = None) -> None:
        growth_factor, backoff_factor, growth_interval, min_scale = scaler_settings(scaler)
        with self._cuda_device:
            self._check_tally(tally)
            self._function("advance", None)(
                (1,), (1,), (tally, growth_factor, backoff_factor,
                             numpy.int64(growth_interval), min_scale))

    def _check_tally(self, tally: Any) -> None:
        if (not isinstance(tally, self.xp.ndarray) or tally.dtype != numpy.float64
                or tally.shape != (kernels.TALLY_SIZE,) or not tally.flags.c_contiguous):
            raise InvalidArgumentError(
                f"the tally must be a contiguous float64 device array of shape "
                f"({kernels.TALLY_SIZE},); "
                f"received {type(tally).__name__} {getattr(tally, 'dtype', '')} "
                f"{getattr(tally, 'shape', '')}.")

    # ---- launching -------------------------------------------------------------------------

    def _bias_op(self, kernel: str, x: Any, biases: Any, out: Any) -> Any:
        _check_bias(x, biases)
        with self._cuda_device:
            if (not self._has_kernel(x, low_precision=True)
                    or biases.dtype != _accumulate(x.dtype)):
                return getattr(super(), kernel)(x, biases, out=out)
            x, biases = self._contiguous(x), self._contiguous(biases)
            out = self._output(x, out)
            n, cols = x.size, x.shape[1]
            self._launch(kernel, x.dtype, n,
                         (x, biases, out, numpy.int64(n), numpy.int64(cols)))
            return out

    def _has_kernel(self, x: Any, *, low_precision: bool = False) -> bool:
        """Whether a kernel takes ``x``'s dtype; ``low_precision``: float16 and bfloat16 too,
        for the ops that have such instances, when they could be compiled here."""
        if x.dtype.name in kernels.DTYPES:
            return True
        return (low_precision and kernels.is_low_precision(x.dtype.name)
                and self.low_precision_error() is None)

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

    def _function(self, kernel: str, dtype: str | None) -> Any:
        """The loaded kernel for this backend's device: looked up once (CuPy makes a new
        kernel object on every get_function)."""
        function = self._functions.get((kernel, dtype))
        if function is None:
            filename = kernels.KERNELS[kernel]
            low_precision = kernels.is_low_precision(dtype)
            module = _modules.get((filename, low_precision))
            if module is None:
                module = self.xp.RawModule(
                    code=kernels.read_source(filename),
                    options=kernels.options(low_precision=low_precision),
                    name_expressions=kernels.name_expressions(filename,
                                                              low_precision=low_precision),
                )
                _modules[(filename, low_precision)] = module
            with self._cuda_device:
                function = module.get_function(kernels.name_expression(kernel, dtype))
            self._functions[(kernel, dtype)] = function
        return function


def _accumulate(dtype: Any) -> numpy.dtype:
    """The dtype a kernel over ``dtype`` computes in (Accum<T> in kernels/common.cuh), which
    its biases and dropout uniforms have: float32 for float16 and bfloat16, else ``dtype``."""
    dtype = numpy.dtype(dtype)
    return numpy.dtype(numpy.float32) if kernels.is_low_precision(dtype.name) else dtype
