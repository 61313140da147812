"""``cupy.random`` of the double: generators bound to the device current at their creation.

The draws come from NumPy's PCG64, not CuPy's XORWOW, so seeded values differ from a GPU's;
what the double checks is where the draws happen and where the results live.
"""

from typing import Any as _Any

import numpy as _numpy

from cupy import _core, _sim


class Generator:
    """Random draws on one device: the one current when the generator was made."""

    def __init__(self, bit_generator: _Any) -> None:
        self.bit_generator = bit_generator
        self._numpy = _numpy.random.Generator(_numpy.random.PCG64(bit_generator._seed))
        self._device = bit_generator._current_device_id  # where its states are, as in CuPy
        _sim.generators.add(self)

    def _draw(self, make: _Any, out: _Any) -> _Any:
        if _sim.current() != self._device:
            raise RuntimeError(f"This Generator state is allocated in a different device "
                               f"[CuPy double: cuda-sim:{self._device}, current cuda-sim:"
                               f"{_sim.current()}]")
        values = _core.fresh(make())
        _sim.launch(replay=_core.replaying(make, values))
        if out is not None:
            out[...] = values  # a copy kernel of its own, as in CuPy
            return out
        return values

    def random(self, size: _Any = None, dtype: _Any = _numpy.float64, out: _Any = None) -> _Any:
        # CuPy draws float64 for float64 and float32 (then cast) for anything else.
        if _numpy.dtype(dtype) == _numpy.float64:
            return self._draw(lambda: self._numpy.random(size), out)
        return self._draw(lambda: self._numpy.random(size, dtype=_numpy.float32).astype(dtype),
                          out)

    def standard_normal(self, size: _Any = None, dtype: _Any = _numpy.float64,
                        out: _Any = None) -> _Any:
        if _numpy.dtype(dtype) not in (_numpy.float32, _numpy.float64):
            raise TypeError(f"Unsupported dtype {_numpy.dtype(dtype).name} for standard_normal")
        return self._draw(lambda: self._numpy.standard_normal(size, dtype=dtype), out)

    def uniform(self, low: float = 0.0, high: float = 1.0, size: _Any = None,
                dtype: _Any = _numpy.float64) -> _Any:
        return self._draw(lambda: self._numpy.uniform(low, high, size).astype(dtype), None)


# CuPy's generator kernels (cupy/random/cupy_distributions.cu) run ceil(size / 256) blocks of
# 256 threads, and every thread reads and writes its own state, past the end of the states when
# ``size`` is not a multiple of 256 (curandState: 48 bytes).
_THREADS_PER_BLOCK = 256
_STATE_BYTES = 48


class XORWOW:
    """CuPy's default bit generator: ``size`` states on the current device (by default 8 blocks
    of 256 per multiprocessor, as CuPy makes them), each read and written by every draw. The
    draws themselves come from NumPy's PCG64, seeded with ``seed``."""

    def __init__(self, seed: _Any = None, *, size: int = -1) -> None:
        self._seed = seed
        self._current_device_id = _sim.current()
        if size < 0:
            from cupy.cuda import Device

            size = 8 * _THREADS_PER_BLOCK * Device().attributes["MultiProcessorCount"]
        if size % _THREADS_PER_BLOCK:
            raise ValueError(f"[CuPy double] XORWOW(size={size}): CuPy's generator kernels run "
                             f"blocks of {_THREADS_PER_BLOCK} threads that each read and write "
                             f"a state, past the end of {size} states (stricter than CuPy, "
                             f"which does not check): use a multiple of {_THREADS_PER_BLOCK}.")
        self._size = size
        self._state = _core.fresh(_numpy.zeros(size * _STATE_BYTES, dtype=_numpy.int8))

    def _state_size(self) -> int:
        """How many states (threads) each draw runs, as CuPy's ``_state_size``."""
        return self._size


def default_rng(seed: _Any = None) -> Generator:
    """A generator on the current device."""
    return Generator(XORWOW(seed))


_core.verify_namespace("cupy.random", globals())
