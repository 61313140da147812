"""Device selection, errors, and the backend ops on every available device."""

from __future__ import annotations

import logging
import sys
import types

import ml_dtypes
import numpy as np
import pytest
from helpers import assert_same, flush_subnormals, flushes, to_host

import gpunn
from gpunn import backend as backend_module
from gpunn.backend import cupy_backend, kernels

# ---- choosing a device --------------------------------------------------------------------------

def test_cpu_and_auto_on_a_machine_without_cuda(monkeypatch, caplog):
    monkeypatch.setattr(backend_module, "_auto", None)
    monkeypatch.setattr(backend_module, "_backends", {})
    monkeypatch.setattr(cupy_backend, "import_cupy", _no_cupy)
    with caplog.at_level(logging.INFO, logger="gpunn"):
        chosen = gpunn.device("auto")
    assert chosen.device == "cpu" and chosen.xp is np
    assert gpunn.device("cpu") is chosen
    (record,) = caplog.records
    assert "auto -> cpu" in record.getMessage() and "CuPy is not installed" in record.getMessage()


def _no_cupy():
    raise gpunn.DeviceUnavailableError("CUDA is not available: CuPy is not installed.")


def test_default_device_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("GPUNN_DEVICE", "cpu")
    assert gpunn.device().device == "cpu"
    monkeypatch.setenv("GPUNN_DEVICE", "tpu")
    with pytest.raises(gpunn.GpunnError, match="Unknown device 'tpu'"):
        gpunn.device()


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "cuda:-1", "gpu", "", "cuda0", "cpu:0"])
def test_unknown_device_names_are_value_errors(spec):
    with pytest.raises(gpunn.GpunnError) as raised:
        gpunn.device(spec)
    assert isinstance(raised.value, ValueError)
    assert "expected 'auto', 'cpu', 'cuda' or 'cuda:N'" in str(raised.value)


def test_a_device_that_is_not_a_string_is_a_type_error():
    with pytest.raises(gpunn.InvalidTypeError, match="received 0 of type int"):
        gpunn.device(0)


def test_explicit_cuda_without_cupy_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail
    monkeypatch.setattr(backend_module, "_backends", {})
    with pytest.raises(gpunn.DeviceUnavailableError) as raised:
        gpunn.device("cuda")
    message = str(raised.value)
    assert "CuPy is not installed" in message and "gpunn[cuda12]" in message
    assert isinstance(raised.value, gpunn.GpunnError)


def _fake_cupy(count=None, error=None, driver=12080):
    def get_device_count():
        if error is not None:
            raise RuntimeError(error)
        return count

    runtime = types.SimpleNamespace(getDeviceCount=get_device_count,
                                    driverGetVersion=lambda: driver)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))


@pytest.mark.parametrize("fake, spec, expected", [
    (_fake_cupy(count=0), "cuda", "no CUDA device was found"),
    (_fake_cupy(error="cudaErrorNoDevice: no CUDA-capable device is detected"), "cuda",
     "no CUDA device was found"),
    (_fake_cupy(error="cudaErrorInsufficientDriver: CUDA driver version is insufficient",
                driver=11040), "cuda", r"driver is too old .*supports CUDA 11\.4"),
    # With no driver at all CUDA says the same, with a driver version of 0.
    (_fake_cupy(error="cudaErrorInsufficientDriver: CUDA driver version is insufficient",
                driver=0), "cuda", "no NVIDIA driver found"),
    (_fake_cupy(count=1), "cuda:3", "cuda:3 was requested but this machine has 1 CUDA device"),
])
def test_explicit_cuda_that_cannot_be_had_says_why(monkeypatch, fake, spec, expected):
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(backend_module, "_backends", {})
    with pytest.raises(gpunn.DeviceUnavailableError, match=expected):
        gpunn.device(spec)


def test_seed_rejects_non_integers():
    with pytest.raises(gpunn.InvalidArgumentError, match="seed must be a non-negative integer"):
        gpunn.seed(-1)
    with pytest.raises(gpunn.InvalidArgumentError):
        gpunn.seed(1.5)


