"""Run: python -m benchmarks.gpu_check --stage speed --out DIR      (on the GPU machine)
(each measurement runs in a process of its own: ``python -m benchmarks.gpu_speed PART --json
FILE [--rehearse] [--tf32]``)

How fast is gpunn on the GPU? The speed stage's parts, in the order they run, each reusing the
benchmarks' own harness (benchmarks/mlp.py, spiral.py, trainers.py, gpu.py, timing.py: the same
network, data and optimizer on both sides, trainers taking turns, medians with their spread):

- versions: as in the truth stage;
- first_train: the wall time of a first ``gpunn train --device cuda`` (an empty kernel cache:
  NVRTC compiles every kernel) and of a second (the cache filled);
- kernels: each kernel's GB/s against a device-to-device copy and the plain CuPy expression;
- mlp: samples/s of the 784-128-128-10 MLP at batch 32, 128 and 1024, float32 without TF32,
  for gpunn with its CUDA graphs and without, PyTorch eager and PyTorch with a captured graph;
- wide float32, wide tf32: the same four for 784-4096-4096-10 at batch 4096, in full float32
  and with TF32 matrix products on both sides (CUPY_TF32=1, torch's allow_tf32);
- spiral: steps/s of the book's 2-64-3 spiral model at full batch, gpunn with and without CUDA
  graphs and PyTorch eager (its decaying learning rate is not capturable as PyTorch captures).

PyTorch rows need a CUDA build of torch; without one they are left out, saying why.
``--rehearse`` shrinks sizes and repeats; on the CuPy double nothing here is a GPU figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import gpu, gpu_truth, mlp, spiral, timing

WIDE = (784, 4096, 4096, 10)
REHEARSAL_WIDE = (784, 64, 64, 10)


# ---- the parts, run by gpu_check's driver ------------------------------------------------------

def first_train(check: Any, seconds: float) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(dir=check.scratch))
    env = {**check.environment, "CUPY_CACHE_DIR": str(folder / "kernel-cache")}
    epochs = "5" if check.rehearse else "200"
    result: dict[str, Any] = {"epochs": int(epochs), "kernel_cache": "empty, then filled"}
    for run in ("first", "second"):
        argv = [sys.executable, "-m", "gpunn", "train", "--device", "cuda", "--epochs", epochs,
                "--out", str(folder / run)]
        limit = seconds * (0.65 if run == "first" else 0.35)  # the first compiles every kernel
        result[run] = check.command(argv, timeout=limit, env=env)
    graph = [line for line in result["second"]["tail"].splitlines() if "CUDA graph" in line]
    result["cuda_graph"] = graph[:1]
    result["summary"] = [f"- {run}: {result[run]['seconds']} s, exit status "
                         f"{result[run]['exit_status']}" for run in ("first", "second")]
    result["summary"] += [f"- {line}" for line in graph[:1]]
    return result


def _part(name: str, *options: str, env: dict | None = None) -> Any:
    def part(check: Any, seconds: float) -> dict[str, Any]:
        environment = {**check.environment, **(env or {})}
        result = check.worker("benchmarks.gpu_speed", name, timeout=seconds, env=environment,
                              options=options)
        result["summary"] = summary(result)
        return result
    return part


def summary(result: dict[str, Any]) -> list[str]:
    """One line per batch size (or op): each trainer's median rate."""
    lines = [f"- {result['torch_reason']}"] if result.get("torch_reason") else []
    for batch, entry in result.get("batch_sizes", {}).items():
        rates = {name: round(trainer["samples_per_second"]["median"])
                 for name, trainer in entry["trainers"].items()}
        lines.append(f"- batch {batch}: samples/s {rates}")
    if "trainers" in result:
        lines.append("- steps/s " + str({name: round(trainer["steps_per_second"]["median"])
                                         for name, trainer in result["trainers"].items()}))
    for name, entry in result.get("ops", {}).items():
        shares = {side: round(entry[side]["share_of_copy"], 2) for side in ("gpunn", "cupy")
                  if side in entry}
        lines.append(f"- {name}: share of the copy's bandwidth {shares}")
    return lines


