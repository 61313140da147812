"""The CPU's host kernels (gpunn/backend/host.py, kernels/host.cpp) against their NumPy twins.

Every op the host backend runs compiled is compared with NumpyBackend's (the reference), at
sizes that run on one thread and sizes split over the BLAS's threads: bit for bit where the
arithmetic is the same (everything but softmax_ce's exp and log, which are the C library's).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import gpunn
from gpunn.backend import host, kernels, streaming
from gpunn.backend.numpy_backend import NumpyBackend
from tests.conftest import require

TWIN = NumpyBackend()
# one chunk (under host.cpp's GRAIN) and several; the first is below MIN_ELEMENTS, run anyway
SHAPES = [(3, 5), (64, 100), (700, 129)]
DTYPES = [np.float32, np.float64]


@pytest.fixture(params=[1, 3], ids=["1-thread", "3-threads"])
def fast(request, monkeypatch):
    """The host backend, with every size sent to the kernels (none left to NumPy), on the
    calling thread alone and on three (whatever the BLAS uses and the cores)."""
    library, status = host.load()
    require(library is not None, f"the host kernels are off: {status.get('reason')}")
    monkeypatch.setattr(host, "MIN_ELEMENTS", 0)
    library.gpunn_host_set_thread_source(None, request.param)
    assert library.gpunn_host_threads() == request.param
    yield host.HostBackend(library)
    library.gpunn_host_set_thread_source(host._blas_thread_count(), host._max_threads())


def _data(shape, dtype, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    x.flat[::7] = 0.0  # ReLU's edge
    x.flat[3] = np.nan
    return x


def _same(result, expected):
    """Equal bit for bit (NaN where NaN)."""
    assert result.dtype == expected.dtype and result.shape == expected.shape
    assert result.tobytes() == np.asarray(expected).tobytes()


def test_the_cpu_backend_is_the_host_backend_when_the_kernels_compile():
    library, status = host.load()
    require(library is not None, f"the host kernels are off: {status.get('reason')}")
    assert type(gpunn.device("cpu")) is host.HostBackend
    assert gpunn.device("cpu").fused_softmax_ce and not gpunn.device("cpu").fused


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_ops_equal_the_twins_bit_for_bit(fast, shape, dtype):
    x, dy = _data(shape, dtype), _data(shape, dtype, seed=1)
    b = _data((1, shape[1]), dtype, seed=2)
    _same(fast.relu(x), TWIN.relu(x))
    _same(fast.relu_backward(dy, x), TWIN.relu_backward(dy, x))
    _same(fast.bias_add(x, b), TWIN.bias_add(x, b))
    _same(fast.bias_relu(x, b), TWIN.bias_relu(x, b))
    into = x.copy()  # in place, as Dense.forward calls it
    _same(fast.bias_relu(into, b, out=into), TWIN.bias_relu(x, b))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("diverged", [False, True])
def test_softmax_ce_equals_the_twin_to_an_ulp(fast, shape, dtype, diverged):
    rows, cols = shape
    logits = (np.random.default_rng(0).standard_normal(shape) * 4).astype(dtype)
    labels = np.random.default_rng(1).integers(0, cols, rows)
    if diverged:
        logits[0, 0] = np.nan  # a diverged row
        labels[-1] = cols  # outside the classes: a NaN loss
    tally, expected_tally = np.zeros(kernels.TALLY_SIZE), np.zeros(kernels.TALLY_SIZE)
    tally[kernels.TALLY_ITERATIONS] = expected_tally[kernels.TALLY_ITERATIONS] = 5
    probs, dlogits = fast.softmax_ce(logits, labels, tally, scale_rows=2 * rows)
    expected = TWIN.softmax_ce(logits, labels, expected_tally, scale_rows=2 * rows)
    ulp = float(np.finfo(dtype).eps)
    # exp is the C library's, and a row's sum is added in order (NumPy's is a BLAS product)
    for result, twin in zip((probs, dlogits), expected):
        np.testing.assert_allclose(result, twin, rtol=32 * ulp, atol=ulp * 1e-6)
    # the loss sum in float64 of nearly the same losses, in another order; the counts exact
    assert tally[kernels.TALLY_LOSS] == pytest.approx(expected_tally[kernels.TALLY_LOSS],
                                                      rel=max(8 * ulp, 1e-12), nan_ok=True)
    assert tally[1:].tolist() == expected_tally[1:].tolist()
    assert tally[kernels.TALLY_NONFINITE] == (0 if not diverged else 2 if rows > 1 else 1)


@pytest.mark.parametrize("rule", ["SGD", "SGD-momentum", "Adagrad", "RMSprop", "Adam"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [100, 300_000])
def test_optimizer_steps_equal_the_books_rules_bit_for_bit(fast, rule, dtype, size):
    def optimizer(backend):
        name, momentum = rule.split("-")[0], rule.endswith("momentum")
        options = {"momentum": 0.9} if momentum else {}
        made = gpunn.optimizers.OPTIMIZERS[name](learning_rate=0.01, decay=1e-3, **options)
        made.backend = backend
        return made

    rng = np.random.default_rng(3)
    params = rng.standard_normal(size).astype(dtype)
    runs = {}
    for backend in (fast, TWIN):
        p, opt = params.copy(), optimizer(backend)
        for step in range(4):  # decay and the step count change the rate each step
            gradients = np.random.default_rng(step).standard_normal(size).astype(dtype)
            opt.pre_update_params()
            opt.update_params(p, gradients)
            opt.post_update_params()
        runs[backend is fast] = p, opt.saved_state()
    _same(runs[True][0], runs[False][0])
    for name, array in runs[False][1].items():
        _same(runs[True][1][name], array)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [10, 40_000, 1_000_003])
def test_all_finite_finds_an_inf_or_nan_anywhere(fast, dtype, size):
    x = np.ones(size, dtype)
    assert fast.all_finite(x)
    for bad in (np.inf, -np.inf, np.nan):
        for where in (0, size // 2 + 1, size - 1):
            x[where] = bad
            assert not fast.all_finite(x) and not TWIN.all_finite(x)
            x[where] = 1.0
    x[-1] = np.finfo(dtype).max  # the largest finite number is finite
    assert fast.all_finite(x)


def test_other_arrays_take_the_numpy_code(fast):
    x = _data((40, 60), np.float32)
    strided = x[:, ::2]
    _same(fast.relu(strided), TWIN.relu(strided))
    half = x.astype(np.float16)
    _same(fast.bias_relu(half, np.ones((1, 60), np.float32)),
          TWIN.bias_relu(half, np.ones((1, 60), np.float32)))
    with pytest.raises(gpunn.InvalidArgumentError, match="bias_add expects"):
        fast.bias_add(x, np.ones((1, 3), np.float32))


def test_the_threads_follow_the_blas():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    library, status = host.load()
    require(library is not None, f"the host kernels are off: {status.get('reason')}")
    cores = len(os.sched_getaffinity(0))
    try:
        library.gpunn_host_set_thread_source(host._blas_thread_count(), 0)  # no cap
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            assert library.gpunn_host_threads() == 1
        with threadpoolctl.threadpool_limits(limits=cores, user_api="blas"):
            assert library.gpunn_host_threads() == cores
        library.gpunn_host_set_thread_source(host._blas_thread_count(), 1)  # GPUNN_HOST_THREADS=1
        with threadpoolctl.threadpool_limits(limits=cores, user_api="blas"):
            assert library.gpunn_host_threads() == 1
    finally:
        library.gpunn_host_set_thread_source(host._blas_thread_count(), host._max_threads())


def test_an_arrays_address_is_its_first_elements():
    # views at an offset (a batch's labels), read-only arrays (np.load's memory maps), empty ones
    x = np.arange(100, dtype=np.int64).reshape(10, 10)
    frozen = x.copy()
    frozen.flags.writeable = False
    for array in (x, x[3:5], x.ravel()[7:], frozen, frozen[2:], x[:0]):
        assert host._address(array) == array.ctypes.data


def _threads(backend, count):
    backend.library.gpunn_host_set_thread_source(None, count)


def test_a_result_does_not_depend_on_the_threads(fast):
    # softmax_ce's loss is a float64 sum over chunks of rows: added in chunk order, whichever
    # thread ran which chunk
    logits = np.random.default_rng(0).standard_normal((5000, 10)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 10, 5000)
    results = []
    for count in (1, 2, 5, 1):
        _threads(fast, count)
        tally = np.zeros(kernels.TALLY_SIZE)
        results.append((*fast.softmax_ce(logits, labels, tally), tally))
    for result in results[1:]:
        for a, b in zip(result, results[0]):
            _same(a, b)


def test_ops_from_several_python_threads_at_once_are_right(fast):
    # ctypes lets go of the GIL: an op that finds the pool busy runs on its caller alone
    import concurrent.futures

    _threads(fast, 2)
    arrays = [_data((400, 300), np.float32, seed) for seed in range(8)]

    def relu_many(x):
        return [fast.relu(x) for _ in range(20)][-1]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(relu_many, arrays))
    for x, result in zip(arrays, results):
        _same(result, TWIN.relu(x))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this system")
def test_a_forked_child_makes_its_own_threads(fast):
    # The child has none of the parent's workers: with the parent's pool it would wait forever.
    _threads(fast, 2)
    x = _data((400, 300), np.float32)
    _same(fast.relu(x), TWIN.relu(x))  # the parent's pool exists now
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child's exit code says how it went)
        ok = fast.relu(x).tobytes() == TWIN.relu(x).tobytes()
        os.write(writer, b"1" if ok else b"0")
        os._exit(0)
    os.close(writer)
    import select

    ready, _, _ = select.select([reader], [], [], 60)
    assert ready, "the forked child's op did not end within 60 s"
    assert os.read(reader, 1) == b"1"
    os.waitpid(child, 0)
    os.close(reader)


def _train(backend, X, y, epochs=2, **options):
    gpunn.seed(5)
    model = gpunn.Model(device=backend)
    model.add(gpunn.Dense(X.shape[1], 64, device=backend))
    model.add(gpunn.ReLU(device=backend))
    model.add(gpunn.Dense(64, 3, device=backend))
    model.add(gpunn.Softmax(device=backend))
    model.set(loss=gpunn.CategoricalCrossentropy(), optimizer=gpunn.Adam(learning_rate=0.01),
              accuracy=gpunn.CategoricalAccuracy())
    model.finalize()
    history = model.train(X, y, epochs=epochs, batch_size=64, verbose=0, **options)
    return model, history


def test_training_on_the_host_kernels_follows_the_numpy_code(fast):
    X, y = gpunn.datasets.spiral_data(200, 3, seed=0)
    fast_model, fast_history = _train(fast, X, y, shuffle=True)
    twin_model, twin_history = _train(TWIN, X, y, shuffle=True)
    np.testing.assert_allclose(fast_history["loss"], twin_history["loss"], rtol=1e-5)
    assert fast_history["accuracy"] == twin_history["accuracy"]
    for fast_layer, twin_layer in zip(fast_model.get_parameters(), twin_model.get_parameters()):
        for a, b in zip(fast_layer, twin_layer):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_non_finite_loss_stops_training_before_the_update(fast):
    X, y = gpunn.datasets.spiral_data(100, 3, seed=0)
    model, _ = _train(fast, X, y, epochs=1)
    before = [p.copy() for layer in model.get_parameters() for p in layer]
    model.trainable_layers[-1].weights[:] = np.inf
    with pytest.raises(gpunn.TrainingDivergedError, match="epoch 2, step 1"):
        model.train(X, y, epochs=1, batch_size=64, verbose=0, initial_epoch=1)
    after = [p for layer in model.get_parameters() for p in layer]
    assert all(np.array_equal(a, b) for a, b in zip(before[:-2], after[:-2]))


def test_shuffled_batches_are_gathered_into_one_buffer(fast):
    X = np.arange(50 * 3, dtype=np.float32).reshape(50, 3)
    y = np.arange(50)
    gpunn.seed(9)
    order = gpunn.backend.host_random().permutation(50)
    gpunn.seed(9)
    batches = [(bx.copy(), by, rows, bx.base)
               for bx, by, rows in streaming.batches(fast, X, y, 16, shuffle=True)]
    assert [rows for *_, rows, _ in batches] == [16, 16, 16, 2]
    np.testing.assert_array_equal(np.concatenate([bx for bx, *_ in batches]), X[order])
    np.testing.assert_array_equal(np.concatenate([by for _, by, *_ in batches]), y[order])
    assert len({id(base) for *_, base in batches}) == 1  # one buffer, reused


def test_without_a_compiler_the_numpy_code_runs_and_info_says_why(tmp_path):
    script = ("from gpunn.backend import host; import gpunn; "
              "print(type(gpunn.device('cpu')).__name__); print(host.status_line())")
    environment = {**os.environ, "PATH": str(tmp_path), "CXX": "",
                   "GPUNN_CACHE_DIR": str(tmp_path)}
    output = subprocess.run([sys.executable, "-c", script], env=environment, check=True,
                            capture_output=True, text=True).stdout.splitlines()
    assert output[0] == "NumpyBackend"
    assert output[1].startswith("off (no C++ compiler")
    environment = {**os.environ, "GPUNN_HOST_KERNELS": "0"}
    output = subprocess.run([sys.executable, "-c", script], env=environment, check=True,
                            capture_output=True, text=True).stdout.splitlines()
    assert output == ["NumpyBackend", "off (turned off by GPUNN_HOST_KERNELS=0): the NumPy code "
                      "runs; a C++ compiler makes training on the CPU faster"]


@pytest.mark.compiler
@pytest.mark.slow
def test_the_compile_is_timed_once_then_cached(tmp_path, monkeypatch):
    require(host.compiler() is not None, "no C++ compiler")
    monkeypatch.setenv("GPUNN_CACHE_DIR", str(tmp_path))
    first = host._load()
    second = host._load()
    assert first[1]["active"] and first[1]["compile_seconds"] > 0
    assert second[1]["compile_seconds"] is None and second[1]["path"] == first[1]["path"]
    assert list(tmp_path.joinpath("host").iterdir()) == [tmp_path / "host" /
                                                          os.path.basename(first[1]["path"])]
