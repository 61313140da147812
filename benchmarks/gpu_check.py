"""Run, on a machine with an NVIDIA GPU:  python -m benchmarks.gpu_check

Everything a GPU can show that the CuPy double cannot, in one command, with one results file:

1. the whole test suite on CUDA (``pytest --device cuda``, which also records itself as
   benchmarks/results/pytest-<device>-<date>.json);
2. the GPU benchmarks against PyTorch (``python -m benchmarks --device cuda``);
3. the double next to the GPU: launches and synchronisations per MLP training step as the
   double counts them (tests/cupy_double, simulated), next to the same step on the GPU: its
   time, and, where NVIDIA Nsight Systems (``nsys``) is installed, the kernel launches and
   synchronisations CUDA itself saw.

It writes benchmarks/results/gpu-check-<device>-<date>.json. A GPU result that contradicts the
double (a test that passes on cuda-sim and fails here, different counts) is a defect in the
double too: fix both. Refuses to run without a real GPU.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import step_counts

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
STEP = """
import time, numpy
from benchmarks.mlp import SIZES
from benchmarks.trainers import GpunnTrainer
rng = numpy.random.default_rng(0)
X = rng.standard_normal((128 * {steps}, SIZES[0])).astype(numpy.float32)
y = rng.integers(0, SIZES[-1], len(X))
trainer = GpunnTrainer(SIZES, X, y, device="cuda:0", learning_rate=0.001, decay=0.0, seed=0,
                       shuffle=False)
trainer.epoch(len(X), 128)
start = time.perf_counter()
trainer.epoch(len(X), 128)
print((time.perf_counter() - start) / {steps})
"""


def _run(command: list[str], **kwargs: Any) -> dict[str, Any]:
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, **kwargs)
    print(done.stdout[-4000:], done.stderr[-2000:], sep="\n", flush=True)
    return {"command": " ".join(command), "exit_status": done.returncode,
            "seconds": round(time.perf_counter() - started, 1),
            "tail": (done.stdout + done.stderr)[-6000:]}


def _gpu() -> tuple[Any, str]:
    from benchmarks import gpu

    backend, reason = gpu.cuda_backend()
    if backend is None:
        raise SystemExit(f"gpu_check needs a real NVIDIA GPU: {reason}")
    return backend, gpu.gpu_name(backend)


def _step_time(steps: int) -> float:
    done = subprocess.run([sys.executable, "-c", STEP.format(steps=steps)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _nsys_counts(steps: int) -> dict[str, Any]:
    """CUDA API calls of the timed loop as Nsight Systems saw them, per step: the real
    launches and synchronisations (approximate: the warm-up epoch is included, so the figure
    is over 2 * steps steps)."""
    nsys = shutil.which("nsys")
    if nsys is None:
        return {"not_measured": "nsys (NVIDIA Nsight Systems) is not on PATH"}
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "step"
        script = Path(folder) / "step.py"
        script.write_text(STEP.format(steps=steps))
        subprocess.run([nsys, "profile", "--trace=cuda", "--force-overwrite=true", "-o",
                        str(report), sys.executable, str(script)], cwd=ROOT,
                       capture_output=True, text=True, check=True)
        stats = subprocess.run([nsys, "stats", "--report", "cuda_api_sum", "--format", "csv",
                                f"{report}.nsys-rep"], capture_output=True, text=True,
                               check=True).stdout
    calls: dict[str, int] = {}
    for row in csv.DictReader(io.StringIO(stats[stats.index("Time"):] if "Time" in stats
                                          else stats)):
        name, count = row.get("Name", ""), row.get("Num Calls", "0")
        if name:
            calls[name] = int(count.replace(",", ""))
    launches = sum(n for name, n in calls.items() if "LaunchKernel" in name)
    syncs = sum(n for name, n in calls.items() if "Synchronize" in name)
    return {"launch": launches / (2 * steps), "sync": syncs / (2 * steps),
            "cuda_api_calls": calls}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check",
                                     description=__doc__.split("\n\n")[1])
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--skip-benchmarks", action="store_true")
    parser.add_argument("--steps", type=int, default=64)
    args = parser.parse_args(argv)
    backend, name = _gpu()
    cupy = backend.xp
    record: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": name, "cupy": cupy.__version__,
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cuda_driver": cupy.cuda.runtime.driverGetVersion(), "python": platform.python_version(),
    }
    if not args.skip_tests:
        record["pytest_cuda"] = _run([sys.executable, "-m", "pytest", "--device", "cuda", "-q",
                                      "-p", "no:cacheprovider"])
    if not args.skip_benchmarks:
        record["benchmarks_cuda"] = _run([sys.executable, "-m", "benchmarks", "--device",
                                          "cuda"])
    double_env = {**os.environ, "PYTHONPATH": step_counts.doubles_path()}
    simulated = subprocess.run([sys.executable, "-m", "benchmarks.step_counts"], cwd=ROOT,
                               env=double_env, capture_output=True, text=True)
    record["double_vs_gpu"] = {
        "double_counts_per_step": (json.loads(simulated.stdout) if simulated.returncode == 0
                                   else simulated.stderr[-2000:]),
        "gpu_seconds_per_step_batch_128": _step_time(args.steps),
        "gpu_counts_per_step_batch_128": _nsys_counts(args.steps),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = record["date"].replace(":", "").replace("-", "")[:15]
    path = RESULTS / f"gpu-check-{name.replace(' ', '-')}-{stamp}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["double_vs_gpu"], indent=2))
    print(f"wrote {path}; commit it with the pytest-*.json and the benchmark files")
    failed = [key for key in ("pytest_cuda", "benchmarks_cuda")
              if record.get(key, {}).get("exit_status", 0) != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