def test_seed_repeats_draws(backend):
    gpunn.seed(3)
    first = (backend.to_numpy(backend.uniform((5,), "float32")),
             gpunn.Dense(3, 2, device=backend).weights)
    gpunn.seed(3)
    second = (backend.to_numpy(backend.uniform((5,), "float32")),
              gpunn.Dense(3, 2, device=backend).weights)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(backend.to_numpy(first[1]), backend.to_numpy(second[1]))


def test_dropout_draws_from_a_generator_sized_for_the_device(backend):
    # CuPy's default XORWOW reads and writes 2,048 states per multiprocessor on every draw.
    if not backend.fused:
        pytest.skip("the size of CuPy's XORWOW generator: a CUDA matter")
    sms = backend.xp.cuda.Device(backend.index).attributes["MultiProcessorCount"]
    expected = cupy_backend.RANDOM_STATES_PER_SM * sms
    assert expected % 256 == 0  # CuPy's generator kernels run blocks of 256 threads, one a state
    for seed in (None, 3):
        if seed is not None:
            gpunn.seed(seed)
        assert backend.random.bit_generator._state_size() == expected


# ---- transfer and the kernel-backed ops, on every device -----------------------------------------

def test_transfer_round_trip(backend):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    on_device = backend.asarray(host)
    assert backend.is_array(on_device)
    back = backend.to_numpy(on_device)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, host)
    backend.synchronize()


def _values(dtype, shape=(37, 11), seed=0):
    values = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    values.flat[:6] = [0.0, -0.0, np.nan, np.inf, -np.inf, np.finfo(dtype).smallest_subnormal]
    return values


# References written independently of the backend, from the book's definitions.
def _relu(x):
    return np.where(x < 0, np.zeros_like(x), x)


def _relu_backward(dy, x):
    dx = dy.copy()
    dx[x <= 0] = 0
    return dx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ops_match_the_book(backend, dtype):
    x, dy = _values(dtype), _values(dtype, seed=1)
    b = _values(dtype, shape=(1, 11), seed=2)
    ftz = flushes(backend, dtype)  # float32 on CUDA: subnormals count as zero
    fx, fdy, fb = (flush_subnormals(v) if ftz else v for v in (x, dy, b))
    with np.errstate(invalid="ignore"):
        assert_same(backend, backend.relu(backend.asarray(x)), _relu(fx), ftz=ftz)
        assert_same(backend, backend.relu_backward(backend.asarray(dy), backend.asarray(x)),
                    _relu_backward(fdy, fx), ftz=ftz)
        assert_same(backend, backend.bias_add(backend.asarray(x), backend.asarray(b)), fx + fb,
                    ftz=ftz)
        assert_same(backend, backend.bias_relu(backend.asarray(x), backend.asarray(b)),
                    _relu(fx + fb), ftz=ftz)


@pytest.mark.parametrize("size", [0, 1, 1000, 70_001])
def test_ops_on_sizes_and_in_place(backend, size):
    x = _values(np.float32, shape=(size, 1)) if size >= 6 else np.ones((size, 1), np.float32)
    with np.errstate(invalid="ignore"):
        expected = _relu(x + 0.5)
        device_x = backend.asarray(x)
        result = backend.bias_relu(device_x, backend.asarray([[0.5]], dtype=np.float32),
                                   out=device_x)
        assert result is device_x
        assert_same(backend, device_x, expected)


def test_ops_on_non_contiguous_inputs(backend):
    x = _values(np.float64, shape=(20, 30))
    b = np.arange(10, dtype=np.float64).reshape(1, 10)
    view = backend.asarray(x)[::2, ::3]
    with np.errstate(invalid="ignore"):
        assert_same(backend, backend.relu(view), _relu(x[::2, ::3]))
        assert_same(backend, backend.bias_add(view, backend.asarray(b)), x[::2, ::3] + b)


def test_ops_keep_float32(backend):
    x = backend.asarray(np.ones((4, 3), np.float32))
    b = backend.asarray(np.ones((1, 3), np.float32))
    for result in (backend.relu(x), backend.relu_backward(x, x), backend.bias_add(x, b),
                   backend.bias_relu(x, b)):
        assert result.dtype == np.float32


