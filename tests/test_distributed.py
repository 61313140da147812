"""gpunn.distributed: each MPI test starts ``mpiexec -n N python -c ...`` in a subprocess with a
time limit, so a hang fails the test instead of eating the run. Without mpiexec or mpi4py the
MPI tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from conftest import CUPY_DOUBLE, require

from gpunn import distributed

TIMEOUT = 60  # seconds: far above any test here, far below a CI job's limit
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
HAS_MPI4PY = importlib.util.find_spec("mpi4py") is not None


# Each rank reports through a file of its own: mpiexec interleaves long lines of stdout.
REPORT_FUNCTION = """
import json as _json, os as _os
def report(**values):
    path = _os.path.join(_os.environ["GPUNN_TEST_RESULTS"], f"{values['rank']}.json")
    with open(path, "w") as file:
        file.write(_json.dumps(values))
"""


def mpiexec(n: int, code: str, *, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` on ``n`` ranks; the CompletedProcess gains
    ``seconds`` and ``ranks``: what each rank passed to ``report(rank=..., ...)``, by rank."""
    require(MPIEXEC is not None and HAS_MPI4PY,
            f"MPI tests need mpiexec and mpi4py (found mpiexec={MPIEXEC}, "
            f"mpi4py={HAS_MPI4PY}): {distributed.MPI_HINT}")
    results = Path(tempfile.mkdtemp(prefix="gpunn-mpi-"))
    command = [MPIEXEC, "-n", str(n), sys.executable, "-c",
               REPORT_FUNCTION + textwrap.dedent(code)]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True,
                               env={**os.environ, **(env or {}),
                                    "GPUNN_TEST_RESULTS": str(results)})
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # mpiexec and every rank it started
        stdout, stderr = process.communicate()
        pytest.fail(f"mpiexec -n {n} hung for {TIMEOUT} s\nstdout:\n{stdout}\nstderr:\n{stderr}")
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    result.seconds = time.monotonic() - started
    reports = [json.loads(path.read_text()) for path in results.glob("*.json")]
    shutil.rmtree(results)
    result.ranks = sorted(reports, key=lambda line: line["rank"])
    return result


def ok(result: subprocess.CompletedProcess, n: int) -> list[dict]:
    assert result.returncode == 0, result.stderr
    assert [line["rank"] for line in result.ranks] == list(range(n)), result.stdout
    return result.ranks


# ---- without MPI ---------------------------------------------------------------------------------

LAUNCH_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE",
                    "PMIX_RANK", "SLURM_STEP_NUM_TASKS")
REPORT = ("import sys, gpunn, gpunn.distributed as d; c = d.init(); "
          "print(c.name, c.size, d.current() is c, 'mpi4py' in sys.modules)")


def test_a_single_process_imports_no_mpi():
    env = {key: value for key, value in os.environ.items() if key not in LAUNCH_VARIABLES}
    result = subprocess.run([sys.executable, "-c", REPORT], capture_output=True, text=True,
                            env=env, timeout=TIMEOUT)
    assert result.stdout.split() == ["single", "1", "True", "False"], result.stderr


def test_one_rank_under_mpiexec_is_a_single_process_and_imports_no_mpi():
    result = mpiexec(1, REPORT)
    assert result.stdout.split() == ["single", "1", "True", "False"], result.stderr


def test_a_launch_without_mpi4py_says_how_to_install_it(tmp_path):
    (tmp_path / "mpi4py").mkdir()  # shadows the real package: "import mpi4py.MPI" fails
    (tmp_path / "mpi4py" / "__init__.py").write_text("raise ImportError('no MPI here')\n")
    result = subprocess.run([sys.executable, "-c", REPORT], capture_output=True, text=True,
                            timeout=TIMEOUT, env={**os.environ, "PMI_SIZE": "2",
                                                  "PYTHONPATH": str(tmp_path)})
    assert result.returncode != 0
    assert "PMI_SIZE=2" in result.stderr and "pip install 'gpunn[mpi]'" in result.stderr


