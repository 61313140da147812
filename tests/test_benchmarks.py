"""Smoke test of the benchmark suite (benchmarks/): ``python -m benchmarks --quick`` runs end to
end and writes what it promises. Timings are not checked: on a shared test machine they
mean nothing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCH = importlib.util.find_spec("torch") is not None
MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

pytestmark = pytest.mark.skipif(not (ROOT / "benchmarks" / "__main__.py").exists(),
                                reason="benchmarks/ is not part of this source tree")


def _run(tmp_path: Path, *options: str) -> tuple[str, dict]:
    # One thread: on a loaded machine, two spinning BLAS threads per core can make even the
    # quick run take minutes.
    command = [sys.executable, "-W", "error", "-m", "benchmarks", "--quick", "--device", "cpu",
               "--threads", "1", "--out", str(tmp_path), "--name", "smoke", *options]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, json.loads((tmp_path / "smoke.json").read_text())


def test_quick_run_prints_the_table_and_writes_the_results(tmp_path):
    stdout, record = _run(tmp_path)
    for key in ("machine", "config", "threads", "blas", "torch", "sgemm", "mlp", "spiral",
                "skipped"):
        assert key in record, key
    assert record["config"]["quick"] and record["config"]["samples"] == 512
    assert record["skipped"]["cuda"] == "--device cpu"
    assert record["machine"]["cores"] >= 1 and record["machine"]["cpu_model"]
    assert record["threads"]["requested"] == 1
    assert record["threads"]["torch"] == (1 if TORCH else None)
    batches = record["mlp"]["cpu"]["batch_sizes"]
    assert set(batches) == {"32", "128", "1024"}
    expected = {"gpunn", "PyTorch"} if TORCH else {"gpunn"}
    for entry in batches.values():
        assert set(entry["trainers"]) == expected
        for trainer in entry["trainers"].values():
            assert trainer["samples_per_second"]["median"] > 0
            assert len(trainer["epoch_seconds"]["values"]) == 1
            assert 0 < trainer["share_of_gemm_bound"]
        assert ("ratio" in entry) == TORCH
    assert set(record["spiral"]["cpu"]["trainers"]) == expected
    assert record["sgemm"]["cpu"]["square"]
    assert "| batch | gpunn samples/s | PyTorch samples/s |" in stdout
    assert "## Spiral 2-64-3" in stdout
    assert (tmp_path / "smoke.md").read_text().startswith("# gpunn vs PyTorch")
    assert (tmp_path / "smoke.png").exists() == MATPLOTLIB


def test_without_torch_gpunn_is_reported_alone(tmp_path):
    stdout, record = _run(tmp_path, "--no-torch", "--only", "spiral")
    assert record["torch"] == {"available": False, "reason": "left out (--no-torch)"}
    assert set(record["spiral"]["cpu"]["trainers"]) == {"gpunn"}
    assert "mlp" not in record and "sgemm" not in record
    assert "PyTorch left out (--no-torch)" in stdout


def test_the_gpu_check_refuses_without_a_real_gpu():
    from helpers import cuda_available

    if cuda_available() and not hasattr(sys.modules.get("cupy"), "_sim"):
        pytest.skip("a real GPU is here: python -m benchmarks.gpu_check is for running, not "
                    "for a smoke test")
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "gpu_check needs a real NVIDIA GPU" in done.stderr
    assert not list((ROOT / "benchmarks" / "results").glob("gpu-check-*sim*"))
