"""Run: python -m benchmarks [--quick] [--repeats N] [--device all|cpu|cuda] [--out DIR]

The command line: runs the parts asked for (sgemm, mlp, spiral, kernels, counts, distributed)
with both sides' threads pinned, prints a Markdown table, and writes <name>.json, <name>.md and
<name>.png to the output folder: benchmarks/results/<machine>/ by default (and updates
benchmarks/results/INDEX.md), runs/benchmarks/ for
``--quick`` (which shrinks every size for a smoke run whose numbers mean nothing). The name says
the machine, what differs from a default run and the date (cpu-amd-epyc-2c-openblas-coretype-
haswell-20261125T1530); a file that exists is never overwritten: the new one gets a suffix (-2,
-3).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import distributed, gpu, index, machine, mlp, report, sgemm, spiral, timing

PARTS = ("sgemm", "mlp", "spiral", "kernels", "counts", "distributed")
RESULTS = Path(__file__).resolve().parent / "results"
# Quick runs go here, relative to the current folder (runs/ is ignored by git), so that a smoke
# run never lands beside the committed results.
QUICK_OUT = Path("runs") / "benchmarks"
DEFAULT_BATCH_SIZES = "32,128,1024"
DEFAULT_SAMPLES = 60_000


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=(
        "gpunn against PyTorch, side by side in one process on the same data."))
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and one repeat: a smoke run, not a measurement")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per measurement (default 7; 1 with --quick)")
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                        help="all: the CPU, plus the GPU part when CUDA works (default)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder for the JSON, Markdown and PNG (default {RESULTS}; "
                             f"with --quick, {QUICK_OUT} in the current folder)")
    parser.add_argument("--name", default=None,
                        help="base name of the result files (default: the machine, the "
                             "settings that differ from a default run and the date, such as "
                             "cpu-amd-epyc-2c-openblas-coretype-haswell-20261125T1530); an "
                             "existing file is never overwritten: -2, -3 ... is added")
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run only this part (repeatable); mlp also measures sgemm")
    parser.add_argument("--threads", type=int, default=machine.cores(),
                        help="BLAS threads for NumPy and torch.set_num_threads "
                             "(default: the cores this process may use)")
    parser.add_argument("--samples", type=int, default=None,
                        help=f"MLP training samples (default {DEFAULT_SAMPLES}; 512 with "
                             f"--quick)")
    parser.add_argument("--batch-sizes", default=DEFAULT_BATCH_SIZES,
                        help=f"MLP batch sizes, comma-separated (default {DEFAULT_BATCH_SIZES})")
    parser.add_argument("--shuffle", action="store_true",
                        help="shuffle each MLP epoch, on both sides (default: the same "
                             "batches in the same order for both)")
    parser.add_argument("--torch-adam", choices=("default", "foreach", "fused"),
                        default="default", help="torch.optim.Adam implementation (default: "
                                                "PyTorch's own choice)")
    parser.add_argument("--no-torch", action="store_true", help="run gpunn alone")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 7
    if args.samples is None:
        args.samples = 512 if args.quick else DEFAULT_SAMPLES
    try:
        args.batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--batch-sizes takes integers separated by commas, such as 32,128,1024; "
                     f"received {args.batch_sizes!r}")
    for name in ("repeats", "threads", "samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1; received {getattr(args, name)}")
    if min(args.batch_sizes) < 1:
        parser.error(f"batch sizes must be at least 1; received {args.batch_sizes}")
    args.parts = set(args.only or PARTS)
    if "mlp" in args.parts:
        args.parts.add("sgemm")  # the MLP's share of the GEMM bound needs it
    return args


def load_torch(disabled: bool) -> tuple[Any, str | None]:
    """(torch, None), or (None, why PyTorch is left out)."""
    if disabled:
        return None, "left out (--no-torch)"
    try:
        import torch
    except ImportError as error:
        return None, f"not installed ({error}); pip install 'gpunn[bench]' to compare"
    return torch, None


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse(argv)
    torch, torch_reason = load_torch(args.no_torch)
    sizes = _sizes(args.quick)
    if args.quick:
        timing.SETTLE_SECONDS = 0.0  # a smoke run measures nothing worth waiting for
    record: dict[str, Any] = {
        "schema": 1,
        "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine.describe(torch),
        "config": {"quick": args.quick, "repeats": args.repeats, "device": args.device,
                   "parts": sorted(args.parts), "samples": args.samples,
                   "batch_sizes": args.batch_sizes, "shuffle": args.shuffle,
                   "torch_adam": args.torch_adam, "seed": args.seed, **sizes},
        "threads": {"requested": args.threads},
        "torch": {"available": torch is not None, "reason": torch_reason},
        "skipped": {},
    }
    with machine.pinned_threads(args.threads, torch):
        record["blas"] = machine.blas()
        record["cpu_fast_path"] = _fast_path()
        record["threads"]["torch"] = torch.get_num_threads() if torch else None
        record["threads"]["numpy_blas"] = machine.numpy_blas_text(record["blas"])
        if torch is not None:
            record["torch"]["config"] = torch.__config__.show()
            record["torch"]["parallel_info"] = torch.__config__.parallel_info()
        if args.device in ("all", "cpu"):
            _measure(args, torch, sizes, "cpu", record)
        else:
            record["skipped"]["cpu"] = "--device cuda"
        _cuda(args, torch, sizes, record)
    if "counts" in args.parts:
        _counts(record)
    if "distributed" in args.parts:
        _distributed(args, record)
    record["machine"]["load_average_end"] = machine.load_average()
    # How long a run takes depends on the cores, the BLAS and the load: each result says it.
    record["wall_seconds"] = round(time.monotonic() - started, 1)
    return _write(args, record)


def _fast_path() -> str:
    """Whether gpunn's CPU runs its host kernels (gpunn.backend.host), and why not."""
    from gpunn.backend import host

    return host.status_line()


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"warmup_steps": 2, "sgemm_square": 256, "spiral_steps": 10,
                "kernel_elements": 1 << 16}
    return {"warmup_steps": 200, "sgemm_square": 2048, "spiral_steps": 1000,
            "kernel_elements": gpu.ELEMENTS}


