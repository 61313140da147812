"""Layers: Dense, Dropout and Standardize, each with forward and backward side by side, as in
the book.

Every layer holds a backend (``self.backend``) and does its math through ``self.backend.xp``
and the backend's ops, so the same code runs on NumPy or CuPy.
"""

from __future__ import annotations

from typing import Any

from gpunn import _checks
from gpunn.backend import DeviceLike, device, host_random
from gpunn.errors import InvalidArgumentError


class Layer:
    """What every layer and activation shares: a backend, a dtype, and moving between them."""

    trainable = False

    # Whether this layer runs in a 16-bit compute dtype under a low-precision policy
    # (gpunn.precision): Dense, ReLU and Dropout have kernels for it; the other activations,
    # the losses and the metrics stay in the model's dtype, as under torch.autocast.
    low_precision = False

    # How many features each input row must have, for layers that fix it (Dense, Standardize);
    # None for the layers that take any width (activations, Dropout).
    n_inputs: int | None = None

    def __init__(self, *, device: DeviceLike = None, dtype: str = "float32") -> None:
        self.backend = _device(device)
        self.dtype = self.compute_dtype = _checks.dtype_name(dtype)

    def to(self, backend: DeviceLike, dtype: str | None = None) -> Layer:
        """Move this layer's state to ``backend`` (and cast to ``dtype``); returns the layer."""
        self.backend = _device(backend)
        self.dtype = self.compute_dtype = _checks.dtype_name(dtype or self.dtype)
        return self

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this layer (for saving)."""
        return {}

    def _input(self, inputs: Any) -> Any:
        return self.backend.asarray(inputs, dtype=self.compute_dtype)


def _device(spec: DeviceLike):
    return device(spec)


class Dense(Layer):
    """A fully connected layer: ``output = inputs @ weights + biases``.

    Args: n_inputs, n_neurons; optional L1/L2 regularization strengths for weights and biases.
    Shapes: weights (n_inputs, n_neurons), biases (1, n_neurons); inputs (batch, n_inputs).
    Example: ``gn.Dense(2, 64, weight_regularizer_l2=5e-4)``.
    """

    trainable = True
    low_precision = True

    def __init__(self, n_inputs: int, n_neurons: int, *, weight_regularizer_l1: float = 0.0,
                 weight_regularizer_l2: float = 0.0, bias_regularizer_l1: float = 0.0,
                 bias_regularizer_l2: float = 0.0, device: DeviceLike = None,
                 dtype: str = "float32") -> None:
        super().__init__(device=device, dtype=dtype)
        self.n_inputs = _checks.integer("n_inputs", n_inputs, minimum=1)
        self.n_neurons = _checks.integer("n_neurons", n_neurons, minimum=1)
        self.weight_regularizer_l1 = _checks.number("weight_regularizer_l1", weight_regularizer_l1)
        self.weight_regularizer_l2 = _checks.number("weight_regularizer_l2", weight_regularizer_l2)
        self.bias_regularizer_l1 = _checks.number("bias_regularizer_l1", bias_regularizer_l1)
        self.bias_regularizer_l2 = _checks.number("bias_regularizer_l2", bias_regularizer_l2)
        # Drawn on the host from gpunn's seeded generator, so CPU and GPU start identically.
        weights = 0.01 * host_random().standard_normal((self.n_inputs, self.n_neurons))
        with self.backend.activate():
            self.weights = self.backend.asarray(weights, dtype=self.dtype)
            self.biases = self.backend.xp.zeros((1, self.n_neurons), dtype=self.dtype)
            self._allocate_gradients()
        # The model turns this off for its first layer, whose input gradient nobody uses: that
        # skips the largest matrix product of the backward pass.
        self.compute_dinputs = True
        # The weights the products use: these, or under a 16-bit policy the model's copy of
        # them in the compute dtype; ``tf32``: float32 products on TF32 tensor cores.
        self.compute_weights = self.weights
        self.tf32 = False

    def _allocate_gradients(self) -> None:
        # backward writes into these; the model replaces them with views of one flat array
        self.dweights = self.backend.xp.zeros_like(self.weights)
        self.dbiases = self.backend.xp.zeros_like(self.biases)

    def __repr__(self) -> str:
        return f"Dense({self.n_inputs}, {self.n_neurons})"

    def config(self) -> dict[str, Any]:
        return {"n_inputs": self.n_inputs, "n_neurons": self.n_neurons,
                "weight_regularizer_l1": self.weight_regularizer_l1,
                "weight_regularizer_l2": self.weight_regularizer_l2,
                "bias_regularizer_l1": self.bias_regularizer_l1,
                "bias_regularizer_l2": self.bias_regularizer_l2}

    def to(self, backend: DeviceLike, dtype: str | None = None) -> Dense:
        source = self.backend
        super().to(backend, dtype)
        with self.backend.activate():
            self.weights = self.backend.asarray(source.to_numpy(self.weights), dtype=self.dtype)
            self.biases = self.backend.asarray(source.to_numpy(self.biases), dtype=self.dtype)
            self._allocate_gradients()
        self.compute_weights = self.weights
        return self

    def forward(self, inputs: Any, training: bool = False, fused_relu: Any = None) -> None:
        """``output = inputs @ weights + biases``; with ``fused_relu`` (the ReLU layer that
        follows) the bias add and ReLU run as one kernel and the ReLU's output is set too."""
        inputs = self._input(inputs)
        if inputs.ndim != 2 or inputs.shape[1] != self.n_inputs:
            raise InvalidArgumentError(
                f"{self!r} expects inputs of shape (batch, {self.n_inputs}); received shape "
                f"{tuple(inputs.shape)}."
            )
        self.inputs = inputs
        output = self.backend.gemm(inputs, self.compute_weights, tf32=self.tf32)
        if fused_relu is None:
            self.output = self.backend.bias_add(output, self.biases, out=output)
        else:
            self.output = fused_relu.output = self.backend.bias_relu(output, self.biases,
                                                                     out=output)

    def backward(self, dvalues: Any, *, regularize: bool = True) -> None:
        """Gradients of the weights and biases (in the model's dtype, float32 accumulation
        under a 16-bit policy) and of the inputs. ``regularize=False`` leaves out the L1/L2
        terms: a scaled loss's step adds them after unscaling (gpunn.training)."""
        backend, tf32 = self.backend, self.tf32
        # inputs.T @ dvalues
        backend.gemm(self.inputs, dvalues, out=self.dweights, trans_a=True, tf32=tf32)
        backend.column_sums(dvalues, out=self.dbiases)
        if regularize:
            self.regularization_gradients()
        if self.compute_dinputs:  # dvalues @ weights.T
            self.dinputs = backend.gemm(dvalues, self.compute_weights, trans_b=True, tf32=tf32)
        else:
            self.dinputs = None

    def regularization_gradients(self) -> None:
        """Add the L1/L2 penalties' gradients to ``dweights`` and ``dbiases``."""
        xp = self.backend.xp
        if self.weight_regularizer_l1 > 0:
            self.dweights += self.weight_regularizer_l1 * xp.sign(self.weights)
        if self.weight_regularizer_l2 > 0:
            self.dweights += 2 * self.weight_regularizer_l2 * self.weights
        if self.bias_regularizer_l1 > 0:
            self.dbiases += self.bias_regularizer_l1 * xp.sign(self.biases)
        if self.bias_regularizer_l2 > 0:
            self.dbiases += 2 * self.bias_regularizer_l2 * self.biases

    def regularization_loss(self) -> float:
        """The L1 and L2 penalties of this layer's parameters (a Python float)."""
        xp, loss = self.backend.xp, 0.0
        if self.weight_regularizer_l1 > 0:
            loss += self.weight_regularizer_l1 * float(xp.sum(xp.abs(self.weights)))
        if self.weight_regularizer_l2 > 0:
            loss += self.weight_regularizer_l2 * float(xp.sum(self.weights * self.weights))
        if self.bias_regularizer_l1 > 0:
            loss += self.bias_regularizer_l1 * float(xp.sum(xp.abs(self.biases)))
        if self.bias_regularizer_l2 > 0:
            loss += self.bias_regularizer_l2 * float(xp.sum(self.biases * self.biases))
        return loss


