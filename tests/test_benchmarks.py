"""Smoke test of the benchmark suite (benchmarks/): ``python -m benchmarks --quick`` runs end to
end and writes what it promises. Timings are not checked: on a shared test machine they
mean nothing."""

from __future__ import annotations

import importlib.util
import json
import os
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
        assert entry["gemm_bound_samples_per_second"] > 0  # issue 26: in every run's table
    assert set(record["spiral"]["cpu"]["trainers"]) == expected
    assert record["cpu_fast_path"].startswith(("active: ", "off ("))
    assert f"(CPU fast path: {record['cpu_fast_path']})" in stdout
    assert "| gpunn / PyTorch | GEMM bound samples/s |" in stdout
    assert "| #26 | gpunn ≥ 80% of its GEMM bound, MLP at batch 1024 |" in stdout
    assert record["sgemm"]["cpu"]["square"]
    assert "| batch | gpunn samples/s | PyTorch samples/s |" in stdout
    assert "## Spiral 2-64-3" in stdout
    assert (tmp_path / "smoke.md").read_text().startswith("# gpunn vs PyTorch")
    assert record["wall_seconds"] > 0
    assert f"The whole run took {record['wall_seconds']:.0f} s." in stdout
    assert (tmp_path / "smoke.png").exists() == MATPLOTLIB


def test_without_torch_gpunn_is_reported_alone(tmp_path):
    stdout, record = _run(tmp_path, "--no-torch", "--only", "spiral")
    assert record["torch"] == {"available": False, "reason": "left out (--no-torch)"}
    assert set(record["spiral"]["cpu"]["trainers"]) == {"gpunn"}
    assert "mlp" not in record and "sgemm" not in record
    assert "PyTorch left out (--no-torch)" in stdout


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {os.fspath(path.relative_to(folder)): (path.stat().st_mtime_ns, path.stat().st_size)
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_quick_run_without_out_leaves_the_committed_results_alone(tmp_path):
    results = ROOT / "benchmarks" / "results"
    before = _files(results)
    # Run from tmp_path, so the quick run's own folder (runs/benchmarks in the current folder)
    # lands there, not in the source tree.
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.fspath(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    command = [sys.executable, "-W", "error", "-m", "benchmarks", "--quick", "--device", "cpu",
               "--threads", "1", "--only", "spiral", "--no-torch"]
    done = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _files(results) == before
    written = sorted((tmp_path / "runs" / "benchmarks").glob("*.json"))
    assert len(written) == 1, done.stdout
    assert "-quick-only-spiral-no-torch-" in written[0].name
    assert f"quick run: the results go to {Path('runs', 'benchmarks')}/, never to " \
           f"{results}/" in done.stdout


def test_result_names_say_the_machine_what_differs_and_the_date(monkeypatch):
    monkeypatch.syspath_prepend(os.fspath(ROOT))
    from benchmarks import machine, run

    base = machine.result_name()
    unset = dict.fromkeys(machine.ENVIRONMENT)

    def name(argv, date="2026-11-25T15:30:12+00:00", **environment):
        record = {"machine": {"date": date, "environment": {**unset, **environment}}}
        return run.result_name(run.parse(argv), record)

    assert name([]) == f"{base}-20261125T1530"
    assert name([], date="2026-11-25T16:30:59+01:00") == f"{base}-20261125T1530"
    assert name(["--device", "cpu"], OPENBLAS_CORETYPE="Haswell") == \
        f"{base}-openblas-coretype-haswell-20261125T1530"
    assert name([], OPENBLAS_CORETYPE="Haswell", OPENBLAS_L2_SIZE="512",
                OPENBLAS_NUM_THREADS="2") == \
        f"{base}-openblas-coretype-haswell-openblas-l2-size-512-20261125T1530"
    assert name(["--torch-adam", "fused", "--only", "spiral", "--only", "mlp"]) == \
        f"{base}-only-mlp-spiral-torch-fused-adam-20261125T1530"
    assert name(["--quick", "--no-torch", "--threads", str(machine.cores() + 1)]) == \
        f"{base}-quick-no-torch-{machine.cores() + 1}-threads-20261125T1530"
    assert name(["--samples", "1000", "--batch-sizes", "64", "--shuffle"]) == \
        f"{base}-shuffle-1000-samples-batch-64-20261125T1530"


def test_an_existing_result_is_never_overwritten(tmp_path, monkeypatch):
    # The same --out and --name twice: the first run's files stay as they were.
    _run(tmp_path, "--no-torch", "--only", "spiral")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    stdout, _ = _run(tmp_path, "--no-torch", "--only", "spiral")
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()
            if path.name in before} == before
    assert (tmp_path / "smoke-2.json").exists() and (tmp_path / "smoke-2.md").exists()
    assert "smoke.* exists already; writing smoke-2.* beside it" in stdout

    monkeypatch.syspath_prepend(os.fspath(ROOT))
    from benchmarks import run

    folder = tmp_path / "names"
    folder.mkdir()
    assert run.free_name(folder, "smoke") == "smoke"
    (folder / "smoke.png").write_bytes(b"")  # any one of the three files takes the name
    assert run.free_name(folder, "smoke") == "smoke-2"
    (folder / "smoke-2.md").write_text("")
    assert run.free_name(folder, "smoke") == "smoke-3"


def test_tf32_off_uses_pytorchs_fp32_precision_where_it_has_it(monkeypatch):
    # PyTorch 2.9 and later: once a script set fp32_precision, reading allow_tf32 raises
    # ("mix of the legacy and new APIs").
    torch = pytest.importorskip("torch")
    monkeypatch.syspath_prepend(os.fspath(ROOT))
    from benchmarks import gpu

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if not hasattr(matmul, "fp32_precision"):
        pytest.skip(f"PyTorch {torch.__version__} has allow_tf32 alone (the next test)")
    before = matmul.fp32_precision, cudnn.fp32_precision
    try:
        matmul.fp32_precision = "tf32"
        with gpu.tf32_off(torch) as settings:
            assert (matmul.fp32_precision, cudnn.fp32_precision) == ("ieee", "ieee")
        assert settings["torch.backends.cuda.matmul.fp32_precision"] == "ieee"
        assert (matmul.fp32_precision, cudnn.fp32_precision) == ("tf32", before[1])
    finally:
        matmul.fp32_precision, cudnn.fp32_precision = before


def test_tf32_off_falls_back_to_allow_tf32_on_older_pytorch(monkeypatch):
    monkeypatch.syspath_prepend(os.fspath(ROOT))
    from types import SimpleNamespace

    from benchmarks import gpu

    old = SimpleNamespace(backends=SimpleNamespace(
        cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=True)),
        cudnn=SimpleNamespace(allow_tf32=True)))
    with gpu.tf32_off(old) as settings:
        assert not old.backends.cuda.matmul.allow_tf32 and not old.backends.cudnn.allow_tf32
    assert settings["torch.backends.cuda.matmul.allow_tf32"] is False
    assert old.backends.cuda.matmul.allow_tf32 and old.backends.cudnn.allow_tf32


