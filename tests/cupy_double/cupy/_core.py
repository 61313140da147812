"""The double's device array and the machinery every function goes through.

A device array is a type of its own that wraps a NumPy array (its "device memory") and the
simulated device it lives on. Every operation first checks its arguments the way CuPy does:
NumPy arrays are refused (``TypeError: Unsupported type``), arrays on a device other than the
current one are refused (``ValueError``, no peer access), implicit conversion to NumPy is
refused, and keyword arguments must be ones the real CuPy function takes (cupy_api.json).
Each operation counts one kernel launch; each copy to the host counts one synchronisation.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

import numpy

from cupy import _sim

API = json.loads((Path(__file__).resolve().parent.parent / "cupy_api.json").read_text())
_UNSUPPORTED_KINDS = "OSUMmV"  # object, strings, datetimes, void: CuPy has no such arrays


def _has_bfloat16() -> bool:
    """CuPy 14 knows bfloat16 (ml_dtypes' dtype, kind "V") only when ml_dtypes imports and NumPy
    is 2.1.2 or newer (cupy/_core/_scalar.pyx, _setup_type_dict: older NumPy crashes on its
    loops); otherwise check_supported_dtype finds no C type name and refuses the dtype."""
    if numpy.lib.NumpyVersion(numpy.__version__) < "2.1.2":
        return False
    try:
        import ml_dtypes  # noqa: F401
    except ImportError:
        return False
    return True


HAS_BFLOAT16 = _has_bfloat16()  # tests set it False to model an older NumPy


def unsupported(dtype: Any) -> bool:
    """Whether CuPy has no arrays of ``dtype`` (ValueError: Unsupported dtype)."""
    if dtype.name == "bfloat16":
        return not HAS_BFLOAT16
    return dtype.kind in _UNSUPPORTED_KINDS


# ---- the API list ------------------------------------------------------------------------------

def api_entry(namespace: str, name: str) -> dict:
    """The real CuPy's entry for ``namespace.name``; the double exposes nothing else."""
    entry = API["namespaces"].get(namespace, {}).get(name)
    if entry is None:
        raise AttributeError(f"the CuPy double would expose {namespace}.{name}, which CuPy "
                             f"{API['cupy_version']} does not have")
    return entry


def check_call(namespace: str, name: str, args: tuple, kwargs: dict) -> None:
    """TypeError for keyword arguments (or too many positional ones) the real CuPy refuses."""
    entry = api_entry(namespace, name)
    if entry.get("kind") == "ufunc":
        params = [f"x{i}" for i in range(entry["nin"])] + list(entry["call_keywords"])
        keywords, var_positional = entry["call_keywords"], False
    else:
        params = entry.get("params")
        if params is None:
            return
        keywords = [p for p in params if p not in entry.get("posonly", [])]
        var_positional = entry.get("var_positional")
    if not entry.get("var_keyword"):
        for key in kwargs:
            if key not in keywords:
                raise TypeError(f"{namespace}.{name}() got an unexpected keyword argument "
                                f"{key!r} (CuPy {API['cupy_version']} takes: "
                                f"{', '.join(keywords) or 'none'})")
    positional = [p for p in params if p not in entry.get("kwonly", [])]
    if not var_positional and len(args) > len(positional):
        raise TypeError(f"{namespace}.{name}() takes at most {len(positional)} positional "
                        f"arguments; received {len(args)}")


_PYTHON_INTERNALS = {"__module__", "__qualname__", "__doc__", "__dict__", "__weakref__",
                     "__slots__", "__annotations__", "__firstlineno__", "__static_attributes__",
                     "__array_priority__"}


def verify_namespace(namespace: str, names: dict) -> None:
    """Fail at import when the double exposes a name the real CuPy lacks: every public name of
    a module, and every member (dunders included) of the classes it defines."""
    for name, value in names.items():
        if name.startswith("_"):
            continue
        api_entry(namespace, name)
        if isinstance(value, type) and value.__module__.startswith("cupy"):
            verify_class(f"{namespace}.{name}", value)


def verify_class(namespace: str, cls: type) -> None:
    """Every attribute a double class defines exists on the real CuPy class."""
    for name in vars(cls):
        if name in _PYTHON_INTERNALS or (name.startswith("_") and not name.startswith("__")):
            continue
        api_entry(namespace, name)


# ---- device checks and conversion --------------------------------------------------------------

def _device_error(array_device: int) -> ValueError:
    return ValueError(
        f"The device where the array resides ({array_device}) is different from the current "
        f"device ({_sim.current()}). Peer access is unavailable between these devices. "
        f"[CuPy double: cuda-sim:{array_device} vs cuda-sim:{_sim.current()}]")


def unwrap(value: Any, *, host_ok: bool = False) -> Any:
    """An argument as NumPy sees it: device arrays (on the current device) unwrapped; NumPy
    arrays refused unless ``host_ok`` (functions that copy host data in); containers walked."""
    if isinstance(value, ndarray):
        if value._device != _sim.current():
            raise _device_error(value._device)
        return value._a
    if isinstance(value, numpy.ndarray):
        if host_ok:
            return value
        raise TypeError(f"Unsupported type {type(value)}")
    if isinstance(value, (tuple, list)):
        items = [unwrap(item, host_ok=host_ok) for item in value]
        return type(value)(items) if isinstance(value, tuple) else items
    return value


def fresh(result: Any, device: int | None = None) -> Any:
    """Wrap what NumPy computed as a new device array (accounted against the capacity)."""
    device = _sim.current() if device is None else device
    if isinstance(result, tuple):
        return tuple(fresh(item, device) for item in result)
    if isinstance(result, (numpy.ndarray, numpy.generic)):
        result = numpy.asarray(result)
        if result.base is not None:  # NumPy may hand back a view of a temporary: own it
            result = result.copy()
        _sim.allocate(result, device)
        return ndarray._wrap(result, device)
    return result


def wrap_result(result: Any, inputs: list, device: int | None = None) -> Any:
    """Wrap a NumPy result: a view of an input stays a view (no new memory), else fresh."""
    if isinstance(result, numpy.ndarray):
        for source in inputs:
            if isinstance(source, ndarray) and result is source._a:
                return source
        for source in inputs:
            if isinstance(source, ndarray) and numpy.may_share_memory(result, source._a):
                return ndarray._wrap(result, source._device)
    return fresh(result, device)


def run(function: Any, args: tuple, kwargs: dict, *, host_ok: bool = False) -> Any:
    """Call a NumPy function on unwrapped arguments, as one kernel launch, without warnings
    (CuPy never emits floating-point warnings)."""
    raw_args = unwrap(args, host_ok=host_ok)
    raw_kwargs = {key: unwrap(value, host_ok=host_ok) for key, value in kwargs.items()}
    out = kwargs.get("out")
    with numpy.errstate(all="ignore"):
        result = function(*raw_args, **raw_kwargs)
    wrapped = out if isinstance(out, ndarray) else wrap_result(result, [*args, *kwargs.values()])
    if not isinstance(out, ndarray) and _shares_an_input(wrapped, [*args, *kwargs.values()]):
        return wrapped  # a view, or the input itself (ascontiguousarray of a contiguous array)
    if function in _NO_KERNEL:
        return wrapped  # memory only: CuPy launches nothing

    def replay() -> None:
        with numpy.errstate(all="ignore"):
            again = function(*raw_args, **raw_kwargs)
        if not isinstance(out, ndarray):
            refill(wrapped, again)

    _sim.launch(replay=replay)
    return wrapped


_NO_KERNEL = {numpy.empty_like}


def _shares_an_input(result: Any, inputs: list) -> bool:
    return isinstance(result, ndarray) and any(
        isinstance(source, ndarray) and numpy.may_share_memory(result._a, source._a)
        for source in inputs)


def refill(wrapped: Any, value: Any) -> None:
    """Write a recomputed result into the buffer(s) the first computation made (graph replay)."""
    if isinstance(wrapped, tuple):
        for item, part in zip(wrapped, value):
            refill(item, part)
    elif isinstance(wrapped, ndarray) and wrapped._a is not value:
        numpy.copyto(wrapped._a, value)


def replaying(make: Any, result: ndarray) -> Any:
    """A replay that computes ``make()`` again into ``result``'s buffer."""
    def replay() -> None:
        with numpy.errstate(all="ignore"):
            refill(result, make())
    return replay


def numpy_own(name: str) -> Any:
    """NumPy's own ``numpy.<name>``, also where a library replaced it in NumPy's namespace
    (nnfs.init(), which the book's scripts call, replaces dot, zeros and eye): CuPy's functions
    are CuPy's, whatever was done to NumPy's."""
    function = getattr(numpy, name)
    if str(getattr(function, "__module__", "numpy")).startswith("numpy"):
        return function
    for module in (numpy._core.multiarray, numpy._core.numeric, numpy.lib._twodim_base_impl):
        if hasattr(module, name):
            return getattr(module, name)
    return function


def cupy_function(name: str, numpy_function: Any = None, *, host_ok: bool = False,
                  namespace: str = "cupy") -> Any:
    """``cupy.<name>``: NumPy's function of that name behind CuPy's checks."""
    target = numpy_function or numpy_own(name)

    def function(*args: Any, **kwargs: Any) -> Any:
        check_call(namespace, name, args, kwargs)
        return run(target, args, kwargs, host_ok=host_ok)

    function.__module__ = namespace
    function.__qualname__ = function.__name__ = name
    function.__doc__ = f"cupy.{name}: NumPy's {name} behind CuPy's checks (cupy_api.json)."
    function.checked_at_call = True  # its keywords are checked against the list when called
    return function


class ufunc:
    """A CuPy universal function: NumPy's ufunc of the same name behind CuPy's checks."""

    def __init__(self, name: str) -> None:
        api_entry("cupy", name)
        self._numpy = getattr(numpy, name)
        self.__name__ = name
        self.nin, self.nout = self._numpy.nin, self._numpy.nout

    def __repr__(self) -> str:
        return f"<ufunc '{self.__name__}'>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        check_call("cupy", self.__name__, args, kwargs)
        for value in args:
            if isinstance(value, (list, tuple)):
                raise TypeError(f"Unsupported type {type(value)}")
        return run(self._numpy, args, kwargs)


# ---- the array ---------------------------------------------------------------------------------

class Flags:
    """``ndarray.flags``: c_contiguous, f_contiguous, owndata."""

    def __init__(self, array: numpy.ndarray) -> None:
        self.c_contiguous = bool(array.flags.c_contiguous)
        self.f_contiguous = bool(array.flags.f_contiguous)
        self.owndata = bool(array.flags.owndata)

    def __getitem__(self, name: str) -> bool:
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]