def _libraries(backend: Any, torch: Any, device: str) -> list[sgemm.Library]:
    libraries = [sgemm.gpunn_library(backend)]
    if torch is not None:
        libraries.append(sgemm.torch_library(torch, device))
    return libraries


def _measure(args: argparse.Namespace, torch: Any, sizes: dict[str, int], device: str,
             record: dict[str, Any]) -> None:
    """sgemm, mlp and spiral on ``device``, as asked, into ``record``."""
    import gpunn

    min_seconds = 0.002 if args.quick else 0.05
    bound = None
    if "sgemm" in args.parts:
        print(f"[{device}] float32 matrix products ...", flush=True)
        with _watched(record, device, "sgemm"):
            bound = sgemm.measure(_libraries(gpunn.device(device), torch, device),
                                  sizes=mlp.SIZES, batch_sizes=args.batch_sizes,
                                  square=sizes["sgemm_square"], min_seconds=min_seconds,
                                  repeats=3)
        record.setdefault("sgemm", {})[device] = bound
    if "mlp" in args.parts:
        print(f"[{device}] MLP training, batch sizes {args.batch_sizes} ...", flush=True)
        with _watched(record, device, "mlp"):
            record.setdefault("mlp", {})[device] = mlp.run(
                torch, device=device, samples=args.samples, batch_sizes=args.batch_sizes,
                repeats=args.repeats, warmup_steps=sizes["warmup_steps"],
                shuffle=args.shuffle, adam=args.torch_adam, seed=args.seed, bound=bound)
    if "spiral" in args.parts:
        print(f"[{device}] spiral model, full batch ...", flush=True)
        with _watched(record, device, "spiral"):
            record.setdefault("spiral", {})[device] = spiral.run(
                torch, device=device, steps=sizes["spiral_steps"], repeats=args.repeats,
                warmup_steps=sizes["warmup_steps"], adam=args.torch_adam, seed=args.seed)