def test_the_launch_and_sync_counts_are_in_the_table(tmp_path):
    stdout, record = _run(tmp_path, "--no-torch", "--only", "counts")
    counts = record["step_counts"]
    assert "cuda-sim:0" in counts["device"] and "not a GPU" in counts["device"]
    assert set(counts["mlp"]) == {"cuda_graph", "no_cuda_graph"}
    assert set(counts["mlp"]["cuda_graph"]) == {"32", "128", "1024"}
    assert "## Kernel launches and synchronisations per training step" in stdout
    assert "| MLP 784-128-128-10, before issue 10 | any | no | 53 |" in stdout
    assert list(counts["precision"]["policies"]) == ["float32", "tf32", "bfloat16", "float16"]
    assert "| MLP 784-128-128-10, precision float32 | 128 | yes | 3 | 0 | 1 | 0 | 1 | 0 |" \
        in stdout


@pytest.fixture(scope="module")
def mlp_step_counts(request):
    """(benchmarks.step_counts.mlp_step_counts, its float32 counts at batch 128): counted by
    the CuPy double, so in the --cupy-double session only."""
    if not request.config.getoption("--cupy-double"):
        pytest.skip("launches and synchronisations are counted by the CuPy double: these run "
                    "in the pytest --cupy-double session")
    sys.path.insert(0, os.fspath(ROOT))
    from benchmarks import step_counts

    return step_counts.mlp_step_counts, step_counts.mlp_step_counts(batch_size=128)


@pytest.mark.parametrize("policy", ["float32", "tf32", "bfloat16", "float16"])
def test_every_precision_policys_step_is_one_graph_that_never_waits(mlp_step_counts, policy):
    # The MLP at batch 128 with CUDA graphs (issue 19): a 16-bit policy's casts, its loss
    # scale and skipped steps (kept on the device, in the tally) are captured with the rest.
    count, float32 = mlp_step_counts
    counts = count(batch_size=128, precision=policy)
    print(f"per training step on cuda-sim:0 under {policy}: {counts}")
    # Per step: the copies of the batch into the graph's inputs and one graph launch; no kernel
    # of gpunn's outside the graph, no synchronisation, no host-to-device copy.
    assert counts["graph_launch"] == 1 and counts["raw_launch"] == 0, counts
    assert counts["launch"] == float32["launch"] == 3, counts
    assert counts["sync"] == 0 and counts["h2d"] == 0, counts
    assert counts["epoch_sync"] == float32["epoch_sync"], (counts, float32)


