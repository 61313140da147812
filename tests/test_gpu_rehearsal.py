"""The rehearsal of the GPU check (benchmarks/gpu_check.py), run in the ``--cupy-double``
session: each stage end to end on the CuPy and nvmath-python doubles (simulated devices
cuda-sim:N, not a GPU), in an environment built like the GPU machine's: Python 3.12, its
packages (benchmarks/gpu_wheels.MACHINE, and the CUDA headers the double builds 16-bit kernels
with: DOUBLE_ONLY) and nothing else, gpunn not installed (PYTHONPATH
only), the wheels it lacks installed by gpu_check from a folder with ``pip --no-index``. A
stage that needs anything the machine lacks fails here. The environment is built once and kept
in .rehearsal/ (git ignores it); its cost and each stage's are printed (pytest -s shows them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks import gpu_wheels  # noqa: E402

PYTHON_312 = ("/root/.pyenv/versions/3.12.1/bin/python3.12", "python3.12")
REHEARSAL = ROOT / ".rehearsal"
MAX_FILES, MAX_BYTES, MAX_DEPTH = 8, 16 * 2**20, 2  # what the GPU machine brings back


def _python_312() -> str | None:
    """A Python 3.12 that runs (pyenv's shim is on PATH even where 3.12 is not selected)."""
    for name in PYTHON_312:
        found = shutil.which(name)
        if found and subprocess.run([found, "-c", "import sys; assert sys.version_info[:2] == "
                                     "(3, 12)"], capture_output=True).returncode == 0:
            return found
    return None


@pytest.fixture(scope="session")
def machine(tmp_path_factory):
    """(the Python of an environment like the GPU machine's, a folder with the wheels it
    lacks), built once (about a minute on the 2-core VM, the pip cache warm)."""
    python312 = _python_312()
    require(python312 is not None, "the rehearsal needs Python 3.12 (python3.12 on PATH or "
                                   "pyenv's 3.12.1), as on the GPU machine")
    started = time.monotonic()
    folder, marker = REHEARSAL / "python3.12", REHEARSAL / "python3.12" / "packages.txt"
    packages = (*gpu_wheels.MACHINE, *gpu_wheels.DOUBLE_ONLY)
    wanted = "\n".join(packages)
    python = folder / "bin" / "python"
    if not (marker.exists() and marker.read_text() == wanted):
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([python312, "-m", "venv", str(folder)], check=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                               "--disable-pip-version-check", *packages],
                              capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        marker.write_text(wanted)
    wheels = REHEARSAL / "wheels"
    subprocess.run([sys.executable, "-m", "benchmarks.gpu_wheels", str(wheels)], cwd=ROOT,
                   check=True, capture_output=True, timeout=600)
    print(f"\nrehearsal environment ready in {time.monotonic() - started:.0f} s")
    return python, wheels


def _environment() -> dict[str, str]:
    """The machine's: the checkout on PYTHONPATH and nothing of this session's environment."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "GPUNN_DEVICE", "GPUNN_REAL_CUPY")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {os.fspath(path.relative_to(folder)): (path.stat().st_mtime_ns, path.stat().st_size)
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _stage(machine, tmp_path, stage, *options):
    python, wheels = machine
    out = tmp_path / "out"
    command = [str(python), "-m", "benchmarks.gpu_check", "--rehearse", "--stage", stage,
               "--out", str(out), "--wheels", str(wheels), *options]
    started = time.monotonic()
    done = subprocess.run(command, cwd=tmp_path, env=_environment(), capture_output=True,
                          text=True, timeout=600)
    print(f"\nrehearsal of the {stage} stage: {time.monotonic() - started:.0f} s")
    return done, out


@pytest.mark.slow
def test_the_probe_says_in_seconds_whether_nvmath_imports_with_the_wheels(machine, tmp_path):
    # The first thing a GPU call runs (benchmarks/README.md): the real nvmath-python (no
    # double on the path) imported with the carried cuda-core and cuda-pathfinder first.
    python, wheels = machine
    out = tmp_path / "out"
    started = time.monotonic()
    done = subprocess.run([str(python), "-m", "benchmarks.gpu_probe", "--out", str(out),
                           "--wheels", str(wheels)], cwd=tmp_path, env=_environment(),
                          capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - started
    print(f"\nrehearsal of the probe: {seconds:.0f} s")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((out / "gpu-probe.json").read_text())
    found = record["with_wheels"]
    assert record["ok"] and found["import_nvmath"] == "ok" and seconds < 30
    assert found["packages"]["cuda-core"]["version"] == "1.2.2"
    assert found["packages"]["nvmath-python"]["version"] == "1.0.1"
    assert record["machine"]["packages"]["nvmath-python"]["version"] is None
    _assert_within_the_machines_limits(out)


def _assert_within_the_machines_limits(out: Path) -> None:
    files = [path for path in out.rglob("*") if path.is_file()]
    assert 0 < len(files) <= MAX_FILES, files
    for path in files:
        assert path.stat().st_size <= MAX_BYTES, path
        assert len(path.relative_to(out).parts) - 1 <= MAX_DEPTH, path


def _assert_simulated(record: dict, markdown: str) -> None:
    assert record["simulated"] and record["rehearsal"]
    assert record["device"].startswith("cuda-sim:0") and "not a GPU" in record["device"]
    for name, part in record["parts"].items():
        assert part["device"].startswith("cuda-sim"), name
        assert "NVIDIA" not in json.dumps(part.get("device")), name
    assert "**SIMULATED: a rehearsal" in markdown
    assert "rehearsal: sizes, repeats and the test selection are shrunk" in markdown


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["truth", "speed"])
def test_each_stage_completes_on_the_doubles_within_the_machines_limits(machine, tmp_path,
                                                                        stage):
    results = ROOT / "benchmarks" / "results"
    before = _files(results)
    done, out = _stage(machine, tmp_path, stage)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert _files(results) == before  # nothing under benchmarks/results
    _assert_within_the_machines_limits(out)
    record = json.loads((out / f"gpu-check-{stage}.json").read_text())
    markdown = (out / f"gpu-check-{stage}.md").read_text()
    _assert_simulated(record, markdown)
    wheels = record["wheels"]["wheels"]
    assert record["wheels"]["installed"] and len(wheels) == len(gpu_wheels.WHEELS)
    assert any(name.startswith("nvmath_python-1.0.1") for name in wheels)
    assert any(name.startswith("cuda_core-1.2.2") for name in wheels)
    parts = record["parts"]
    for name, part in parts.items():
        assert "error" not in part and "skipped" not in part, (name, part)
    versions = parts["versions"]
    assert versions["python"].startswith("3.12") and versions["packages"]["nvmath-python"]
    assert versions["cuda_graph"] == "can be captured (nvmath loads)"
    assert (out / f"gpu-check-{stage}.log").stat().st_size > 0
    if stage == "truth":
        _assert_truth(parts, out)
    else:
        _assert_speed(parts)


def _assert_truth(parts: dict, out: Path) -> None:
    tests = parts["pytest"]
    assert tests["counts"].get("passed", 0) >= 8 and not tests["failures"], tests["counts"]
    assert (out / "pytest-truth.jsonl").exists()
    assert tests["cuda_graph_tests"] and set(tests["cuda_graph_tests"].values()) == {"passed"}
    kernels = parts["ulps"]["gpu"]["kernels"]
    assert {name.split()[0] for name in kernels} >= {"relu", "softmax_ce", "dropout", "adam"}
    assert parts["double"]["double ulps"]["kernels"].keys() == kernels.keys()
    assert parts["double"]["double counts"]["mlp"]["cuda_graph"]["128"]["graph_launch"] == 1
    configs = parts["counts"]["gpu"]["configs"]
    graphed = [config for name, config in configs.items() if name.endswith(", CUDA graph")]
    assert len(graphed) == 2 and all(c["cuda_graph"] == "captured" for c in graphed)
    assert all(c["equal"] for name, c in configs.items() if "graphed vs plain" in name)
    launches = parts["counts"]["launches"]["run"]
    assert launches["exit_status"] == 0 and "--clock-control none" in launches["command"]
    for tool in ("memcheck", "racecheck"):
        assert parts[tool]["errors"] == 0 and parts[tool]["run"]["exit_status"] == 0, tool
        assert not parts[tool]["run"]["timed_out"] and parts[tool]["limit_seconds"] >= 60, tool
    assert tests["no_test_starts_in_the_last_seconds"] == 25


def _assert_speed(parts: dict) -> None:
    assert all(parts["first_train"][run]["exit_status"] == 0 for run in ("first", "second"))
    assert parts["first_train"]["cuda_graph"] == ["CUDA graph: on"]
    assert {"copy", "relu", "adam", "softmax_ce"} <= set(parts["kernels"]["ops"])
    for entry in parts["mlp"]["batch_sizes"].values():
        assert {"gpunn", "gpunn, no CUDA graph"} <= set(entry["trainers"])
    assert set(parts["mlp"]["batch_sizes"]) == {"32", "128", "1024"}
    for name in ("mlp", "precision wide", "precision mlp"):
        assert "torch" in parts[name]["torch_reason"], name
    for name in ("precision wide", "precision mlp"):
        # Every policy runs on the double (it says compute capability 9.0), gpunn's TF32 from
        # the policy alone: CUPY_TF32 stays unset.
        rows = parts[name]["policies"]
        assert list(rows) == ["float32", "tf32", "bfloat16", "float16"], name
        for policy, row in rows.items():
            assert "error" not in row and "left_out" not in row, (name, policy, row)
            assert {"gpunn", "gpunn, no CUDA graph"} <= set(row["trainers"]), (name, policy)
            assert row["tf32"]["CUPY_TF32"] == "unset (TF32 off)", (name, policy)
            assert row["speedup_over_float32"]["gpunn"] > 0, (name, policy)
    assert {"gpunn", "gpunn, no CUDA graph"} <= set(parts["spiral"]["trainers"])


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_stage_killed_at_its_limit_leaves_what_it_measured(machine, tmp_path, how):
    # `timeout 480` sends SIGTERM: the stage ends its parts' processes and says so. A SIGKILL
    # (the machine's own limit) leaves the record as it was after the last part.
    python, wheels = machine
    out = tmp_path / "out"
    process = subprocess.Popen(
        [str(python), "-m", "benchmarks.gpu_check", "--rehearse", "--stage", "truth", "--out",
         str(out), "--wheels", str(wheels)], cwd=tmp_path, env=_environment(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    record_file = out / "gpu-check-truth.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if record_file.exists() and "info" in json.loads(record_file.read_text())["parts"]:
            break
        time.sleep(0.2)
    if how == "SIGTERM":
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 143
    else:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    record = json.loads(record_file.read_text())  # whole: written atomically
    assert "versions" in record["parts"] and "info" in record["parts"]
    assert record.get("stopped", "").startswith("terminated (SIGTERM)") == (how == "SIGTERM")
    assert (out / "gpu-check-truth.md").read_text().startswith("# gpu_check truth")
    _assert_within_the_machines_limits(out)


@pytest.mark.slow
def test_a_spent_budget_skips_the_remaining_parts_saying_so(machine, tmp_path):
    done, out = _stage(machine, tmp_path, "speed", "--budget", "12")
    record = json.loads((out / "gpu-check-speed.json").read_text())
    skipped = [name for name, part in record["parts"].items() if "skipped" in part]
    assert skipped and skipped[-1] == "spiral", record["parts"].keys()
    assert record["parts"]["spiral"]["skipped"] == "the stage's time budget is spent"
