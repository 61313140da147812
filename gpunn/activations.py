"""Activation functions, each with forward, backward and predictions() as in the book."""

from __future__ import annotations

from typing import Any

from gpunn import _checks
from gpunn.backend import DeviceLike
from gpunn.layers import Layer


class Activation(Layer):
    """An activation: no parameters; ``predictions`` turns outputs into predicted values."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def predictions(self, outputs: Any) -> Any:
        return outputs


class ReLU(Activation):
    """``max(0, x)``, forward by the relu kernel, backward by the relu_backward kernel."""

    low_precision = True

    def forward(self, inputs: Any, training: bool = False) -> None:
        self.inputs = self._input(inputs)
        self.output = self.backend.relu(self.inputs)

    def backward(self, dvalues: Any) -> None:
        # output <= 0 exactly where inputs <= 0 (NaN stays NaN), so the mask can come from the
        # output; that lets the model fuse bias add and ReLU without keeping the pre-activation.
        self.dinputs = self.backend.relu_backward(dvalues, self.output)


class LeakyReLU(Activation):
    """``x`` where ``x > 0`` else ``alpha * x``. Example: ``gn.LeakyReLU(alpha=0.01)``."""

    def __init__(self, alpha: float = 0.01, *, device: DeviceLike = None,
                 dtype: str = "float32") -> None:
        super().__init__(device=device, dtype=dtype)
        self.alpha = _checks.number("alpha", alpha)

    def __repr__(self) -> str:
        return f"LeakyReLU(alpha={self.alpha})"

    def config(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def forward(self, inputs: Any, training: bool = False) -> None:
        xp = self.backend.xp
        self.inputs = self._input(inputs)
        self.output = xp.where(self.inputs > 0, self.inputs, self.alpha * self.inputs)

    def backward(self, dvalues: Any) -> None:
        xp = self.backend.xp
        self.dinputs = xp.where(self.inputs > 0, dvalues, self.alpha * dvalues)


class Softmax(Activation):
    """Normalised exponentials per row; ``predictions`` is the argmax."""

    def forward(self, inputs: Any, training: bool = False) -> None:
        xp = self.backend.xp
        self.inputs = self._input(inputs)
        # Subtracting the row maximum keeps exp from overflowing for large logits.
        exp_values = self.inputs - self.backend.row_max(self.inputs)
        xp.exp(exp_values, out=exp_values)
        exp_values /= self.backend.row_sums(exp_values)
        self.output = exp_values

    def backward(self, dvalues: Any) -> None:
        # The book's per-sample Jacobian (diagflat(s) - s s^T) @ dvalues, for all rows at once.
        dot = (dvalues * self.output).sum(axis=1, keepdims=True)
        self.dinputs = self.output * (dvalues - dot)

    def predictions(self, outputs: Any) -> Any:
        return outputs.argmax(axis=1)


class Sigmoid(Activation):
    """``1 / (1 + exp(-x))``; ``predictions`` is ``output > 0.5``."""

    def forward(self, inputs: Any, training: bool = False) -> None:
        xp = self.backend.xp
        self.inputs = self._input(inputs)
        # exp(-|x|) never overflows; the two branches are the same function.
        e = xp.exp(-xp.abs(self.inputs))
        self.output = xp.where(self.inputs >= 0, 1 / (1 + e), e / (1 + e))

    def backward(self, dvalues: Any) -> None:
        self.dinputs = dvalues * (1 - self.output) * self.output

    def predictions(self, outputs: Any) -> Any:
        return (outputs > 0.5) * 1


class Tanh(Activation):
    """The hyperbolic tangent; backward ``dvalues * (1 - output**2)``."""

    def forward(self, inputs: Any, training: bool = False) -> None:
        self.inputs = self._input(inputs)
        self.output = self.backend.xp.tanh(self.inputs)

    def backward(self, dvalues: Any) -> None:
        self.dinputs = dvalues * (1 - self.output * self.output)


class Linear(Activation):
    """The identity, for regression outputs."""

    def forward(self, inputs: Any, training: bool = False) -> None:
        self.inputs = self._input(inputs)
        self.output = self.inputs

    def backward(self, dvalues: Any) -> None:
        self.dinputs = dvalues
