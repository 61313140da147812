"""Run: python -m benchmarks.gpu_check --stage truth --out DIR      (on the GPU machine)
(each part runs its measurement in a process of its own: benchmarks/gpu_measure.py)

Is gpunn's GPU path right? The truth stage's parts, in the order they run:

- versions: the device, CUDA, every package and tool that matters, whether nvmath-python loads;
- info: ``gpunn info`` (NVRTC compiles every kernel for this GPU) and CuPy's configuration;
- ulps: each kernel's largest distance from its NumPy twin, in units in the last place, on the
  GPU and, beside it, on the CuPy double (host-compiled kernels; started at the stage's start);
- counts: per training step of the MLP (batch 128) and the spiral, with and without a CUDA
  graph: host and GPU time per step (CUDA events), whether the host ever waited for the GPU
  during the steps (a 0.3 s GPU job is queued first: a step that synchronises returns only
  after it), and the kernels the GPU ran per step as Nsight Compute (``ncu``) counts them;
  beside the double's launch and synchronisation counts (benchmarks/step_counts.py);
- memcheck, racecheck: the backend's kernel tests under compute-sanitizer;
- pytest: every device test on CUDA (``pytest --device cuda``, the tests that take the
  ``backend`` fixture or ask for CUDA; tests/test_training.py first: the CUDA graph captured,
  graphed == plain), a time limit per test (pytest-timeout) and for the whole run (what is left
  of the stage's budget), no stop at a failure; warnings that ``filterwarnings = error`` turned
  into failures are listed (this machine's versions raise them);
- double: the double's halves of ulps and counts, collected.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import step_counts

ROOT = Path(__file__).resolve().parent.parent
# Device tests in priority order: what a cut-short run must not miss comes first.
FIRST = ("tests/test_training.py", "tests/test_blas.py", "tests/test_backend.py")
REHEARSAL_TESTS = ("tests/test_training.py::test_cuda_graphs_change_no_result",
                   "tests/test_training.py::test_the_spiral_models_full_batch_step_is_captured",
                   "tests/test_backend.py::test_ops_match_the_book")
SANITIZED = ("tests/test_backend.py", "-k", "ops_match or ops_on_sizes or softmax_ce_matches "
             "or dropout_matches or optimizer_step_matches")


# ---- the parts, run by gpu_check's driver ------------------------------------------------------

def start(check: Any) -> None:
    """The double's halves need no GPU: they run beside the GPU parts from the start."""
    env = {**check.environment, "PYTHONPATH": os.pathsep.join(
        [step_counts.doubles_path(), check.environment["PYTHONPATH"]])}
    rehearse = ["--rehearse"] if check.rehearse else []
    check.background("double ulps", ["benchmarks.gpu_measure", "ulps", *rehearse], env=env)
    check.background("double counts", ["benchmarks.step_counts", "--batch-sizes", "128"],
                     env=env)


def versions(check: Any, seconds: float) -> dict[str, Any]:
    result = check.worker("benchmarks.gpu_measure", "versions", timeout=seconds)
    simulated = result.get("simulated")
    if "error" in result:
        result["refuse"] = ("gpu_check stops: the versions part failed: "
                            + result["error"].strip().splitlines()[-1])
    elif check.rehearse and simulated is not True:
        result["refuse"] = "--rehearse runs on the CuPy double, but cupy is not the double"
    elif not check.rehearse and (simulated or "no_gpu" in result):
        reason = result.get("no_gpu") or "cupy is the CuPy double (simulated devices)"
        result["refuse"] = f"gpu_check needs a real NVIDIA GPU: {reason}"
    else:
        check.record["device"] = result["device"]
    check.record["versions"] = result
    result["summary"] = [f"- {name}: {value}" for name, value in
                         {**result.get("packages", {}), **result.get("tools", {})}.items()]
    result["summary"].append(f"- CUDA graph: {result.get('cuda_graph')}")
    return result


def info(check: Any, seconds: float) -> dict[str, Any]:
    python = sys.executable
    result = {"gpunn_info": check.command([python, "-m", "gpunn", "info"], timeout=seconds / 2),
              "cupy_config": check.command([python, "-c", "import cupy; cupy.show_config()"],
                                           timeout=seconds / 2)}
    result["summary"] = ["```", result["gpunn_info"]["tail"].strip()[-1500:], "```"]
    return result