@contextlib.contextmanager
def _watched(record: dict[str, Any], device: str, part: str) -> Iterator[None]:
    """Record how much CPU other processes took while ``part`` ran, and warn when it is a lot."""
    with machine.OtherProcesses() as others:
        yield
    record.setdefault("other_processes_cpu_share", {})[f"{device} {part}"] = others.share
    if others.share is not None and others.share > 0.05:
        print(f"warning: other processes used {others.share:.0%} of the CPUs during {part} on "
              f"{device}: its timings are disturbed; rerun on a quiet machine.")


def _cuda(args: argparse.Namespace, torch: Any, sizes: dict[str, int],
          record: dict[str, Any]) -> None:
    """The GPU part: kernel bandwidth, then sgemm/mlp/spiral on CUDA against PyTorch on CUDA."""
    if args.device == "cpu":
        record["skipped"]["cuda"] = "--device cpu"
        print("GPU part skipped: --device cpu.")
        return
    backend, reason = gpu.cuda_backend()
    if backend is None:
        record["skipped"]["cuda"] = reason
        print(f"GPU part skipped: {reason}")
        if args.device == "cuda":
            raise SystemExit(f"--device cuda was asked for, but {reason}")
        return
    record["machine"]["gpu"] = gpu.gpu_name(backend)
    if "kernels" in args.parts:
        print("[cuda] kernel bandwidth ...", flush=True)
        record["kernels"] = gpu.kernel_bandwidth(backend, elements=sizes["kernel_elements"],
                                                 repeats=max(args.repeats, 3))
    peer = torch if torch is not None and torch.cuda.is_available() else None
    if torch is not None and peer is None:
        record["torch"]["cuda_reason"] = "this PyTorch build has no CUDA (CPU wheel)"
        print("note: PyTorch has no CUDA here, so gpunn's CUDA runs are reported alone.")
    with gpu.tf32_off(peer) as settings:
        record["tf32"] = settings
        _measure(args, peer, sizes, "cuda", record)