PARTS = [("versions", gpu_truth.versions, 45), ("first_train", first_train, 120),
         ("kernels", _part("kernels"), 45), ("mlp", _part("mlp"), 120),
         ("wide float32", _part("wide"), 50),
         ("wide tf32", _part("wide", "--tf32", env={"CUPY_TF32": "1"}), 50),
         ("spiral", _part("spiral"), 40)]


# ---- the workers: python -m benchmarks.gpu_speed PART --json FILE ------------------------------

def _torch() -> tuple[Any, str | None]:
    """(torch, None) when a CUDA build of torch sees the GPU, else (None, why not)."""
    try:
        import torch
    except ImportError as error:
        return None, f"PyTorch rows left out: torch is not installed ({error})"
    if not torch.cuda.is_available():
        return None, f"PyTorch rows left out: torch {torch.__version__} sees no CUDA device"
    return torch, None


def measure(part: str, rehearse: bool, tf32: bool) -> dict[str, Any]:
    backend, reason = gpu.cuda_backend(simulated=rehearse)
    if backend is None:
        return {"error": f"no CUDA device: {reason}"}
    if rehearse:
        timing.SETTLE_SECONDS = 0.0
    if part == "kernels":
        elements, repeats, launches = (1 << 12, 1, 1) if rehearse else (gpu.ELEMENTS, 5, 20)
        return gpu.kernel_bandwidth(backend, elements=elements, repeats=repeats,
                                    launches=launches)
    torch, reason = _torch()
    repeats, warmup = (1, 2) if rehearse else (5, 50)
    result: dict[str, Any]
    if part == "spiral":
        result = spiral.run(torch, device="cuda", steps=10 if rehearse else 500, repeats=repeats,
                            warmup_steps=warmup, adam="default", seed=0, cuda_graph_too=True)
    else:
        sizes, batches = mlp.SIZES, [32, 128, 1024]
        if part == "wide":
            sizes, batches = (REHEARSAL_WIDE, [64]) if rehearse else (WIDE, [4096])
        samples = 256 if rehearse else (8 * 4096 if part == "wide" else 60_000)
        with _tf32(torch, tf32) as settings:
            result = mlp.run(torch, device="cuda", samples=samples, batch_sizes=batches,
                             repeats=repeats, warmup_steps=warmup, shuffle=False,
                             adam="default", seed=0, bound=None, sizes=sizes, graphs=True)
        result["tf32"] = settings
    result["torch_reason"] = reason
    return result


class _tf32:
    """TF32 matrix products on both sides (CUPY_TF32=1 is set by the driver before CuPy is
    imported), or full float32 on both (gpu.tf32_off)."""

    def __init__(self, torch: Any, on: bool) -> None:
        self.torch, self.on = torch, on
        self.off = None if on else gpu.tf32_off(torch)

    def __enter__(self) -> dict[str, Any]:
        import os

        if self.off is not None:
            return self.off.__enter__()
        if os.environ.get("CUPY_TF32") != "1":
            raise SystemExit("--tf32 needs CUPY_TF32=1 set before CuPy is imported")
        if self.torch is not None:
            self.torch.backends.cuda.matmul.allow_tf32 = True
            self.torch.backends.cudnn.allow_tf32 = True
        return {"CUPY_TF32": "1", "torch.backends.cuda.matmul.allow_tf32": True}

    def __exit__(self, *exc: Any) -> None:
        if self.off is not None:
            self.off.__exit__(*exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_speed")
    parser.add_argument("part", choices=("kernels", "mlp", "wide", "spiral"))
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--rehearse", action="store_true")
    parser.add_argument("--tf32", action="store_true")
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = measure(args.part, args.rehearse, args.tf32)
    result["worker_seconds"] = round(time.monotonic() - started, 1)
    args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
