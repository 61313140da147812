"""Losses, each with forward (per-sample losses) and backward, plus the book's combined
Softmax + categorical cross-entropy gradient. Regularization is added by ``calculate``."""

from __future__ import annotations

from typing import Any

from gpunn.backend import device

CLIP = 1e-7  # predictions are clipped to [CLIP, 1 - CLIP] so log never sees 0


class Loss:
    """Shared by all losses: mean data loss, accumulation over an epoch, regularization."""

    def __init__(self) -> None:
        self.backend = device()  # the model moves it to its own device
        self.trainable_layers: list = []
        self.new_pass()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def to(self, backend: Any) -> None:
        self.backend = backend

    def remember_trainable_layers(self, trainable_layers: list) -> None:
        self.trainable_layers = trainable_layers

    def regularization_loss(self) -> float:
        """The sum of every trainable layer's L1/L2 penalties."""
        return sum(layer.regularization_loss() for layer in self.trainable_layers)

    def calculate(self, output: Any, y: Any) -> Any:
        """The mean data loss of one batch (a device scalar), accumulated for the epoch."""
        sample_losses = self.forward(output, y)
        total = sample_losses.sum(dtype="float64")  # float64 so an epoch's sum stays exact
        self.accumulated_sum += total
        self.accumulated_count += len(sample_losses)
        return total / len(sample_losses)

    def calculate_accumulated(self) -> float:
        """The mean data loss over everything since ``new_pass`` (reads a GPU's sum: a sync)."""
        return float(self.accumulated_sum) / max(self.accumulated_count, 1)

    def new_pass(self, into: Any = None) -> None:
        """Start a new sum. ``into``: a 0-d device array to add to in place (the training
        loop's tally, so the sum stays on the device; gpunn.training)."""
        self.accumulated_sum = 0.0 if into is None else into
        self.accumulated_count = 0


class CategoricalCrossentropy(Loss):
    """``-log`` of the probability given to the true class; labels as indices or one-hot."""

    def forward(self, y_pred: Any, y_true: Any) -> Any:
        xp = self.backend.xp
        clipped = xp.clip(y_pred, CLIP, 1 - CLIP)
        if y_true.ndim == 1:
            correct = clipped[xp.arange(len(clipped)), y_true]
        else:
            correct = xp.sum(clipped * y_true, axis=1)
        return -xp.log(correct)

    def backward(self, dvalues: Any, y_true: Any) -> None:
        xp = self.backend.xp
        samples, labels = dvalues.shape
        if y_true.ndim == 1:
            y_true = xp.eye(labels, dtype=dvalues.dtype)[y_true]
        # Clipped as in forward, so a probability of exactly 0 gives no division by zero.
        self.dinputs = -y_true / xp.clip(dvalues, CLIP, 1 - CLIP) / samples


class SoftmaxCategoricalCrossentropy:
    """The gradient of cross-entropy through softmax in one step: ``(softmax - one_hot) / n``.

    The model uses it automatically when the last layer is Softmax and the loss is
    CategoricalCrossentropy; it is faster and more accurate than the two backward passes.
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def backward(self, dvalues: Any, y_true: Any) -> None:
        xp = self.backend.xp
        samples = len(dvalues)
        if y_true.ndim == 2:
            y_true = xp.argmax(y_true, axis=1)
        self.dinputs = dvalues.copy()
        self.dinputs[xp.arange(samples), y_true] -= 1
        self.dinputs /= samples


class BinaryCrossentropy(Loss):
    """Cross-entropy of independent sigmoid outputs against 0/1 targets."""

    def forward(self, y_pred: Any, y_true: Any) -> Any:
        xp = self.backend.xp
        clipped = xp.clip(y_pred, CLIP, 1 - CLIP)
        losses = -(y_true * xp.log(clipped) + (1 - y_true) * xp.log(1 - clipped))
        return xp.mean(losses, axis=-1)

    def backward(self, dvalues: Any, y_true: Any) -> None:
        xp = self.backend.xp
        samples, outputs = dvalues.shape
        clipped = xp.clip(dvalues, CLIP, 1 - CLIP)
        self.dinputs = -(y_true / clipped - (1 - y_true) / (1 - clipped)) / outputs / samples


class MeanSquaredError(Loss):
    """The mean of squared differences, per sample (L2 loss)."""

    def forward(self, y_pred: Any, y_true: Any) -> Any:
        return self.backend.xp.mean((y_true - y_pred) ** 2, axis=-1)

    def backward(self, dvalues: Any, y_true: Any) -> None:
        samples, outputs = dvalues.shape
        self.dinputs = -2 * (y_true - dvalues) / outputs / samples


class MeanAbsoluteError(Loss):
    """The mean of absolute differences, per sample (L1 loss)."""

    def forward(self, y_pred: Any, y_true: Any) -> Any:
        xp = self.backend.xp
        return xp.mean(xp.abs(y_true - y_pred), axis=-1)

    def backward(self, dvalues: Any, y_true: Any) -> None:
        samples, outputs = dvalues.shape
        # d|y - p|/dp = -sign(y - p). (The book's listing drops the minus sign; finite
        # differences in tests/test_losses.py check this one.)
        self.dinputs = -self.backend.xp.sign(y_true - dvalues) / outputs / samples