_COMPARISONS = {"less", "less_equal", "greater", "greater_equal", "equal", "not_equal"}


def _binary(name: str, *, reflected: bool = False) -> Any:
    def method(self: ndarray, other: Any) -> Any:
        if name in _COMPARISONS and isinstance(other, numpy.ndarray) and other.ndim == 0:
            other = other.item()  # CuPy's __richcmp__ takes a 0-d host array as a scalar
        operation = getattr(__import__("cupy"), name)
        return operation(other, self) if reflected else operation(self, other)
    return method


def _inplace(name: str) -> Any:
    def method(self: ndarray, other: Any) -> Any:
        getattr(__import__("cupy"), name)(self, other, out=self)
        return self
    return method


def _unary(name: str) -> Any:
    def method(self: ndarray) -> Any:
        return getattr(__import__("cupy"), name)(self)
    return method


def _sync(array: ndarray, reason: str) -> numpy.ndarray:
    """Copy to the host: one device-to-host synchronisation (of the current stream, so the
    copies from pinned memory issued on it are done)."""
    _sim.sync(reason)
    stream = _sim.current_stream()
    _sim.waited([copy for copy in _sim.in_flight if copy.stream is stream])
    return array._a


class ndarray:
    """A device array on a simulated device (``cuda-sim:N``); not a NumPy array."""

    __slots__ = ("_a", "_device", "__weakref__")
    __array_priority__ = 100

    def __init__(self, shape: Any, dtype: Any = float, memptr: Any = None, strides: Any = None,
                 order: str = "C") -> None:
        if memptr is not None or strides is not None:
            raise NotImplementedError("the CuPy double does not model memptr= or strides=")
        self._a = numpy.empty(shape, dtype=dtype, order=order)
        if unsupported(self._a.dtype):
            raise ValueError(f"Unsupported dtype {self._a.dtype}")
        self._device = _sim.current()
        _sim.allocate(self._a, self._device)

    @classmethod
    def _wrap(cls, array: numpy.ndarray, device: int) -> ndarray:
        if unsupported(array.dtype):
            raise ValueError(f"Unsupported dtype {array.dtype}")
        self = object.__new__(cls)
        self._a, self._device = array, device
        return self

    # ---- what a device array refuses ------------------------------------------------------------

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc_: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        cupy = __import__("cupy")
        if method != "__call__" or not isinstance(getattr(cupy, ufunc_.__name__, None), ufunc):
            return NotImplemented
        return getattr(cupy, ufunc_.__name__)(*inputs, **kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        cupy = __import__("cupy")
        module = cupy
        for part in func.__module__.split(".")[1:]:
            module = getattr(module, part, None)
        target = getattr(module, func.__name__, None) if module is not None else None
        if target is None or target is func:
            return NotImplemented
        return target(*args, **kwargs)

    # ---- metadata (no device work) --------------------------------------------------------------

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    ndim = property(lambda self: self._a.ndim)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: Flags(self._a))

    @property
    def device(self) -> Any:
        from cupy.cuda import Device

        return Device(self._device)

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self._a.shape, "typestr": self._a.dtype.str,
                "data": (self._a.ctypes.data, False), "version": 3,
                "strides": None if self._a.flags.c_contiguous else self._a.strides}

    @property
    def data(self) -> Any:
        """A MemoryPointer whose ``ptr`` is the address of the simulated device memory; the
        double's NCCL finds the array again from it (``_sim.pointers``)."""
        from cupy.cuda import MemoryPointer

        return MemoryPointer._of(self)

    def __dlpack_device__(self) -> tuple[int, int]:
        """(kDLCUDA, device): where DLPack consumers find the array. (No ``__dlpack__``: the
        double's memory is host memory, which it must not pass off as GPU memory.)"""
        return (2, self._device)

    def __len__(self) -> int:
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self) -> Any:
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    def __repr__(self) -> str:
        return repr(_sync(self, "repr"))

    def __str__(self) -> str:
        return str(_sync(self, "str"))

    def __format__(self, spec: str) -> str:
        return format(_sync(self, "format")[()] if self._a.ndim == 0 else self._a, spec)

    # ---- device to host: each a synchronisation -------------------------------------------------

    def get(self, stream: Any = None, order: str = "C", out: Any = None,
            blocking: bool = True) -> numpy.ndarray:
        data = _sync(self, "get")
        if out is not None:
            numpy.copyto(out, data)
            return out
        return numpy.array(data, order=order, copy=True)

    def set(self, arr: Any, stream: Any = None) -> None:
        """Copy host data in (asynchronously on ``stream`` in CuPy; at once here)."""
        if not isinstance(arr, numpy.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray (given "
                            f"{type(arr).__name__})")
        if arr.dtype != self.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        if not self._a.flags.c_contiguous:
            raise RuntimeError("Cannot set to non-contiguous array")
        self._check_device()
        _sim.host_to_device()
        self._a[...] = arr
        pinned = _sim.pinned_owner(arr)
        if pinned is not None:  # asynchronous: in flight until the host waits for it
            stream = stream._key() if stream is not None else _sim.current_stream()
            _sim.copied_from_pinned(pinned, stream)

    def item(self) -> Any:
        return _sync(self, "item").item()

    def tolist(self) -> Any:
        return _sync(self, "tolist").tolist()

    def __float__(self) -> float:
        return float(_sync(self, "float")[()] if self._a.size == 1 else self._a)

    def __int__(self) -> int:
        return int(_sync(self, "int").reshape(-1)[0] if self._a.size == 1 else self._a)

    def __complex__(self) -> complex:
        return complex(_sync(self, "complex").reshape(-1)[0])

    def __bool__(self) -> bool:
        return bool(_sync(self, "bool"))

    # ---- views and copies -----------------------------------------------------------------------

    def _view(self, array: numpy.ndarray) -> ndarray:
        return wrap_result(array, [self])

    def reshape(self, *shape: Any, order: str = "C") -> ndarray:
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return self._copy_if_needed(lambda a: a.reshape(shape, order=order))

    def ravel(self, order: str = "C") -> ndarray:
        return self._copy_if_needed(lambda a: a.ravel(order=order))

    def _copy_if_needed(self, make: Any) -> ndarray:
        result = make(self._a)
        if not numpy.may_share_memory(result, self._a):  # a copy kernel, on the current device
            self._check_device()
            copy = fresh(result)
            _sim.launch(replay=replaying(lambda: make(self._a), copy))
            return copy
        return self._view(result)

    def transpose(self, *axes: Any) -> ndarray:
        return self._view(self._a.transpose(*axes))

    T = property(lambda self: self._view(self._a.T))

    def squeeze(self, axis: Any = None) -> ndarray:
        return self._view(self._a.squeeze(axis))

    def view(self, dtype: Any = None, type: Any = None) -> ndarray:  # noqa: A002 (CuPy's name)
        return self._view(self._a.view() if dtype is None else self._a.view(dtype))

    def copy(self, order: str = "C") -> ndarray:
        if self._device != _sim.current():  # CuPy copies to the current device
            if not self._a.flags.c_contiguous:
                raise NotImplementedError("CuPy cannot copy non-contiguous array between "
                                          "devices.")
            copy = fresh(self._a.copy(order=order))
            _sim.launch(replay=replaying(lambda: self._a.copy(order=order), copy))
            return copy
        return run(lambda a: a.copy(order=order), (self,), {})

    def astype(self, dtype: Any, order: str = "K", casting: Any = None, subok: Any = None,
               copy: bool = True) -> ndarray:
        self._check_device()
        if not copy and numpy.dtype(dtype) == self.dtype:
            return self
        kwargs = {} if casting is None else {"casting": casting}
        return run(lambda a: a.astype(dtype, order=order, copy=True, **kwargs), (self,), {})

    def fill(self, value: Any) -> None:
        run(lambda a: a.fill(unwrap(value)), (self,), {})

    def _check_device(self) -> None:
        if self._device != _sim.current():
            raise _device_error(self._device)

    # ---- indexing -------------------------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        raw = _index(key)
        if _is_scalar_index(raw):  # CuPy returns a 0-d array view, not a host scalar
            raw = (*(raw if isinstance(raw, tuple) else (raw,)), Ellipsis)
        if not _is_basic_index(raw):  # a gather kernel; a view needs no device work
            self._check_device()
        result = self._a[raw]
        if numpy.may_share_memory(result, self._a):
            return wrap_result(result, [self])
        gathered = wrap_result(result, [self])
        _sim.launch(replay=replaying(lambda: self._a[raw], gathered))
        return gathered

    def __setitem__(self, key: Any, value: Any) -> None:
        raw = _index(key)
        self._check_device()
        if isinstance(value, (numpy.ndarray, list)) and numpy.ndim(value) > 0:
            if _is_basic_index(raw):
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            _sim.host_to_device()  # an advanced index copies host values to the device
        else:
            value = unwrap(value)
        with numpy.errstate(all="ignore"):
            self._a[raw] = value

        def replay() -> None:
            with numpy.errstate(all="ignore"):
                self._a[raw] = value
        _sim.launch(replay=replay)

    # ---- reductions and other methods -----------------------------------------------------------

    def sum(self, axis: Any = None, dtype: Any = None, out: Any = None,
            keepdims: bool = False) -> Any:
        return run(numpy.sum, (self,), _given(axis=axis, dtype=dtype, out=out,
                                              keepdims=keepdims))

    def mean(self, axis: Any = None, dtype: Any = None, out: Any = None,
             keepdims: bool = False) -> Any:
        return run(numpy.mean, (self,), _given(axis=axis, dtype=dtype, out=out,
                                               keepdims=keepdims))

    def std(self, axis: Any = None, dtype: Any = None, out: Any = None, ddof: int = 0,
            keepdims: bool = False) -> Any:
        return run(numpy.std, (self,), _given(axis=axis, dtype=dtype, out=out, ddof=ddof,
                                              keepdims=keepdims))

    def var(self, axis: Any = None, dtype: Any = None, out: Any = None, ddof: int = 0,
            keepdims: bool = False) -> Any:
        return run(numpy.var, (self,), _given(axis=axis, dtype=dtype, out=out, ddof=ddof,
                                              keepdims=keepdims))

    def max(self, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
        return run(numpy.max, (self,), _given(axis=axis, out=out, keepdims=keepdims))

    def min(self, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
        return run(numpy.min, (self,), _given(axis=axis, out=out, keepdims=keepdims))

    def argmax(self, axis: Any = None, out: Any = None, dtype: Any = None,
               keepdims: bool = False) -> Any:
        result = run(numpy.argmax, (self,), _given(axis=axis, out=out, keepdims=keepdims))
        return result if dtype is None else result.astype(dtype, copy=False)

    def argmin(self, axis: Any = None, out: Any = None, dtype: Any = None,
               keepdims: bool = False) -> Any:
        result = run(numpy.argmin, (self,), _given(axis=axis, out=out, keepdims=keepdims))
        return result if dtype is None else result.astype(dtype, copy=False)

    def all(self, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
        return run(numpy.all, (self,), _given(axis=axis, out=out, keepdims=keepdims))

    def any(self, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
        return run(numpy.any, (self,), _given(axis=axis, out=out, keepdims=keepdims))

    def clip(self, min: Any = None, max: Any = None, out: Any = None) -> Any:
        return __import__("cupy").clip(self, min, max, out=out)

    def dot(self, b: Any, out: Any = None) -> Any:
        return __import__("cupy").dot(self, b, out=out)

    # ---- operators ------------------------------------------------------------------------------

    __add__, __radd__, __iadd__ = _binary("add"), _binary("add", reflected=True), _inplace("add")
    __sub__, __rsub__ = _binary("subtract"), _binary("subtract", reflected=True)
    __isub__ = _inplace("subtract")
    __mul__, __rmul__ = _binary("multiply"), _binary("multiply", reflected=True)
    __imul__ = _inplace("multiply")
    __truediv__, __rtruediv__ = _binary("true_divide"), _binary("true_divide", reflected=True)
    __itruediv__ = _inplace("true_divide")
    __floordiv__ = _binary("floor_divide")
    __mod__ = _binary("remainder")
    __pow__, __rpow__ = _binary("power"), _binary("power", reflected=True)
    __matmul__, __rmatmul__ = _binary("matmul"), _binary("matmul", reflected=True)
    __and__, __or__, __xor__ = _binary("bitwise_and"), _binary("bitwise_or"), _binary(
        "bitwise_xor")
    __iand__, __ior__ = _inplace("bitwise_and"), _inplace("bitwise_or")
    __lt__, __le__ = _binary("less"), _binary("less_equal")
    __gt__, __ge__ = _binary("greater"), _binary("greater_equal")
    __eq__, __ne__ = _binary("equal"), _binary("not_equal")
    __neg__, __pos__, __abs__ = _unary("negative"), _unary("positive"), _unary("absolute")
    __invert__ = _unary("invert")
    __hash__ = None


def _given(**kwargs: Any) -> dict:
    """Keyword arguments left at their defaults are not passed on to NumPy."""
    defaults = {"axis": None, "dtype": None, "out": None, "keepdims": False, "ddof": 0}
    return {key: value for key, value in kwargs.items() if value is not defaults.get(key, ...)}


def _index(key: Any) -> Any:
    """An index as NumPy sees it: device arrays unwrapped (current device only); host integer
    and boolean arrays are copied to the device first, as CuPy does."""
    if isinstance(key, tuple):
        return tuple(_index(item) for item in key)
    if isinstance(key, numpy.ndarray):
        _sim.host_to_device()
        return key
    if isinstance(key, list):
        return numpy.asarray(key)
    return unwrap(key)


def _is_basic_index(key: Any) -> bool:
    items = key if isinstance(key, tuple) else (key,)
    return all((isinstance(item, (numbers.Integral, slice)) and not isinstance(item, bool))
               or item is Ellipsis or item is None for item in items)


def _is_scalar_index(key: Any) -> bool:
    items = key if isinstance(key, tuple) else (key,)
    return all(isinstance(item, numbers.Integral) and not isinstance(item, bool)
               for item in items)
