"""Run: PYTHONPATH=tests/cupy_double:tests/nvmath_double python -m benchmarks.step_counts
(``python -m benchmarks`` runs it too, in a process of its own, and puts it in its table.)

Kernel launches and device-to-host synchronisations per training step, counted by the strict CuPy
double (tests/cupy_double, with the nvmath-python double beside it for the matrix products that a
graph captures) on its simulated device cuda-sim:0: counts, not timings (the double is not a GPU).
For the 784-128-128-10 MLP (ReLU, softmax cross-entropy, Adam, float32) at batch 32, 128 and 1024,
and the book's spiral model (2-64-3, full batch of 300), each with and without CUDA graphs; and the
MLP at batch 128 with CUDA graphs under each precision policy (gpunn.precision: float32, tf32,
bfloat16, float16), whose step must stay one graph without a synchronisation (the float16 loss scale
lives in the tally, on the device). A step is the difference between an epoch of 2N steps and one of
N steps, and an epoch the difference between 2 epochs and 1, so what happens once per call cancels
out; an epoch before counting fills the caches and the optimizer state. The models are the
benchmarks' own (benchmarks/mlp.py, benchmarks/spiral.py, benchmarks/trainers.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy

from benchmarks import spiral
from benchmarks.mlp import SIZES as MLP
from benchmarks.trainers import GpunnTrainer
from gpunn.precision import POLICIES

COUNTED = ("launch", "raw_launch", "graph_launch", "sync", "h2d")
DEVICE = "cuda-sim:0 (CuPy double, simulated: not a GPU)"
# Before issue 10 (commit d63f535), counted the same way by today's double: per MLP step at
# every batch size, and per spiral step (which is an epoch). The double of that commit said 65
# MLP launches: it also counted CuPy's ascontiguousarray of a contiguous array and empty_like,
# which launch nothing.
BEFORE = {"mlp": {"launch": 53, "raw_launch": 5, "sync": 1, "h2d": 0},
          "spiral": {"launch": 47, "raw_launch": 3, "sync": 3, "h2d": 0}}


PRECISION_BATCH = 128  # the precision policies' counts: the MLP at this batch, CUDA graphs on

TESTS = Path(__file__).resolve().parent.parent / "tests"
DOUBLES = (TESTS / "cupy_double", TESTS / "nvmath_double")


def doubles_path() -> str:
    """A PYTHONPATH that makes ``cupy`` and ``nvmath`` the doubles (a source checkout has them)."""
    return os.pathsep.join(map(str, DOUBLES))


def counters() -> Any:
    """The double's counters, or SystemExit when ``cupy`` or ``nvmath`` is not the double."""
    try:
        import cupy
        import nvmath
    except ImportError:
        cupy = nvmath = None
    if not hasattr(cupy, "_sim") or not str(getattr(nvmath, "__file__", "")).startswith(
            str(DOUBLES[1])):
        raise SystemExit("step counts come from the CuPy and nvmath-python doubles: run with "
                         "PYTHONPATH=tests/cupy_double:tests/nvmath_double (a GPU counts "
                         "nothing)")
    return cupy._sim


def _counted(sim: Any, work: Any) -> dict[str, int]:
    sim.reset_counters()
    work()
    return {key: sim.counters.get(key, 0) for key in COUNTED}


def _difference(more: dict[str, int], less: dict[str, int], per: int) -> dict[str, float]:
    return {key: (more[key] - less[key]) / per for key in COUNTED}


def _trainer(sizes: tuple[int, ...], X: numpy.ndarray, y: numpy.ndarray,
             precision: str = "float32") -> GpunnTrainer:
    return GpunnTrainer(sizes, X, y, device="cuda:0", learning_rate=0.001, decay=0.0, seed=0,
                        shuffle=False, precision=precision)


def mlp_step_counts(batch_size: int = 128, steps: int = 8, *, cuda_graph: bool = True,
                    precision: str = "float32") -> dict[str, float]:
    """{launch, raw_launch, graph_launch, sync, h2d} per MLP training step, and ``epoch_sync``:
    synchronisations per epoch of ``steps`` steps (verbose=False), under the ``precision``
    policy."""
    sim = counters()
    rng = numpy.random.default_rng(0)
    X = rng.standard_normal((2 * steps * batch_size, 784)).astype(numpy.float32)
    y = rng.integers(0, 10, len(X))
    trainer = _trainer(MLP, X, y, precision)
    trainer.cuda_graph = cuda_graph
    trainer.epoch(steps * batch_size, batch_size)  # fills the caches and the optimizer state
    short, long = (_counted(sim, lambda n=n: trainer.epoch(n * batch_size, batch_size))
                   for n in (steps, 2 * steps))
    one, two = (_counted(sim, lambda e=e: trainer.epochs(e, steps * batch_size, batch_size))
                for e in (1, 2))
    return {**_difference(long, short, steps), "epoch_sync": two["sync"] - one["sync"]}


def spiral_step_counts(steps: int = 8, *, cuda_graph: bool = True) -> dict[str, float]:
    """The same for the spiral model's full-batch steps (one step is one epoch)."""
    sim = counters()
    X, y = __import__("gpunn").datasets.spiral_data(100, 3, seed=0)
    trainer = _trainer(spiral.SIZES, X, y)
    trainer.cuda_graph = cuda_graph
    trainer.full_batch_steps(steps)
    short, long = (_counted(sim, lambda n=n: trainer.full_batch_steps(n))
                   for n in (steps, 2 * steps))
    per_step = _difference(long, short, steps)
    return {**per_step, "epoch_sync": per_step["sync"]}


def precision_step_counts(batch_size: int = PRECISION_BATCH) -> dict[str, dict[str, Any]]:
    """mlp_step_counts with CUDA graphs under each precision policy; a policy that fails to
    train records its error instead (the other counts still come)."""
    counts: dict[str, dict[str, Any]] = {}
    for policy in POLICIES:
        try:
            counts[policy] = mlp_step_counts(batch_size, precision=policy)
        except Exception as error:  # such as a 16-bit kernel the backend lacks
            counts[policy] = {"error": f"{type(error).__name__}: {error}"[:1000]}
    return counts


def measure(batch_sizes: tuple[int, ...] = (32, 128, 1024)) -> dict[str, Any]:
    """Every count this module makes, as ``python -m benchmarks`` records them."""
    result: dict[str, Any] = {"device": DEVICE, "before_issue_10": BEFORE, "mlp": {},
                              "spiral": {}}
    for cuda_graph in (False, True):
        key = "cuda_graph" if cuda_graph else "no_cuda_graph"
        result["mlp"][key] = {str(batch): mlp_step_counts(batch, cuda_graph=cuda_graph)
                              for batch in batch_sizes}
        result["spiral"][key] = spiral_step_counts(cuda_graph=cuda_graph)
    result["precision"] = {"batch_size": PRECISION_BATCH, "cuda_graph": True,
                           "policies": precision_step_counts()}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_counts")
    parser.add_argument("--batch-sizes", default="32,128,1024",
                        help="MLP batch sizes, comma-separated (default 32,128,1024)")
    parser.add_argument("--json", type=Path, help="write the counts here too")
    args = parser.parse_args(argv)
    counts = measure(tuple(int(size) for size in args.batch_sizes.split(",")))
    print(json.dumps(counts, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(counts, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
