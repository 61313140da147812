"""Property tests: random architectures, batch sizes, dtypes and values. Gradients agree with
finite differences, float32 agrees with float64, CPU agrees with CUDA (when present), and save
then load round-trips exactly."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import numerical_gradient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpunn as gn

ACTIVATIONS = {"relu": gn.ReLU, "tanh": gn.Tanh, "sigmoid": gn.Sigmoid,
               "leaky": lambda: gn.LeakyReLU(0.1), "linear": gn.Linear}
HEADS = ("softmax-cce", "sigmoid-bce", "linear-mse", "linear-mae")
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def networks(draw):
    widths = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    return {
        "inputs": draw(st.integers(1, 5)), "widths": widths,
        "outputs": draw(st.integers(2, 4)),
        "activations": [draw(st.sampled_from(sorted(ACTIVATIONS))) for _ in widths],
        "head": draw(st.sampled_from(HEADS)),
        "batch": draw(st.integers(1, 9)),
        "l1": draw(st.sampled_from([0.0, 1e-3])), "l2": draw(st.sampled_from([0.0, 1e-2])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def _build(spec, device, dtype):
    gn.seed(spec["seed"])
    model = gn.Model(device=device, dtype=dtype)
    sizes = [spec["inputs"], *spec["widths"]]
    for n_in, n_out, activation in zip(sizes, sizes[1:], spec["activations"]):
        model.add(gn.Dense(n_in, n_out, weight_regularizer_l1=spec["l1"],
                           weight_regularizer_l2=spec["l2"], bias_regularizer_l2=spec["l2"]))
        model.add(ACTIVATIONS[activation]())
    model.add(gn.Dense(sizes[-1], spec["outputs"]))
    head = spec["head"]
    last, loss, accuracy = {
        "softmax-cce": (gn.Softmax, gn.CategoricalCrossentropy, gn.CategoricalAccuracy),
        "sigmoid-bce": (gn.Sigmoid, gn.BinaryCrossentropy,
                        lambda: gn.CategoricalAccuracy(binary=True)),
        "linear-mse": (gn.Linear, gn.MeanSquaredError, gn.RegressionAccuracy),
        "linear-mae": (gn.Linear, gn.MeanAbsoluteError, gn.RegressionAccuracy),
    }[head]
    model.add(last())
    model.set(loss=loss(), optimizer=gn.Adam(learning_rate=0.01), accuracy=accuracy())
    model.finalize()
    # random biases, so no pre-activation sits exactly on a ReLU kink
    rng = np.random.default_rng(spec["seed"])
    model.set_parameters([(w, rng.standard_normal(b.shape) * 0.5)
                          for w, b in model.get_parameters()])
    return model


def _data(spec):
    rng = np.random.default_rng(spec["seed"] + 1)
    X = rng.standard_normal((spec["batch"], spec["inputs"]))
    if spec["head"] == "softmax-cce":
        y = rng.integers(0, spec["outputs"], spec["batch"])
    elif spec["head"] == "sigmoid-bce":
        y = rng.integers(0, 2, (spec["batch"], spec["outputs"])).astype(np.float64)
    else:
        y = rng.standard_normal((spec["batch"], spec["outputs"]))
    return X, y


def _loss_and_gradient(model, X, y):
    """The training loss (data + regularization) and its gradient w.r.t. every parameter."""
    from gpunn import _data

    X, y = _data.prepare(model, X, y, "X", "y")

    def loss() -> float:
        output = model.forward(X, training=True)
        return float(model.backend.xp.mean(model.loss.forward(output, y))) + \
            model.loss.regularization_loss()

    value = loss()
    model.backward(model.layers[-1].output, y)
    return value, model.backend.to_numpy(model.gradients).copy(), loss


@PROPERTY
@given(spec=networks())
def test_model_gradients_match_finite_differences(backend, spec):
    model = _build(spec, backend, "float64")
    X, y = _data(spec)
    _, analytic, loss = _loss_and_gradient(model, X, y)
    numeric = numerical_gradient(loss, model.parameters)
    if spec["head"] == "linear-mae" or spec["l1"]:
        # |x| has a kink at 0: compare only where no difference step can cross it
        close = np.isclose(analytic, numeric, rtol=1e-4, atol=1e-6)
        assert close.mean() > 0.9, (analytic, numeric)
    else:
        np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-6)


@PROPERTY
@given(spec=networks())
def test_float32_agrees_with_float64(backend, spec):
    X, y = _data(spec)
    low = _build(spec, backend, "float32")
    high = _build(spec, backend, "float64")
    high.set_parameters(low.get_parameters())
    np.testing.assert_allclose(low.predict(X), high.predict(X), rtol=1e-4, atol=1e-5)


@PROPERTY
@given(spec=networks())
def test_devices_agree(backend, spec):
    if backend.device == "cpu":
        pytest.skip("compares CUDA with the CPU; runs when a GPU is present")
    X, y = _data(spec)
    cpu, gpu = _build(spec, "cpu", "float64"), _build(spec, backend, "float64")
    np.testing.assert_allclose(gpu.predict(X), cpu.predict(X), rtol=1e-10, atol=1e-12)
    cpu_loss, cpu_gradient, _ = _loss_and_gradient(cpu, X, y)
    gpu_loss, gpu_gradient, _ = _loss_and_gradient(gpu, X, y)
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-10)
    np.testing.assert_allclose(gpu_gradient, cpu_gradient, rtol=1e-8, atol=1e-12)


@PROPERTY
@given(spec=networks(), dtype=st.sampled_from(["float32", "float64"]),
       epochs=st.integers(1, 3))
def test_save_then_load_round_trips_exactly(backend, tmp_path_factory, spec, dtype, epochs):
    X, y = _data(spec)
    model = _build(spec, backend, dtype)
    model.train(X, y, epochs=epochs, batch_size=max(1, spec["batch"] // 2), verbose=False)
    path = tmp_path_factory.mktemp("roundtrip") / "model.npz"
    model.save(path)
    loaded = gn.Model.load(path, device=backend)
    for (w1, b1), (w2, b2) in zip(model.get_parameters(), loaded.get_parameters()):
        assert np.array_equal(w1, w2) and np.array_equal(b1, b2)
        assert w1.dtype == w2.dtype == np.dtype(dtype)
    assert loaded.optimizer.iterations == model.optimizer.iterations
    for name, array in model.optimizer.saved_state().items():
        assert np.array_equal(backend.to_numpy(array),
                              backend.to_numpy(loaded.optimizer.state[name]))
    assert np.array_equal(model.predict(X), loaded.predict(X))
