"""The GPU check's own pieces (benchmarks/gpu_check.py and the modules it runs), on any machine:
it refuses without a GPU, its pytest plugin reports as it goes and stops at its deadline, and
its ulp distance and Nsight Compute reading are right. The stages themselves are rehearsed on
the doubles in tests/test_gpu_rehearsal.py (the --cupy-double session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks import gpu_measure, gpu_speed, gpu_truth  # noqa: E402


def test_without_a_real_gpu_it_refuses_and_says_why(tmp_path):
    # Here cupy is missing (the plain session) or the CuPy double (--cupy-double): neither is a
    # GPU. The refusal is recorded in --out too; nothing goes under benchmarks/results.
    results = ROOT / "benchmarks" / "results"
    before = sorted(results.iterdir())
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--stage", "truth",
                           "--out", str(tmp_path), "--wheels", str(tmp_path / "none")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "gpu_check needs a real NVIDIA GPU" in done.stderr
    record = json.loads((tmp_path / "gpu-check-truth.json").read_text())
    assert record["parts"]["versions"]["refuse"].startswith("gpu_check needs a real NVIDIA GPU")
    assert "no wheels in" in record["wheels"]["skipped"]
    assert sorted(results.iterdir()) == before


def test_ulp_distance():
    one = np.float32(1)
    assert gpu_measure.ulp_distance(np.array([one]), np.array([np.nextafter(one, 2)])) == 1
    across = np.array([np.float32(-0.0), np.float32(1e-45)])
    assert gpu_measure.ulp_distance(across, np.array([np.float32(1e-45), np.float32(-1e-45)])) \
        == 2
    assert gpu_measure.ulp_distance(np.array([1.0, np.nan]), np.array([1.0, np.nan])) == 0
    assert gpu_measure.ulp_distance(np.array([np.nan]), np.array([1.0])) == np.inf
    assert gpu_measure.ulp_distance(np.array([2.0]), np.array([2.0 + 2 * 2**-51])) == 2
    assert gpu_measure.ulp_distance(np.zeros(0), np.zeros(0)) == 0


def test_kernels_per_step_are_read_between_the_marker_kernels():
    rows = ['"ID","Process ID","Process Name","Host Name","Kernel Name","gpu__time_duration.sum"',
            '"","","","","","nsecond"']
    names = ["k"] * 30 + ["cupy_fmax"] + ["k"] * 50 + ["cupy_fmax"] + ["graph"] * 5 \
        + ["cupy_fmax"] + ["graph"] * 9 + ["cupy_fmax"]
    rows += [f'"{i}","1","python","host","{name}","1000"' for i, name in enumerate(names)]
    text = "==PROF== Connected\n" + "\n".join(rows) + "\n"
    found = {"steps": 4, "order": ["no graph", "graph"]}
    result = gpu_truth.kernels_per_step(text, found)
    assert result["groups"] == [30, 50, 5, 9]
    assert result["kernels_per_step"] == {"no graph": 5.0, "graph": 1.0}
    assert "error" in gpu_truth.kernels_per_step("no csv here", found)


def _pytest(tmp_path, test_source, **environment):
    (tmp_path / "test_sample.py").write_text(test_source)
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    report = tmp_path / "report.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GPUNN_CHECK_REPORT": str(report),
           **environment}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "benchmarks.gpu_pytest", "-p",
                           "no:cacheprovider", "-q", "test_sample.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert lines[0]["outcome"] == "collected"  # first, so a cut-short run says what it missed
    return done, lines[1:]


SAMPLE = '''
import warnings
import pytest

@pytest.fixture
def backend():
    return "cpu"

def test_passes(backend):
    pass

def test_fails(backend):
    assert 1 == 2

def test_warns(backend):
    warnings.warn("old API", DeprecationWarning)

def test_skips(backend):
    pytest.skip("no tool here")

def test_elsewhere():
    pass
'''


def test_the_plugin_reports_each_test_as_it_ends_and_names_warnings(tmp_path):
    done, lines = _pytest(tmp_path, SAMPLE, GPUNN_CHECK_DEVICE_ONLY="1",
                          GPUNN_CHECK_FIRST="test_sample.py")
    assert "1 deselected" in done.stdout  # test_elsewhere takes no device fixture
    outcomes = {line["nodeid"].split("::")[1]: line for line in lines}
    assert [outcomes[name]["outcome"] for name in ("test_passes", "test_fails", "test_warns",
                                                   "test_skips")] == \
        ["passed", "failed", "failed", "skipped"]
    assert outcomes["test_warns"]["warning"] == "DeprecationWarning: old API"
    assert "assert 1 == 2" in outcomes["test_fails"]["failure"]
    assert outcomes["test_skips"]["reason"] == "Skipped: no tool here"
    report = gpu_truth.read_report(tmp_path / "report.jsonl")
    assert report["counts"] == {"passed": 1, "failed": 2, "skipped": 1}
    assert report["collected"] == 4 and report["not_run"] == 0
    assert report["warnings"] == ["DeprecationWarning: old API (test_sample.py::test_warns)"]


def test_the_plugin_starts_no_test_after_its_deadline(tmp_path):
    done, lines = _pytest(tmp_path, SAMPLE, GPUNN_CHECK_DEADLINE=str(time.time() - 1))
    assert [line["nodeid"] for line in lines] == ["test_sample.py::test_passes"]
    assert "gpu_check: the time budget for the tests is spent" in done.stdout
    assert gpu_truth.read_report(tmp_path / "report.jsonl")["not_run"] == 4


def test_a_stage_ends_before_the_readmes_timeout():
    # Each stage must end within 8 minutes from a cold start, under `timeout 480`: the parts'
    # limits are cut to what is left of the budget, which leaves time to write and to stop.
    from benchmarks import gpu_check

    assert gpu_check.BUDGET_SECONDS + 30 <= 480
    assert 'timeout 480 python3 -m benchmarks.gpu_check --stage truth --out "$OUT"' in \
        (ROOT / "benchmarks" / "README.md").read_text()


def test_the_precision_rows_leave_out_what_the_device_cannot_run_and_survive_a_failure(
        monkeypatch):
    # A compute capability 7.5 GPU (a T4) has float16 tensor cores but no TF32 or bfloat16:
    # those rows say why; a policy whose training fails records its error, and float32 still
    # gives the speed-ups their baseline.
    def run(torch, *, precision, batch_sizes, **options):
        if precision == "float16":
            raise RuntimeError("no float16 kernels yet")
        rate = {"median": 100.0}
        return {"batch_sizes": {str(batch_sizes[0]): {"trainers": {
            "gpunn": {"samples_per_second": rate}}}}}

    monkeypatch.setattr(gpu_speed.mlp, "run", run)
    turing = type("Backend", (), {"fused": True, "device": "cuda:0",
                                  "compute_capability": lambda self: (7, 5),
                                  "low_precision_error": lambda self, dtype="float16": None})()
    result = gpu_speed.policies(turing, None, "mlp", rehearse=True, repeats=1)
    rows = result["policies"]
    assert list(rows) == ["float32", "tf32", "bfloat16", "float16"]
    assert rows["float32"]["speedup_over_float32"] == {"gpunn": 1.0}
    assert rows["float32"]["tf32"]["CUPY_TF32"] == "unset (TF32 off)"
    for name in ("tf32", "bfloat16"):
        assert rows[name]["left_out"].startswith(f"cuda:0 cannot: precision={name!r} needs "
                                                 f"compute capability 8.0 or newer")
    assert "RuntimeError: no float16 kernels yet" in rows["float16"]["error"]
    lines = gpu_speed.summary(result)
    assert "- float16: ERROR: RuntimeError: no float16 kernels yet" in lines
    assert lines[0] == "- float32: samples/s {'gpunn': 100}, speed-up over float32 {'gpunn': 1.0}"


def test_gpunns_tf32_row_is_its_policy_not_cupy_tf32():
    # One way to TF32 for gpunn: Model(precision="tf32"). CUPY_TF32 would also put the float32
    # rows' products on TF32.
    names = [name for name, _, _ in gpu_speed.PARTS]
    assert {"precision wide", "precision mlp"} <= set(names)
    assert not any("tf32" in name for name in names)
    assert "CUPY_TF32" not in (ROOT / "benchmarks" / "gpu_speed.py").read_text()


def test_the_probe_writes_its_own_file_within_seconds(tmp_path):
    # The first GPU call begins with it: a failing nvmath import is known in seconds, in a file
    # of its own, not at the end of a stage. Here without wheels: it says so and goes on.
    from benchmarks import gpu_probe

    status = gpu_probe.main(["--out", str(tmp_path), "--wheels", str(tmp_path / "none")])
    record = json.loads((tmp_path / "gpu-probe.json").read_text())
    assert record["seconds"] <= gpu_probe.SECONDS
    assert "no wheels in" in record["wheels"]["skipped"]
    for side in ("machine", "with_wheels"):
        assert set(record[side]["packages"]) == set(gpu_probe.PACKAGES), side
        assert "import_nvmath" in record[side], side
    assert status == (0 if record["with_wheels"]["import_nvmath"] == "ok" else 1)