def test_bias_of_the_wrong_length_is_refused(backend):
    x = backend.asarray(np.ones((4, 3), np.float32))
    with pytest.raises(gpunn.InvalidArgumentError, match=r"received x of shape \(4, 3\)"):
        backend.bias_add(x, backend.asarray(np.ones((1, 4), np.float32)))


def test_cuda_kernels_cover_more_than_two_to_the_31_elements(backend, monkeypatch):
    if backend.device == "cpu":
        pytest.skip("the 2^31-element launch is a CUDA check; the host kernel test covers CPU")
    # One thread per element (8,388,609 blocks, as CuPy's own elementwise kernels launch): the
    # indices past 2^31 come from blockIdx * blockDim in 64 bits. On the double the H100 grid
    # of 4,224 blocks took 70 s (each thread strides 4 MiB: a TLB miss per element); the
    # grid-stride loop's own wrap past 2^31 is test_kernels' host test.
    monkeypatch.setattr(backend, "max_blocks", 2**31 - 1)
    n = 2**31 + 3
    x = backend.xp.zeros(n, dtype=np.float32)
    x[-1] = -1.0
    x[2**31 + 1] = 3.0
    backend.relu(x, out=x)
    assert float(x[-1]) == 0.0 and float(x[2**31 + 1]) == 3.0


