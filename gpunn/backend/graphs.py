"""CUDA graphs for the training step: capture it once per batch shape, then replay it.

A small network's step is dozens of short kernels; launched one by one from Python each costs
several microseconds of host time, more than the GPU needs to run it. Captured into a CUDA graph
the whole step is one launch. How gpunn makes that safe:

- The first step of a shape runs normally (it allocates the optimizer state and loads kernels),
  the second is captured and every later one replays the graph. The batch is copied into the
  graph's own input buffers first, so the graph always reads the same addresses.
- The step's work must not depend on values the host would change between steps: the optimizer's
  step count and the metrics live on the device (gpunn.training's tally), and nothing in a step
  reads a device value (a synchronisation is refused during capture anyway).
- Everything the step allocates during the capture comes from a memory pool of the graph's own,
  so no other array ever receives memory the graph still writes to.
- Training runs on a stream of its own (capture is impossible on the legacy default stream),
  ordered after the work already queued and before the work that follows.
- The matrix products go to cuBLAS directly (gpunn.backend.blas), for every step of the run:
  CuPy refuses cuBLAS while a stream captures, so with ``cupy.dot`` no step could be captured.
- A graph bakes in the host values the step passed to its kernels (learning rate, decay,
  dropout rate, regularization strengths, the loss scaler's settings) and the dropout
  generator's state buffer: when
  ``hyperparameters()`` changes between steps, the graphs are dropped and captured again, and a
  graph keeps the generator it draws from alive.
- If the capture fails for any reason, training goes on without graphs (one INFO line through
  the "gpunn" logger says why; ``status`` too); it never produces different results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger("gpunn")


class Graph:
    """One captured step, the buffers it reads its batch from, and what it must keep alive."""

    def __init__(self, graph: Any, X: Any, y: Any, pool: Any, keep: Any) -> None:
        self.graph, self.X, self.y, self.pool, self.keep = graph, X, y, pool, keep


class GraphedStep:
    """Runs a training step (a callable ``step(X, y)``) through CUDA graphs, one per batch shape.
    Use as a context manager around the loop: it makes the training stream current and the
    matrix products capturable. ``hyperparameters()`` returns the host values a captured step
    depends on (hashable); ``status`` says whether the step was captured, and if not, why."""

    def __init__(self, backend: Any, step: Any, hyperparameters: Callable[[], Hashable]) -> None:
        self.backend, self.step, self.cuda = backend, step, backend.xp.cuda
        self.hyperparameters = hyperparameters
        self.graphs: dict[tuple, Graph] = {}
        self.seen: set[tuple] = set()
        self.failed: str | None = None
        self.baked: Hashable = None
        self.captures = 0

    @property
    def status(self) -> str:
        """"captured", or "off: <why>"."""
        if self.failed is not None:
            return f"off: {self.failed}"
        if self.captures == 0:
            return ("off: no batch shape ran twice (a shape's step is captured at its second "
                    "run)")
        return "captured"

    def __enter__(self) -> GraphedStep:
        before = self.cuda.get_current_stream()
        self.stream = self.cuda.Stream(non_blocking=True)
        self.stream.wait_event(before.record())  # what was queued (the data, the model) first
        self.stream.__enter__()
        self.products = self.backend.capturable(self.stream)  # training.py checked it can
        self.products.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.products.__exit__(*exc)
        self.stream.__exit__(*exc)
        self.cuda.get_current_stream().wait_event(self.stream.record())  # and what follows after

    def run(self, X: Any, y: Any) -> None:
        """One step on the batch (X, y), both on the device."""
        if self.failed is not None:
            self.step(X, y)
            return
        baked = self.hyperparameters()
        if baked != self.baked:
            if self.graphs:
                log.info("gpunn: hyperparameters changed; the training step is captured again")
            self.graphs.clear()
            self.seen.clear()
            self.baked = baked
        key = (X.shape, X.dtype.str, y.shape, y.dtype.str)
        graph = self.graphs.get(key)
        if graph is None:
            if key not in self.seen:
                self.seen.add(key)
                self.step(X, y)
                return
            graph = self._capture(key, X, y)
            if graph is None:
                self.step(X, y)
                return
        graph.X[...] = X
        graph.y[...] = y
        graph.graph.launch(self.stream)

    def _capture(self, key: tuple, X: Any, y: Any) -> Graph | None:
        xp = self.backend.xp
        inputs_X, inputs_y = xp.empty_like(X), xp.empty_like(y)
        pool = self.cuda.MemoryPool()
        try:
            with self.cuda.using_allocator(pool.malloc):
                self.stream.begin_capture()
                try:
                    self.step(inputs_X, inputs_y)
                finally:
                    captured = self.stream.end_capture()
        except Exception as error:  # anything CUDA or CuPy refuses while capturing
            self._fail(f"the capture failed ({type(error).__name__}: {error})")
            return None
        self.captures += 1
        graph = self.graphs[key] = Graph(captured, inputs_X, inputs_y, pool,
                                         keep=self.backend.random)
        return graph

    def _fail(self, reason: str) -> None:
        self.failed = " ".join(reason.split())
        log.info("gpunn: training without CUDA graphs: %s", self.failed)