class Dropout(Layer):
    """Inverted dropout: at training time zero a ``rate`` fraction of inputs and scale the rest
    by ``1 / (1 - rate)``; at inference the identity. Example: ``gn.Dropout(0.1)``.
    """

    low_precision = True

    def __init__(self, rate: float, *, device: DeviceLike = None, dtype: str = "float32") -> None:
        super().__init__(device=device, dtype=dtype)
        self.rate = _checks.number("rate", rate, below=1.0)

    def __repr__(self) -> str:
        return f"Dropout({self.rate})"

    def config(self) -> dict[str, Any]:
        return {"rate": self.rate}

    def forward(self, inputs: Any, training: bool = False) -> None:
        inputs = self._input(inputs)
        self.inputs = inputs
        if not training or self.rate == 0.0:
            self.mask = None
            self.output = inputs
            return
        # floor(u + keep) / keep: 1 / keep with probability keep, else 0 (the book's binomial
        # mask, scaled), and the output in the same pass: one kernel on a GPU.
        # Drawn in the model's dtype: a 16-bit input's mask comes from float32 draws.
        uniform = self.backend.uniform(inputs.shape, self.dtype)
        self.mask, self.output = self.backend.dropout(inputs, uniform, 1.0 - self.rate)

    def backward(self, dvalues: Any) -> None:
        self.dinputs = dvalues if self.mask is None else dvalues * self.mask


