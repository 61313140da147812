"""The CPU's fast path: gpunn's own kernels compiled for the host, behind the NumPy backend's ops.

When the system has a C++ compiler, ``kernels/host.cpp`` (which includes the same .cu files the
GPU runs) is compiled once per machine, cached, and loaded with ctypes; the CPU backend is then a
``HostBackend``: the ops of NumpyBackend under the same names, each one fused, vectorized pass
on the cores NumPy's BLAS uses. The NumPy code stays the reference each op is tested against
and the fallback for whatever the kernels do not take (other dtypes, strided arrays, arrays so
small that a call through ctypes costs more than NumPy's few passes). Without a compiler, or
with ``GPUNN_HOST_KERNELS=0``, the CPU backend is NumpyBackend; ``gpunn info`` says which runs
and why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy

from gpunn.backend import kernels
from gpunn.backend.numpy_backend import NumpyBackend

ENV_VAR = "GPUNN_HOST_KERNELS"  # "0": the NumPy code only
THREADS_ENV_VAR = "GPUNN_HOST_THREADS"  # at most this many threads (default: the BLAS's)
CACHE_ENV_VAR = "GPUNN_CACHE_DIR"
SOURCES = ("host.cpp", "common.cuh", "elementwise.cu", "optimizers.cu", "softmax_ce.cu")
# -ffp-contract=off and no -ffast-math: the float steps stay the NumPy twin's (bit for bit);
# -fno-math-errno lets sqrt vectorize and changes no value. -march=native where the compiler
# has it: the cache is per machine (its key holds the CPU's flags).
FLAGS = ("-std=c++14", "-O3", "-fno-math-errno", "-ffp-contract=off",
         "-Wall", "-Werror", "-shared", "-fPIC", "-pthread")
# Below this many elements an elementwise op stays with NumPy: a call through ctypes costs
# about as much as NumPy's one or two passes over so few numbers. softmax_ce and the optimizer
# step replace many passes, and take any size.
MIN_ELEMENTS = 2048
_DTYPES = {numpy.dtype(numpy.float32): "f32", numpy.dtype(numpy.float64): "f64"}
_POINTER, _SIZE, _REAL = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_double
# entry point -> argument types (kernels/host.cpp), for each of _f32 and _f64
_SIGNATURES = {
    "relu": [_POINTER] * 2 + [_SIZE],
    "relu_backward": [_POINTER] * 3 + [_SIZE],
    "bias_add": [_POINTER] * 3 + [_SIZE] * 2,
    "bias_relu": [_POINTER] * 3 + [_SIZE] * 2,
    "softmax_ce": [_POINTER] * 5 + [_SIZE] * 3,
    "all_finite": [_POINTER, _SIZE],
    **{rule: [_POINTER] * (2 + len(state)) + [_SIZE] + [_REAL] * (2 + len(hyper)) + [_POINTER]
       for rule, (state, hyper) in kernels.OPTIMIZER_RULES.items()},
}

_loaded: tuple[Any, dict[str, Any]] | None = None


def cache_dir() -> Path:
    """Where compiled host kernels are kept: $GPUNN_CACHE_DIR/host, else the user's cache."""
    base = os.environ.get(CACHE_ENV_VAR) or os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base else Path.home() / ".cache"
    return (root if os.environ.get(CACHE_ENV_VAR) else root / "gpunn") / "host"


def compiler() -> str | None:
    """The C++ compiler: $CXX, else g++, c++ or clang++ on the PATH; None if there is none."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def load() -> tuple[Any, dict[str, Any]]:
    """(the loaded library or None, its status): compiled on first use, then from the cache.
    The status says whether the fast path is active and, if not, why not; the compile's
    seconds; the library's path."""
    global _loaded
    if _loaded is None:
        _loaded = _load()
    return _loaded


def _load() -> tuple[Any, dict[str, Any]]:
    if os.environ.get(ENV_VAR, "").strip() == "0":
        return None, {"active": False, "reason": f"turned off by {ENV_VAR}=0"}
    if sys.platform == "win32":
        return None, {"active": False, "reason": "not built on Windows (no tested compiler)"}
    cxx = compiler()
    if cxx is None:
        return None, {"active": False,
                      "reason": "no C++ compiler (g++, c++ or clang++; or set CXX)"}
    try:
        sources = {name: (kernels.kernel_dir() / name).read_bytes() for name in SOURCES}
    except Exception as error:  # OSError, or a wheel without kernels/: GpunnError
        return None, {"active": False, "reason": f"kernel sources missing: {error}"}
    errors = []
    for native in (True, False):  # some compilers have no -march=native
        flags = FLAGS + (("-march=native",) if native else ())
        try:
            path, seconds = _build(cxx, flags, sources)
            library = ctypes.CDLL(str(path))
        except (OSError, RuntimeError) as error:
            errors.append(str(error))
            continue
        _declare(library)
        library.gpunn_host_set_thread_source(_blas_thread_count(), _max_threads())
        return library, {"active": True, "path": str(path), "compiler": cxx,
                         "compile_seconds": seconds}
    return None, {"active": False, "reason": "could not build: " + errors[0][-1500:]}


