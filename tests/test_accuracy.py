"""Accuracy measures."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn


def test_categorical_accuracy_with_indices_and_one_hot(backend):
    accuracy = gpunn.CategoricalAccuracy()
    accuracy.to(backend)
    predictions = backend.asarray([0, 1, 2, 1])
    assert float(accuracy.calculate(predictions, backend.asarray([0, 1, 1, 1]))) == 0.75
    one_hot = backend.asarray(np.eye(3)[[0, 2, 2, 1]])
    assert float(accuracy.calculate(predictions, one_hot)) == 0.75
    assert accuracy.calculate_accumulated() == 0.75


def test_binary_accuracy_compares_elementwise(backend):
    accuracy = gpunn.CategoricalAccuracy(binary=True)
    accuracy.to(backend)
    predictions = backend.asarray([[1, 0], [0, 0]])
    assert float(accuracy.calculate(predictions, backend.asarray([[1, 1], [0, 0]]))) == 0.75


def test_regression_accuracy_uses_std_over_250(backend):
    accuracy = gpunn.RegressionAccuracy()
    accuracy.to(backend)
    y = backend.asarray(np.linspace(-1, 1, 101).reshape(-1, 1))
    accuracy.init(y)
    assert accuracy.precision == pytest.approx(float(np.linspace(-1, 1, 101).std()) / 250)
    accuracy.init(y * 10)  # kept unless reinit
    assert accuracy.precision == pytest.approx(float(np.linspace(-1, 1, 101).std()) / 250)
    inside = y + accuracy.precision / 2
    assert float(accuracy.calculate(inside, y)) == 1.0
    assert float(accuracy.calculate(y + 2 * accuracy.precision, y)) == 0.0


def test_r_squared_is_one_minus_residual_over_total_sum_of_squares(backend):
    y = np.array([1.0, 2.0, 3.0, 4.0])
    predictions = np.array([[1.0], [2.0], [3.0], [5.0]])  # the model's (samples, 1) outputs
    # SS_res = 1; mean 2.5, SS_tot = 2.25 + 0.25 + 0.25 + 2.25 = 5
    assert gpunn.accuracy.r_squared(backend.asarray(predictions), backend.asarray(y)) == 0.8
    assert gpunn.accuracy.r_squared(np.full((4, 1), 2.5), y) == 0.0  # the mean scores 0
    # two outputs: each column about its own mean, the sums pooled
    y2, p2 = np.array([[0.0, 10.0], [2.0, 30.0]]), np.array([[1.0, 10.0], [2.0, 30.0]])
    assert gpunn.accuracy.r_squared(p2, y2) == 1 - 1 / (2 + 200)
    assert np.isnan(gpunn.accuracy.r_squared(np.ones((3, 1)), np.full(3, 5.0)))
