"""Activations: values, gradients against finite differences, predictions."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_layer_gradients

import gpunn

ACTIVATIONS = [gpunn.ReLU, gpunn.Softmax, gpunn.Sigmoid, gpunn.Tanh, gpunn.Linear,
               lambda **kw: gpunn.LeakyReLU(0.1, **kw)]


def _away_from_kinks(shape, seed=0):
    # |x| >= 0.1, so a finite-difference step never crosses the kink of ReLU or LeakyReLU
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.where(x >= 0, x + 0.1, x - 0.1)


@pytest.mark.parametrize("make", ACTIVATIONS)
def test_activation_gradients_match_finite_differences(backend, make):
    check_layer_gradients(backend, make(device=backend), _away_from_kinks((5, 4)))


def test_relu_forward_backward(backend):
    relu = gpunn.ReLU(device=backend)
    relu.forward(backend.asarray([[-1.0, 0.0, 2.0]], dtype="float32"))
    np.testing.assert_array_equal(backend.to_numpy(relu.output), [[0.0, 0.0, 2.0]])
    relu.backward(backend.asarray([[5.0, 5.0, 5.0]], dtype="float32"))
    np.testing.assert_array_equal(backend.to_numpy(relu.dinputs), [[0.0, 0.0, 5.0]])


def test_softmax_is_stable_for_large_logits(backend):
    softmax = gpunn.Softmax(device=backend)
    softmax.forward(backend.asarray([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4]], dtype="float32"))
    out = backend.to_numpy(softmax.output)
    np.testing.assert_allclose(out, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-6)
    np.testing.assert_array_equal(backend.to_numpy(softmax.predictions(softmax.output)), [0, 0])


def test_sigmoid_is_stable_for_large_inputs(backend):
    sigmoid = gpunn.Sigmoid(device=backend)
    sigmoid.forward(backend.asarray([[-1e4, 0.0, 1e4]], dtype="float32"))
    np.testing.assert_array_equal(backend.to_numpy(sigmoid.output), [[0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(backend.to_numpy(sigmoid.predictions(sigmoid.output)),
                                  [[0, 0, 1]])


def test_leaky_relu_values(backend):
    leaky = gpunn.LeakyReLU(0.1, device=backend)
    leaky.forward(backend.asarray([[-2.0, 3.0]], dtype="float32"))
    np.testing.assert_allclose(backend.to_numpy(leaky.output), [[-0.2, 3.0]], rtol=1e-6)


@pytest.mark.parametrize("make", ACTIVATIONS)
def test_activations_keep_float32(backend, make):
    activation = make(device=backend)
    activation.forward(backend.asarray(np.ones((2, 3), np.float32)))
    activation.backward(backend.asarray(np.ones((2, 3), np.float32)))
    assert activation.output.dtype == np.float32 and activation.dinputs.dtype == np.float32
