"""The two helpers most tests are built from: a finite-difference gradient check and a
comparison of a device result with NumPy's."""

from __future__ import annotations

import numpy as np

import gpunn


def to_host(backend, array) -> np.ndarray:
    return backend.to_numpy(array)


def numerical_gradient(loss, array, eps=1e-6) -> np.ndarray:
    """Central differences of the scalar function ``loss()`` with respect to ``array`` (which is
    perturbed in place, on whatever device it lives)."""
    grad = np.zeros(array.shape)
    flat = array.reshape(-1)
    for i in range(flat.size):
        saved = float(flat[i])
        flat[i] = saved + eps
        plus = loss()
        flat[i] = saved - eps
        minus = loss()
        flat[i] = saved
        grad.reshape(-1)[i] = (plus - minus) / (2 * eps)
    return grad


def check_layer_gradients(backend, layer, inputs, *, rtol=1e-5, atol=1e-8):
    """Compare a layer's backward (dinputs and, if trainable, dweights and dbiases) with finite
    differences of ``sum(output * R) + regularization`` for a fixed random R, in float64."""
    xp = backend.xp
    layer.to(backend, "float64")
    inputs = backend.asarray(np.asarray(inputs, dtype=np.float64))
    layer.forward(inputs, training=True)
    weights_r = backend.asarray(np.random.default_rng(7).standard_normal(layer.output.shape))

    def loss() -> float:
        layer.forward(inputs, training=True)
        value = float(xp.sum(layer.output * weights_r))
        if layer.trainable:
            value += layer.regularization_loss()
        return value

    layer.forward(inputs, training=True)
    layer.backward(weights_r.copy())
    checks = {"dinputs": (layer.dinputs, inputs)}
    if layer.trainable:
        checks["dweights"] = (layer.dweights, layer.weights)
        checks["dbiases"] = (layer.dbiases, layer.biases)
    for name, (analytic, array) in checks.items():
        analytic = to_host(backend, analytic).copy()
        numeric = numerical_gradient(loss, array)
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol, err_msg=name)


def flush_subnormals(array: np.ndarray) -> np.ndarray:
    """A float32 array as CUDA's flush-to-zero sees it (CuPy compiles with -ftz=true):
    subnormals become zero; a bfloat16 array too (its kernels compute in float32, and it has
    float32's range). Other dtypes are returned as they are (float16 values are all normal
    float32 numbers)."""
    if array.dtype != np.float32 and array.dtype.name != "bfloat16":
        return array
    tiny = np.finfo(np.float32).tiny
    return np.where(np.abs(array.astype(np.float32)) < tiny, array.dtype.type(0), array)


def flushes(backend, dtype) -> bool:
    """Whether kernels on ``backend`` flush ``dtype`` subnormals: float32 (and bfloat16,
    computed in float32) on CUDA."""
    return backend.device != "cpu" and (np.dtype(dtype) == np.float32
                                        or np.dtype(dtype).name == "bfloat16")


def assert_same(backend, result, expected, *, ftz: bool = False) -> None:
    """A device result equals NumPy's exactly (NaN matches NaN); with ``ftz`` (float32 on
    CUDA), after flushing subnormals to zero on both sides (compute ``expected`` from flushed
    inputs too)."""
    result = to_host(backend, result)
    assert result.dtype == expected.dtype, (result.dtype, expected.dtype)
    if ftz:
        result, expected = flush_subnormals(result), flush_subnormals(expected)
    np.testing.assert_array_equal(result, expected)


def check_loss_gradients(backend, loss, y_pred, y_true, *, rtol=1e-5, atol=1e-8):
    """Compare ``loss.backward`` with finite differences of the mean loss, in float64."""
    xp = backend.xp
    loss.to(backend)
    y_pred = backend.asarray(np.asarray(y_pred, dtype=np.float64))
    y_true = backend.asarray(y_true)

    def mean_loss() -> float:
        return float(xp.mean(loss.forward(y_pred, y_true)))

    loss.backward(y_pred, y_true)
    analytic = to_host(backend, loss.dinputs).copy()
    np.testing.assert_allclose(analytic, numerical_gradient(mean_loss, y_pred), rtol=rtol,
                               atol=atol)


def cuda_available() -> bool:
    """Whether a CUDA device answers here."""
    try:
        gpunn.device("cuda")
    except gpunn.DeviceUnavailableError:
        return False
    return True


HEADS = {  # head -> (output activation, loss, accuracy)
    "softmax": (gpunn.Softmax, gpunn.CategoricalCrossentropy,
                lambda: gpunn.CategoricalAccuracy()),
    "sigmoid": (gpunn.Sigmoid, gpunn.BinaryCrossentropy,
                lambda: gpunn.CategoricalAccuracy(binary=True)),
    "linear": (gpunn.Linear, gpunn.MeanSquaredError, lambda: gpunn.RegressionAccuracy()),
}


def build_model(device, sizes, *, hidden=gpunn.ReLU, head="softmax", learning_rate=0.001):
    """A finalized network of Dense layers ``sizes[0] -> ... -> sizes[-1]`` with ``hidden``
    between them and a head: softmax (cross-entropy), sigmoid (binary cross-entropy) or linear
    (mean squared error), trained by Adam."""
    output, loss, accuracy = HEADS[head]
    model = gpunn.Model(device=device)
    for index, (n_inputs, n_neurons) in enumerate(zip(sizes, sizes[1:])):
        model.add(gpunn.Dense(n_inputs, n_neurons))
        model.add(output() if index == len(sizes) - 2 else hidden())
    model.set(loss=loss(), optimizer=gpunn.Adam(learning_rate=learning_rate),
              accuracy=accuracy())
    model.finalize()
    return model