@pytest.mark.parametrize("environ, expected", [
    ({}, (1, "")),
    ({"PMI_SIZE": "4", "PMI_RANK": "1"}, (4, "PMI_SIZE")),  # MPICH's hydra, Intel MPI
    ({"OMPI_COMM_WORLD_SIZE": "3", "PMIX_RANK": "0"}, (3, "OMPI_COMM_WORLD_SIZE")),
    ({"MV2_COMM_WORLD_SIZE": "2"}, (2, "MV2_COMM_WORLD_SIZE")),
    ({"PMIX_RANK": "0", "SLURM_STEP_NUM_TASKS": "8"}, (8, "SLURM_STEP_NUM_TASKS")),
    ({"SLURM_STEP_NUM_TASKS": "8"}, (1, "")),  # srun without an MPI plugin: no MPI to talk to
])
def test_the_launch_is_read_from_the_environment(environ, expected):
    assert distributed.launched_size(environ) == expected


def test_threads_per_rank_shares_the_cores_out():
    assert distributed.threads_per_rank(2, cores=2) == 1
    assert distributed.threads_per_rank(3, cores=2) == 1
    assert distributed.threads_per_rank(2, cores=16) == 8
    assert distributed.threads_per_rank(1) == os.cpu_count()


@pytest.mark.parametrize("preset, expected", [(None, "1"), ("2", "2")])
def test_blas_threads_are_limited_unless_the_user_chose(preset, expected):
    require(importlib.util.find_spec("threadpoolctl") is not None,
            "threadpoolctl is not installed: pip install 'gpunn[mpi]'")
    code = ("import numpy, threadpoolctl, gpunn.distributed as d; d.limit_blas_threads(1); "
            "import os; print(os.environ['OPENBLAS_NUM_THREADS'], "
            "{i['num_threads'] for i in threadpoolctl.threadpool_info() "
            "if i['user_api'] == 'blas'})")
    env = {key: value for key, value in os.environ.items()
           if key not in distributed.THREAD_VARIABLES}
    if preset:
        env["OPENBLAS_NUM_THREADS"] = preset
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=TIMEOUT)
    variable, threads = result.stdout.split(maxsplit=1)
    assert variable == expected, result.stderr
    if preset is None:
        assert threads.strip() == "{1}"


def test_a_single_process_communicator_leaves_arrays_alone():
    import numpy as np

    comm = distributed.SingleProcess()
    array = np.arange(3.0)
    comm.broadcast(array)
    comm.allreduce(array)
    comm.agree("seed", 0)
    comm.barrier()
    assert array.tolist() == [0.0, 1.0, 2.0]
    assert comm.allreduce_values([1, 2.5]) == [1.0, 2.5]
    assert comm.any_rank(True) and not comm.any_rank(False)
    with pytest.raises(ValueError, match="boom"), distributed.guard(comm):
        raise ValueError("boom")


# ---- on N ranks ----------------------------------------------------------------------------------

COLLECTIVES = """
    import hashlib, numpy as np, gpunn.distributed as d
    c = d.init("cpu")
    n, dtype = c.size, np.{dtype}
    # halves and small integers: every order of summing them is exact
    mine = (np.arange(1000) % 17 + c.rank / 2).astype(dtype)
    summed = mine.copy(); c.allreduce(summed)
    expected = (np.arange(1000) % 17 * n + sum(r / 2 for r in range(n))).astype(dtype)
    noise = np.random.default_rng(c.rank).standard_normal(1001).astype(dtype)
    c.allreduce(noise)  # not exact, but the same bits on every rank
    root = np.random.default_rng(c.rank).standard_normal(5).astype(dtype)
    last = root.copy(); c.broadcast(root, root=0); c.broadcast(last, root=n - 1)
    report(
        rank=c.rank, name=c.name, size=c.size, local=[c.local_rank, c.local_size],
        exact=bool((summed == expected).all()), dtype=str(summed.dtype),
        noise=hashlib.sha256(noise.tobytes()).hexdigest(),
        root=hashlib.sha256(root.tobytes()).hexdigest(),
        last=hashlib.sha256(last.tobytes()).hexdigest(),
        values=c.allreduce_values([1, c.rank, 0.25]),
        any=[c.any_rank(c.rank == n - 1), c.any_rank(False)])
"""


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_broadcast_and_allreduce_on_n_ranks(n, dtype):
    ranks = ok(mpiexec(n, COLLECTIVES.format(dtype=dtype)), n)
    for rank, line in enumerate(ranks):
        assert line["name"] == "mpi" and line["size"] == n and line["local"] == [rank, n]
        assert line["exact"] and line["dtype"] == dtype
        assert line["values"] == [n, sum(range(n)), 0.25 * n]
        assert line["any"] == [True, False]
    assert len({line["noise"] for line in ranks}) == 1  # bit-identical everywhere
    assert len({line["root"] for line in ranks}) == 1
    assert len({line["last"] for line in ranks}) == 1 and ranks[0]["root"] != ranks[0]["last"]


