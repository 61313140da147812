"""Accuracy: the share of predictions that count as right, accumulated over an epoch."""

from __future__ import annotations

from typing import Any

from gpunn.backend import device


class Accuracy:
    """Shared by all accuracies: the mean of ``compare`` over a batch and over an epoch."""

    label = "acc"  # the name logs and plots give it

    def __init__(self) -> None:
        self.backend = device()  # the model moves it to its own device
        self.new_pass()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def to(self, backend: Any) -> None:
        self.backend = backend

    def init(self, y: Any, reinit: bool = False) -> None:
        """Prepare from the training targets (used by RegressionAccuracy)."""

    def calculate(self, predictions: Any, y: Any) -> Any:
        comparisons = self.compare(predictions, y)
        correct = self.backend.xp.count_nonzero(comparisons)
        self.accumulated_sum += correct
        self.accumulated_count += comparisons.size
        return correct / max(comparisons.size, 1)

    def calculate_accumulated(self) -> float:
        return float(self.accumulated_sum) / max(self.accumulated_count, 1)

    def new_pass(self, into: Any = None) -> None:
        """Start a new count. ``into``: a 0-d device array to add to in place (the training
        loop's tally; gpunn.training)."""
        self.accumulated_sum = 0 if into is None else into
        self.accumulated_count = 0


class CategoricalAccuracy(Accuracy):
    """Predicted class equals the label (indices or one-hot); ``binary=True`` for sigmoid
    outputs compared elementwise."""

    def __init__(self, *, binary: bool = False) -> None:
        super().__init__()
        self.binary = binary

    def __repr__(self) -> str:
        return f"CategoricalAccuracy(binary={self.binary})"

    def compare(self, predictions: Any, y: Any) -> Any:
        if not self.binary and y.ndim == 2:
            y = self.backend.xp.argmax(y, axis=1)
        return predictions == y


class RegressionAccuracy(Accuracy):
    """A prediction counts as right within ``std(y) / 250`` of the target, as in the book."""

    def __init__(self) -> None:
        super().__init__()
        self.precision: float | None = None

    @property
    def label(self) -> str:
        """What the number means, for logs and plots: ``acc(±0.0028)``."""
        return "acc" if self.precision is None else f"acc(±{self.precision:.2g})"

    def init(self, y: Any, reinit: bool = False) -> None:
        if self.precision is None or reinit:
            self.precision = float(y.std()) / 250

    def compare(self, predictions: Any, y: Any) -> Any:
        return self.backend.xp.absolute(predictions - y) < self.precision


def r_squared(predictions: Any, y: Any) -> float:
    """A regression's coefficient of determination, ``1 - SS_res / SS_tot`` with
    ``SS_res = sum((y - predictions)**2)`` and ``SS_tot = sum((y - mean(y))**2)`` (each column
    about its own mean, summed over the columns): 1 for perfect predictions, 0 for predicting
    the mean of y, below 0 for worse; NaN when every target is the same. In float64 on the
    host, from arrays on any device. Example: ``r_squared(model.predict(X_val), y_val)``."""
    host = device("cpu")
    predictions = host.to_numpy(predictions).astype("float64")
    y = host.to_numpy(y).astype("float64").reshape(predictions.shape)
    residual = float(((y - predictions) ** 2).sum())
    total = float(((y - y.mean(axis=0)) ** 2).sum())
    return 1.0 - residual / total if total > 0 else float("nan")
