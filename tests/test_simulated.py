"""gpunn on the CuPy double where only the double can tell: faults made on demand (no NVIDIA
driver, a CuPy that cannot compile kernels, a full device whose cuBLAS fails) and the launches
and synchronisations of a training step. Collected in the ``pytest --cupy-double`` session only
(devices cuda-sim:N, not a GPU)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import cupy
import numpy as np
import pytest
from helpers import build_model

import gpunn as gn
from gpunn import backend as backend_module
from gpunn import cli, training
from gpunn.backend import cupy_backend
from gpunn.backend.graphs import GraphedStep

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/
from benchmarks import step_counts  # noqa: E402

sim = cupy._sim


@pytest.fixture
def fresh_backends(monkeypatch):
    """gpunn opens its CUDA backends again, so a fault set up in the test is met."""
    monkeypatch.setattr(backend_module, "_backends", {})
    monkeypatch.setattr(backend_module, "_auto", None)
    monkeypatch.setattr(cupy_backend, "_modules", {})


def test_no_nvidia_driver_is_said_plainly(monkeypatch, fresh_backends, capsys):
    monkeypatch.setattr(sim, "driver_version", 0)
    with pytest.raises(gn.DeviceUnavailableError, match="no NVIDIA driver found") as raised:
        gn.device("cuda")
    assert "too old" not in str(raised.value)
    assert gn.device("auto").device == "cpu"
    cli.main(["info"])
    printed = capsys.readouterr().out
    assert "CUDA driver:    not found (no NVIDIA driver)" in printed and "0.0" not in printed


def test_a_gpu_older_than_the_kernels_need_is_refused_at_device_choice(monkeypatch,
                                                                       fresh_backends):
    monkeypatch.setattr(sim, "compute_capability", "52")  # Maxwell: no float64 atomicAdd
    with pytest.raises(gn.DeviceUnavailableError,
                       match=r"cuda:0 has compute capability 5\.2; gpunn's CUDA kernels need 6\.0 "
                             r"or newer .*--device cpu") as raised:
        gn.device("cuda")
    assert "compile" not in str(raised.value)
    assert gn.device("auto").device == "cpu"
    monkeypatch.setattr(sim, "compute_capability", "60")  # Pascal: enough
    assert gn.device("cuda").device == "cuda:0"


def test_a_cupy_that_cannot_compile_fails_at_device_choice_with_the_fix(monkeypatch,
                                                                        fresh_backends):
    def no_headers(self, name):
        raise RuntimeError("Failed to find CUDA headers. Please install CUDA toolkit headers "
                           "(e.g., pip install cupy-cuda12x[ctk]) or specify CUDA_PATH "
                           "environment variable.")

    monkeypatch.setattr(cupy.RawModule, "get_function", no_headers)
    with pytest.raises(gn.DeviceUnavailableError, match=r"gpunn\[cuda12\]") as raised:
        gn.device("cuda")
    assert "Failed to find CUDA headers" in str(raised.value) and "ctk" in str(raised.value)


def test_kernels_are_looked_up_once_per_device(fresh_backends):
    backend = gn.device("cuda:0")
    looked_up = sim.counters["get_function"]
    x = backend.asarray(np.ones((8, 4), np.float32))
    b = backend.asarray(np.ones((1, 4), np.float32))
    for _ in range(5):
        backend.relu_backward(backend.bias_relu(backend.relu(x), b), x)
    assert sim.counters["get_function"] == looked_up
    second = gn.device("cuda:1")
    assert sim.counters["get_function"] == looked_up + len(second._functions)


def _model(device):
    return build_model(device, (2, 256, 3))


# Once nvmath-python loads, every product goes through gpunn's handle (gpunn.backend.blas), whose
# workspace is its own: the batch's activations are what no longer fits. Without it, CuPy's own
# cuBLAS calls take their workspace from free memory.
@pytest.mark.parametrize("headroom, cause, cuda_graph, nvmath", [
    (3 * 2**20, "CUBLAS_STATUS_ALLOC_FAILED", False, False),
    (16 * 2**20, "Out of memory allocating", False, False),
    (3 * 2**20, "Out of memory allocating", False, True),
    (3 * 2**20, "Out of memory allocating", True, True)])
def test_a_full_device_is_an_out_of_memory_error_with_a_batch_hint(monkeypatch, headroom,
                                                                   cause, cuda_graph, nvmath):
    X, y = gn.datasets.spiral_data(samples=3000, classes=3, seed=0)
    model = _model("cuda:1")
    X_device, y_device = model.backend.asarray(X), model.backend.asarray(y)
    before = model.get_parameters()
    if nvmath:  # the handle and its workspace, made before the device fills up
        assert model.backend.why_no_cuda_graph() is None
    else:
        monkeypatch.setattr(model.backend, "_blas", None)
        monkeypatch.setattr(model.backend, "_blas_error", "no nvmath-python (simulated)")
    # Room for the data and parameters; then cuBLAS's workspace or the batch's activations
    # do not fit.
    monkeypatch.setattr(sim.devices[1], "capacity", sim.devices[1].allocated + headroom)
    with pytest.raises(gn.DeviceOutOfMemoryError, match=r"cuda:1 ran out of memory in epoch 1, "
                                                        r"step 1 .*Try batch_size=4500") as raised:
        model.train(X_device, y_device, epochs=1, batch_size=9000, verbose=False,
                    cuda_graph=cuda_graph)
    assert cause in str(raised.value)
    for (w0, b0), (w1, b1) in zip(before, model.get_parameters()):
        np.testing.assert_array_equal(w0, w1)
        np.testing.assert_array_equal(b0, b1)


def test_a_workspace_that_does_not_fit_now_is_tried_again_later(monkeypatch, fresh_backends):
    # An out-of-memory while making gpunn's cuBLAS handle is not remembered as "no nvmath":
    # the products fall back to CuPy's dot until the workspace fits.
    backend = gn.device("cuda:1")
    monkeypatch.setattr(sim.devices[1], "capacity", sim.devices[1].allocated + 2**20)
    assert "Out of memory" in backend.why_no_cuda_graph()
    monkeypatch.undo()
    assert backend.why_no_cuda_graph() is None


def test_cublas_alloc_failed_from_either_binding_is_out_of_memory():
    from cupy_backends.cuda.libs.cublas import CUBLASError
    from nvmath.bindings import cublas

    backend = gn.device("cuda:0")
    assert backend.is_out_of_memory(CUBLASError(3))  # through CuPy
    assert backend.is_out_of_memory(cublas.cuBLASError(3))  # through nvmath-python
    assert not backend.is_out_of_memory(cublas.cuBLASError(13))


def test_launches_and_synchronisations_per_training_step():
    # The MLP of the benchmarks (784-128-128-10, Adam) at batch 128. Issue 10's targets: at most
    # 20 launches per step and one synchronisation per epoch (verbose=False). Pinned exactly, so
    # a change that adds one fails here; lower them when a change removes some.
    graphed = step_counts.mlp_step_counts(batch_size=128)
    print(f"per training step on cuda-sim:0 (MLP 784-128-128-10, batch 128): {graphed}")
    # Copy the batch into the graph's inputs (X and y), launch the graph (whose products are
    # cuBLAS called directly: CuPy refuses its own cuBLAS calls during a capture).
    assert graphed == {"launch": 3, "raw_launch": 0, "graph_launch": 1, "sync": 0, "h2d": 0,
                       "epoch_sync": 1}
    plain = step_counts.mlp_step_counts(batch_size=128, cuda_graph=False)
    # 3 products + 2 bias+ReLU + 1 bias add, 1 softmax_ce, 3 dW + 3 db + 2 dX products,
    # 2 ReLU backward, 1 optimizer, 1 advance: 19, 8 of them gpunn's kernels.
    assert plain == {"launch": 19, "raw_launch": 8, "graph_launch": 0, "sync": 0, "h2d": 0,
                     "epoch_sync": 1}
    spiral = step_counts.spiral_step_counts()  # one full-batch step per epoch
    assert spiral["sync"] == spiral["epoch_sync"] == 1 and spiral["launch"] == 4


def test_an_mlp_epoch_replays_its_step_as_a_cuda_graph():
    # Issue 17's measure, with the double refusing cuBLAS during a capture as CuPy does: an
    # epoch of 2,048 samples at batch 128 (16 steps) of a new 784-128-128-10 MLP. The first
    # step runs plain, the second is captured and launched, the other 14 replay.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2048, 784)).astype(np.float32)
    y = rng.integers(0, 10, len(X))
    model = build_model("cuda:0", (784, 128, 128, 10))
    X_device, y_device = model.backend.asarray(X), model.backend.asarray(y)
    sim.reset_counters()
    history = model.train(X_device, y_device, epochs=1, batch_size=128, verbose=False)
    assert history.cuda_graph == "captured"
    assert sim.counters["graph_launch"] == 15 and sim.counters["sync"] <= 4


def test_a_step_with_cupys_own_products_is_not_captured_because_cublas_refuses(monkeypatch,
                                                                                caplog):
    """Why issue 17 moved the products: CuPy 14.2 refuses cuBLAS while a stream captures, so
    with the products on cupy.dot (as before, when gemm was the generic code's) the capture
    fails at the first Dense layer's product and the epoch runs without CUDA graphs."""
    monkeypatch.setattr(cupy_backend.CupyBackend, "gemm", cupy_backend.NumpyBackend.gemm)
    runners = []
    make_runner = training._runner
    monkeypatch.setattr(training, "_runner",
                        lambda *args: runners.append(make_runner(*args)) or runners[-1])
    gn.seed(0)
    model = build_model("cuda:0", step_counts.MLP)  # 784-128-128-10, Adam
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8 * 128, 784)).astype(np.float32)
    y = rng.integers(0, 10, len(X))
    sim.reset_counters()
    with caplog.at_level(logging.INFO, logger="gpunn"):
        history = model.train(X, y, epochs=1, batch_size=128, verbose=False)
    (runner,) = runners
    assert isinstance(runner, GraphedStep) and runner.graphs == {}
    assert runner.failed == (
        "the capture failed (NotImplementedError: calling cuBLAS API during stream capture is "
        "currently unsupported [CuPy double: cupy.dot of float32 (128, 784) and float32 (784, "
        "128) inside a simulated CUDA graph capture])")
    assert history.cuda_graph == f"off: {runner.failed}"
    assert sim.counters["graph_launch"] == 0
    assert [r.getMessage() for r in caplog.records if "CUDA graph" in r.getMessage()] == [
        f"gpunn: training without CUDA graphs: {runner.failed}"]