def test_the_data_parallel_part_times_one_and_two_ranks(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.fspath(ROOT))
    from benchmarks import distributed as part
    from gpunn import distributed

    stdout, record = _run(tmp_path, "--no-torch", "--only", "distributed")
    mpiexec, reason = part.find_mpiexec()
    if mpiexec is None:
        assert record["skipped"]["distributed on cpu"] == reason
        assert "distributed" not in record
        return
    result = record["distributed"]["cpu"]
    assert result["sizes"] == list(part.QUICK_SIZES)
    assert result["global_batch"] == part.QUICK_BATCH
    several = result["cores"] > 1
    expected = ["1 rank", *([part.HALF] if several else []), "2 ranks",
                *([part.OVERSUBSCRIBED] if several else [])]
    assert list(result["runs"]) == expected
    for label, run in result["runs"].items():
        assert "error" not in run, run.get("error")
        ranks = run["ranks"]
        for key in ("step_ms", "samples_per_second", "allreduce_ms_per_step",
                    "vote_ms_per_step", "blas_threads", "gradient_bytes", "last_epoch"):
            assert key in run, (label, key)
        assert run["step_ms"] > 0 and run["samples_per_second"]["median"] > 0
        assert len(run["allreduce_ms_per_step"]) == len(run["blas_threads"]) == ranks
        assert run["allreduce_calls_per_step"] == [1.0 if ranks > 1 else 0.0] * ranks
        assert run["communicator"] == ("mpi" if ranks > 1 else "single")
    if importlib.util.find_spec("threadpoolctl") is not None:
        limited = result["runs"]["2 ranks"]["blas_threads"]
        assert limited == [distributed.threads_per_rank(2)] * 2
        if several:
            assert result["runs"][part.OVERSUBSCRIBED]["blas_threads"] == [result["cores"]] * 2
            assert result["runs"][part.HALF]["blas_threads"] == [result["cores"] // 2]
    assert result["efficiency"] > 0
    assert (result.get("efficiency_same_threads_per_rank", 0) > 0) == several
    assert "## Data-parallel training on cpu: MLP 784-32-10, global batch 64" in stdout
    assert "| run | BLAS threads per rank | ms/step | allreduce ms/step" in stdout


def test_the_committed_results_index_is_current(monkeypatch):
    # benchmarks/results/INDEX.md is where a reader finds the current figures: a result
    # committed without regenerating it (python -m benchmarks.index) would be missing there.
    from benchmarks import index

    committed = (index.RESULTS / index.INDEX).read_text(encoding="utf-8")
    assert committed == index.render(), "run python -m benchmarks.index and commit INDEX.md"
    for machine in index.RESULTS.iterdir():
        if machine.is_dir():  # one folder per machine, nothing loose beside them
            continue
        assert machine.name == index.INDEX, f"{machine} belongs in a machine's folder"


def test_the_index_lists_the_latest_run_of_each_configuration(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.fspath(ROOT))
    from benchmarks import index

    folder = tmp_path / "cpu-x-2c"
    (folder / "experiments").mkdir(parents=True)
    for name in ("cpu-x-2c-only-mlp-20261125T1735", "cpu-x-2c-only-mlp-20261125T1741",
                 "cpu-x-2c-only-mlp-20261125T1741-2", "cpu-x-2c"):
        (folder / f"{name}.json").write_text("{}")
    (folder / "experiments" / "cpu-x-2c-haswell.md").write_text("")
    text = index.render(tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| cpu-x-2c")]
    assert rows[0].startswith("| cpu-x-2c | cpu-x-2c (") and rows[0].endswith("| undated | 0 |")
    assert rows[1].startswith("| cpu-x-2c-only-mlp | cpu-x-2c-only-mlp-20261125T1741-2 (")
    assert rows[1].endswith("| 2026-11-25 17:41 | 2 |")
    assert "- cpu-x-2c-haswell ([md](cpu-x-2c/experiments/cpu-x-2c-haswell.md))" in text


def test_the_scikit_learn_comparison_times_both_on_the_same_split(tmp_path):
    pytest.importorskip("sklearn")
    from benchmarks import sklearn_mlp

    assert sklearn_mlp.main(["--quick", "--threads", "1", "--out", str(tmp_path)]) == 0
    (written,) = tmp_path.glob("*-sklearn-mlp-quick-1-threads-*.json")
    record = json.loads(written.read_text())
    for result in record["results"].values():
        assert set(result["fit_seconds"]) == {"scikit-learn", "gpunn"}
        assert result["epochs_run"]["gpunn"] == result["epochs_run"]["scikit-learn"] == \
            [result["epochs"]] * record["rounds"]
        assert abs(result["score"]["gpunn"]["median"]
                   - result["score"]["scikit-learn"]["median"]) < 0.1
    assert "| digits | 1,437 x 64 | 64-32-10, 5 | accuracy |" in written.with_suffix(
        ".md").read_text()