def _counts(record: dict[str, Any]) -> None:
    """Launches and synchronisations per training step, counted by the CuPy double in a process
    of its own (its ``cupy`` must not meet the real one); a source checkout has it."""
    from benchmarks import step_counts

    double = step_counts.DOUBLES[0]
    if not double.is_dir():
        record["skipped"]["counts"] = f"the CuPy double is not here ({double}): a checkout has it"
        return
    print("[cuda-sim] launches and synchronisations per step (CuPy double) ...", flush=True)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [step_counts.doubles_path(), str(double.parent.parent),
         os.environ.get("PYTHONPATH", "")])}
    environment.pop("GPUNN_DEVICE", None)
    result = subprocess.run([sys.executable, "-m", "benchmarks.step_counts"], env=environment,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        record["skipped"]["counts"] = f"the count failed: {result.stderr.strip()[-500:]}"
        return
    record["step_counts"] = json.loads(result.stdout)


def _distributed(args: argparse.Namespace, record: dict[str, Any]) -> None:
    """Data-parallel training with 1 and 2 ranks under mpiexec (benchmarks/distributed.py), on
    the CPU and, when CUDA works, on the GPUs; the ranks are processes of their own."""
    devices = []
    if args.device in ("all", "cpu"):
        devices.append("cpu")
    backend, reason = gpu.cuda_backend() if args.device in ("all", "cuda") else (None, None)
    if backend is not None:
        devices.append("cuda")
    elif args.device in ("all", "cuda"):
        record["skipped"]["distributed on cuda"] = f"no GPU ({reason})"
    for device in devices:
        gpus = backend.xp.cuda.runtime.getDeviceCount() if device == "cuda" else 0
        result = distributed.run(quick=args.quick, device=device, seed=args.seed, gpus=gpus)
        if "skipped" in result:
            record["skipped"][f"distributed on {device}"] = result["skipped"]
            print(f"distributed part on {device} skipped: {result['skipped']}")
            continue
        record.setdefault("distributed", {})[device] = result
        shares = [run["other_processes_cpu_share"] for run in result["runs"].values()
                  if run.get("other_processes_cpu_share") is not None]
        if shares:
            record.setdefault("other_processes_cpu_share", {})[f"{device} distributed"] = \
                max(shares)


def _write(args: argparse.Namespace, record: dict[str, Any]) -> int:
    folder = output_folder(args, record)
    if args.quick and args.out is None:
        print(f"quick run: the results go to {folder}/, never to {RESULTS}/ (a smoke run's "
              f"numbers mean nothing); --out chooses another folder")
    asked = args.name or result_name(args, record)
    folder.mkdir(parents=True, exist_ok=True)
    name = free_name(folder, asked)
    if name != asked:
        print(f"{folder / asked}.* exists already; writing {name}.* beside it")
    record["name"] = name
    table = report.markdown(record)
    print()
    print(table)
    paths = {suffix: folder / f"{name}.{suffix}" for suffix in ("json", "md", "png")}
    with open(paths["md"], "x", encoding="utf-8") as file:  # "x": never overwrite
        file.write(table + "\n")
    with open(paths["json"], "x", encoding="utf-8") as file:
        json.dump(record, file, indent=1, default=_plain)
        file.write("\n")
    chart = report.chart(record, paths["png"])
    written = [paths["json"], paths["md"]] + ([chart] if chart else [])
    print("wrote " + ", ".join(os.fspath(path) for path in written))
    if RESULTS in folder.resolve().parents:  # a reader finds it in the index
        print(f"updated {index.write(RESULTS)}")
    return 0


def output_folder(args: argparse.Namespace, record: dict[str, Any]) -> Path:
    """``--out`` when given; else runs/benchmarks for a quick run, and for a measurement the
    machine's folder in benchmarks/results (its experiments/ for a run given a --name: one made
    to test an idea; see benchmarks/index.py)."""
    if args.out is not None:
        return args.out
    if args.quick:
        return QUICK_OUT
    folder = RESULTS / machine.result_name(record["machine"].get("gpu"))
    return folder / index.EXPERIMENTS if args.name else folder


def result_name(args: argparse.Namespace, record: dict[str, Any]) -> str:
    """The machine, then what differs from ``python -m benchmarks`` (the BLAS variables set,
    the options that change what is measured), then the date: the committed results keep their
    names, and two runs never share one."""
    differs = machine.environment_settings(record["machine"]["environment"])
    if args.quick:
        differs.append("quick")
    if args.only:
        differs.append("only-" + "-".join(sorted(set(args.only))))
    if args.no_torch:
        differs.append("no-torch")
    if args.torch_adam != "default":
        differs.append(f"torch-{args.torch_adam}-adam")
    if args.shuffle:
        differs.append("shuffle")
    if args.threads != machine.cores():
        differs.append(f"{args.threads}-threads")
    if not args.quick and args.samples != DEFAULT_SAMPLES:
        differs.append(f"{args.samples}-samples")
    if args.batch_sizes != [int(size) for size in DEFAULT_BATCH_SIZES.split(",")]:
        differs.append("batch-" + "-".join(map(str, args.batch_sizes)))
    base = machine.result_name(record["machine"].get("gpu"))
    return "-".join([base, *differs, machine.stamp(record["machine"]["date"])])


def free_name(folder: Path, name: str) -> str:
    """``name``, or ``name-2``, ``name-3`` ... : the first whose .json, .md and .png are all
    absent from ``folder``."""
    candidate, number = name, 1
    while any((folder / f"{candidate}.{suffix}").exists() for suffix in ("json", "md", "png")):
        number += 1
        candidate = f"{name}-{number}"
    return candidate


def _plain(value: Any) -> Any:
    """JSON for the NumPy scalars and paths that find their way into the record."""
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        return value.item()
    return str(value)