def pytest_part(check: Any, seconds: float) -> dict[str, Any]:
    report = check.out / "pytest-truth.jsonl"
    report.unlink(missing_ok=True)
    seconds -= COLLECT
    env = {**check.environment, "GPUNN_CHECK_REPORT": str(report), "GPUNN_CHECK_DEVICE_ONLY": "1",
           "GPUNN_CHECK_FIRST": ",".join(FIRST),
           "GPUNN_CHECK_DEADLINE": str(time.time() + seconds - DEADLINE_MARGIN)}
    argv = [sys.executable, "-m", "pytest", "--device", "cuda", "-p", "benchmarks.gpu_pytest",
            "-p", "no:cacheprovider", "-q", "-rfE"]
    result: dict[str, Any] = {"report": report.name,
                              "no_test_starts_in_the_last_seconds": DEADLINE_MARGIN}
    if importlib.util.find_spec("pytest_timeout") is not None:
        argv += ["--timeout", str(TEST_LIMIT)]
    else:
        result["per_test_limit"] = "pytest-timeout is not installed: no per-test time limit"
    argv += list(REHEARSAL_TESTS if check.rehearse else ["tests"])
    result["run"] = check.command(argv, timeout=seconds, env=env)
    result.update(read_report(report))
    recorded = sorted((check.scratch / "results").glob("pytest-*.json"))  # tests/conftest.py's
    if recorded:
        result["conftest_record"] = json.loads(recorded[-1].read_text())
    return result


def read_report(path: Path) -> dict[str, Any]:
    """Counts, failures, warnings and the CUDA graph tests from gpu_pytest's JSON lines."""
    entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    tests = [entry for entry in entries if entry["outcome"] not in ("warning", "collected")]
    collected = sum(entry["count"] for entry in entries if entry["outcome"] == "collected")
    counts: dict[str, int] = {}
    for entry in tests:
        counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
    failures = [entry["nodeid"] for entry in tests if entry["outcome"] == "failed"]
    warnings = sorted({f"{entry['warning']} ({entry['nodeid']})" for entry in entries
                       if "warning" in entry})
    graphs = {entry["nodeid"]: entry["outcome"] for entry in tests
              if "test_training.py" in entry["nodeid"] and "graph" in entry["nodeid"]
              or "captured" in entry["nodeid"]}
    summary = [f"- {counts} of {collected} collected; not run (the deadline): "
               f"{max(collected - len(tests), 0)}", *(f"- FAILED {name}" for name in failures[:30]),
               *(f"- warning: {text}" for text in warnings[:30]),
               *(f"- graph test {name}: {outcome}" for name, outcome in graphs.items())]
    return {"counts": counts, "collected": collected, "not_run": max(collected - len(tests), 0),
            "failures": failures, "warnings": warnings,
            "warnings_note": "these are the warnings this machine's versions raised; with "
                             "filterwarnings = error each one failed its test",
            "cuda_graph_tests": graphs, "summary": summary}


def ulps(check: Any, seconds: float) -> dict[str, Any]:
    result = {"gpu": check.worker("benchmarks.gpu_measure", "ulps", timeout=seconds)}
    result["summary"] = _table(result["gpu"].get("kernels", {}), "ulps")
    return result


def counts(check: Any, seconds: float) -> dict[str, Any]:
    result = {"gpu": check.worker("benchmarks.gpu_measure", "counts", timeout=seconds * 0.45)}
    ncu = shutil.which("ncu", path=check.environment.get("PATH"))
    if ncu is None:
        result["launches"] = {"skipped": "ncu (Nsight Compute) is not on PATH"}
    else:
        log = check.scratch / "ncu.csv"
        result_file = check.scratch / "launches.json"
        # --clock-control none: ncu's default locks the clocks to base, a change of the card's
        # settings the lent machine forbids, and would time the kernels at base clock
        argv = [ncu, "--clock-control", "none", "--profile-from-start", "off",
                "--graph-profiling", "graph",
                "--metrics", "gpu__time_duration.sum", "--csv", "--page", "raw",
                "--log-file", str(log), sys.executable, "-m", "benchmarks.gpu_measure",
                "launches", "--json", str(result_file)] + (["--rehearse"] if check.rehearse
                                                          else [])
        run = check.command(argv, timeout=seconds * 0.55)
        found = json.loads(result_file.read_text()) if result_file.exists() else {}
        text = log.read_text(errors="replace") if log.exists() else ""
        check.log(text[-20000:])
        result["launches"] = {"run": run, **kernels_per_step(text, found)}
    result["summary"] = _table(result["gpu"].get("configs", {}), "counts")
    launches = result["launches"]
    result["summary"].append("- kernels and graphs per step (ncu): " + str(
        launches.get("kernels_per_step", launches.get("skipped") or launches.get("error"))))
    return result