def test_a_strided_buffer_is_refused():
    result = mpiexec(2, """
        import numpy as np, gpunn.distributed as d
        c = d.init("cpu")
        try:
            c.allreduce(np.zeros((4, 4))[:, 0])
        except d.InvalidArgumentError as error:
            report(rank=c.rank, error=str(error))
    """)
    for line in ok(result, 2):
        assert line["error"].startswith("allreduce needs a contiguous array")


def test_a_configuration_that_differs_is_refused_on_every_rank():
    result = mpiexec(3, """
        import gpunn, gpunn.distributed as d
        c = d.init("cpu")
        c.agree("data set size", 300)
        try:
            c.agree("model", {"layers": [2, 64, 3], "seed": 1 if c.rank == 2 else 0})
        except gpunn.GpunnError as error:
            report(rank=c.rank, error=str(error))
    """)
    for line in ok(result, 3):
        assert line["error"].startswith("The ranks disagree on model: "
                                        'rank 0: {"layers": [2, 64, 3], "seed": 0}; '
                                        'rank 2: {"layers": [2, 64, 3], "seed": 1}. ')


# ---- faults --------------------------------------------------------------------------------------

FAULTS = {
    # rank 1 raises while rank 0 waits in an allreduce that will never complete
    "guard": """
        import numpy as np, gpunn.distributed as d
        c = d.init("cpu")
        with d.guard():
            if c.rank == 1:
                raise ValueError("bad batch 7")
            c.allreduce(np.zeros(4))
    """,
    "uncaught": """
        import numpy as np, gpunn.distributed as d
        c = d.init("cpu")
        if c.rank == 1:
            raise ValueError("bad batch 7")
        c.allreduce(np.zeros(4))
    """,
    "sys-exit": """
        import sys, numpy as np, gpunn.distributed as d
        c = d.init("cpu")
        with d.guard():
            if c.rank == 1:
                sys.exit("bad batch 7")
            c.allreduce(np.zeros(4))
    """,
    "sigkill": """
        import os, signal, numpy as np, gpunn.distributed as d
        c = d.init("cpu")
        if c.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        c.allreduce(np.zeros(4))
    """,
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failing_rank_ends_every_rank_within_seconds(fault):
    result = mpiexec(3, FAULTS[fault])
    assert result.returncode != 0
    assert result.seconds < 15, f"{fault}: took {result.seconds:.1f} s"
    if fault in ("guard", "uncaught"):
        assert "gpunn: rank 1 failed: ValueError: bad batch 7" in result.stderr
    elif fault == "sys-exit":
        assert "gpunn: rank 1 failed: SystemExit: bad batch 7" in result.stderr
    else:
        assert "signal 9" in result.stdout + result.stderr


# ---- device arrays, on the CuPy double (simulated devices, a simulated NCCL) ---------------------

DEVICES = """
    import gpunn.distributed as d
    c = d.init("{device}")
    import cupy
    backend = c.backend if c.name == "nccl" else __import__("gpunn").device("cuda:0")
    with backend.activate():
        x = cupy.arange(1000, dtype=cupy.float32) * (c.rank + 1)
        c.allreduce(x)
        y = cupy.full(4, float(c.rank), dtype=cupy.float64)
        c.broadcast(y, root=c.size - 1)
    other = (c.local_rank + 1) % c.local_size
    with cupy.cuda.Device(other):
        elsewhere = cupy.zeros(3, dtype=cupy.float32)
    refused = []
    if c.name == "nccl":
        for call in (lambda: c.allreduce(elsewhere),
                     lambda: c.communicator.allReduce(elsewhere.data.ptr, elsewhere.data.ptr,
                                                      3, 7, 0, 0)):
            try:
                call()
            except Exception as error:
                refused.append(f"{{type(error).__name__}}: {{error}}")
    report(rank=c.rank, name=c.name, device=c.device, sum=x.get()[:3].tolist(),
           total=float(x.get().sum()), y=y.get().tolist(), refused=refused)
"""


def double_env(n: int) -> dict:
    return {"PYTHONPATH": os.pathsep.join([str(CUPY_DOUBLE), os.environ.get("PYTHONPATH", "")]),
            "GPUNN_CUPY_DOUBLE_DEVICES": str(n)}


@pytest.mark.parametrize("n", [2, 3])
def test_nccl_allreduce_of_device_buffers_on_simulated_gpus(n):
    ranks = ok(mpiexec(n, DEVICES.format(device="cuda"), env=double_env(n)), n)
    triangle = n * (n + 1) / 2
    for rank, line in enumerate(ranks):
        assert line["name"] == "nccl" and line["device"] == f"cuda:{rank}"
        assert line["sum"] == [0.0, triangle, 2 * triangle]
        assert line["total"] == triangle * 999 * 1000 / 2
        assert line["y"] == [n - 1.0] * 4
        gpunn_check, nccl_check = line["refused"]
        assert gpunn_check.startswith("InvalidArgumentError") and f"cuda:{rank}" in gpunn_check
        assert nccl_check.startswith("NcclError: NCCL_ERROR_INVALID_ARGUMENT")


@pytest.mark.parametrize("local_rank, visible, expected", [
    (0, 4, "cuda:0"), (3, 4, "cuda:3"),  # mpiexec: every rank sees every GPU of its machine
    (3, 1, "cuda:0"),  # srun --gpus-per-task=1: each rank sees its own GPU as device 0
    (3, 2, "cuda:1"),  # --gpus-per-task=2: local rank 3 sees GPUs 6 and 7 as 0 and 1
])
def test_each_rank_takes_a_gpu_it_can_see(local_rank, visible, expected):
    assert distributed.rank_device(local_rank, visible) == expected


def test_ranks_shown_one_gpu_each_train_on_it():
    # As Slurm's srun --gpus-per-task=1 starts them: each rank sees its GPU as device 0.
    code = """
        import os
        rank = os.environ.get("PMI_RANK") or os.environ["OMPI_COMM_WORLD_RANK"]
        os.environ["GPUNN_CUPY_DOUBLE_VISIBLE_DEVICES"] = rank
        import cupy, gpunn.distributed as d
        c = d.init("cuda")
        with c.backend.activate():
            x = cupy.full(3, c.rank + 1.0, dtype=cupy.float32)
            c.allreduce(x)
            gpu = cupy.cuda.runtime.getDeviceProperties(0)["pciBusID"]
        report(rank=c.rank, device=c.device, gpu=gpu, sum=x.get().tolist())
    """
    for rank, line in enumerate(ok(mpiexec(2, code, env=double_env(2)), 2)):
        assert line == {"rank": rank, "device": "cuda:0", "gpu": rank, "sum": [3.0] * 3}


def test_two_ranks_on_a_machine_with_one_gpu_are_told_why_nccl_refuses_them():
    result = mpiexec(2, """
        import gpunn.distributed as d
        try:
            d.init("cuda")
        except Exception as error:
            report(rank=__import__("mpi4py.MPI").MPI.COMM_WORLD.rank, error=str(error),
                   kind=type(error).__name__)
    """, env=double_env(1))
    for line in ok(result, 2):
        assert line["kind"] == "GpunnError", line
        assert line["error"].startswith(f"NCCL could not start on rank {line['rank']} (cuda:0")
        assert "Duplicate GPU" in line["error"] and "one rank per GPU" in line["error"]


def test_mpi_moves_device_arrays_through_the_host():
    ranks = ok(mpiexec(2, DEVICES.format(device="cpu"), env=double_env(2)), 2)
    for line in ranks:
        assert line["name"] == "mpi" and line["sum"] == [0.0, 3.0, 6.0]
        assert line["y"] == [1.0] * 4


def test_two_ranks_on_one_simulated_gpu_are_refused_as_nccl_refuses_them():
    result = mpiexec(2, """
        import cupy
        from cupy.cuda import nccl
        from mpi4py import MPI
        unique = MPI.COMM_WORLD.bcast(nccl.get_unique_id(), root=0)
        try:
            nccl.NcclCommunicator(2, unique, MPI.COMM_WORLD.rank)  # both on cuda-sim:0
        except nccl.NcclError as error:
            report(rank=MPI.COMM_WORLD.rank, error=str(error))
    """, env=double_env(2))
    for line in ok(result, 2):
        assert line["error"].startswith("NCCL_ERROR_INVALID_USAGE")
        assert "Duplicate GPU" in line["error"]


# ---- data-parallel training (gpunn/training.py) ------------------------------------------------

TRAINING = """
import hashlib, sys, numpy as np, gpunn as gn
comm = gn.distributed.init({device!r})
gn.seed(0)
model = gn.Model(device=comm.device or {device!r}, dtype={dtype!r})
model.add(gn.Dense(2, 32, weight_regularizer_l2=1e-4)); model.add(gn.ReLU())
model.add(gn.Dense(32, 3)); model.add(gn.Softmax())
model.set(loss=gn.CategoricalCrossentropy(), optimizer=gn.Adam(learning_rate=0.01, decay=1e-3),
          accuracy=gn.CategoricalAccuracy())
model.finalize()
X, y = gn.datasets.spiral_data(50, 3, seed=1)
X_val, y_val = gn.datasets.spiral_data(20, 3, seed=2)
history = model.train(X, y, epochs=3, batch_size={batch}, validation_data=(X_val, y_val),
                      verbose=(2 if comm.rank == 0 else 0))  # step lines: all ranks reduce
flat = np.concatenate([a.ravel() for pair in model.get_parameters() for a in pair])
report(rank=comm.rank, size=comm.size, device=model.device, history=history,
       parameters=flat.tolist(), digest=hashlib.sha256(flat.tobytes()).hexdigest())
"""


def _reference(parts: int, *, batch: int, dtype: str = "float32"):
    """One process: each global batch's gradient as the sum, in rank order, of ``parts`` shares'
    gradients weighted by their rows (what ``parts`` ranks compute); ``parts=1`` is the plain
    single-process step. Returns the flat parameters after 3 epochs."""
    import numpy as np

    import gpunn as gn
    from gpunn.backend import host_random, streaming
    from gpunn.backend.kernels import TALLY_SIZE

    gn.seed(0)
    model = gn.Model(device="cpu", dtype=dtype)
    model.add(gn.Dense(2, 32, weight_regularizer_l2=1e-4))
    model.add(gn.ReLU())
    model.add(gn.Dense(32, 3))
    model.add(gn.Softmax())
    model.set(loss=gn.CategoricalCrossentropy(),
              optimizer=gn.Adam(learning_rate=0.01, decay=1e-3),
              accuracy=gn.CategoricalAccuracy())
    model.finalize()
    X, y = gn.datasets.spiral_data(50, 3, seed=1)
    X, y = X.astype(dtype), y
    for _ in range(3):
        order = host_random().permutation(len(X))
        Xe, ye = X[order], y[order]
        for start in range(0, len(X), batch):
            stop = min(start + batch, len(X))
            total = None
            for rank in range(parts):
                low, high = streaming.share(start, stop, rank, parts)
                if model.backend.fused_softmax_ce:  # the step's one softmax_ce pass (host kernels)
                    logits = model._forward(Xe[low:high], training=True, layers=model.layers[:-1])
                    _, dlogits = model.backend.softmax_ce(logits, ye[low:high],
                                                          np.zeros(TALLY_SIZE))
                    model._backward_from(dlogits, model.layers[:-1])
                else:
                    output = model._forward(Xe[low:high], training=True)
                    model._backward(output, ye[low:high])
                part = model.gradients * ((high - low) / (stop - start)) if parts > 1 \
                    else model.gradients.copy()
                total = part if total is None else total + part
            model.gradients[...] = total
            model.optimizer.pre_update_params()
            model.optimizer.update_params(model.parameters, model.gradients)
            model.optimizer.post_update_params()
        model.validation = None  # the validation pass draws nothing: nothing to mirror
    return np.concatenate([a.ravel() for pair in model.get_parameters() for a in pair])


def test_two_ranks_train_as_one_process_summing_the_two_half_batches():
    import numpy as np

    result = mpiexec(2, TRAINING.format(device="cpu", dtype="float32", batch=32))
    ranks = ok(result, 2)
    assert ranks[0]["digest"] == ranks[1]["digest"]  # the replicas are bit-identical
    # Only rank 0 asked for step lines; the other took part in them, and rank 0 alone printed.
    assert result.stdout.count("epoch: 1\n") == 1 and result.stdout.count("step: 4,") == 3
    trained = np.array(ranks[0]["parameters"], dtype=np.float32)
    np.testing.assert_array_equal(trained, _reference(2, batch=32))
    np.testing.assert_allclose(trained, _reference(1, batch=32), rtol=1e-6, atol=1e-7)
    assert ranks[0]["history"] == ranks[1]["history"]  # metrics reduced before they are logged


def test_by_default_rank_0_alone_prints_a_summary_line_per_epoch():
    result = mpiexec(2, """
        import gpunn as gn
        comm = gn.distributed.init("cpu")
        gn.seed(0)
        model = gn.Model(device="cpu")
        model.add(gn.Dense(2, 3)); model.add(gn.Softmax())
        model.set(loss=gn.CategoricalCrossentropy(), optimizer=gn.SGD(),
                  accuracy=gn.CategoricalAccuracy())
        model.finalize()
        X, y = gn.datasets.spiral_data(10, 3, seed=1)
        model.train(X, y, epochs=2, batch_size=10)
        report(rank=comm.rank)
    """)
    ok(result, 2)
    assert [line.split(": ")[0] for line in result.stdout.splitlines()] == ["epoch 1/2",
                                                                           "epoch 2/2"]


def test_three_ranks_and_a_batch_that_does_not_divide_by_them():
    import numpy as np

    ranks = ok(mpiexec(3, TRAINING.format(device="cpu", dtype="float64", batch=32)), 3)
    assert len({line["digest"] for line in ranks}) == 1
    trained = np.array(ranks[0]["parameters"])
    # 32 rows as 11 + 11 + 10; MPI may sum three ranks in any order: rounding, in float64.
    np.testing.assert_allclose(trained, _reference(3, batch=32, dtype="float64"), rtol=1e-12)
    np.testing.assert_allclose(trained, _reference(1, batch=32, dtype="float64"), rtol=1e-9)


def test_data_parallel_metrics_are_those_of_the_whole_data(tmp_path):
    ranks = ok(mpiexec(2, TRAINING.format(device="cpu", dtype="float64", batch=150)), 2)
    single = subprocess.run(
        [sys.executable, "-c", REPORT_FUNCTION + TRAINING.format(device="cpu", dtype="float64",
                                                                 batch=150)],
        capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, "GPUNN_TEST_RESULTS": str(tmp_path)})
    assert single.returncode == 0, single.stderr
    alone = json.loads((tmp_path / "0.json").read_text())["history"]
    for key, values in ranks[0]["history"].items():
        assert values == pytest.approx(alone[key], rel=1e-9), key


