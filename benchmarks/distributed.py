"""Run: python -m benchmarks --only distributed --no-torch        (--quick to try it)

Data-parallel training (issue 11): the time one training step takes with 1 and 2 ranks at the
same global batch, the part of it spent in the allreduce of the flat gradient buffer, the
samples/s and the scaling efficiency, (samples/s with 2 ranks) / (2 x samples/s with 1 rank).
One rank alone already uses every core through its BLAS threads, so on a machine of few cores
that efficiency is at most about 50%; the record also gives it against one rank with the
threads each of the 2 ranks has (cores // 2), the efficiency of the data parallelism itself.

Each measurement starts ``mpiexec -n N python -m benchmarks.distributed --worker ...`` (the
mpiexec beside ``sys.executable``, else the one on PATH); without mpiexec or mpi4py the part is
skipped, saying why. Every rank builds the 784-1024-1024-10 MLP (ReLU, softmax cross-entropy,
Adam, float32), big enough that the matrix products dominate a CPU step, and trains it with
``model.train`` on the same synthetic data (benchmarks/mlp.py's), a global batch of 512 shared
among the ranks. The first epoch is a warm-up; each later epoch is one repeat. The worker
wraps its communicator's ``allreduce`` (and ``allreduce_values``, the per-step vote of all ranks
on going on, where a rank waits for the slower one) with a clock, without touching gpunn.

Threads: ``gpunn.distributed.init()`` gives each of N ranks on a machine cores // N BLAS
threads unless the user set OPENBLAS_NUM_THREADS (or OMP/MKL_NUM_THREADS); the measured runs
unset those variables; one more run with 2 ranks sets OPENBLAS_NUM_THREADS to the cores, so
each rank keeps them all: the cost of oversubscribing the cores. Every rank records the BLAS
threads it used. On a machine with CUDA the same runs go on the GPUs, one per rank (NCCL).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import machine, timing

SIZES = (784, 1024, 1024, 10)
QUICK_SIZES = (784, 32, 10)
GLOBAL_BATCH = 512
QUICK_BATCH = 64
STEPS_PER_EPOCH = 20  # one repeat: an epoch of STEPS_PER_EPOCH global batches
REPEATS = 9  # timed epochs after the warm-up epoch: 180 steps, about 7 s a run on 2 cores
QUICK_REPEATS = 1
QUICK_STEPS = 4
LEARNING_RATE = 0.001
# The runs besides "1 rank" and "2 ranks" (on a CPU of several cores): one rank with the BLAS
# threads each of 2 ranks gets (the per-rank speed the 2 ranks scale from), and 2 ranks that
# keep every core each (OPENBLAS_NUM_THREADS set, as a user may have it): oversubscribed.
HALF = "1 rank, cores // 2 threads"
OVERSUBSCRIBED = "2 ranks, all cores each"
TIMEOUT = 600  # seconds per mpiexec run: far above a run's length, so a hang ends the part
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def find_mpiexec() -> tuple[str | None, str | None]:
    """(mpiexec's path, None), or (None, why data-parallel runs cannot start here)."""
    mpiexec = (shutil.which("mpiexec", path=str(Path(sys.executable).parent))
               or shutil.which("mpiexec"))
    if mpiexec is None:
        return None, ("mpiexec not found beside Python or on PATH: pip install 'gpunn[mpi]' "
                      "(mpi4py and the mpich wheel)")
    if importlib.util.find_spec("mpi4py") is None:
        return None, "mpi4py is not installed: pip install 'gpunn[mpi]'"
    return mpiexec, None


def run(*, quick: bool, device: str, seed: int, gpus: int = 0) -> dict[str, Any]:
    """The part's record: one entry per run (1 rank, 2 ranks, on the CPU also 2 ranks with all
    cores each), the efficiency, or ``skipped`` with the reason. ``gpus``: how many GPUs a
    CUDA run may use, one per rank."""
    sizes, batch = (QUICK_SIZES, QUICK_BATCH) if quick else (SIZES, GLOBAL_BATCH)
    steps, repeats = (QUICK_STEPS, QUICK_REPEATS) if quick else (STEPS_PER_EPOCH, REPEATS)
    result: dict[str, Any] = {"sizes": list(sizes), "global_batch": batch,
                              "steps_per_repeat": steps, "repeats": repeats, "device": device,
                              "cores": machine.cores(), "runs": {}}
    mpiexec, reason = find_mpiexec()
    if mpiexec is None:
        result["skipped"] = reason
        return result
    result["mpiexec"] = mpiexec
    cores = machine.cores()
    plans = [("1 rank", 1, None), ("2 ranks", 2, None)]
    if device == "cpu" and cores > 1:
        plans.insert(1, (HALF, 1, str(cores // 2)))
        plans.append((OVERSUBSCRIBED, 2, str(cores)))
    if device != "cpu" and gpus < 2:
        plans.pop(1)
        result["runs"]["2 ranks"] = {"ranks": 2, "skipped": f"needs 2 GPUs, found {gpus}"}
    for label, ranks, blas_threads in plans:
        print(f"[{device}] data-parallel: {label} ...", flush=True)
        result["runs"][label] = _launch(mpiexec, ranks, blas_threads, sizes=sizes, batch=batch,
                                        steps=steps, repeats=repeats, device=device, seed=seed)
    rates = {label: run["samples_per_second"]["median"] for label, run in result["runs"].items()
             if "samples_per_second" in run}
    if "1 rank" in rates and "2 ranks" in rates:
        result["efficiency"] = rates["2 ranks"] / (2 * rates["1 rank"])
    if HALF in rates and "2 ranks" in rates:
        result["efficiency_same_threads_per_rank"] = rates["2 ranks"] / (2 * rates[HALF])
    return result


def _launch(mpiexec: str, ranks: int, blas_threads: str | None, **settings: Any) -> dict:
    """One ``mpiexec -n ranks`` run of the worker; its summary, or ``error``."""
    environment = {name: value for name, value in os.environ.items()
                   if name not in THREAD_VARIABLES}
    if blas_threads is not None:  # the user's choice, which gpunn.distributed.init() keeps
        environment["OPENBLAS_NUM_THREADS"] = blas_threads
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent),
         *filter(None, [os.environ.get("PYTHONPATH")])])
    folder = Path(tempfile.mkdtemp(prefix="gpunn-bench-dist-"))
    command = [mpiexec, "-n", str(ranks), sys.executable, "-m", "benchmarks.distributed",
               "--worker", "--results", str(folder),
               "--sizes", ",".join(map(str, settings["sizes"])),
               "--batch", str(settings["batch"]), "--steps", str(settings["steps"]),
               "--repeats", str(settings["repeats"]), "--device", settings["device"],
               "--seed", str(settings["seed"])]
    entry: dict[str, Any] = {"ranks": ranks, "OPENBLAS_NUM_THREADS": blas_threads}
    with _OthersAndChildren() as others:
        process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # mpiexec and every rank it started
            stdout, stderr = process.communicate()
            entry["error"] = f"mpiexec -n {ranks} ran past {TIMEOUT} s: {stderr.strip()[-300:]}"
    entry["other_processes_cpu_share"] = others.share
    if others.share is not None and others.share > 0.05:
        print(f"warning: other processes used {others.share:.0%} of the CPUs during the "
              f"{ranks}-rank run: its timings are disturbed; rerun on a quiet machine.")
    if "error" in entry:
        return entry
    if process.returncode != 0:
        entry["error"] = (f"mpiexec -n {ranks} failed (status {process.returncode}): "
                          f"{(stderr or stdout).strip()[-500:]}")
        return entry
    reports = [json.loads(path.read_text()) for path in sorted(folder.glob("rank-*.json"))]
    shutil.rmtree(folder, ignore_errors=True)
    if len(reports) != ranks:
        entry["error"] = f"{len(reports)} of {ranks} ranks reported: {stderr.strip()[-300:]}"
        return entry
    return {**entry, **_summarize(reports, settings["batch"])}


def _summarize(reports: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    """Rank 0's step and epoch times; every rank's collective times per step."""
    first = reports[0]
    steps = first["timed_steps"]
    return {
        "communicator": first["communicator"],
        "blas_threads": [report["blas_threads"] for report in reports],
        "thread_setting": [report["thread_setting"] for report in reports],
        "step_ms": 1000 * statistics.median(first["step_seconds"]),
        "step_seconds": timing.summary(first["step_seconds"]),
        "epoch_seconds": timing.summary(first["epoch_seconds"]),
        "samples_per_second": timing.rates(batch * first["steps_per_epoch"],
                                           first["epoch_seconds"]),
        "allreduce_ms_per_step": [1000 * sum(r["allreduce_seconds"]) / steps for r in reports],
        "allreduce_calls_per_step": [len(r["allreduce_seconds"]) / steps for r in reports],
        "vote_ms_per_step": [1000 * sum(r["allreduce_values_seconds"]) / steps
                             for r in reports],
        "gradient_bytes": first["gradient_bytes"],
        "last_epoch": first["last_epoch"],
    }


class _OthersAndChildren(machine.OtherProcesses):
    """machine.OtherProcesses that counts the ranks (waited-for descendants) as ours."""

    def __enter__(self) -> _OthersAndChildren:
        self._children = _children_seconds()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        children = _children_seconds()
        if self.share is None or self._children is None or children is None:
            return
        wall = max(time.monotonic() - self._start[0], 1e-9)
        ranks = (children - self._children) / (wall * machine.cores())
        self.share = max(0.0, self.share - ranks)


def _children_seconds() -> float | None:
    """CPU seconds of this process's waited-for children (and theirs), from /proc."""
    try:
        with open("/proc/self/stat", encoding="ascii") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


# ---- the worker: one rank ---------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """Train under ``gpunn.distributed`` and write rank-<R>.json into ``args.results``."""
    import gpunn
    from benchmarks.mlp import synthetic_data

    comm = gpunn.distributed.init(args.device)
    setting = next((f"{name}={os.environ[name]}" for name in THREAD_VARIABLES
                    if name in os.environ), "none")
    collectives: dict[str, list[tuple[float, float]]] = {"allreduce": [], "allreduce_values": []}
    for name, log in collectives.items():
        setattr(comm, name, _clocked(getattr(comm, name), log, comm, args.device))
    sizes = [int(size) for size in args.sizes.split(",")]
    gpunn.seed(args.seed)
    backend = gpunn.device(comm.device or args.device)
    model = gpunn.Model(device=backend)
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    for index, (n_in, n_out) in enumerate(pairs):
        model.add(gpunn.Dense(n_in, n_out, device=backend))
        model.add(gpunn.Softmax(device=backend) if index == len(pairs) - 1
                  else gpunn.ReLU(device=backend))
    model.set(loss=gpunn.CategoricalCrossentropy(),
              optimizer=gpunn.Adam(learning_rate=LEARNING_RATE),
              accuracy=gpunn.CategoricalAccuracy())
    model.finalize()
    X, y = synthetic_data(args.batch * args.steps, args.seed)
    X, y = backend.asarray(X), backend.asarray(y)
    batch_ends: list[tuple[int, float]] = []
    epoch_ends: list[float] = []

    def on_batch_end(epoch: int, step: int, steps: int) -> None:
        backend.synchronize()
        batch_ends.append((epoch, time.perf_counter()))

    def on_epoch_end(epoch: int, logs: dict[str, Any]) -> None:
        backend.synchronize()
        epoch_ends.append(time.perf_counter())

    comm.barrier()
    history = model.train(X, y, epochs=1 + args.repeats, batch_size=args.batch, shuffle=False,
                          verbose=False, on_epoch_end=on_epoch_end, on_batch_end=on_batch_end)
    warm = epoch_ends[0]  # the first epoch is the warm-up
    step_seconds = [now - before for (epoch, now), (previous, before)
                    in zip(batch_ends[1:], batch_ends[:-1], strict=True)
                    if epoch == previous and epoch > 1]
    timed_steps = args.steps * args.repeats
    report = {
        "rank": comm.rank, "size": comm.size, "communicator": comm.name,
        "blas_threads": _blas_threads(), "thread_setting": setting,
        "steps_per_epoch": args.steps, "timed_steps": timed_steps,
        "step_seconds": step_seconds,
        "epoch_seconds": [b - a for a, b in zip(epoch_ends[:-1], epoch_ends[1:], strict=True)],
        "gradient_bytes": int(model.gradients.nbytes),
        "last_epoch": {"loss": history["loss"][-1], "accuracy": history["accuracy"][-1]},
    }
    for name, log in collectives.items():
        report[f"{name}_seconds"] = [seconds for start, seconds in log if start > warm]
    path = Path(args.results) / f"rank-{comm.rank}.json"
    path.write_text(json.dumps(report))


def _clocked(operation: Any, log: list[tuple[float, float]], comm: Any, device: str) -> Any:
    """``operation`` with its (start, seconds) appended to ``log``; on a GPU between two
    synchronisations, so the time is the transfer's, not the launch's."""
    synchronize = _synchronizer(comm, device)

    def clocked(*args: Any, **kwargs: Any) -> Any:
        synchronize()
        start = time.perf_counter()
        result = operation(*args, **kwargs)
        synchronize()
        log.append((start, time.perf_counter() - start))
        return result

    return clocked


def _synchronizer(comm: Any, device: str) -> Any:
    backend = getattr(comm, "backend", None)
    if backend is not None and device.startswith("cuda"):
        return backend.synchronize
    return lambda: None


def _blas_threads() -> int | None:
    """The threads NumPy's BLAS runs with in this process (threadpoolctl), None unknown."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    pools = [pool for pool in threadpoolctl.threadpool_info() if pool.get("user_api") == "blas"]
    return pools[0]["num_threads"] if pools else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=(
        "One rank of the data-parallel benchmark; python -m benchmarks --only distributed "
        "starts them."))
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--batch", type=int, default=GLOBAL_BATCH)
    parser.add_argument("--steps", type=int, default=STEPS_PER_EPOCH)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    worker(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
