"""Losses: values against hand computation, gradients against finite differences, and the
combined softmax + cross-entropy gradient against the two-step one."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import build_model, check_loss_gradients

import gpunn
from gpunn.losses import SoftmaxCategoricalCrossentropy

RNG = np.random.default_rng(0)


def _probabilities(samples, classes):
    logits = RNG.standard_normal((samples, classes))
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("labels", ["indices", "one-hot"])
def test_categorical_crossentropy_gradient(backend, labels):
    y = np.array([0, 2, 1, 2])
    y_true = y if labels == "indices" else np.eye(3)[y]
    check_loss_gradients(backend, gpunn.CategoricalCrossentropy(), _probabilities(4, 3), y_true)


def test_binary_crossentropy_gradient(backend):
    y_pred = RNG.uniform(0.05, 0.95, size=(5, 2))
    y_true = RNG.integers(0, 2, size=(5, 2)).astype(np.float64)
    check_loss_gradients(backend, gpunn.BinaryCrossentropy(), y_pred, y_true)


@pytest.mark.parametrize("make", [gpunn.MeanSquaredError, gpunn.MeanAbsoluteError])
def test_regression_loss_gradients(backend, make):
    y_true = RNG.standard_normal((6, 2))
    y_pred = y_true + np.where(RNG.random((6, 2)) < 0.5, -0.3, 0.3)  # away from MAE's kink
    check_loss_gradients(backend, make(), y_pred, y_true)


def test_loss_values_by_hand(backend):
    cce = gpunn.CategoricalCrossentropy()
    cce.to(backend)
    y_pred = backend.asarray([[0.7, 0.1, 0.2], [0.1, 0.5, 0.4], [0.02, 0.9, 0.08]])
    for y_true in ([0, 1, 1], [[1, 0, 0], [0, 1, 0], [0, 1, 0]]):
        losses = backend.to_numpy(cce.forward(y_pred, backend.asarray(y_true)))
        np.testing.assert_allclose(losses, -np.log([0.7, 0.5, 0.9]))
    mse, mae = gpunn.MeanSquaredError(), gpunn.MeanAbsoluteError()
    mse.to(backend)
    mae.to(backend)
    a, b = backend.asarray([[1.0, 2.0]]), backend.asarray([[0.0, 4.0]])
    np.testing.assert_allclose(backend.to_numpy(mse.forward(a, b)), [2.5])
    np.testing.assert_allclose(backend.to_numpy(mae.forward(a, b)), [1.5])


def test_crossentropy_clips_so_zero_probability_is_finite(backend):
    cce = gpunn.CategoricalCrossentropy()
    cce.to(backend)
    y_pred = backend.asarray(np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32))
    losses = backend.to_numpy(cce.forward(y_pred, backend.asarray([0, 0])))
    np.testing.assert_allclose(losses, [-np.log(np.float32(1e-7)), -np.log(np.float32(1 - 1e-7))],
                               rtol=1e-5)
    cce.backward(y_pred, backend.asarray([0, 0]))
    assert np.isfinite(backend.to_numpy(cce.dinputs)).all()


@pytest.mark.parametrize("labels", ["indices", "one-hot"])
def test_combined_softmax_crossentropy_gradient_equals_the_two_steps(backend, labels):
    logits = backend.asarray(RNG.standard_normal((8, 4)))
    y = RNG.integers(0, 4, size=8)
    y_true = backend.asarray(y if labels == "indices" else np.eye(4)[y])
    softmax = gpunn.Softmax(device=backend, dtype="float64")
    softmax.forward(logits)
    loss = gpunn.CategoricalCrossentropy()
    loss.to(backend)
    loss.backward(softmax.output, y_true)
    softmax.backward(loss.dinputs)
    combined = SoftmaxCategoricalCrossentropy(backend)
    combined.backward(softmax.output, y_true)
    np.testing.assert_allclose(backend.to_numpy(combined.dinputs),
                               backend.to_numpy(softmax.dinputs), rtol=1e-6, atol=1e-12)


def test_loss_accumulates_over_batches(backend):
    loss = gpunn.MeanSquaredError()
    loss.to(backend)
    loss.calculate(backend.asarray([[1.0], [3.0]]), backend.asarray([[0.0], [0.0]]))  # 1, 9
    loss.calculate(backend.asarray([[2.0]]), backend.asarray([[0.0]]))  # 4
    assert loss.calculate_accumulated() == pytest.approx(14 / 3)
    loss.new_pass()
    assert loss.calculate_accumulated() == 0.0


def test_regularization_loss_sums_every_layer(backend):
    dense = gpunn.Dense(2, 2, weight_regularizer_l1=0.5, weight_regularizer_l2=0.25,
                        bias_regularizer_l1=1.0, bias_regularizer_l2=2.0, device=backend,
                        dtype="float64")
    dense.weights[...] = backend.asarray([[1.0, -2.0], [3.0, 0.0]])
    dense.biases[...] = backend.asarray([[-1.0, 0.5]])
    loss = gpunn.CategoricalCrossentropy()
    loss.remember_trainable_layers([dense, dense])
    one = 0.5 * 6 + 0.25 * 14 + 1.0 * 1.5 + 2.0 * 1.25
    assert loss.regularization_loss() == pytest.approx(2 * one)


# ---- binary cross-entropy targets --------------------------------------------------------------

def _binary_model(backend):
    return build_model(backend, (2, 4, 1), head="sigmoid", learning_rate=0.01)


def _training_state(model):
    optimizer = model.optimizer
    return (model.backend.to_numpy(model.parameters).copy(),
            {name: model.backend.to_numpy(array).copy()
             for name, array in optimizer.saved_state().items()},
            optimizer.iterations, optimizer.current_learning_rate)


BAD_TARGETS = {
    "classes-0-1-2": (np.array([0, 1, 2, 1, 0, 2]), "values from 0 to 2"),
    "minus-1-and-1": (np.array([-1.0, 1.0, -1.0, 1.0, 1.0, -1.0]), "values from -1 to 1"),
    "above-1": (np.array([0.0, 0.5, 1.5, 1.0, 0.0, 0.25]), "values from 0 to 1.5"),
    "nan": (np.array([0.0, 1.0, np.nan, 1.0, 0.0, 1.0]), "NaN"),
    "inf": (np.array([0.0, 1.0, np.inf, 1.0, 0.0, 1.0]), "values from 0 to inf"),
}


@pytest.mark.parametrize("where", ["host", "device"])
@pytest.mark.parametrize("call", ["train", "validation_data", "evaluate"])
@pytest.mark.parametrize("targets", sorted(BAD_TARGETS))
def test_binary_crossentropy_refuses_targets_outside_0_1_before_changing_anything(
        backend, targets, call, where):
    X = RNG.standard_normal((6, 2))
    good = np.array([0, 1, 1, 0, 1, 0])
    model = _binary_model(backend)
    model.train(X, good, epochs=2, verbose=False)  # optimizer state and iterations to keep
    before = _training_state(model)
    bad, received = BAD_TARGETS[targets]
    if where == "device":
        X, bad = backend.asarray(X), backend.asarray(bad)
    name = "y_val" if call == "validation_data" else "y"
    with pytest.raises(gpunn.InvalidArgumentError,
                       match=rf"^{name} must hold targets in \[0, 1\] for BinaryCrossentropy .*"
                             rf"received {received}\. Map the classes to 0 and 1"):
        if call == "train":
            model.train(X, bad, epochs=1, verbose=False)
        elif call == "validation_data":
            model.train(X, good, epochs=1, verbose=False, validation_data=(X, bad))
        else:
            model.evaluate(X, bad)
    after = _training_state(model)
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1].keys() == before[1].keys() and before[1]
    for key in before[1]:
        np.testing.assert_array_equal(after[1][key], before[1][key], err_msg=key)
    assert after[2:] == before[2:]


def test_binary_crossentropy_accepts_labels_and_probabilities(backend):
    X = RNG.standard_normal((6, 2))
    model = _binary_model(backend)
    for y in (np.array([0, 1, 1, 0, 1, 0]), np.array([True, False] * 3),
              np.array([0.0, 0.25, 1.0, 0.5, 1.0, 0.0])):
        model.train(X, y, epochs=1, verbose=False, validation_data=(X, y))
        model.evaluate(backend.asarray(X), backend.asarray(y))
    assert model.optimizer.iterations == 3