def test_ranks_that_disagree_on_the_seed_are_refused():
    result = mpiexec(2, """
        import gpunn as gn
        comm = gn.distributed.init("cpu")
        gn.seed(comm.rank)
        model = gn.Model(device="cpu")
        model.add(gn.Dense(2, 3)); model.add(gn.Softmax())
        model.set(loss=gn.CategoricalCrossentropy(), optimizer=gn.SGD(),
                  accuracy=gn.CategoricalAccuracy())
        model.finalize()
        X, y = gn.datasets.spiral_data(10, 3, seed=1)
        model.train(X, y, epochs=1, verbose=False)
    """)
    assert result.returncode != 0 and result.seconds < 30
    assert "The ranks disagree on random seed" in result.stderr
    assert "gpunn: rank" in result.stderr and "failed" in result.stderr


def test_mpiexec_gpunn_train_writes_one_run_that_evaluate_confirms(tmp_path):
    out = tmp_path / "run"
    gpunn = str(Path(sys.executable).parent / "gpunn")
    require(MPIEXEC is not None and HAS_MPI4PY, f"needs mpiexec and mpi4py: {distributed.MPI_HINT}")
    trained = subprocess.run([MPIEXEC, "-n", "2", gpunn, "train", "--dataset", "spiral",
                              "--epochs", "50", "--out", str(out), "--seed", "0", "--device",
                              "cpu"], capture_output=True, text=True, timeout=TIMEOUT)
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.startswith("data-parallel: 2 processes (mpi), each on cpu")
    assert trained.stdout.count("wrote ") == 1  # rank 0 alone prints and writes
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["model.npz", "metrics.csv", "checkpoint.npz", "training.png"][:3 + plots_available()])
    assert len((out / "metrics.csv").read_text().splitlines()) == 51
    printed = trained.stdout.split("validation loss")[-1].split("accuracy ")[1].split()[0]
    evaluated = subprocess.run([gpunn, "evaluate", str(out / "model.npz"), "--dataset", "spiral",
                                "--seed", "0", "--device", "cpu"], capture_output=True, text=True,
                               timeout=TIMEOUT)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"accuracy {printed}" in evaluated.stdout


