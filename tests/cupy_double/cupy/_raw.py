"""``cupy.RawModule`` of the double: gpunn's kernels run for real, through the host shim.

The module takes CuPy's compile options (the caller's plus ``-ftz=true``, which CuPy always
adds), checks them and the source with real NVRTC when cuda-bindings is installed, compiles the
same source as C++ with tests/kernel_host/shim.h, and launches each kernel with exactly the
(grid, block, args) it is given. Every argument is checked against the kernel's C signature:
count, order, pointer or scalar, and width; an array must live on the current device.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy

from cupy import _sim
from cupy._core import _device_error, check_call, ndarray

TESTS = Path(__file__).resolve().parents[2]
CUPY_OPTIONS = ("-ftz=true",)  # what CuPy adds to every NVRTC compile (cupy/cuda/compiler.py)
_KNOWN_OPTIONS = ("--std=", "-std=", "-ftz=", "--use_fast_math", "-use_fast_math", "-I", "-D",
                  "--gpu-architecture=", "-arch=")
_builds: dict[tuple, Any] = {}  # (code, expressions) -> host module, once per process
_nvrtc_checked: set[tuple] = set()


def _cache_dir() -> Path:
    folder = Path(os.environ.get("GPUNN_CUPY_DOUBLE_CACHE")
                  or Path(tempfile.gettempdir()) / f"gpunn-cupy-double-{os.getuid()}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _host_module(code: str, expressions: tuple[str, ...], low_precision: bool) -> Any:
    key = (code, expressions, low_precision)
    if key not in _builds:
        if str(TESTS) not in sys.path:
            sys.path.insert(0, str(TESTS))
        import kernel_host

        _builds[key] = kernel_host.build(_cache_dir(), code=code, expressions=list(expressions),
                                         low_precision=low_precision)
    return _builds[key]


def _cuda_include_options() -> tuple[str, ...]:
    """The -I CuPy adds for CUDA's headers (cupy/_core/core.pyx,
    assemble_cupy_compiler_options: the cudart wheel's include folder, found by
    cuda-pathfinder, or the toolkit's). Without them CuPy 14.2 refuses every compile, whatever
    the source includes (core.pyx, lines 2593-2603), before looking in its kernel cache."""
    from gpunn.backend import nvrtc

    include = nvrtc.cuda_include_dir()
    if include is None:
        raise RuntimeError("Failed to find CUDA headers. Please install CUDA toolkit headers "
                           "(e.g., pip install cupy-cuda12x[ctk]) or specify CUDA_PATH "
                           "environment variable.")
    return (f"-I{include}",)


def _nvrtc_check(code: str, options: tuple[str, ...], expressions: tuple[str, ...]) -> None:
    """Compile with real NVRTC, as CuPy would, when the bindings are installed."""
    key = (code, options, expressions)
    if key in _nvrtc_checked:
        return
    from gpunn.backend import nvrtc

    module, _ = nvrtc.load()
    if module is not None:
        compiled = nvrtc.compile_source(module, code, "cupy_double.cu", list(expressions),
                                        "sm_90", options)
        if not compiled.ok:
            from cupy.cuda.compiler import CompileException

            raise CompileException(compiled.log, code, "cupy_double.cu", options)
    _nvrtc_checked.add(key)


class RawModule:
    """CUDA source compiled on first use, loaded once per device."""

    def __init__(self, code: str | None = None, path: str | None = None, options: tuple = (),
                 backend: str = "nvrtc", translate_cucomplex: bool = False, *,
                 enable_cooperative_groups: bool = False, name_expressions: Any = None,
                 jitify: bool = False) -> None:
        if code is None:
            raise NotImplementedError("the CuPy double runs RawModule(code=...) only")
        if backend != "nvrtc" or jitify or enable_cooperative_groups:
            raise NotImplementedError("the CuPy double models the NVRTC backend only")
        if not isinstance(options, tuple):
            raise TypeError(f"options must be a tuple; received {type(options).__name__}")
        for option in options:
            if not isinstance(option, str) or not option.startswith(_KNOWN_OPTIONS):
                raise ValueError(f"NVRTC would reject the option {option!r}")
        self.code = code
        self.options = options
        self.name_expressions = tuple(name_expressions or ())
        self._loaded: set[int] = set()

    def get_function(self, name: str) -> RawKernel:
        """A new kernel object for ``name`` on every call, as CuPy makes one."""
        _sim.counters["get_function"] += 1
        if name not in self.name_expressions:
            raise RuntimeError(f"cuModuleGetFunction failed: CUDA_ERROR_NOT_FOUND ({name!r} is "
                               f"not among the module's name_expressions)")
        options = self.options + CUPY_OPTIONS
        includes = _cuda_include_options()  # CuPy's refusal comes before any compile
        _nvrtc_check(self.code, options + includes, self.name_expressions)
        # gpunn's one define: -DGPUNN_LOW_PRECISION, its float16 and bfloat16 compile
        low_precision = "-DGPUNN_LOW_PRECISION" in options
        module = _host_module(self.code, self.name_expressions, low_precision)
        if _sim.current() not in self._loaded:
            _sim.counters["module_load"] += 1
            self._loaded.add(_sim.current())
        return RawKernel(None, name, _module=module, _ftz="-ftz=true" in options,
                         _device=_sim.current())


class RawKernel:
    """One kernel instance, loaded on the device current when it was looked up."""

    def __init__(self, code: str | None, name: str, options: tuple = (), backend: str = "nvrtc",
                 *, translate_cucomplex: bool = False, enable_cooperative_groups: bool = False,
                 jitify: bool = False, _module: Any = None, _ftz: bool = True,
                 _device: int | None = None) -> None:
        if _module is None:
            raise NotImplementedError("the CuPy double makes kernels through RawModule only")
        self.name = name
        self._module, self._device = _module, _device
        self._params = _module.params[name]
        # -ftz=true flushes float32 arithmetic, so a kernel with float parameters runs flushed,
        # as do the half-precision ones, which compute in float.
        # The host FPU mode covers float64 too: the float64 values such a kernel also handles
        # (hyperparameters, the tally's sums) would flush where a GPU keeps them; gpunn's are
        # not subnormal in practice.
        self._ftz = _ftz and any(param.base in ("float", "__half", "__nv_bfloat16")
                                 for param in self._params)

    def __call__(self, grid: Any, block: Any, args: Any, **kwargs: Any) -> None:
        check_call("cupy.RawKernel", "__call__", (grid, block, args), kwargs)
        if _sim.current() != self._device:
            raise RuntimeError(f"cuLaunchKernel failed: CUDA_ERROR_INVALID_HANDLE ({self.name} "
                               f"was loaded on cuda-sim:{self._device} but cuda-sim:"
                               f"{_sim.current()} is current)")
        grid_x, block_x = _dimension("grid", grid, 2**31 - 1), _dimension("block", block, 1024)
        if not isinstance(args, tuple):
            raise TypeError(f"args must be a tuple; received {type(args).__name__}")
        if len(args) != len(self._params):
            raise TypeError(f"{self.name} takes {len(self._params)} arguments "
                            f"({', '.join(p.c_type + ' ' + p.name for p in self._params)}); "
                            f"received {len(args)}")
        values = [_argument(self.name, i, param, value)
                  for i, (param, value) in enumerate(zip(self._params, args))]
        def launch() -> None:
            self._module.launch(self.name, grid_x, block_x, values, ftz=self._ftz)

        launch.arrays = args  # a graph's replays write to these addresses: keep them alive

        _sim.launch(raw=True, replay=launch)
        launch()


def _dimension(what: str, value: Any, limit: int) -> int:
    if not isinstance(value, tuple):
        raise TypeError(f"Argument '{what}' has incorrect type (expected tuple, got "
                        f"{type(value).__name__})")
    dims = value
    if not 1 <= len(dims) <= 3 or not all(isinstance(d, (int, numpy.integer)) and d >= 1
                                           for d in dims):
        raise ValueError(f"{what} must be 1 to 3 positive integers; received {value!r}")
    if any(int(d) != 1 for d in dims[1:]):
        raise NotImplementedError(f"the CuPy double launches 1-D {what}s only; received "
                                  f"{value!r}")
    if int(dims[0]) > limit:
        raise ValueError(f"{what} x-dimension {dims[0]} exceeds CUDA's limit {limit}")
    return int(dims[0])


def _argument(kernel: str, index: int, param: Any, value: Any) -> Any:
    where = f"{kernel} argument {index} ({param.c_type} {param.name})"
    if isinstance(value, numpy.ndarray):
        if value.size != 1:
            raise TypeError(f"You are trying to pass a numpy.ndarray of shape {value.shape} as "
                            f"a kernel parameter. Only numpy.ndarrays of size one can be passed "
                            f"by value. If you meant to pass a pointer to __global__ memory, "
                            f"you need to pass a cupy.ndarray instead. ({where})")
        value = value.reshape(())[()]  # CuPy passes a one-element host array by value
    if param.pointer:
        if not isinstance(value, ndarray):
            raise TypeError(f"{where} must be a device array; received {type(value).__name__}")
        if value._device != _sim.current():
            raise _device_error(value._device)
        if value.dtype != param.dtype:
            raise TypeError(f"{where} points to {param.base} but the array holds {value.dtype}")
        if not value._a.flags.c_contiguous:
            raise ValueError(f"{where}: the kernel indexes memory as C-contiguous; received a "
                             f"non-contiguous array")
        return value._a.ctypes.data
    if isinstance(value, ndarray):
        raise TypeError(f"{where} is a scalar; received a device array")
    if isinstance(value, bool):
        value = numpy.bool_(value)  # one byte in CuPy 14 (eight in CuPy 13)
    elif isinstance(value, int):
        value = numpy.int64(value)  # CuPy passes a Python int as 8 bytes
    elif isinstance(value, float):
        value = numpy.float64(value)
    if not isinstance(value, numpy.generic) or value.dtype != param.dtype:
        got = value.dtype if isinstance(value, numpy.generic) else type(value).__name__
        raise TypeError(f"{where} needs a {param.dtype} scalar ({param.dtype.itemsize} bytes); "
                        f"received {got}: CuPy would pass the wrong bytes")
    return value.item()
