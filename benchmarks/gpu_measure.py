"""Run: python -m benchmarks.gpu_check --stage truth --out DIR, which runs each of these in a
process of its own as ``python -m benchmarks.gpu_measure PART --json FILE [--rehearse]``:

- versions: the device, CUDA, the packages and tools that matter, whether a CUDA graph can be had;
- ulps: each gpunn kernel against its NumPy twin (gpunn.backend.numpy_backend, the optimizers'
  own update) on the same inputs, float32 and float64: the largest distance in units in the
  last place of every output (on the CuPy double the kernels run host-compiled);
- counts: per training step of the MLP 784-128-128-10 (batch 128) and the spiral 2-64-3 (full
  batch), with and without a CUDA graph: host and GPU microseconds (a CUDA event pair per
  epoch; a step is the difference between epochs of 2N and N steps), the graph's status, the
  parameters of the graphed and the plain run compared, and ``waits``: a GPU job of about
  0.3 s is queued before an epoch, each step's return is clocked on the host, and a step that
  returns only after the job ended waited for the GPU (a synchronisation, a copy to the host,
  a cudaFree). It shows that a step waits, not how often;
- launches: the MLP's epochs of N and 2N steps between cudaProfilerStart and Stop, each
  followed by a marker kernel (cupy.fmax, which gpunn never runs), for Nsight Compute to count
  the kernels in between (benchmarks/gpu_truth.py reads its CSV).

``--rehearse`` shrinks every size: on the double these figures are simulated, not a GPU's.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy

import gpunn
from benchmarks import mlp, spiral
from benchmarks.trainers import GpunnTrainer
from gpunn.backend.kernels import OPTIMIZER_RULES, TALLY_SIZE
from gpunn.backend.numpy_backend import NumpyBackend

PACKAGES = ("numpy", "cupy-cuda13x", "cupy-cuda12x", "nvmath-python", "cuda-bindings",
            "cuda-core", "cuda-pathfinder", "ml-dtypes", "nvidia-cuda-nvrtc",
            "nvidia-cuda-runtime", "nvidia-cublas", "nvidia-nccl-cu13", "torch", "pytest",
            "pytest-timeout", "hypothesis", "mpi4py")
TOOLS = ("compute-sanitizer", "ncu", "nsys", "nvcc", "g++", "mpiexec")
SIMULATED = "cuda-sim:0 (CuPy double, simulated: not a GPU)"
BUSY_SECONDS = 0.3
OPTIMIZERS = {
    "sgd": lambda: gpunn.SGD(learning_rate=0.5, decay=0.01),
    "sgd_momentum": lambda: gpunn.SGD(learning_rate=0.5, decay=0.01, momentum=0.9),
    "adagrad": lambda: gpunn.Adagrad(learning_rate=0.3, decay=0.02),
    "rmsprop": lambda: gpunn.RMSprop(learning_rate=0.01, decay=0.03, rho=0.8),
    "adam": lambda: gpunn.Adam(learning_rate=0.02, decay=0.05, beta_1=0.8, beta_2=0.99),
}


def versions(rehearse: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"python": sys.version.split()[0], "executable": sys.executable,
                              "packages": {name: _version(name) for name in PACKAGES},
                              "tools": {name: shutil.which(name) for name in TOOLS}}
    try:
        import cupy
    except ImportError as error:
        result["no_gpu"] = f"CuPy is not installed ({error})"
        return result
    result.update(cupy_from=cupy.__file__, simulated=hasattr(cupy, "_sim"))
    try:
        backend = gpunn.device("cuda")
    except gpunn.DeviceUnavailableError as error:
        result["no_gpu"] = str(error)
        return result
    from benchmarks import gpu

    name = gpu.gpu_name(backend)
    runtime = cupy.cuda.runtime
    result.update(gpu=name, cuda_runtime=runtime.runtimeGetVersion(),
                  cuda_driver=runtime.driverGetVersion(),
                  compute_capability=cupy.cuda.Device(backend.index).compute_capability,
                  cuda_graph=backend.why_no_cuda_graph() or "can be captured (nvmath loads)")
    result["device"] = SIMULATED if result["simulated"] else f"cuda:0 {name}"
    return result


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def ulp_distance(a: Any, b: Any) -> float:
    """The largest distance between two float arrays of one dtype in units in the last place
    (NaN equals NaN; NaN against a number is infinite)."""
    a, b = numpy.asarray(a), numpy.asarray(b)
    if a.size == 0:
        return 0.0
    kind = {4: numpy.int32, 8: numpy.int64}[a.dtype.itemsize]
    # The bits as integers ordered as the floats are (negative floats count down from -0.0,
    # which meets +0.0), then the difference in unsigned arithmetic, which cannot overflow.
    ordered = [numpy.where(v.view(kind) < 0, numpy.iinfo(kind).min - v.view(kind),
                           v.view(kind)).astype(numpy.int64) for v in (a, b)]
    high, low = numpy.maximum(*ordered), numpy.minimum(*ordered)
    distance = (high.astype(numpy.uint64) - low.astype(numpy.uint64)).astype(numpy.float64)
    nan_a, nan_b = numpy.isnan(a), numpy.isnan(b)
    distance[nan_a & nan_b] = 0
    distance[nan_a ^ nan_b] = numpy.inf
    return float(distance.max())


def ulps(rehearse: bool) -> dict[str, Any]:
    backend, twin = gpunn.device("cuda"), NumpyBackend()
    rows, cols = (20, 13) if rehearse else (1000, 130)  # crosses block and warp boundaries
    kernels: dict[str, Any] = {}
    for dtype in ("float32", "float64"):
        rng = numpy.random.default_rng(0)
        x = (rng.standard_normal((rows, cols)) * 3).astype(dtype)
        dy, b = (rng.standard_normal(shape).astype(dtype) for shape in ((rows, cols), (1, cols)))
        u = rng.random((rows, cols), dtype=dtype)
        labels = rng.integers(0, cols, rows)
        on = backend.asarray
        tally, host_tally = backend.xp.zeros(TALLY_SIZE, dtype="float64"), numpy.zeros(TALLY_SIZE)
        cases = {
            "relu": ((backend.relu(on(x)),), (twin.relu(x),)),
            "relu_backward": ((backend.relu_backward(on(dy), on(x)),),
                              (twin.relu_backward(dy, x),)),
            "bias_add": ((backend.bias_add(on(x), on(b)),), (twin.bias_add(x, b),)),
            "bias_relu": ((backend.bias_relu(on(x), on(b)),), (twin.bias_relu(x, b),)),
            "dropout": (backend.dropout(on(x), on(u), 0.9), twin.dropout(x, u, 0.9)),
            "softmax_ce": ((*backend.softmax_ce(on(x), on(labels), tally), tally),
                           (*twin.softmax_ce(x, labels, host_tally), host_tally)),
        }
        for rule in OPTIMIZER_RULES:
            cases[rule] = _optimizer_case(backend, twin, rule, x.ravel(), dy.ravel())
        for name, (device, host) in cases.items():
            kernels[f"{name} {dtype}"] = [
                ulp_distance(backend.to_numpy(d).astype(dtype), numpy.asarray(h, dtype))
                for d, h in zip(device, host)]
    return {"shape": [rows, cols], "kernels": kernels,
            "measures": "the largest ulp distance of each output, in the inputs' dtype (for "
                        "softmax_ce: probs, dlogits and the float64 tally rounded to it; for "
                        "the optimizers: parameters, then their state)",
            "device": SIMULATED if hasattr(backend.xp, "_sim") else backend.device}


def _optimizer_case(backend: Any, twin: Any, rule: str, parameters: Any,
                    gradients: Any) -> tuple[tuple, tuple]:
    optimizer = OPTIMIZERS[rule]()
    optimizer.backend = twin
    expected = parameters.copy()
    optimizer.pre_update_params()
    optimizer.update_params(expected, gradients)
    state = {name: backend.xp.zeros(parameters.shape, dtype=parameters.dtype)
             for name in OPTIMIZER_RULES[rule][0]}
    device_parameters = backend.asarray(parameters)
    tally = backend.xp.zeros(TALLY_SIZE, dtype="float64")
    backend.optimizer_step(rule, device_parameters, backend.asarray(gradients), state,
                           optimizer.config(), tally)
    return ((device_parameters, *state.values()),
            (expected, *(optimizer.state[name] for name in state)))


def _trainer(label: str, steps: int, cuda_graph: bool) -> tuple[GpunnTrainer, Any]:
    """A benchmark trainer and a function that trains ``n`` of its steps."""
    if label.startswith("mlp"):
        X, y = mlp.synthetic_data(2 * steps * 128, 0)
        trainer = GpunnTrainer(mlp.SIZES, X, y, device="cuda", learning_rate=mlp.LEARNING_RATE,
                               decay=0.0, seed=0, shuffle=False)
        run = lambda n: trainer.epoch(n * 128, 128)  # noqa: E731
    else:
        X, y = gpunn.datasets.spiral_data(100, 3, seed=0)
        trainer = GpunnTrainer(spiral.SIZES, X, y, device="cuda",
                               learning_rate=spiral.LEARNING_RATE, decay=0.0, seed=0,
                               shuffle=False)
        run = trainer.full_batch_steps
    trainer.cuda_graph = cuda_graph
    return trainer, run


def counts(rehearse: bool) -> dict[str, Any]:
    cupy = gpunn.device("cuda").xp
    steps = 2 if rehearse else 16
    configs: dict[str, Any] = {}
    for label in ("mlp 784-128-128-10, batch 128", "spiral 2-64-3, full batch"):
        trainers = []
        for cuda_graph in (False, True):
            trainer, run = _trainer(label, steps, cuda_graph)
            run(steps)  # kernels compiled, optimizer state made
            clocked = {n: _clocked(cupy, partial(run, n)) for n in (steps, 2 * steps)}
            host, gpu = ((clocked[2 * steps][i] - clocked[steps][i]) / steps for i in (0, 1))
            configs[f"{label}, {'CUDA graph' if cuda_graph else 'no CUDA graph'}"] = {
                "host_us_per_step": 1e6 * host, "gpu_us_per_step": 1e6 * gpu,
                "cuda_graph": trainer.history.cuda_graph,
                "waits": _waits(cupy, trainer, partial(run, steps), rehearse)}
            trainers.append(trainer)
        plain, graphed = (t.model.get_parameters() for t in trainers)
        difference = max(float(numpy.max(numpy.abs(a - b))) for pair_a, pair_b
                         in zip(plain, graphed) for a, b in zip(pair_a, pair_b))
        configs[f"{label}, graphed vs plain"] = {"largest_parameter_difference": difference,
                                                 "equal": difference == 0.0}
    return {"steps": steps, "configs": configs,
            "device": SIMULATED if hasattr(cupy, "_sim") else "cuda:0"}


def _clocked(cupy: Any, work: Any) -> tuple[float, float]:
    """(host seconds, GPU seconds between two events on the current stream) of ``work``."""
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    began = time.perf_counter()
    work()
    stop.record()
    stop.synchronize()
    return time.perf_counter() - began, cupy.cuda.get_elapsed_time(start, stop) / 1000.0


def _waits(cupy: Any, trainer: GpunnTrainer, work: Any, rehearse: bool) -> dict[str, Any]:
    """Queue a GPU job of about BUSY_SECONDS, train, and see which steps returned after it."""
    size = 64 if rehearse else 4096  # about 3 ms a product on an H200: a short launch queue
    busy = cupy.ones((size, size), dtype="float32")
    product = cupy.empty_like(busy)
    cupy.dot(busy, busy, out=product)  # cuBLAS's first call sets itself up; not clocked
    _, one = _clocked(cupy, lambda: cupy.dot(busy, busy, out=product))
    repeats = 1 if rehearse else max(1, min(20000, int(BUSY_SECONDS / max(one, 1e-6))))
    stamps: list[float] = []
    trainer.on_batch_end = lambda epoch, index, steps: stamps.append(time.perf_counter())
    began = time.perf_counter()
    for _ in range(repeats):
        cupy.dot(busy, busy, out=product)
    work()
    trainer.on_batch_end = None
    job = repeats * one
    late = [index for index, stamp in enumerate(stamps) if stamp - began > job / 2]
    return {"gpu_job_seconds": job, "steps": len(stamps), "steps_that_returned_late": len(late),
            "first_late_step": late[0] if late else None}


def launches(rehearse: bool) -> dict[str, Any]:
    backend = gpunn.device("cuda")
    cupy = backend.xp
    steps = 2 if rehearse else 4  # ncu replays each kernel: a few steps take seconds
    marker = cupy.zeros(1, dtype="float32")
    order = []
    for cuda_graph in (False, True):
        trainer, run = _trainer("mlp", steps, cuda_graph)
        run(steps)
        backend.synchronize()
        cupy.cuda.runtime.profilerStart()
        for n in (steps, 2 * steps):
            run(n)
            cupy.fmax(marker, marker, out=marker)
        backend.synchronize()
        cupy.cuda.runtime.profilerStop()
        order.append("MLP batch 128, " + ("CUDA graph" if cuda_graph else "no CUDA graph"))
    return {"steps": steps, "order": order}


WORKERS = {"versions": versions, "ulps": ulps, "counts": counts, "launches": launches}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_measure")
    parser.add_argument("part", choices=WORKERS)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--rehearse", action="store_true")
    args = parser.parse_args(argv)
    result = WORKERS[args.part](args.rehearse)
    args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