def test_a_failing_rank_in_gpunn_train_ends_the_job(tmp_path):
    require(MPIEXEC is not None and HAS_MPI4PY, f"needs mpiexec and mpi4py: {distributed.MPI_HINT}")
    gpunn = str(Path(sys.executable).parent / "gpunn")
    started = time.monotonic()
    result = subprocess.run([MPIEXEC, "-n", "2", gpunn, "train", "--dataset", "spiral",
                             "--epochs", "5", "--batch-size", "1", "--out", str(tmp_path / "r"),
                             "--device", "cpu"], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode != 0 and time.monotonic() - started < 30
    # Every rank fails alike here: the error is said once, by rank 0, with no MPI abort
    # (it was once said by each rank, followed by MPICH's "Abort(1)" line).
    assert result.stderr.count("leaves some with none") == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gpunn: error: "), result.stderr


def test_a_bad_option_under_mpiexec_is_said_once(tmp_path):
    require(MPIEXEC is not None and HAS_MPI4PY, f"needs mpiexec and mpi4py: {distributed.MPI_HINT}")
    gpunn = str(Path(sys.executable).parent / "gpunn")
    result = subprocess.run([MPIEXEC, "-n", "2", gpunn, "train", "--epochs", "0"],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--epochs" in lines[0], result.stderr


def test_a_cli_error_on_one_rank_alone_still_ends_the_job():
    started = time.monotonic()
    result = mpiexec(2, """
        import sys
        import gpunn.distributed as d
        from gpunn import cli
        from gpunn.errors import GpunnError
        comm = d.init()
        if comm.rank == 1:
            sys.exit(cli._fail(GpunnError("only this rank"), 1))
        comm.barrier()  # never passed: rank 1 does not come
    """)
    assert result.returncode != 0 and time.monotonic() - started < 30
    assert "gpunn: rank 1 failed: only this rank" in result.stderr


def plots_available() -> bool:
    from gpunn import plots

    return plots.missing() is None


def test_two_ranks_train_on_two_simulated_gpus_through_nccl():
    import numpy as np

    ranks = ok(mpiexec(2, TRAINING.format(device="cuda", dtype="float64", batch=32),
                       env=double_env(2)), 2)
    assert [line["device"] for line in ranks] == ["cuda:0", "cuda:1"]  # cuda-sim:0 and :1
    assert ranks[0]["digest"] == ranks[1]["digest"]
    # The fused kernels sum rows in another order than NumPy: rounding, in float64.
    np.testing.assert_allclose(np.array(ranks[0]["parameters"]),
                               _reference(2, batch=32, dtype="float64"), rtol=1e-9)


def test_ctrl_c_stops_every_rank_keeps_the_last_epoch_once_and_resume_goes_on(tmp_path):
    require(MPIEXEC is not None and HAS_MPI4PY, f"needs mpiexec and mpi4py: {distributed.MPI_HINT}")
    gpunn, out = str(Path(sys.executable).parent / "gpunn"), tmp_path / "run"
    command = [MPIEXEC, "-n", "2", gpunn, "train", "--dataset", "spiral", "--epochs", "1000000",
               "--out", str(out), "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        for _ in range(300):  # training has begun once the first progress line is out
            time.sleep(0.1)
            if (out / "checkpoint.npz").exists() or process.poll() is not None:
                break
        time.sleep(1)
        process.send_signal(signal.SIGINT)  # mpiexec passes Ctrl-C on to every rank
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode != 0
    assert stderr.count("interrupted: ") == 1, stderr  # rank 0 alone saves and says so
    kept = int(stderr.split("keeps epoch ")[1].split()[0])
    resumed = subprocess.run([MPIEXEC, "-n", "2", gpunn, "train", "--out", str(out), "--resume",
                              "--epochs", str(kept + 5), "--device", "cpu"],
                             capture_output=True, text=True, timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr
    assert f"trained epochs {kept + 1}-{kept + 5}" in resumed.stdout
    assert len((out / "metrics.csv").read_text().splitlines()) == kept + 5 + 1
