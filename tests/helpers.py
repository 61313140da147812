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


def product_bound(a, b, *, accumulate="float32", out=None, operand_bits=None) -> np.ndarray:
    """How far a product of ``a`` and ``b`` (2-D, on the host) may lie from the exact one, element
    by element, from the arithmetic alone (any order of summation, as a GPU's cuBLAS sums in its
    own): k * u * (|a| @ |b|) for the k additions in the ``accumulate`` dtype (u = eps / 2), plus
    one rounding into ``out`` when it is narrower, plus the operands' rounding to
    ``operand_bits`` mantissa bits first where the products take them so (TF32: 10)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    k = a64.shape[1]
    magnitude = np.abs(a64) @ np.abs(b64)
    bound = k * np.finfo(accumulate).eps / 2 * magnitude
    if operand_bits is not None:
        bound += 2 * 2.0 ** -(operand_bits + 1) * magnitude
    if out is not None and np.finfo(out).bits < np.finfo(accumulate).bits:
        finfo = np.finfo(out)
        bound += finfo.eps / 2 * (np.abs(a64 @ b64) + bound) + finfo.smallest_subnormal
    return bound + np.finfo(accumulate).smallest_subnormal


def assert_product_close(result, a, b, **arithmetic) -> None:
    """``result`` is ``a @ b`` up to ``product_bound`` (the exact product in float64)."""
    exact = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
    error = np.abs(np.asarray(result, np.float64) - exact)
    bound = product_bound(a, b, **arithmetic)
    worst = np.unravel_index(np.argmax(error - bound), error.shape)
    assert (error <= bound).all(), (
        f"{int((error > bound).sum())} of {error.size} elements past the arithmetic's bound; "
        f"worst at {worst}: error {error[worst]:.3g}, bound {bound[worst]:.3g}")