def _build(cxx: str, flags: tuple[str, ...], sources: dict[str, bytes]) -> tuple[Path, Any]:
    """The library's path and the compile's seconds (None when it came from the cache)."""
    stat = os.stat(cxx)
    key = hashlib.sha256()
    for name, text in sources.items():
        key.update(name.encode() + b"\0" + text)
    key.update(repr((cxx, stat.st_size, stat.st_mtime_ns, flags, _cpu())).encode())
    folder = cache_dir()
    path = folder / f"gpunn_host_{key.hexdigest()[:20]}.so"
    if path.is_file():
        return path, None
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    command = [cxx, *flags, "-I", str(kernels.kernel_dir()),
               str(kernels.kernel_dir() / "host.cpp"), "-o", str(partial)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"{' '.join(command)}\n{result.stderr}")
    os.replace(partial, path)  # processes compiling at once never see half a library
    return path, seconds


def _cpu() -> str:
    """What -march=native depends on: the CPU's model and flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() + platform.machine()
    lines = [line for line in text.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))


def _blas_thread_count() -> int | None:
    """The address of OpenBLAS's get_num_threads in the library NumPy loaded, so each op asks
    it how many threads the BLAS uses now (threadpoolctl's limits, a rank's share); None for
    another BLAS: $GPUNN_HOST_THREADS threads then, else one."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = sorted({line.split()[-1] for line in maps.splitlines()
                    if "openblas" in line.lower() and line.split()[-1].startswith("/")})
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                     "openblas_get_num_threads64_", "openblas_get_num_threads"):
            function = getattr(library, name, None)
            if function is not None:
                return ctypes.cast(function, ctypes.c_void_p).value
    return None


def _max_threads() -> int:
    """$GPUNN_HOST_THREADS: at most this many threads; unset or 0: as many as the BLAS uses."""
    value = os.environ.get(THREADS_ENV_VAR, "").strip()
    return int(value) if value.isdigit() else 0


def _declare(library: Any) -> None:
    library.gpunn_host_set_thread_source.argtypes = [ctypes.c_void_p, ctypes.c_int]
    library.gpunn_host_set_thread_source.restype = None
    library.gpunn_host_threads.restype = ctypes.c_int
    for op, argtypes in _SIGNATURES.items():
        for suffix in ("f32", "f64"):
            function = getattr(library, f"gpunn_{op}_{suffix}")
            function.argtypes = argtypes
            function.restype = ctypes.c_int if op == "all_finite" else None


