"""Run: PYTHONPATH=tests/cupy_double python -m benchmarks.step_counts

Kernel launches and device-to-host synchronisations per training step of the 784-128-128-10
MLP (ReLU, softmax cross-entropy, Adam, float32), counted by the strict CuPy double
(tests/cupy_double) on its simulated device cuda-sim:0. Counts, not timings: the double is not
a GPU. A step is the difference between an epoch of 2N steps and one of N steps, so what
happens once per call or per epoch (checks, epoch metrics) cancels out; an epoch before
counting fills the caches and the optimizer state. The model is benchmarks/mlp.py's, trained by
benchmarks/trainers.py as the benchmark trains it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy

from benchmarks.mlp import SIZES as MLP
from benchmarks.trainers import GpunnTrainer

COUNTED = ("launch", "raw_launch", "sync", "h2d")


def counters() -> Any:
    """The double's counters, or SystemExit when ``cupy`` is not the double."""
    try:
        import cupy
    except ImportError:
        cupy = None
    if not hasattr(cupy, "_sim"):
        raise SystemExit("step counts come from the CuPy double: run with "
                         "PYTHONPATH=tests/cupy_double (real CuPy counts nothing)")
    return cupy._sim


def mlp_step_counts(batch_size: int = 128, steps: int = 8) -> dict[str, float]:
    """{launch, raw_launch, sync, h2d} per training step on cuda-sim:0."""
    sim = counters()
    rng = numpy.random.default_rng(0)
    X = rng.standard_normal((2 * steps * batch_size, 784)).astype(numpy.float32)
    y = rng.integers(0, 10, len(X))
    trainer = GpunnTrainer(MLP, X, y, device="cuda:0", learning_rate=0.001, decay=0.0, seed=0,
                           shuffle=False)
    totals = []
    for n in (steps, 2 * steps):
        trainer.epoch(n * batch_size, batch_size)  # fills the caches and the optimizer state
        sim.reset_counters()
        trainer.epoch(n * batch_size, batch_size)
        totals.append(dict(sim.counters))
    return {key: (totals[1].get(key, 0) - totals[0].get(key, 0)) / steps for key in COUNTED}


def main(argv: list[str] | None = None) -> int:
    counts = {str(batch): mlp_step_counts(batch) for batch in (32, 128, 1024)}
    print(json.dumps({"device": "cuda-sim:0 (CuPy double, simulated: not a GPU)",
                      "model": "MLP 784-128-128-10, Adam, float32",
                      "per_step_by_batch_size": counts}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
