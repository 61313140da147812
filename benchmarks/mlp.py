"""Run: python -m benchmarks --only mlp        (--device cuda for the GPU, --quick to try it)

Training speed of the 784-128-128-10 MLP (ReLU, softmax cross-entropy, Adam, float32), gpunn
against PyTorch in one process, at several batch sizes. The data is 60,000 synthetic samples,
X uniform in [-1, 1] labelled by a fixed random linear teacher (so there is something to learn
and the two losses can be compared). Each trainer is warmed up, then each repeat times one
epoch, the two trainers taking turns so that a disturbance hits both; the data is made and
moved to the device before any clock starts. gpunn's epoch is one ``model.train(..., epochs=1)``
call, so it includes the checks that call makes on the data.

By default neither side shuffles: both see the same batches in the same order from the same
initial parameters, so their epoch losses agree to a few digits, a check that they do the same
training. ``--shuffle`` shuffles each epoch on both sides; the shuffled copy of the data set
(188 MB) costs both the same, but on a virtual machine its fresh memory sometimes takes
0.2 s more to fault in, which makes epochs bimodal and the spread wide.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy

from benchmarks import sgemm, timing
from benchmarks.trainers import GpunnTrainer, TorchGraphTrainer, TorchTrainer

SIZES = (784, 128, 128, 10)
LEARNING_RATE = 0.001


def synthetic_data(samples: int, seed: int,
                   sizes: tuple[int, ...] = SIZES) -> tuple[numpy.ndarray, numpy.ndarray]:
    """X uniform in [-1, 1], float32, of shape (samples, 784); y from a random linear teacher."""
    rng = numpy.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, (samples, sizes[0])).astype(numpy.float32)
    teacher = rng.standard_normal((sizes[0], sizes[-1])).astype(numpy.float32)
    return X, numpy.argmax(X @ teacher, axis=1).astype(numpy.int64)


def run(torch: Any, *, device: str, samples: int, batch_sizes: list[int], repeats: int,
        warmup_steps: int, shuffle: bool, adam: str, seed: int,
        bound: dict[str, Any] | None, sizes: tuple[int, ...] = SIZES,
        graphs: bool = False, precision: str = "float32") -> dict[str, Any]:
    """Samples/s of each trainer at each batch size; with ``bound`` (sgemm.measure's result)
    also the GFLOP/s reached and the share of the GEMM bound and of the square peak. With
    ``graphs`` (on CUDA: benchmarks/gpu_speed.py) four trainers: gpunn with its CUDA graphs
    (the default) and without, PyTorch eager and PyTorch with a captured graph; a PyTorch
    trainer that cannot run the step is left out, saying why, and gpunn's rows stand. Both
    sides train under the ``precision`` policy (benchmarks/trainers.py)."""
    X, y = synthetic_data(samples, seed, sizes)
    result: dict[str, Any] = {"sizes": list(sizes), "samples": samples, "precision": precision,
                              "batch_sizes": {}}
    options = {"device": device, "learning_rate": LEARNING_RATE, "decay": 0.0,
               "shuffle": shuffle, "precision": precision}
    for batch_size in batch_sizes:
        trainers: list[Any] = [GpunnTrainer(sizes, X, y, seed=seed, **options)]
        if graphs:
            plain = GpunnTrainer(sizes, X, y, seed=seed, **options)
            plain.name, plain.cuda_graph = "gpunn, no CUDA graph", False
            trainers.append(plain)
        peers = [TorchTrainer] + ([TorchGraphTrainer] if graphs else [])
        left_out: dict[str, str] = {}
        for peer in peers if torch is not None else []:
            why_not = getattr(peer, "why_not", lambda precision: None)(precision)
            if why_not is not None:
                left_out[peer.name] = why_not
                continue
            trainers.append(peer(torch, trainers[0].parameters(), X, y, adam=adam, **options))
        # With graphs, a whole epoch first: every batch shape (the last, shorter one too) is
        # captured before any clock starts.
        warmup = samples if graphs else min(samples, max(warmup_steps, 1) * batch_size)
        for trainer in list(trainers):
            try:
                trainer.epoch(warmup, batch_size)
            except Exception as error:  # the peer's fault: gpunn's rows stand
                if not graphs or trainer.name.startswith("gpunn"):
                    raise
                trainers.remove(trainer)
                left_out[trainer.name] = f"failed: {type(error).__name__}: {error}"[:2000]
        seconds: dict[str, list[float]] = {trainer.name: [] for trainer in trainers}
        metrics: dict[str, dict[str, float]] = {}
        for repeat in range(repeats):
            for trainer in trainers if repeat % 2 == 0 else trainers[::-1]:
                timing.settle()
                elapsed, metrics[trainer.name] = timing.timed(
                    partial(trainer.epoch, samples, batch_size))
                seconds[trainer.name].append(elapsed)
        entry = _entry(samples, batch_size, seconds, metrics, warmup, bound, sizes)
        if left_out:
            entry["peers_left_out"] = left_out
        result["batch_sizes"][str(batch_size)] = entry
    return result


def _entry(samples: int, batch_size: int, seconds: dict[str, list[float]],
           metrics: dict[str, dict[str, float]], warmup: int,
           bound: dict[str, Any] | None, sizes: tuple[int, ...]) -> dict[str, Any]:
    steps = -(-samples // batch_size)
    flops_per_sample = sgemm.step_flops(sizes, batch_size) / batch_size
    entry: dict[str, Any] = {"steps_per_epoch": steps, "warmup_samples": warmup,
                             "flops_per_step": sgemm.step_flops(sizes, batch_size),
                             "trainers": {}}
    if bound is not None:  # the samples/s the step's matrix products alone allow
        library = bound["libraries"][0]
        gemms = bound["steps"][str(batch_size)]["gemms"][library]
        entry["gemm_bound_samples_per_second"] = batch_size / gemms["step_seconds"]
    for name, values in seconds.items():
        epoch = timing.summary(values)
        trainer = {"epoch_seconds": epoch, "samples_per_second": timing.rates(samples, values),
                   "step_ms": 1000 * epoch["median"] / steps,
                   "gflops": flops_per_sample * samples / epoch["median"] / 1e9,
                   "last_epoch": metrics[name]}
        if bound is not None:
            library = bound["libraries"][0]
            step = bound["steps"][str(batch_size)]["gemms"][library]
            trainer["share_of_gemm_bound"] = trainer["gflops"] / step["gflops"]
            trainer["share_of_peak"] = trainer["gflops"] / bound["square"][library]["gflops"]
        entry["trainers"][name] = trainer
    rate = {name: trainer["samples_per_second"]["median"]
            for name, trainer in entry["trainers"].items()}
    if "PyTorch" in rate:
        entry["ratio"] = rate["gpunn"] / rate["PyTorch"]
    if TorchGraphTrainer.name in rate:  # gpunn's graphs against PyTorch's
        entry["ratio_to_graph"] = rate["gpunn"] / rate[TorchGraphTrainer.name]
    return entry
