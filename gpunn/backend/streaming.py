"""Batches for the training loop: slices of data already on the device, or, for data kept in host
memory (too large for the device), copies through pinned memory on a second CUDA stream, the
next batch in flight while this one trains."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy

from gpunn.backend import host_random


def batches(backend: Any, X: Any, y: Any, batch_size: int, shuffle: bool, rank: int = 0,
            size: int = 1) -> Iterator[tuple]:
    """One epoch of (X, y, rows) batches on ``backend``'s device, in a new random order if
    ``shuffle`` (drawn from gpunn's host generator, the same on every device). ``rows`` is the
    global batch's; with ``size`` data-parallel ranks, this ``rank`` gets its share of it."""
    order = host_random().permutation(len(X)) if shuffle else None
    if order is not None and not backend.fused and isinstance(X, numpy.ndarray):
        yield from _gathered(backend, X, y, order, batch_size, rank, size)
        return
    if backend.is_array(X) or not backend.fused:
        if order is not None:
            if backend.is_array(X):
                order = backend.asarray(order)
            X, y = X[order], y[order]
        for start in range(0, max(len(X), 1), batch_size):
            stop = min(start + batch_size, len(X))
            low, high = (start, stop) if size == 1 else share(start, stop, rank, size)
            yield X[low:high], backend.asarray(y[low:high]), stop - start
        return
    ranges = [(start, min(start + batch_size, len(X)))
              for start in range(0, max(len(X), 1), batch_size)]
    local = [share(start, stop, rank, size) for start, stop in ranges]
    # Closed with this generator, so an epoch left early waits for its copies (see epoch).
    with contextlib.closing(HostToDevice(backend, X, y, batch_size).epoch(order, local)) as feed:
        for (start, stop), batch in zip(ranges, feed):
            yield (*batch, stop - start)


def _gathered(backend: Any, X: numpy.ndarray, y: Any, order: numpy.ndarray, batch_size: int,
              rank: int, size: int) -> Iterator[tuple]:
    """The CPU's shuffled batches, each gathered into one reused buffer: no shuffled copy of
    the whole data set (its memory, and the time to fault it in, every epoch), and a batch
    that is still in the cache when the first product reads it."""
    buffer = numpy.empty((min(batch_size, len(X)), *X.shape[1:]), dtype=X.dtype)
    for start in range(0, max(len(X), 1), batch_size):
        stop = min(start + batch_size, len(X))
        low, high = (start, stop) if size == 1 else share(start, stop, rank, size)
        rows = order[low:high]
        batch = buffer[:high - low]
        numpy.take(X, rows, axis=0, out=batch)
        yield batch, backend.asarray(y[rows]), stop - start


def share(start: int, stop: int, rank: int, size: int) -> tuple[int, int]:
    """The rows of [start, stop) that ``rank`` of ``size`` takes: as even as can be, the first
    ``(stop - start) % size`` ranks one row more (as numpy.array_split)."""
    rows, extra = divmod(stop - start, size)
    low = start + rank * rows + min(rank, extra)
    return low, low + rows + (rank < extra)


class HostToDevice:
    """Two pinned host buffers and two device buffers per array, used in turn: batch k + 1 is
    gathered into pinned memory and copied on the copy stream while batch k trains; events keep
    each buffer from being reused before the work that reads it is done."""

    DEPTH = 2

    def __init__(self, backend: Any, X: numpy.ndarray, y: numpy.ndarray, batch_size: int) -> None:
        self.backend, self.cuda = backend, backend.xp.cuda
        self.arrays = (X, y)
        self.batch_size = batch_size
        self.copy_stream = self.cuda.Stream(non_blocking=True)
        rows = min(batch_size, len(X))
        self.pinned = [[_pinned((rows, *a.shape[1:]), a.dtype, self.cuda) for a in (X, y)]
                       for _ in range(self.DEPTH)]
        self.device = [[backend.xp.empty((rows, *a.shape[1:]), dtype=a.dtype) for a in (X, y)]
                       for _ in range(self.DEPTH)]
        self.copied: list[Any] = [None] * self.DEPTH  # the copy into each slot has finished
        self.used: list[Any] = [None] * self.DEPTH  # the training step reading it has finished

    def epoch(self, order: numpy.ndarray | None, ranges: list[tuple[int, int]]) -> Iterator:
        """The batches of rows [low, high) of each range, in ``order`` if given. Close it when
        leaving early: it then waits for the copies still running."""
        try:
            if ranges:
                self._send(0, *ranges[0], order)
            for k, (start, stop) in enumerate(ranges):
                if k + 1 < len(ranges):
                    self._send((k + 1) % self.DEPTH, *ranges[k + 1], order)
                slot = k % self.DEPTH
                train = self.cuda.get_current_stream()
                train.wait_event(self.copied[slot])
                yield tuple(buffer[:stop - start] for buffer in self.device[slot])
                self.used[slot] = train.record()
        finally:
            # The buffers go back to CuPy's pools with this object. An epoch left early (an
            # exception, Ctrl-C, divergence) has the next batch's copy running, which no
            # training stream waited for; even after the last batch only the training stream
            # waited for it, not the host, which may reuse pinned memory at once.
            self.copy_stream.synchronize()

    def _send(self, slot: int, start: int, stop: int, order: numpy.ndarray | None) -> None:
        if self.copied[slot] is not None:
            self.copied[slot].synchronize()  # its last copy left the pinned buffer
        rows = stop - start
        with self.copy_stream:
            if self.used[slot] is not None:
                self.copy_stream.wait_event(self.used[slot])
            for array, pinned, device in zip(self.arrays, self.pinned[slot], self.device[slot]):
                if order is None:
                    numpy.copyto(pinned[:rows], array[start:stop])
                else:
                    numpy.take(array, order[start:stop], axis=0, out=pinned[:rows])
                device[:rows].set(pinned[:rows], stream=self.copy_stream)
            self.copied[slot] = self.copy_stream.record()


def _pinned(shape: tuple, dtype: Any, cuda: Any) -> numpy.ndarray:
    """A host array in page-locked memory, which the GPU copies from asynchronously."""
    dtype = numpy.dtype(dtype)
    count = int(numpy.prod(shape))
    memory = cuda.alloc_pinned_memory(max(count * dtype.itemsize, 1))
    return numpy.frombuffer(memory, dtype, count).reshape(shape)
