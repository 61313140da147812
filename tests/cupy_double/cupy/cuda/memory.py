"""``cupy.cuda.memory`` of the double: the out-of-memory error CuPy's allocator raises."""

from cupy import _core


class OutOfMemoryError(MemoryError):
    """CuPy's out-of-memory error: ``OutOfMemoryError(size, total, limit=0)``."""

    def __init__(self, size: int, total: int, limit: int = 0) -> None:
        self._size, self._total, self._limit = size, total, limit
        if limit:
            message = (f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} "
                       f"bytes, limit set to: {limit:,} bytes).")
        else:
            message = (f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} "
                       f"bytes).")
        message += " [CuPy double: a simulated device's capacity]"
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self._size, self._total, self._limit))


_core.verify_namespace("cupy.cuda.memory", globals())
