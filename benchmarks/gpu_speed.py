"""Run: python -m benchmarks.gpu_check --stage speed --out DIR      (on the GPU machine)
(each measurement runs in a process of its own: ``python -m benchmarks.gpu_speed PART --json
FILE [--rehearse] [--model wide|mlp]``)

How fast is gpunn on the GPU? The speed stage's parts, in the order they run, each reusing the
benchmarks' own harness (benchmarks/mlp.py, spiral.py, trainers.py, gpu.py, timing.py: the same
network, data and optimizer on both sides, trainers taking turns, medians with their spread):

- versions: as in the truth stage;
- first_train: the wall time of a first ``gpunn train --device cuda`` (an empty kernel cache:
  NVRTC compiles every kernel) and of a second (the cache filled);
- kernels: each kernel's GB/s against a device-to-device copy and the plain CuPy expression;
- mlp: samples/s of the 784-128-128-10 MLP at batch 32, 128 and 1024, float32 without TF32,
  for gpunn with its CUDA graphs and without, PyTorch eager and PyTorch with a captured graph;
- precision wide, precision mlp: the same four for 784-4096-4096-10 at batch 4096 and for
  784-128-128-10 at batch 1024 under each precision policy (gpunn.precision): float32 on both
  sides (the baseline), tf32 (gpunn's ``precision="tf32"``, PyTorch's TF32 switch), bfloat16
  (``torch.autocast``) and float16 (autocast and ``torch.amp.GradScaler``, whose step is not
  capturable: no PyTorch graph there); each policy's speed-up over float32 per trainer. A
  policy the device cannot run (``precision.why_not``) is left out, saying why; a policy whose
  gpunn training fails records its error and the others still run;
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
import traceback
from pathlib import Path
from typing import Any

from benchmarks import gpu, gpu_truth, mlp, spiral, timing
from gpunn import precision

WIDE = (784, 4096, 4096, 10)
REHEARSAL_WIDE = (784, 64, 64, 10)
# The precision parts' models: (sizes, batch, samples), and shrunk for the rehearsal.
MODELS = {"wide": ((WIDE, 4096, 8 * 4096), (REHEARSAL_WIDE, 64, 256)),
          "mlp": ((mlp.SIZES, 1024, 60_000), (mlp.SIZES, 1024, 256))}


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


def _part(name: str, *options: str) -> Any:
    def part(check: Any, seconds: float) -> dict[str, Any]:
        result = check.worker("benchmarks.gpu_speed", name, timeout=seconds,
                              env=check.environment, options=options)
        result["summary"] = summary(result)
        return result
    return part


def summary(result: dict[str, Any]) -> list[str]:
    """One line per batch size, policy or op: each trainer's median rate."""
    lines = [f"- {result['torch_reason']}"] if result.get("torch_reason") else []
    for name, row in result.get("policies", {}).items():
        if "samples_per_second" not in row:
            why = row.get("left_out") or "ERROR: " + row["error"].strip().splitlines()[-1]
            lines.append(f"- {name}: {why}")
            continue
        lines.append(f"- {name}: samples/s {row['samples_per_second']}, speed-up over float32 "
                     f"{row.get('speedup_over_float32', {})}")
        lines += [f"  - {why}" for why in row.get("peers_left_out", {}).values()]
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
         ("precision wide", _part("precision", "--model", "wide"), 70),
         ("precision mlp", _part("precision", "--model", "mlp"), 50),
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


def measure(part: str, rehearse: bool, model: str = "wide") -> dict[str, Any]:
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
    elif part == "precision":
        result = policies(backend, torch, model, rehearse=rehearse, repeats=repeats)
    else:
        with gpu.tf32_off(torch) as settings:
            result = mlp.run(torch, device="cuda", samples=256 if rehearse else 60_000,
                             batch_sizes=[32, 128, 1024], repeats=repeats, warmup_steps=warmup,
                             shuffle=False, adam="default", seed=0, bound=None, graphs=True)
        result["tf32"] = settings
    result["torch_reason"] = reason
    return result


def policies(backend: Any, torch: Any, model: str, *, rehearse: bool,
             repeats: int) -> dict[str, Any]:
    """mlp.run's four trainers under each precision policy, one after the other, for
    ``model`` ("wide" or "mlp"); each policy's row, or why it is left out, or its error."""
    sizes, batch, samples = MODELS[model][rehearse]
    result: dict[str, Any] = {"sizes": list(sizes), "batch_size": batch, "samples": samples,
                              "policies": {}}
    for name in precision.POLICIES:
        why_not = precision.why_not(precision.policy(name), backend, "float32")
        if why_not is not None:
            result["policies"][name] = {"left_out": f"{backend.device} cannot: {why_not}"}
            continue
        try:
            with gpu.torch_tf32(torch, name == "tf32") as settings:
                run = mlp.run(torch, device="cuda", samples=samples, batch_sizes=[batch],
                              repeats=repeats, warmup_steps=0, shuffle=False, adam="default",
                              seed=0, bound=None, sizes=sizes, graphs=True, precision=name)
        except Exception:  # one policy's failure (a missing kernel) must not cost the others
            result["policies"][name] = {"error": traceback.format_exc()[-3000:]}
            continue
        row = run["batch_sizes"][str(batch)]
        row["tf32"] = settings
        row["samples_per_second"] = {trainer: round(entry["samples_per_second"]["median"])
                                     for trainer, entry in row["trainers"].items()}
        result["policies"][name] = row
    baseline = result["policies"].get("float32", {}).get("samples_per_second", {})
    for row in result["policies"].values():
        if "samples_per_second" in row:
            row["speedup_over_float32"] = {
                trainer: round(rate / baseline[trainer], 2)
                for trainer, rate in row["samples_per_second"].items() if baseline.get(trainer)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_speed")
    parser.add_argument("part", choices=("kernels", "mlp", "precision", "spiral"))
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--rehearse", action="store_true")
    parser.add_argument("--model", choices=tuple(MODELS), default="wide",
                        help="the precision part's model (default wide)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = measure(args.part, args.rehearse, args.model)
    result["worker_seconds"] = round(time.monotonic() - started, 1)
    args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