def sanitizer(tool: str) -> Any:
    def part(check: Any, seconds: float) -> dict[str, Any]:
        program = shutil.which("compute-sanitizer", path=check.environment.get("PATH"))
        if program is None:
            return {"skipped": "compute-sanitizer is not on PATH"}
        env = {**check.environment, "GPUNN_CHECK_NO_POOL": "1"}
        argv = [program, "--tool", tool, "--error-exitcode", "86", "--print-limit", "100",
                sys.executable, "-m", "pytest", "--device", "cuda", "-p",
                "benchmarks.gpu_pytest", "-p", "no:cacheprovider", "-q", *SANITIZED]
        if check.rehearse:
            argv[-1] = "ops_match"
        run = check.command(argv, timeout=seconds, env=env)
        found = re.findall(r"ERROR SUMMARY: (\d+) error|(\d+) hazards displayed \((\d+) errors",
                           run["tail"])
        errors = [int(a or c) for a, b, c in found]
        result = {"run": run, "errors": errors[-1] if errors else None,
                  "pool": "off (GPUNN_CHECK_NO_POOL=1: each array its own cudaMalloc)"}
        result["summary"] = [f"- exit status {run['exit_status']}, errors {result['errors']}"]
        return result
    return part


def collect(check: Any, seconds: float) -> dict[str, Any]:
    """The double's halves, started at the stage's start."""
    result = {name: check.wait(name, seconds) for name in ("double ulps", "double counts")}
    result["device"] = "cuda-sim:0 (CuPy double, simulated: not a GPU)"
    result["summary"] = _table(result["double ulps"].get("kernels", {}), "ulps")
    return result


# The tests come last and take what is left of the budget (all of it but the time the double's
# results need to be collected): their JSON lines keep whatever ran if the stage is cut.
# Re-balanced from the rehearsal's timings (2-core VM, the doubles, 107 s in all; issue 27):
# versions took 9 s of its 45 (30 now: on a GPU the kernels' first compile adds about 10 s), info
# 20 of 40, ulps 7, counts 28, memcheck and racecheck 14 each of 45 with the stand-in tools,
# which check nothing: a CuPy process under compute-sanitizer also starts, loads the kernels and
# runs each test's kernels under the tool, so they get 60 each. The tests' deadline stopped new
# tests 70 s before the part's end (TEST_LIMIT + 10) while the slowest device test of the
# rehearsal took 0.9 s: now DEADLINE_MARGIN, enough for pytest's summary and the conftest's
# record; a test still running at the part's end is killed alone, the JSON lines keep the rest.
PARTS = [("versions", versions, 30), ("info", info, 40), ("ulps", ulps, 40),
         ("counts", counts, 90), ("memcheck", sanitizer("memcheck"), 60),
         ("racecheck", sanitizer("racecheck"), 60), ("pytest", pytest_part, 400),
         ("double", collect, 60)]
TEST_LIMIT = 60  # seconds per test (pytest-timeout)
DEADLINE_MARGIN = 25  # no test starts in the tests' last seconds
COLLECT = 25  # seconds kept for the double's results after the tests


def _table(entries: dict[str, Any], kind: str) -> list[str]:
    lines = [f"- {name}: {json.dumps(_rounded(value))[:400]}" for name, value in entries.items()]
    return lines or [f"- no {kind} measured"]


def _rounded(value: Any) -> Any:
    """Figures to 4 significant digits, for the summary (the JSON keeps them whole)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def kernels_per_step(text: str, found: dict[str, Any]) -> dict[str, Any]:
    """Kernels (and graphs: --graph-profiling graph) per step from ncu's CSV: the rows between
    the marker kernels (cupy.fmax) the ``launches`` worker runs after an epoch of N steps and
    after one of 2N; the difference over N cancels what happens once per epoch."""
    header = next((i for i, line in enumerate(text.splitlines()) if '"Kernel Name"' in line),
                  None)
    if header is None:
        return {"error": "no CSV rows in ncu's output", "worker": found}
    rows = list(csv.DictReader(io.StringIO("\n".join(text.splitlines()[header:]))))
    # One name per result ID (the details page repeats a result on a row per metric).
    names = list({row["ID"]: row.get("Kernel Name", "") for row in rows
                  if (row.get("ID") or "").strip().isdigit()}.values())
    if not names:
        return {"error": "ncu reported no kernels in the profiled ranges", "worker": found}
    groups, current = [], 0
    for name in names:
        if "fmax" in name:  # gpu_measure.launches's marker
            groups.append(current)
            current = 0
        else:
            current += 1
    steps = found.get("steps", 0)
    per_step = {}
    for index, label in enumerate(found.get("order", [])):
        pair = groups[2 * index:2 * index + 2]
        if len(pair) == 2 and steps:
            per_step[label] = (pair[1] - pair[0]) / steps
    return {"kernels_per_step": per_step, "groups": groups, "rows": len(names),
            "measures": "kernels and graph launches the GPU ran, from Nsight Compute; "
                        "memory copies and synchronisations are not in it"}
