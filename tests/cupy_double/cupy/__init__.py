"""A strict test double of CuPy, for running gpunn's CUDA path on a machine with no GPU.

NOT CuPy and NOT a GPU: arrays live in host memory on simulated devices named ``cuda-sim:N``.
What it is for is to refuse everything real CuPy refuses (NumPy arrays mixed into device
operations, implicit conversion to NumPy, operations across devices, names and keyword
arguments CuPy does not have, out-of-memory past a set capacity), to run gpunn's own CUDA
kernels through the host shim exactly as launched, and to count synchronisations and launches.
It is installed as ``cupy`` only when asked for: tests/conftest.py with ``--cupy-double``, or
``PYTHONPATH=tests/cupy_double`` for a subprocess. See tests/cupy_double/README.md.
"""

from typing import Any as _Any

import numpy as _numpy

from cupy import _core, _linalg, _sim, cuda, random  # noqa: F401  (cupy.cuda, cupy.random)
from cupy._core import check_call as _check_call
from cupy._core import cupy_function as _cupy_function
from cupy._core import fresh as _fresh
from cupy._core import ndarray, ufunc
from cupy._core import run as _run
from cupy._core import unwrap as _unwrap
from cupy._raw import RawKernel, RawModule  # noqa: F401

__version__ = _sim.VERSION

# NumPy's scalar types and dtype helpers are CuPy's too (cupy.float32 is _numpy.float32).
for _name in ("bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
              "float16", "float32", "float64", "complex64", "complex128", "dtype", "inf", "nan",
              "pi", "e", "newaxis", "result_type", "can_cast", "promote_types", "finfo", "iinfo",
              "issubdtype", "integer", "floating", "number", "generic"):
    globals()[_name] = getattr(_numpy, _name)

# ---- universal functions ------------------------------------------------------------------------
for _name in ("add", "subtract", "multiply", "divide", "true_divide", "floor_divide", "power",
              "remainder", "negative", "positive", "absolute", "sign", "sqrt", "square", "exp",
              "log", "log1p", "expm1", "tanh", "floor", "ceil", "maximum", "minimum", "fmax",
              "fmin", "isfinite", "isnan", "isinf", "equal", "not_equal", "less", "less_equal",
              "greater", "greater_equal", "logical_and", "logical_or", "logical_not",
              "bitwise_and", "bitwise_or", "bitwise_xor", "invert", "reciprocal"):
    globals()[_name] = ufunc(_name)
abs = globals()["absolute"]

# ---- functions on device arrays -----------------------------------------------------------------
for _name in ("where", "clip", "sum", "mean", "std", "var", "max", "min", "amax", "amin",
              "argmax", "argmin", "all", "any", "count_nonzero", "concatenate", "stack",
              "empty_like", "zeros_like", "ones_like", "full_like", "ascontiguousarray",
              "reshape", "ravel", "transpose", "allclose", "array_equal", "isclose", "cumsum",
              "sort", "argsort", "unique", "take", "outer", "around", "round"):
    globals()[_name] = _cupy_function(_name)

_where = globals()["where"]


def where(condition: _Any, x: _Any = None, y: _Any = None) -> _Any:
    """cupy.where: NumPy's, but as CuPy 14.2 types it: its ufunc has no bfloat16 loop
    (cupy/_sorting/search.py, _where_ufunc), so bfloat16 choices take the first loop they cast
    to safely, float32, and the result is float32."""
    result = _where(condition, x, y) if x is not None or y is not None else _where(condition)
    if isinstance(result, ndarray) and result.dtype.name == "bfloat16":
        return result.astype(_numpy.float32)
    return result


where.checked_at_call = True

# ---- matrix products: cuBLAS where CuPy calls it (refused in a capture; see cupy/_linalg.py) ---
for _name in ("dot", "matmul", "vdot", "inner", "tensordot", "einsum"):
    globals()[_name] = _linalg.product(_name)


# ---- arrays made on the device, from nothing ----------------------------------------------------


