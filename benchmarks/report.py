"""Run: python -m benchmarks (this module turns a run's record into Markdown and a bar chart)

The Markdown table is what the command prints and what <name>.md holds; the chart is drawn
with matplotlib's Agg canvas (no display needed) and skipped, saying why, without matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# How fast gpunn on the CPU should be: (issue, part, batch, what is compared, goal, words).
# "ratio" is gpunn / PyTorch in the same run; "share_of_gemm_bound" gpunn's samples/s over
# what the step's matrix products alone allow at the rate measured in the same run.
TARGETS = (("#5", "mlp", "128", "ratio", 1.5, "MLP samples/s at batch 128"),
           ("#5", "mlp", "1024", "ratio", 1.1, "MLP samples/s at batch 1024"),
           ("#5", "spiral", None, "ratio", 3.0, "spiral steps/s at full batch"),
           ("#26", "mlp", "128", "ratio", 1.5, "MLP samples/s at batch 128"),
           ("#26", "mlp", "1024", "ratio", 1.5, "MLP samples/s at batch 1024"),
           ("#26", "spiral", None, "ratio", 4.0, "spiral steps/s at full batch"),
           ("#26", "mlp", "128", "share_of_gemm_bound", 0.6, "MLP at batch 128"),
           ("#26", "mlp", "1024", "share_of_gemm_bound", 0.8, "MLP at batch 1024"))
PEER = "PyTorch"


def markdown(record: dict[str, Any]) -> str:
    """The whole run as Markdown: the setup, then one table per part."""
    lines = [f"# gpunn vs PyTorch: {record.get('name', '')}", "", _setup(record)]
    for device, result in record.get("mlp", {}).items():
        lines += ["", *_mlp(device, result, record)]
    for device, result in record.get("sgemm", {}).items():
        lines += ["", *_sgemm(device, result)]
    for device, result in record.get("spiral", {}).items():
        lines += ["", *_spiral(device, result)]
    if "kernels" in record:
        lines += ["", *_kernels(record["kernels"])]
    if "step_counts" in record:
        lines += ["", *_counts(record["step_counts"])]
    for device, result in record.get("distributed", {}).items():
        lines += ["", *_distributed(device, result)]
    targets = _targets(record)
    if targets:
        lines += ["", *targets]
    for part, reason in record.get("skipped", {}).items():
        lines += ["", f"Skipped {part}: {reason}"]
    return "\n".join(lines)


def _setup(record: dict[str, Any]) -> str:
    machine, config, threads = record["machine"], record["config"], record["threads"]
    versions = machine["versions"]
    torch = (f"PyTorch {versions['torch']} ({threads['torch']} threads, Adam "
             f"{config['torch_adam']})" if record["torch"]["available"]
             else f"PyTorch {record['torch']['reason']}")
    environment = ", ".join(f"{key}={value}" for key, value in machine["environment"].items()
                            if value is not None) or "no BLAS variables set"
    gpu = f"; GPU {machine['gpu']}" if machine.get("gpu") else ""
    quick = " **--quick: sizes too small to mean anything.**" if config["quick"] else ""
    others = {part: share for part, share in record.get("other_processes_cpu_share", {}).items()
              if share is not None}
    if others:
        quick += (" CPU time taken by other processes meanwhile: "
                  + ", ".join(f"{part} {share:.0%}" for part, share in others.items())
                  + (" (**disturbed**: rerun on a quiet machine)."
                     if max(others.values()) > 0.05 else "."))
    return (f"{machine['cpu_model']}, {machine['cores']} cores{gpu}; {machine['date']}. "
            f"NumPy {versions['numpy']} with {threads['numpy_blas']}; {torch}; "
            f"gpunn {versions['gpunn']}{_fast_path(record)}. Environment: {environment}. "
            f"Load average "
            f"{_load(machine.get('load_average_start'))} at start, "
            f"{_load(machine.get('load_average_end'))} at end. Medians of {config['repeats']} "
            f"repeats, (min–max) in brackets.{_wall(record)}{quick}")


def _fast_path(record: dict[str, Any]) -> str:
    line = record.get("cpu_fast_path")  # absent from results written before issue 26
    return "" if line is None else f" (CPU fast path: {line})"


def _wall(record: dict[str, Any]) -> str:
    seconds = record.get("wall_seconds")  # absent from results written before it was kept
    return "" if seconds is None else f" The whole run took {seconds:.0f} s."


def _load(load: list[float] | None) -> str:
    return "unknown" if not load else f"{load[0]:.2f}"


def _rate(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "–"
    return f"{summary['median']:,.0f} ({summary['min']:,.0f}–{summary['max']:,.0f})"


def _pair(trainers: dict[str, Any], key: str, form: str) -> str:
    values = [trainers[name].get(key) for name in ("gpunn", PEER) if name in trainers]
    return " / ".join("–" if value is None else format(value, form) for value in values)


def _mlp(device: str, result: dict[str, Any], record: dict[str, Any]) -> list[str]:
    shuffle = "shuffled" if record["config"]["shuffle"] else "unshuffled"
    sides = "gpunn / PyTorch" if any(PEER in entry["trainers"]
                                     for entry in result["batch_sizes"].values()) else "gpunn"
    lines = [f"## MLP {'-'.join(map(str, result['sizes']))} training on {device} "
             f"({result['samples']:,} samples, one {shuffle} epoch per repeat)", "",
             f"| batch | gpunn samples/s | PyTorch samples/s | gpunn / PyTorch | GEMM bound "
             f"samples/s | ms/step "
             f"({sides}) | GFLOP/s ({sides}) | share of GEMM bound ({sides}) | share of peak "
             f"({sides}) | epoch loss ({sides}) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for batch, entry in result["batch_sizes"].items():
        trainers = entry["trainers"]
        losses = {name: {"loss": trainer["last_epoch"]["loss"]}
                  for name, trainer in trainers.items()}
        ratio = f"{entry['ratio']:.2f}x" if "ratio" in entry else "–"
        lines.append(
            f"| {batch} | {_rate(trainers['gpunn']['samples_per_second'])} | "
            f"{_rate(trainers.get(PEER, {}).get('samples_per_second'))} | {ratio} | "
            f"{_bound(entry)} | "
            f"{_pair(trainers, 'step_ms', '.3f')} | {_pair(trainers, 'gflops', '.1f')} | "
            f"{_pair(trainers, 'share_of_gemm_bound', '.0%')} | "
            f"{_pair(trainers, 'share_of_peak', '.0%')} | {_pair(losses, 'loss', '.4f')} |")
    lines += ["", "GFLOP/s counts the step's matrix products only (benchmarks/sgemm.py); the "
                  "GEMM bound is those products at the measured rate of gpunn's array library "
                  "(its samples/s: the batch over their time back to back), the peak its rate "
                  "on the big square product."]
    return lines


def _bound(entry: dict[str, Any]) -> str:
    bound = entry.get("gemm_bound_samples_per_second")  # absent from older results
    return "–" if bound is None else f"{bound:,.0f}"


def _sgemm(device: str, result: dict[str, Any]) -> list[str]:
    libraries = result["libraries"]
    lines = [f"## float32 matrix products on {device} (GFLOP/s)", "",
             "| products | " + " | ".join(libraries) + " |",
             "|---|" + "---:|" * len(libraries)]
    size = result["square_size"]
    lines.append(f"| square {size}x{size} @ {size}x{size} | "
                 + " | ".join(f"{result['square'][lib]['gflops']:.1f}" for lib in libraries)
                 + " |")
    for batch, step in result["steps"].items():
        count = len(next(iter(step["gemms"].values()))["products"])
        lines.append(f"| one MLP step at batch {batch} ({count} products, "
                     f"{step['flops'] / 1e6:.1f} MFLOP) | "
                     + " | ".join(f"{step['gemms'][lib]['gflops']:.1f} "
                                  f"({1000 * step['gemms'][lib]['step_seconds']:.3f} ms)"
                                  for lib in libraries) + " |")
    return lines


def _spiral(device: str, result: dict[str, Any]) -> list[str]:
    trainers = result["trainers"]
    names = [name for name in ("gpunn", PEER) if name in trainers]
    ratio = f"{result['ratio']:.2f}x" if "ratio" in result else "–"
    lines = [f"## Spiral {'-'.join(map(str, result['sizes']))}, full batch of "
             f"{result['samples']} samples on {device} ({result['steps_per_repeat']} steps per "
             f"repeat)", "",
             "| | " + " | ".join(names) + " | gpunn / PyTorch |",
             "|---|" + "---:|" * (len(names) + 1),
             "| steps/s | " + " | ".join(_rate(trainers[n]["steps_per_second"]) for n in names)
             + f" | {ratio} |",
             "| µs/step | " + " | ".join(f"{trainers[n]['step_us']:.1f}" for n in names) + " | |",
             "| final loss | " + " | ".join(f"{trainers[n]['last_step']['loss']:.4f}"
                                           for n in names) + " | |",
             "| final accuracy | " + " | ".join(f"{trainers[n]['last_step']['accuracy']:.3f}"
                                               for n in names) + " | |"]
    return lines


def _kernels(result: dict[str, Any]) -> list[str]:
    lines = [f"## GPU elementwise kernels, float32 {result['shape'][0]}x{result['shape'][1]} "
             f"(GB/s of the bytes each op must move)", "",
             "| op | bytes/element | gpunn kernel | plain CuPy | gpunn share of copy |",
             "|---|---:|---:|---:|---:|"]
    for name, entry in result["ops"].items():
        per_element = entry["bytes"] / result["elements"]
        gpunn = entry.get("gpunn")
        kernel = f"{gpunn['gb_per_second']:.0f}" if gpunn else "–"
        share = f"{gpunn['share_of_copy']:.0%}" if gpunn else "(the ceiling)"
        lines.append(f"| {name} | {per_element:.0f} | {kernel} | "
                     f"{entry['cupy']['gb_per_second']:.0f} | {share} |")
    return lines


def _counts(counts: dict[str, Any]) -> list[str]:
    before = counts["before_issue_10"]
    lines = [f"## Kernel launches and synchronisations per training step, counted on "
             f"{counts['device']}", "",
             "| model | batch | CUDA graph | launches | of them gpunn kernels | graph launches "
             "| syncs/step | syncs/epoch | host-to-device copies |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|",
             f"| MLP 784-128-128-10, before issue 10 | any | no | {before['mlp']['launch']} | "
             f"{before['mlp']['raw_launch']} | 0 | {before['mlp']['sync']} | steps + 2 | "
             f"{before['mlp']['h2d']} |",
             f"| spiral 2-64-3, before issue 10 | 300 (full) | no | "
             f"{before['spiral']['launch']} | {before['spiral']['raw_launch']} | 0 | "
             f"{before['spiral']['sync']} | {before['spiral']['sync']} | "
             f"{before['spiral']['h2d']} |"]
    rows = [("MLP 784-128-128-10", batch, mode, entry)
            for mode, by_batch in counts["mlp"].items() for batch, entry in by_batch.items()]
    rows += [("spiral 2-64-3", "300 (full)", mode, entry)
             for mode, entry in counts["spiral"].items()]
    precision = counts.get("precision", {})
    rows += [(f"MLP 784-128-128-10, precision {policy}", precision["batch_size"], "cuda_graph",
              entry) for policy, entry in precision.get("policies", {}).items()]
    for model, batch, mode, entry in rows:
        graph = "yes" if mode == "cuda_graph" else "no"
        if "error" in entry:
            lines.append(f"| {model} | {batch} | {graph} | failed: {entry['error'][:200]} "
                         f"| | | | | |")
            continue
        lines.append(f"| {model} | {batch} | {graph} | {entry['launch']:g} | "
                     f"{entry['raw_launch']:g} | {entry['graph_launch']:g} | {entry['sync']:g} | "
                     f"{entry['epoch_sync']:g} | {entry['h2d']:g} |")
    lines += ["", "A graph launch counts as one launch; the kernels it replays are not counted "
              "again. Counts come from the double, which models CuPy's launches, not a GPU's "
              "timing."]
    return lines


def _distributed(device: str, result: dict[str, Any]) -> list[str]:
    lines = [f"## Data-parallel training on {device}: MLP {'-'.join(map(str, result['sizes']))}, "
             f"global batch {result['global_batch']} shared among the ranks", "",
             "| run | BLAS threads per rank | ms/step | allreduce ms/step (share of step) | "
             "vote ms/step | samples/s | scaling efficiency |",
             "|---|---|---:|---:|---:|---:|---:|"]
    base = result["runs"].get("1 rank", {}).get("samples_per_second")
    for label, run in result["runs"].items():
        if "samples_per_second" not in run:
            lines.append(f"| {label} | {run.get('skipped') or run.get('error')} | | | | | |")
            continue
        allreduce = max(run["allreduce_ms_per_step"])
        rate = run["samples_per_second"]["median"]
        efficiency = (f"{rate / (run['ranks'] * base['median']):.0%}"
                      if base is not None and run["ranks"] > 1 else "–")
        threads = ", ".join("?" if threads is None else str(threads)
                            for threads in run["blas_threads"])
        kept = run.get("OPENBLAS_NUM_THREADS")
        threads += f" (OPENBLAS_NUM_THREADS={kept} kept)" if kept else ""
        lines.append(f"| {label} | {threads} | {run['step_ms']:.1f} | {allreduce:.2f} "
                     f"({allreduce / run['step_ms']:.1%}) | "
                     f"{max(run['vote_ms_per_step']):.2f} | {_rate(run['samples_per_second'])} "
                     f"| {efficiency} |")
    gradient = next((run["gradient_bytes"] for run in result["runs"].values()
                     if "gradient_bytes" in run), None)
    size = f" of {gradient / 1e6:.1f} MB" if gradient else ""
    same = result.get("efficiency_same_threads_per_rank")
    if same is not None:
        lines += ["", f"Scaling efficiency of 2 ranks against 1 rank with the BLAS threads each "
                      f"of them has (cores // 2): {same:.0%}."]
    lines += ["", f"Each rank runs under mpiexec ({result['repeats']} timed epochs of "
                  f"{result['steps_per_repeat']} steps after a warm-up epoch; rank 0's median "
                  f"step and epoch). Scaling efficiency: samples/s with N ranks over N times "
                  f"those with 1 rank, at the same global batch. The allreduce is the one sum "
                  f"of the flat gradient buffer{size} per step (the slowest rank's time); the "
                  f"vote is the per-step agreement of the ranks (did a loss diverge, was Ctrl-C "
                  f"pressed), where a rank waits for the slower one."]
    return lines


def _targets(record: dict[str, Any]) -> list[str]:
    rows = []
    for issue, part, batch, key, target, what in TARGETS:
        result = record.get(part, {}).get("cpu")
        if result is None:
            continue
        entry = result if batch is None else result["batch_sizes"].get(batch)
        if entry is not None and key != "ratio":
            entry = entry["trainers"]["gpunn"]
        if entry is None or key not in entry:
            continue
        met = "yes" if entry[key] >= target else "no"
        if key == "ratio":
            rows.append(f"| {issue} | gpunn ≥ {target}x PyTorch, {what} | {entry[key]:.2f}x | "
                        f"{met} |")
        else:
            rows.append(f"| {issue} | gpunn ≥ {target:.0%} of its GEMM bound, {what} | "
                        f"{entry[key]:.0%} | {met} |")
    if not rows:
        return []
    return ["## Targets (CPU)", "", "| issue | target | measured | met |", "|---|---|---:|---|",
            *rows]


def chart(record: dict[str, Any], path: Path) -> Path | None:
    """A bar chart of the run at ``path``; None (and a printed reason) without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("chart skipped: matplotlib is not installed (pip install 'gpunn[bench]').")
        return None
    panels = [("mlp", device, result) for device, result in record.get("mlp", {}).items()]
    panels += [("spiral", device, result) for device, result in record.get("spiral", {}).items()]
    if "kernels" in record:
        panels.append(("kernels", "cuda", record["kernels"]))
    panels += [("distributed", device, result)
               for device, result in record.get("distributed", {}).items()]
    if not panels:
        return None
    figure = Figure(figsize=(5.5 * len(panels), 4.5), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (part, device, result) in zip(axes, panels, strict=True):
        if part == "mlp":
            groups = {batch: entry["trainers"] for batch, entry in result["batch_sizes"].items()}
            _bars(axis, groups, "samples_per_second", "samples/s")
            axis.set_xlabel("batch size")
            axis.set_title(f"MLP {'-'.join(map(str, result['sizes']))} on {device}")
        elif part == "spiral":
            _bars(axis, {"full batch": result["trainers"]}, "steps_per_second", "steps/s")
            axis.set_title(f"spiral {'-'.join(map(str, result['sizes']))} on {device}")
        elif part == "distributed":
            groups = {label.replace(", ", "\n"): {"gpunn": run}
                      for label, run in result["runs"].items() if "samples_per_second" in run}
            _bars(axis, groups, "samples_per_second", "samples/s")
            axis.set_title(f"data-parallel MLP {'-'.join(map(str, result['sizes']))} on "
                           f"{device}")
        else:
            groups = {name: {side: {"value": entry[side]["gb_per_second"]}
                             for side in ("gpunn", "cupy") if side in entry}
                      for name, entry in result["ops"].items()}
            _bars(axis, groups, None, "GB/s")
            axis.set_title("GPU elementwise ops")
    # The run's name can be longer than one panel is wide: on a line of its own, smaller.
    figure.suptitle(f"gpunn vs PyTorch (median, min–max)\n{record.get('name', '')}",
                    fontsize="medium")
    figure.savefig(path, dpi=110)
    return path


def _bars(axis: Any, groups: dict[str, dict[str, Any]], key: str | None, label: str) -> None:
    names = sorted({name for group in groups.values() for name in group},
                   key=lambda name: (name != "gpunn", name))
    width = 0.8 / max(len(names), 1)
    for index, name in enumerate(names):
        xs, heights, low, high = [], [], [], []
        for position, group in enumerate(groups.values()):
            if name not in group:
                continue
            if key is None:
                value = group[name]["value"]
                spread = (0.0, 0.0)
            else:
                summary = group[name][key]
                value = summary["median"]
                spread = (value - summary["min"], summary["max"] - value)
            xs.append(position + (index - (len(names) - 1) / 2) * width)
            heights.append(value)
            low.append(spread[0])
            high.append(spread[1])
        axis.bar(xs, heights, width, yerr=[low, high], capsize=3, label=name)
    axis.set_xticks(range(len(groups)), list(groups))
    axis.set_ylabel(label)
    axis.legend()