def _address(array: numpy.ndarray) -> int:
    """The address of a C-contiguous array's first element. Through ctypes' view of its buffer
    (about 1 us here) rather than ``array.ctypes.data`` (about 3.5 us, which builds a helper
    object): a step passes some twenty addresses. A read-only or empty array takes the latter."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError):
        return array.ctypes.data


def cpu_backend() -> NumpyBackend:
    """The CPU backend: HostBackend when the host kernels load, else NumpyBackend."""
    library, _ = load()
    return NumpyBackend() if library is None else HostBackend(library)


def status_line() -> str:
    """One line for ``gpunn info``: whether the CPU fast path is active, and why not."""
    library, status = load()
    if library is None:
        return (f"off ({status['reason']}): the NumPy code runs; a C++ compiler makes training "
                f"on the CPU faster")
    compiled = ("from the cache" if status["compile_seconds"] is None
                else f"compiled in {status['compile_seconds']:.1f} s")
    cap = _max_threads()
    threads = (f"{library.gpunn_host_threads()} thread(s), as many as the BLAS's"
               + (f", at most {cap} ({THREADS_ENV_VAR})" if cap else ""))
    return f"active: kernels/host.cpp by {status['compiler']}, {compiled}; {threads}"


class HostBackend(NumpyBackend):
    """NumpyBackend with the host kernels: each op below runs as one compiled pass when its
    arrays are C-contiguous float32 or float64 (an elementwise one: of at least MIN_ELEMENTS),
    else as NumPy's."""

    # The training step takes the output softmax, the loss, its gradient and the accuracy from
    # one softmax_ce pass (gpunn.training), as on a GPU.
    fused_softmax_ce = True

    def __init__(self, library: Any) -> None:
        super().__init__()
        self.library = library
        self._ops = {(op, dtype): getattr(library, f"gpunn_{op}_{suffix}")
                     for op in _SIGNATURES for dtype, suffix in _DTYPES.items()}
        self._optimizer_call: tuple = ((), (), None, [], 0)

    def __repr__(self) -> str:
        return "<gpunn backend cpu (host kernels)>"

    def _op(self, op: str, first: Any, *arrays: Any, minimum: int = 0) -> Any:
        """The compiled op for these arrays, or None: all plain C-contiguous arrays of one
        dtype the kernels have, and at least ``minimum`` elements."""
        if type(first) is not numpy.ndarray or first.size < minimum:
            return None
        dtype = first.dtype
        if dtype not in _DTYPES or not first.flags.c_contiguous:
            return None
        for array in arrays:
            if (type(array) is not numpy.ndarray or array.dtype != dtype
                    or not array.flags.c_contiguous):
                return None
        return self._ops[op, dtype]

    def relu(self, x: Any, out: Any = None) -> Any:
        run = self._op("relu", x, *(() if out is None else (out,)), minimum=MIN_ELEMENTS)
        if run is None or (out is not None and out.shape != x.shape):
            return super().relu(x, out=out)
        out = numpy.empty_like(x) if out is None else out
        run(_address(x), _address(out), x.size)
        return out

    def relu_backward(self, dvalues: Any, inputs: Any, out: Any = None) -> Any:
        run = self._op("relu_backward", dvalues, inputs, *(() if out is None else (out,)),
                       minimum=MIN_ELEMENTS)
        if run is None or inputs.shape != dvalues.shape or (
                out is not None and out.shape != dvalues.shape):
            return super().relu_backward(dvalues, inputs, out=out)
        out = numpy.empty_like(dvalues) if out is None else out
        run(_address(dvalues), _address(inputs), _address(out), dvalues.size)
        return out

    def bias_add(self, x: Any, biases: Any, out: Any = None) -> Any:
        result = self._bias("bias_add", x, biases, out)
        return super().bias_add(x, biases, out=out) if result is None else result

    def bias_relu(self, x: Any, biases: Any, out: Any = None) -> Any:
        result = self._bias("bias_relu", x, biases, out)
        return super().bias_relu(x, biases, out=out) if result is None else result

    def _bias(self, op: str, x: Any, biases: Any, out: Any) -> Any:
        run = self._op(op, x, biases, *(() if out is None else (out,)), minimum=MIN_ELEMENTS)
        if (run is None or x.ndim != 2 or biases.size != x.shape[1]
                or (out is not None and out.shape != x.shape)):
            return None
        out = numpy.empty_like(x) if out is None else out
        run(_address(x), _address(biases), _address(out), x.shape[0], x.shape[1])
        return out

    def softmax_ce(self, logits: Any, labels: Any, tally: Any, *, probs: Any = None,
                   dlogits: Any = None, scale_rows: int | None = None) -> tuple[Any, Any]:
        outputs = [array for array in (probs, dlogits) if array is not None]
        run = self._op("softmax_ce", logits, *outputs)
        if (run is None or logits.ndim != 2 or logits.shape[1] == 0
                or any(array.shape != logits.shape for array in outputs)
                or (len(outputs) == 2 and numpy.may_share_memory(probs, dlogits))
                or type(labels) is not numpy.ndarray or labels.shape != logits.shape[:1]
                or labels.dtype.kind not in "iu"
                or type(tally) is not numpy.ndarray or tally.dtype != numpy.float64
                or tally.shape != (kernels.TALLY_SIZE,) or not tally.flags.c_contiguous):
            return super().softmax_ce(logits, labels, tally, probs=probs, dlogits=dlogits,
                                      scale_rows=scale_rows)
        labels = numpy.ascontiguousarray(labels, dtype=numpy.int64)
        probs = numpy.empty_like(logits) if probs is None else probs
        dlogits = numpy.empty_like(logits) if dlogits is None else dlogits
        rows, cols = logits.shape
        run(_address(logits), _address(labels), _address(probs), _address(dlogits),
            _address(tally), rows, cols, rows if scale_rows is None else scale_rows)
        return probs, dlogits

    def optimizer_update(self, optimizer: Any, parameters: Any, gradients: Any) -> None:
        rule = optimizer.rule
        state_names, hyper_names = kernels.OPTIMIZER_RULES.get(rule, (None, None))
        if state_names is None:
            return super().optimizer_update(optimizer, parameters, gradients)
        state = [optimizer.state.get(name) for name in state_names]
        run = self._op(rule, parameters, gradients, *state)
        if run is None or any(array.shape != parameters.shape for array in (gradients, *state)):
            return super().optimizer_update(optimizer, parameters, gradients)
        # The buffers stay the same from step to step: their addresses are read once.
        # (It holds the arrays, so their ids stay theirs.)
        arrays = (parameters, gradients, *state)
        ids = tuple(map(id, arrays))
        if self._optimizer_call[0] != ids:
            tally = numpy.zeros(kernels.TALLY_SIZE)  # only the step count is read from it
            self._optimizer_call = (ids, arrays, tally, [a.ctypes.data for a in arrays],
                                    tally.ctypes.data)
        _, _, tally, pointers, tally_pointer = self._optimizer_call
        tally[kernels.TALLY_ITERATIONS] = optimizer.iterations
        hyper = optimizer.config()
        # The learning rate as the optimizer has it now (decay applied), so decay 0 here.
        run(*pointers, parameters.size, optimizer.current_learning_rate, 0.0,
            *(hyper[name] for name in hyper_names), tally_pointer)
        return None

    def all_finite(self, x: Any) -> bool:
        run = self._op("all_finite", x, minimum=MIN_ELEMENTS)
        if run is None:
            return super().all_finite(x)
        return bool(run(_address(x), x.size))