def test_every_op_the_gpu_bandwidth_benchmark_times_runs():
    # The GPU benchmark cannot be timed here; each of its ops runs once on cuda-sim:0, so a
    # GPU check does not meet a broken call first.
    from benchmarks import gpu

    backend = gn.device("cuda:0")
    with backend.activate():
        rng = cupy.random.default_rng(0)
        x, dy = (rng.standard_normal((64, 20), dtype=cupy.float32) for _ in range(2))
        b = rng.standard_normal((1, 20), dtype=cupy.float32)
        ops = gpu._ops(backend, x, dy, b, cupy.empty_like(x))
        assert {"dropout", "sgd_momentum", "adam", "softmax_ce"} <= set(ops)
        for name, (nbytes, kernel, plain) in ops.items():
            for work in (kernel, plain):
                if work is not None:
                    work()
            assert nbytes > 0, name


def test_the_softmax_benchmark_times_the_kernel_alone():
    # 64 * 17 elements are no whole number of 10-class rows, as 2^26 are not; a strided view of
    # them would be copied before every launch, and the copy timed with the kernel.
    from benchmarks import gpu

    backend = gn.device("cuda:0")
    with backend.activate():
        x = cupy.zeros((64, 17), dtype=cupy.float32)
        nbytes, kernel, _ = gpu._ops(backend, x, x, x[:1], cupy.empty_like(x))["softmax_ce"]
        sim.reset_counters()
        kernel()
    assert sim.counters["launch"] == sim.counters["raw_launch"] == 1
    rows = 64 * 17 // 10
    assert nbytes == 3 * rows * 10 * 4 + rows * 8


def test_without_the_cuda_headers_cuda_is_refused_at_device_choice(monkeypatch, fresh_backends):
    # No kernel compiles without CUDA's headers under CuPy 14.2, float32 included: the device is
    # refused with the fix, not a float32 run that fails in its first step.
    from gpunn.backend import cupy_backend, nvrtc

    monkeypatch.setattr(nvrtc, "cuda_include_dir", lambda: None)
    monkeypatch.setattr(cupy_backend, "_modules", {})
    with pytest.raises(gn.DeviceUnavailableError, match="Failed to find CUDA headers") as raised:
        gn.device("cuda")
    assert "pip install 'gpunn[cuda12]'" in str(raised.value)
