"""The double's matrix products, and which of them CuPy 14.2.0 hands to cuBLAS.

cuBLAS refuses a capturing stream (``NotImplementedError: calling cuBLAS API during stream
capture is currently unsupported``: cupy_backends/cuda/libs/cublas.pyx:642, the setStream that
every cuBLAS wrapper calls first); CuPy's own kernels do not. Which product reaches cuBLAS is
decided in cupy/_core/_routines_linalg.pyx, ``tensordot_core`` (541), ``dot`` (475) and
``matmul`` (821), and cupy/linalg/_product.py and _einsum.py, which call them. Each predicate
below is one of those functions' branches, with the line it comes from; a product that reaches
cuBLAS also needs free memory for cuBLAS's workspace (``_sim.cublas_workspace``).
"""

from __future__ import annotations

import collections
import math
from typing import Any

import numpy

from cupy import _core, _sim


def _tensordot_core(a: Any, b: Any, n: int, m: int, dtype: Any = None) -> bool:
    """Whether tensordot_core (_routines_linalg.pyx:541) of an (n, k) by (k, m) product calls
    cuBLAS: not for an empty operand (out.fill(0), :557), nor for n == m == 1 (a mul-sum
    reduction kernel, :566), nor for integers and booleans (CuPy's integral kernel, :615)."""
    if a.size == 0 or b.size == 0 or (n == 1 and m == 1):
        return False
    return numpy.dtype(dtype or numpy.promote_types(a.dtype, b.dtype)).kind not in "biu"


def dot(a: Any, b: Any, out: Any = None, *, dtype: Any = None) -> bool:
    """cupy.dot, ndarray.dot (_routines_linalg.pyx:475): a 0-d operand is a multiply (:490);
    otherwise tensordot_core over a's last axis and b's second-to-last (its only, if 1-d)."""
    if a.ndim == 0 or b.ndim == 0:
        return False
    k = a.shape[-1]
    if k == 0 or b.shape[-2 if b.ndim > 1 else 0] != k:
        return False  # empty, or CuPy's ValueError (NumPy's here) before any product
    return _tensordot_core(a, b, a.size // k, b.size // k, dtype)


def matmul(a: Any, b: Any, out: Any = None, *, dtype: Any = None, **kwargs: Any) -> bool:
    """cupy.matmul and ``@`` (_routines_linalg.pyx:821): up to 2-D it is dot (:856); batched,
    cuBLAS unless an operand is empty (:958) or the type is not one of 'efdFD' (:992)."""
    if a.ndim == 0 or b.ndim == 0:
        return False  # ValueError: Scalar operands are not allowed (:852)
    if max(a.ndim, b.ndim) <= 2:
        return dot(a, b, dtype=dtype)
    if a.size == 0 or b.size == 0:
        return False
    return numpy.dtype(dtype or numpy.promote_types(a.dtype, b.dtype)).char in "efdFD"


def inner(a: Any, b: Any) -> bool:
    """cupy.inner (linalg/_product.py:298): a multiply for a 0-d operand (:316), else
    tensordot_core over both last axes (:335)."""
    if a.ndim == 0 or b.ndim == 0 or a.shape[-1] == 0 or a.shape[-1] != b.shape[-1]:
        return False
    k = a.shape[-1]
    return _tensordot_core(a, b, a.size // k, b.size // k)


def tensordot(a: Any, b: Any, axes: Any = 2) -> bool:
    """cupy.tensordot (linalg/_product.py:358): a multiply for a 0-d operand (:386), else
    tensordot_core with the summed axes flattened into k (:420); axes=0 is an outer product,
    which cuBLAS computes too."""
    if a.ndim == 0 or b.ndim == 0:
        return False
    if isinstance(axes, (tuple, list)):
        a_axes, b_axes = (tuple(numpy.atleast_1d(x)) for x in axes)
    else:
        a_axes, b_axes = tuple(range(a.ndim - axes, a.ndim)), tuple(range(axes))
    try:
        k = math.prod(a.shape[axis] for axis in a_axes)
    except IndexError:
        return False  # NumPy raises, as CuPy does
    if k == 0 or len(a_axes) != len(b_axes):
        return False
    return _tensordot_core(a, b, a.size // k, b.size // k)


def vdot(a: Any, b: Any) -> bool:
    """cupy.vdot (linalg/_product.py:103): tensordot_core(a, b, None, 1, 1, a.size, ()), a
    reduction kernel: never cuBLAS."""
    return False


def einsum(*operands: Any, dtype: Any = None, **kwargs: Any) -> bool:
    """cupy.einsum (linalg/_einsum.py:443): each pair of operands that shares a label summed
    away (in no other operand nor the output) is contracted by cupy.matmul of 3-D arrays
    (:417), so by cuBLAS for 'efdFD' types and no empty operand. Labels of a string subscript
    are read as CuPy reads them; the (operand, sublist) form is taken to contract whenever it
    has two float operands, stricter than CuPy."""
    arrays = [x for x in operands if isinstance(x, _core.ndarray)]
    if len(arrays) < 2 or any(x.size == 0 for x in arrays):
        return False
    result = numpy.dtype(dtype or numpy.result_type(*(x.dtype for x in arrays)))
    if result.char not in "efdFD":
        return False
    if not isinstance(operands[0], str):
        return True
    inputs, arrow, output = operands[0].replace(" ", "").replace("...", ".").partition("->")
    terms = inputs.split(",")
    counts = collections.Counter(label for term in terms for label in set(term))
    if not arrow:  # implicit output: the labels used once, and the ellipsis
        output = "".join(label for label, count in counts.items() if count == 1 or label == ".")
    return any(count > 1 and label not in output for label, count in counts.items())


def product(name: str) -> Any:
    """``cupy.<name>``: NumPy's product behind CuPy's checks; refused in a capture (and needing
    cuBLAS's workspace) where CuPy's product calls cuBLAS."""
    numpy_product = _core.cupy_function(name)
    uses_cublas = globals()[name]

    def function(*args: Any, **kwargs: Any) -> Any:
        _core.check_call("cupy", name, args, kwargs)
        operands = args[:2] if name != "einsum" else [
            x for x in args if not isinstance(x, (str, list, tuple))]  # not subscripts
        # Host arrays (and arrays of another device) are refused by the product itself.
        if (operands and all(isinstance(x, _core.ndarray) for x in operands)
                and uses_cublas(*args, **kwargs)):
            _sim.library_call("cuBLAS", f"cupy.{name} of "
                              + " and ".join(f"{x.dtype} {x.shape}" for x in operands))
            _sim.cublas_workspace()
        return numpy_product(*args, **kwargs)

    function.__module__ = "cupy"
    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"cupy.{name}: NumPy's {name}; cuBLAS where CuPy calls it (cupy._linalg)."
    function.checked_at_call = True
    return function
