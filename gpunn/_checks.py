"""Argument checks shared by every public entry point. Each error names the argument, what was
expected and what was received."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

from gpunn.errors import InvalidArgumentError, InvalidTypeError


def integer(name: str, value: Any, *, minimum: int = 0) -> int:
    """``value`` as an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InvalidTypeError(f"{name} must be an integer; received {value!r}.")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}; received {name}={value!r}.")
    return int(value)


def number(name: str, value: Any, *, minimum: float = 0.0, below: float | None = None,
           above_minimum: bool = False) -> float:
    """``value`` as a finite float in [minimum, below) (or (minimum, below) if above_minimum)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidTypeError(f"{name} must be a number; received {value!r}.")
    value = float(value)
    too_low = value <= minimum if above_minimum else value < minimum
    if not math.isfinite(value) or too_low or (below is not None and value >= below):
        low = f"> {minimum}" if above_minimum else f">= {minimum}"
        high = f" and < {below}" if below is not None else ""
        raise InvalidArgumentError(f"{name} must be a finite number {low}{high}; "
                                   f"received {name}={value!r}.")
    return value


def dtype_name(value: Any) -> str:
    """'float32' or 'float64', from a name or a NumPy dtype."""
    name = getattr(value, "name", value)
    if name not in ("float32", "float64"):
        raise InvalidArgumentError(f"dtype must be 'float32' or 'float64'; received {value!r}.")
    return name
