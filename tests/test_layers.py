"""Dense, Dropout and Standardize, on every available device."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_layer_gradients

import gpunn


def test_dense_initialises_as_in_the_book(backend):
    gpunn.seed(0)
    dense = gpunn.Dense(784, 128, device=backend)
    weights = backend.to_numpy(dense.weights)
    assert weights.shape == (784, 128) and weights.dtype == np.float32
    assert abs(weights.std() - 0.01) < 0.0005 and abs(weights.mean()) < 0.0005
    biases = backend.to_numpy(dense.biases)
    assert biases.shape == (1, 128) and not biases.any()


def test_dense_forward_is_inputs_times_weights_plus_biases(backend):
    dense = gpunn.Dense(3, 2, device=backend)
    dense.biases[...] = backend.asarray([[0.5, -0.5]], dtype="float32")
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    dense.forward(backend.asarray(x))
    expected = x @ backend.to_numpy(dense.weights) + np.array([[0.5, -0.5]], np.float32)
    np.testing.assert_allclose(backend.to_numpy(dense.output), expected, rtol=1e-6)
    assert dense.output.dtype == np.float32


@pytest.mark.parametrize("regularizers", [
    {},
    {"weight_regularizer_l1": 0.01, "bias_regularizer_l1": 0.02},
    {"weight_regularizer_l2": 0.03, "bias_regularizer_l2": 0.04},
])
def test_dense_gradients_match_finite_differences(backend, regularizers):
    dense = gpunn.Dense(4, 3, **regularizers, device=backend)
    dense.biases[...] = backend.asarray([[0.1, -0.2, 0.3]], dtype="float32")
    inputs = np.random.default_rng(1).standard_normal((6, 4))
    check_layer_gradients(backend, dense, inputs)


def test_dense_refuses_inputs_of_the_wrong_width(backend):
    dense = gpunn.Dense(784, 128, device=backend)
    with pytest.raises(gpunn.InvalidArgumentError,
                       match=r"Dense\(784, 128\) expects inputs of shape \(batch, 784\); "
                             r"received shape \(2, 3\)"):
        dense.forward(np.ones((2, 3)))


@pytest.mark.parametrize("arguments", [(0, 3), (3, -1), (2.5, 3), ("2", 3)])
def test_dense_refuses_bad_sizes(arguments):
    with pytest.raises(gpunn.GpunnError, match="n_"):
        gpunn.Dense(*arguments, device="cpu")


def test_dense_refuses_negative_regularization():
    with pytest.raises(gpunn.InvalidArgumentError, match="weight_regularizer_l2"):
        gpunn.Dense(2, 3, weight_regularizer_l2=-1.0, device="cpu")


def test_dense_moves_between_dtypes(backend):
    dense = gpunn.Dense(2, 3, device="cpu").to(backend, "float64")
    assert dense.weights.dtype == np.float64 and backend.is_array(dense.weights)


def test_dropout_scales_kept_values_and_is_identity_at_inference(backend):
    dropout = gpunn.Dropout(0.25, device=backend)
    x = backend.asarray(np.ones((400, 250), np.float32))
    dropout.forward(x, training=True)
    out = backend.to_numpy(dropout.output)
    assert set(np.unique(out)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((out == 0).mean() - 0.25) < 0.01
    dropout.backward(backend.asarray(np.ones((400, 250), np.float32)))
    np.testing.assert_array_equal(backend.to_numpy(dropout.dinputs), out)
    dropout.forward(x, training=False)
    np.testing.assert_array_equal(backend.to_numpy(dropout.output), 1.0)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_dropout_refuses_rates_outside_zero_to_one(rate):
    with pytest.raises(gpunn.InvalidArgumentError, match="rate must be"):
        gpunn.Dropout(rate, device="cpu")


def test_standardize_forward_is_inputs_minus_mean_over_std(backend):
    layer = gpunn.Standardize([1000.0, 0.0, -2.0], [10.0, 1e-3, 1.0], device=backend)
    x = np.array([[1010.0, 2e-3, -2.0], [990.0, -1e-3, 0.0]], np.float32)
    layer.forward(backend.asarray(x))
    np.testing.assert_allclose(backend.to_numpy(layer.output), [[1, 2, 0], [-1, -1, 2]],
                               rtol=1e-5, atol=1e-6)
    assert layer.output.dtype == np.float32 and not layer.trainable
    assert layer.low_precision is False  # runs in the model's dtype under any policy


def test_standardize_gradients_match_finite_differences(backend):
    layer = gpunn.Standardize([0.5, -1.0, 3.0], [2.0, 0.25, 4.0], device=backend)
    check_layer_gradients(backend, layer, np.random.default_rng(2).standard_normal((5, 3)))


def test_standardize_fit_takes_each_columns_mean_and_std_and_a_constant_feature_gets_std_1():
    X = np.array([[1e3, 1e-3, 7.0], [3e3, 3e-3, 7.0], [2e3, 5e-3, 7.0]])
    layer = gpunn.Standardize.fit(X, device="cpu")
    np.testing.assert_array_equal(layer.mean_values, X.mean(axis=0))
    np.testing.assert_array_equal(layer.std_values, [X[:, 0].std(), X[:, 1].std(), 1.0])
    assert layer.n_inputs == 3 and repr(layer) == "Standardize(3 features)"
    layer.forward(X)
    output = layer.backend.to_numpy(layer.output)
    np.testing.assert_allclose(output.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(output.std(axis=0), [1, 1, 0], atol=1e-6)


@pytest.mark.parametrize("mean, std, says", [
    ([0.0, 0.0], [1.0, 0.0], "feature 1 has std 0"),
    ([0.0, 0.0], [1.0], "of the same length; received 2 and 1"),
    ([[0.0]], [[1.0]], "mean as one number per feature"),
    ([0.0, float("nan")], [1.0, 1.0], "mean contains NaN or inf"),
])
def test_standardize_refuses_bad_statistics(mean, std, says):
    with pytest.raises(gpunn.InvalidArgumentError, match=says):
        gpunn.Standardize(mean, std, device="cpu")


def test_standardize_refuses_inputs_of_the_wrong_width(backend):
    layer = gpunn.Standardize([0.0, 0.0], [1.0, 1.0], device=backend)
    with pytest.raises(gpunn.InvalidArgumentError, match=r"Standardize\(2 features\) expects "
                       r"inputs of shape \(batch, 2\); received shape \(4, 3\)"):
        layer.forward(backend.asarray(np.zeros((4, 3), np.float32)))