def _made(name: str) -> _Any:
    numpy_function = getattr(_numpy, name)

    def function(*args: _Any, **kwargs: _Any) -> _Any:
        _check_call("cupy", name, args, kwargs)
        raw_args, raw_kwargs = _unwrap(args), _unwrap(kwargs)
        made = _fresh(numpy_function(*raw_args, **raw_kwargs))
        if name == "empty":
            return made  # memory only: CuPy launches nothing
        _sim.launch(replay=_core.replaying(lambda: numpy_function(*raw_args, **raw_kwargs),
                                           made))
        return made

    function.__name__ = function.__qualname__ = name
    function.checked_at_call = True
    return function


for _name in ("empty", "zeros", "ones", "full", "arange", "eye", "identity", "linspace"):
    globals()[_name] = _made(_name)


# ---- between host and device -------------------------------------------------------------------


def array(obj: _Any, dtype: _Any = None, copy: bool = True, order: str = "K", subok: bool = False,
          ndmin: int = 0, *, blocking: bool = False) -> ndarray:
    """A device array from host data (a copy to the current device) or from a device array."""
    if isinstance(obj, ndarray):
        if obj._device != _sim.current():
            # CuPy copies an array from another device through peer-to-peer or the host.
            def make() -> _Any:
                return obj._a.astype(dtype or obj.dtype, order=order, copy=True)
            copy = _fresh(make())
            _sim.launch(replay=_core.replaying(make, copy))
            return copy
        if copy or (dtype is not None and _numpy.dtype(dtype) != obj.dtype):
            return _run(lambda a: _numpy.array(a, dtype=dtype, order=order, copy=True, ndmin=ndmin),
                       (obj,), {})
        return obj
    data = _unwrap(obj, host_ok=True)  # a list may hold device scalars of the current device
    host = _numpy.array(data, dtype=dtype, order="C" if order == "K" else order, copy=True,
                       ndmin=ndmin)
    if _core.unsupported(host.dtype):
        raise ValueError(f"Unsupported dtype {host.dtype}")
    _sim.host_to_device()
    return _fresh(host)


def asarray(a: _Any, dtype: _Any = None, order: _Any = None, *, copy: _Any = None,
            blocking: bool = False) -> ndarray:
    """``array(a, dtype, copy=False)``: no copy when ``a`` is already here and typed."""
    return array(a, dtype=dtype, copy=bool(copy), order=order or "K", blocking=blocking)


def asnumpy(a: _Any, stream: _Any = None, order: str = "C", out: _Any = None, *,
            blocking: bool = True) -> _numpy.ndarray:
    """A host copy: a synchronisation for a device array; host data passes through."""
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return _numpy.asarray(a, order=order)


def copyto(dst: ndarray, src: _Any, casting: str = "same_kind", where: _Any = None) -> None:
    """Copy ``src`` into ``dst`` (both on the current device)."""
    if not isinstance(dst, ndarray):
        raise TypeError(f"Argument 'dst' has incorrect type (expected cupy.ndarray, got "
                        f"{type(dst).__name__})")
    if isinstance(src, _numpy.ndarray) and src.size != 1:
        raise ValueError("non-scalar numpy.ndarray cannot be used for copyto")
    if isinstance(src, _numpy.ndarray):
        src = src.reshape(())[()]  # a one-element host array is a scalar to CuPy
    kwargs = {"casting": casting} if where is None else {"casting": casting, "where": where}
    _run(_numpy.copyto, (dst, src), kwargs)


def get_array_module(*args: _Any) -> _Any:
    """``cupy`` when any argument is a device array, else ``numpy``."""
    import cupy

    return cupy if any(isinstance(arg, ndarray) for arg in args) else _numpy


def show_config(*, _full: bool = False) -> None:
    """What CuPy found (its version, CUDA's, the libraries): here, that it is the double."""
    print(f"CuPy Version          : {__version__} (the CuPy double, tests/cupy_double: simulated "
          f"devices, not a GPU)")
    print(f"CUDA Runtime Version  : {cuda.runtime.runtimeGetVersion()} (simulated)")


_core.verify_namespace("cupy", globals())