@pytest.mark.parametrize("shape", [(1, 1), (300, 3), (128, 10), (7, 65), (0, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_batch_reductions_match_numpy(backend, shape, dtype):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    device_x = backend.asarray(x)
    tolerance = {"rtol": 1e-5 if dtype == np.float32 else 1e-12, "atol": 1e-6}
    np.testing.assert_allclose(backend.to_numpy(backend.column_sums(device_x)),
                               x.sum(axis=0, keepdims=True), **tolerance)
    np.testing.assert_allclose(backend.to_numpy(backend.row_sums(device_x)),
                               x.sum(axis=1, keepdims=True), **tolerance)
    if shape[0]:
        np.testing.assert_array_equal(backend.to_numpy(backend.row_max(device_x)),
                                      x.max(axis=1, keepdims=True))
    assert backend.column_sums(device_x).dtype == dtype


def test_kernel_ops_run_on_their_own_device_whatever_is_current(second_cuda_device):
    # cuda:0 current, a cuda:1 backend: the output, the copies and the launch are on cuda:1.
    x = np.array([[-1.0, 2.0], [3.0, -4.0]], dtype=np.float32)
    b = np.array([[0.5, -0.5]], dtype=np.float32)
    device_x, device_b = second_cuda_device.asarray(x), second_cuda_device.asarray(b)
    assert second_cuda_device.xp.cuda.runtime.getDevice() == 0
    results = {"relu": (second_cuda_device.relu(device_x), _relu(x)),
               "relu_backward": (second_cuda_device.relu_backward(device_x, device_x),
                                 _relu_backward(x, x)),
               "bias_relu": (second_cuda_device.bias_relu(device_x[::1, ::-1], device_b),
                             _relu(x[:, ::-1] + b))}
    for name, (result, expected) in results.items():
        assert result.device.id == 1, name
        assert_same(second_cuda_device, result, expected)


# ---- the fused training-step ops: each device's result against the NumPy twins ------------------

TWIN = gpunn.backend.NumpyBackend()


def _kernel_to_compare(backend):
    """Skip on the CPU, where the op IS its NumPy twin: the comparison would prove nothing."""
    if not backend.fused:
        pytest.skip("on the CPU the op is its NumPy twin; the kernels are compared on CUDA "
                    "(and on the host build in tests/test_kernels.py)")


def _tally(backend):
    return backend.xp.zeros(kernels.TALLY_SIZE, dtype=np.float64)


def _near(backend, result, expected, dtype):
    """Equal to float rounding (NaN matches NaN): a GPU's exp and log, its FMAs and its order of
    summing a row differ from NumPy's; float32 as CUDA computes it (subnormals as zero)."""
    rtol, atol = (1e-5, 1e-7) if dtype == np.float32 else (1e-12, 1e-15)
    np.testing.assert_allclose(flush_subnormals(to_host(backend, result)),
                               flush_subnormals(np.asarray(expected)), rtol=rtol, atol=atol)


def test_only_the_cuda_backend_runs_fused_steps(backend):
    assert backend.fused == (backend.device != "cpu")
    assert hasattr(backend, "optimizer_step") == backend.fused


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (64, 10), (3, 300), (300, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_ce_matches_the_twin(backend, dtype, shape):
    _kernel_to_compare(backend)
    rows, cols = shape
    logits = (np.random.default_rng(0).standard_normal(shape) * 4).astype(dtype)
    logits[0, 0] = np.nan if rows > 2 else logits[0, 0]  # a diverged row
    labels = np.random.default_rng(1).integers(0, cols, rows)
    labels[-1] = cols - 1
    expected_tally = np.zeros(kernels.TALLY_SIZE)
    expected = TWIN.softmax_ce(logits, labels, expected_tally, scale_rows=2 * rows)
    device_tally = _tally(backend)
    probs, dlogits = backend.softmax_ce(backend.asarray(logits), backend.asarray(labels),
                                        device_tally, scale_rows=2 * rows)
    _near(backend, probs, expected[0], dtype)
    _near(backend, dlogits, expected[1], dtype)
    _near(backend, device_tally, expected_tally, np.float32 if dtype == np.float32 else dtype)
    assert to_host(backend, device_tally)[1:].tolist() == expected_tally[1:].tolist()


def test_softmax_ce_flushes_float32_subnormals_on_cuda(backend):
    # exp(-100) is a float32 subnormal: zero on CUDA (-ftz=true; the kernel also takes float64
    # arguments, the tally), kept by NumPy.
    probs, _ = backend.softmax_ce(backend.asarray(np.array([[0.0, -100.0]], np.float32)),
                                  backend.asarray(np.array([0])), _tally(backend))
    assert (to_host(backend, probs)[0, 1] == 0) == flushes(backend, np.float32)


def test_softmax_ce_twin_is_the_books_softmax_loss_and_gradient():
    # gpunn.activations.Softmax, losses.CategoricalCrossentropy (per-sample losses),
    # SoftmaxCategoricalCrossentropy (the gradient) and the argmax accuracy, on the CPU.
    logits = np.random.default_rng(2).standard_normal((40, 7)) * 5
    labels = np.random.default_rng(3).integers(0, 7, 40)
    softmax = gpunn.Softmax(device=TWIN, dtype="float64")
    combined = gpunn.losses.SoftmaxCategoricalCrossentropy(TWIN)
    loss = gpunn.CategoricalCrossentropy()
    loss.to(TWIN)
    softmax.forward(logits)
    combined.backward(softmax.output, labels)
    losses = loss.forward(softmax.output, labels)
    counts = np.zeros(kernels.TALLY_SIZE)
    probs, dlogits = TWIN.softmax_ce(logits, labels, counts)
    np.testing.assert_allclose(probs, softmax.output, rtol=1e-13)
    np.testing.assert_allclose(dlogits, combined.dinputs, rtol=1e-13, atol=1e-17)
    correct = np.count_nonzero(softmax.predictions(softmax.output) == labels)
    np.testing.assert_allclose(counts, [losses.sum(), correct, 0, 0, 0, 0, 0, 0], rtol=1e-13)
    assert gpunn.backend.numpy_backend.CLIP == gpunn.losses.CLIP


def test_softmax_ce_refuses_what_it_cannot_compute(backend):
    logits = backend.asarray(np.zeros((4, 3), np.float32))
    with pytest.raises(gpunn.InvalidArgumentError, match=r"received logits of shape \(4, 3\) "
                                                         r"and labels of shape \(3,\)"):
        backend.softmax_ce(logits, backend.asarray(np.zeros(3, np.int64)), _tally(backend))
    with pytest.raises(gpunn.InvalidArgumentError, match="float64 tally"):
        backend.softmax_ce(logits, backend.asarray(np.zeros(4, np.int64)),
                           backend.xp.zeros(4, dtype=np.float32))


def test_softmax_ce_takes_labels_of_any_integer_type(backend):
    logits = np.random.default_rng(4).standard_normal((6, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 3, 0], dtype=np.int32)
    results = []
    for device_labels in (backend.asarray(labels), backend.asarray(labels.astype(np.int64))[::1]):
        counts = _tally(backend)
        backend.softmax_ce(backend.asarray(logits), device_labels, counts)
        results.append(to_host(backend, counts))
    np.testing.assert_array_equal(results[0], results[1])


def _assert_dropout_matches_the_twin(backend, x, u, dtype):
    """The backend's dropout of ``x`` with draws ``u`` against the NumPy twin's; returns the
    twin's output and whether the comparison flushes subnormals."""
    ftz = flushes(backend, dtype)
    fx = flush_subnormals(x) if ftz else x
    with np.errstate(invalid="ignore"):
        expected_mask, expected_y = TWIN.dropout(fx, u, 0.85)
        mask, y = backend.dropout(backend.asarray(x), backend.asarray(u), 0.85)
    assert_same(backend, mask, expected_mask, ftz=ftz)
    assert_same(backend, y, expected_y, ftz=ftz)
    return expected_y, ftz


@pytest.mark.parametrize("size", [0, 1, 1000, 4099])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_matches_the_twin_bit_for_bit(backend, dtype, size):
    _kernel_to_compare(backend)
    x = _values(dtype, shape=(size,)) if size >= 6 else np.ones(size, dtype)
    u = np.random.default_rng(5).random(size, dtype=dtype)
    expected_y, ftz = _assert_dropout_matches_the_twin(backend, x, u, dtype)
    with np.errstate(invalid="ignore"):
        # in place, as the layer uses it: the mask over the samples, the output over x
        device_x, device_u = backend.asarray(x), backend.asarray(u)
        mask, y = backend.dropout(device_x, device_u, 0.85, mask=device_u, out=device_x)
        assert mask is device_u and y is device_x
        assert_same(backend, y, expected_y, ftz=ftz)


OPTIMIZERS = {
    "sgd": lambda: gpunn.SGD(learning_rate=0.5, decay=0.01),
    "sgd_momentum": lambda: gpunn.SGD(learning_rate=0.5, decay=0.01, momentum=0.9),
    "adagrad": lambda: gpunn.Adagrad(learning_rate=0.3, decay=0.02),
    "rmsprop": lambda: gpunn.RMSprop(learning_rate=0.01, decay=0.03, rho=0.8),
    "adam": lambda: gpunn.Adam(learning_rate=0.02, decay=0.05, beta_1=0.8, beta_2=0.99),
}


@pytest.mark.parametrize("rule", OPTIMIZERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizer_step_matches_the_optimizers(backend, rule, dtype):
    if not backend.fused:
        pytest.skip("the NumPy twin of optimizer_step is each optimizer's _update")
    parameters = np.random.default_rng(6).standard_normal(1000).astype(dtype)
    gradients = [np.random.default_rng(7 + step).standard_normal(1000).astype(dtype)
                 for step in range(3)]
    twin = OPTIMIZERS[rule]()
    twin.backend, twin.iterations = TWIN, 4
    expected = parameters.copy()
    for grads in gradients:
        twin.pre_update_params()
        twin.update_params(expected, grads)
        twin.post_update_params()
    state = {name: backend.xp.zeros(1000, dtype=dtype) for name in kernels.OPTIMIZER_RULES[rule][0]}
    counts = backend.asarray(np.array([0.0, 0.0, 0.0, 0.0, 4.0, 1.0, 0.0, 0.0]))
    device_parameters = backend.asarray(parameters)
    for grads in gradients:
        backend.optimizer_step(rule, device_parameters, backend.asarray(grads), state,
                               twin.config(), counts)
        backend.advance(counts)
    _near(backend, device_parameters, expected, dtype)
    for name in state:
        _near(backend, state[name], twin.state[name], dtype)
    assert to_host(backend, counts).tolist() == [0, 0, 0, 0, 7, 1, 0, 0]
    # after a non-finite loss nothing moves, and the step is not counted
    counts[kernels.TALLY_NONFINITE] = 1
    before = to_host(backend, device_parameters).copy()
    backend.optimizer_step(rule, device_parameters, backend.asarray(gradients[0]), state,
                           twin.config(), counts)
    backend.advance(counts)
    np.testing.assert_array_equal(to_host(backend, device_parameters), before)
    assert to_host(backend, counts).tolist() == [0, 0, 1, 0, 7, 1, 0, 0]


def test_optimizer_step_says_what_it_needs(backend):
    if not backend.fused:
        pytest.skip("the NumPy twin of optimizer_step is each optimizer's _update")
    parameters = backend.xp.zeros(4, dtype=np.float32)
    with pytest.raises(gpunn.InvalidArgumentError, match="Unknown update rule 'nesterov'"):
        backend.optimizer_step("nesterov", parameters, parameters, {}, {}, _tally(backend))
    with pytest.raises(gpunn.InvalidArgumentError, match="needs beta_2, momentums, cache"):
        backend.optimizer_step("adam", parameters, parameters, {},
                               {"learning_rate": 0.1, "decay": 0.0, "epsilon": 1e-7,
                                "beta_1": 0.9}, _tally(backend))
    with pytest.raises(gpunn.InvalidArgumentError, match="C-contiguous"):
        backend.optimizer_step("sgd", parameters, parameters.astype(np.float64), {},
                               {"learning_rate": 0.1, "decay": 0.0}, _tally(backend))


# ---- float16 and bfloat16 ops -------------------------------------------------------------------

HALVES = [np.float16, ml_dtypes.bfloat16]


def _half_kernels(backend):
    """On CUDA, the float16 and bfloat16 kernels must load here (else the ops would test the
    generic fallback, not the kernels)."""
    if backend.fused:
        assert backend.low_precision_error() is None


@pytest.mark.parametrize("dtype", HALVES)
def test_half_ops_match_the_twin(backend, dtype):
    _kernel_to_compare(backend)
    _half_kernels(backend)
    x = (_values(np.float32) * 300).astype(dtype)  # some past float16's range: inf
    dy = _values(np.float32, seed=1).astype(dtype)
    b = _values(np.float32, shape=(1, 11), seed=2) * 1000  # float32 master biases
    ftz = flushes(backend, dtype)
    fx, fdy, fb = (flush_subnormals(v) if ftz else v for v in (x, dy, b))
    with np.errstate(invalid="ignore", over="ignore"):
        assert_same(backend, backend.relu(backend.asarray(x)), TWIN.relu(fx), ftz=ftz)
        assert_same(backend, backend.relu_backward(backend.asarray(dy), backend.asarray(x)),
                    TWIN.relu_backward(fdy, fx), ftz=ftz)
        for op in ("bias_add", "bias_relu"):
            result = getattr(backend, op)(backend.asarray(x), backend.asarray(b))
            assert_same(backend, result, getattr(TWIN, op)(fx, fb), ftz=ftz)
        out = backend.asarray(x.copy())  # the CPU backend would not copy
        assert backend.bias_relu(out, backend.asarray(b), out=out) is out
        assert_same(backend, out, TWIN.bias_relu(fx, fb), ftz=ftz)


def test_half_bias_ops_add_in_float32_and_round_once(backend):
    _half_kernels(backend)
    x = np.array([[65504.0, 1.0]], dtype=np.float16)
    b = np.array([[16.0, 2.0**-11 + 2.0**-22]], dtype=np.float32)  # see test_kernels
    result = to_host(backend, backend.bias_add(backend.asarray(x), backend.asarray(b)))
    assert result.dtype == np.float16 and result.tolist() == [[np.inf, 1.0 + 2.0**-10]]


@pytest.mark.parametrize("dtype", HALVES)
def test_half_dropout_matches_the_twin(backend, dtype):
    _kernel_to_compare(backend)
    _half_kernels(backend)
    x = (_values(np.float32, shape=(4099,)) * 7).astype(dtype)
    u = np.random.default_rng(5).random(4099, dtype=np.float32)  # float32 draws
    _assert_dropout_matches_the_twin(backend, x, u, dtype)


def test_low_precision_error_says_what_to_install_and_the_ops_still_work(backend, monkeypatch):
    if not backend.fused:
        pytest.skip("the CPU computes float16 and bfloat16 with NumPy")
    fresh = type(backend).__new__(type(backend))
    fresh.__dict__.update(backend.__dict__, _low_precision_checked=False, _functions={})

    def no_headers(kernel, dtype):
        raise RuntimeError('catastrophic error: could not open source file "cuda_bf16.h"')

    monkeypatch.setattr(fresh, "_function", no_headers)
    error = fresh.low_precision_error()
    assert "cuda_bf16.h" in error and "pip install 'gpunn[cuda13]'" in error
    x = np.array([-1.0, 2.0], np.float16)  # the generic CuPy op instead of the kernel
    np.testing.assert_array_equal(to_host(fresh, fresh.relu(fresh.asarray(x))), [0.0, 2.0])


def test_the_generic_bfloat16_relu_backward_stays_bfloat16(backend):
    # Until the 16-bit kernels load (or when they cannot), relu_backward is the generic code,
    # whose where has no bfloat16 loop in CuPy 14.2: its answer must be cast back.
    if backend.fused:
        fresh = type(backend).__new__(type(backend))
        fresh.__dict__.update(backend.__dict__, _low_precision_checked=True,
                              _low_precision_error="no 16-bit kernels (simulated)")
        backend = fresh
    dvalues = np.array([1.5, -2.0, 3.0], ml_dtypes.bfloat16)
    inputs = np.array([1.0, 2.0, -1.0], ml_dtypes.bfloat16)
    result = backend.relu_backward(backend.asarray(dvalues), backend.asarray(inputs))
    assert result.dtype == dvalues.dtype
    np.testing.assert_array_equal(to_host(backend, result).astype(np.float32), [1.5, -2.0, 0.0])


# ---- the loss scaler ----------------------------------------------------------------------------

class _Scaler:
    growth_factor, backoff_factor, growth_interval, min_scale = 2.0, 0.5, 2, 2.0**-2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unscale_and_advance_match_the_twin(backend, dtype):
    _kernel_to_compare(backend)
    rng = np.random.default_rng(11)
    counts, expected = _tally(backend), np.zeros(kernels.TALLY_SIZE)
    counts[kernels.TALLY_SCALE] = expected[kernels.TALLY_SCALE] = 3.0  # 1 / 3 is inexact
    for step in range(12):
        grads = (rng.standard_normal(1000) * 100).astype(dtype)
        if step in (2, 3, 7):
            grads[step] = (np.inf, np.nan, -np.inf)[step % 3]
        device_grads = backend.asarray(grads)
        backend.unscale(device_grads, counts)
        backend.advance(counts, _Scaler())
        with np.errstate(invalid="ignore"):
            TWIN.unscale(grads, expected)
        TWIN.advance(expected, _Scaler())
        assert_same(backend, device_grads, grads, ftz=flushes(backend, dtype))
        np.testing.assert_array_equal(to_host(backend, counts), expected, err_msg=f"step {step}")
    assert expected[kernels.TALLY_SKIPPED] == 3 and expected[kernels.TALLY_ITERATIONS] == 9
    # and without a scaler: no scaling, and an overflow is a divergence
    backend.unscale(backend.asarray(np.array([np.inf], dtype)), counts)
    backend.advance(counts)
    assert to_host(backend, counts)[kernels.TALLY_NONFINITE] == 1


def test_unscale_refuses_what_it_cannot_scale_in_place(backend):
    if not backend.fused:
        pytest.skip("NumPy scales any array in place")
    with pytest.raises(gpunn.InvalidArgumentError, match="C-contiguous float32 or float64"):
        backend.unscale(backend.xp.zeros(4, dtype=np.float16), _tally(backend))