class Standardize(Layer):
    """Feature scaling inside the model: ``output = (inputs - mean) / std``, per feature.

    Placed first, it makes the model take raw features everywhere: in training, ``evaluate``,
    ``predict``, the saved file and the ONNX export. It has no trainable parameters; ``mean``
    and ``std`` are kept in the model file. ``Standardize.fit(X)`` takes them from training
    data (never from the validation data, which would leak it into training).
    Args: mean, std (one number per feature; std > 0). Shapes: inputs (batch, n_features).
    Example: ``model.add(gn.Standardize.fit(X_train))``.
    """

    def __init__(self, mean: Any, std: Any, *, device: DeviceLike = None,
                 dtype: str = "float32") -> None:
        super().__init__(device=device, dtype=dtype)
        self.mean_values, self.std_values = _feature_vectors(mean, std)
        self.n_inputs = len(self.mean_values)
        self._to_device()

    @classmethod
    def fit(cls, X: Any, *, device: DeviceLike = None, dtype: str = "float32") -> Standardize:
        """A Standardize with the mean and standard deviation of each column of ``X`` (the
        training data, samples by features); a constant feature gets std 1, so it becomes 0."""
        host = _device("cpu")
        X = host.to_numpy(X)
        if X.ndim != 2 or X.shape[0] == 0 or X.dtype.kind not in "biuf":
            raise InvalidArgumentError(f"Standardize.fit expects numbers of shape (samples, "
                                       f"features) with at least one sample; received "
                                       f"{X.dtype} of shape {tuple(X.shape)}.")
        X = X.astype("float64")
        xp = host.xp
        if not bool(xp.isfinite(X).all()):
            raise InvalidArgumentError("Standardize.fit received NaN or inf in X; clean or "
                                       "impute the data first.")
        std = X.std(axis=0)
        # Constant exactly where max == min: its std may come out as a rounding error instead
        # of 0, and dividing by that would blow up any other value seen later.
        std[X.max(axis=0) == X.min(axis=0)] = 1.0
        return cls(X.mean(axis=0), std, device=device, dtype=dtype)

    def _to_device(self) -> None:
        with self.backend.activate():
            self.mean = self.backend.asarray(self.mean_values, dtype=self.dtype)
            self.std = self.backend.asarray(self.std_values, dtype=self.dtype)

    def __repr__(self) -> str:
        return f"Standardize({self.n_inputs} features)"

    def config(self) -> dict[str, Any]:
        # JSON lists of Python floats, which repr writes with every digit: read back, they are
        # the same float64 values (784 features are about 20 kB of header).
        return {"mean": self.mean_values, "std": self.std_values}

    def to(self, backend: DeviceLike, dtype: str | None = None) -> Standardize:
        super().to(backend, dtype)
        self._to_device()  # made here, once: a step reads no host values (CUDA graphs)
        return self

    def forward(self, inputs: Any, training: bool = False) -> None:
        inputs = self._input(inputs)
        if inputs.ndim != 2 or inputs.shape[1] != self.n_inputs:
            raise InvalidArgumentError(
                f"{self!r} expects inputs of shape (batch, {self.n_inputs}); received shape "
                f"{tuple(inputs.shape)}.")
        self.inputs = inputs
        self.output = (inputs - self.mean) / self.std

    def backward(self, dvalues: Any) -> None:
        self.dinputs = dvalues / self.std


def _feature_vectors(mean: Any, std: Any) -> tuple[list[float], list[float]]:
    """``mean`` and ``std`` as lists of floats of one length, checked."""
    host = _device("cpu")
    vectors = []
    for name, values in (("mean", mean), ("std", std)):
        array = host.to_numpy(values)
        if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "biuf":
            raise InvalidArgumentError(f"Standardize expects {name} as one number per feature "
                                       f"(1-D); received {array.dtype} of shape "
                                       f"{tuple(array.shape)}.")
        array = array.astype("float64")
        if not bool(host.xp.isfinite(array).all()):
            raise InvalidArgumentError(f"Standardize: {name} contains NaN or inf.")
        vectors.append(array)
    mean, std = vectors
    if len(mean) != len(std):
        raise InvalidArgumentError(f"Standardize expects mean and std of the same length; "
                                   f"received {len(mean)} and {len(std)}.")
    if not bool((std > 0).all()):
        bad = int(host.xp.argmax(std <= 0))
        raise InvalidArgumentError(f"Standardize expects std > 0 for every feature; feature "
                                   f"{bad} has std {std[bad]:g}. Standardize.fit gives a "
                                   f"constant feature std 1.")
    return mean.tolist(), std.tolist()
