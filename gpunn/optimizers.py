"""Optimizers with the book's update rules and learning-rate decay, from simple to complex.

The model keeps every parameter in one flat array and every gradient in another, so each
rule below is a handful of whole-array operations per step, however many layers there are.
State (momentums, caches) lives in ``self.state``, arrays shaped like the parameters.
"""

from __future__ import annotations

import math
from typing import Any

from gpunn import _checks
from gpunn.backend import device
from gpunn.errors import InvalidTypeError


class Optimizer:
    """Learning-rate decay ``lr / (1 + decay * iterations)`` and the step counter."""

    STATE: tuple[str, ...] = ()  # names of the per-parameter arrays this optimizer keeps

    def __init__(self, learning_rate: float, decay: float) -> None:
        self.learning_rate = _checks.number("learning_rate", learning_rate, above_minimum=True)
        self.decay = _checks.number("decay", decay)
        self.current_learning_rate = self.learning_rate
        self.iterations = 0
        self.state: dict[str, Any] = {}
        self.backend = device()  # the model moves it to its own device

    def to(self, backend: Any) -> None:
        """Move the optimizer's state to ``backend``; training continues where it was."""
        self.state = {name: backend.asarray(self.backend.to_numpy(array))
                      for name, array in self.state.items()}
        self.backend = backend

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.config().items())
        return f"{type(self).__name__}({arguments})"

    def config(self) -> dict[str, float]:
        """The constructor arguments (for saving and repr)."""
        return {"learning_rate": self.learning_rate, "decay": self.decay}

    def pre_update_params(self) -> None:
        # Every step, decay or not: a rate changed between steps (a callback, a schedule) is
        # the one the next step uses, as the CUDA kernels, which read it at every step, do.
        self.current_learning_rate = self.learning_rate / (1.0 + self.decay * self.iterations)

    def update_params(self, parameters: Any, gradients: Any = None, tally: Any = None,
                      scaler: Any = None) -> None:
        """Update ``parameters`` in place from ``gradients`` (arrays of the same shape), or,
        as in the book, ``update_params(layer)``: a Dense layer's weights and biases from its
        dweights and dbiases (the optimizer's arrays for them kept on the layer).

        ``tally``: the training loop's device metrics (gpunn.training). On a GPU the whole
        update is one kernel (kernels/optimizers.cu) that reads the step count from it and
        changes nothing once a non-finite loss has been counted there, or when a float16
        policy's unscaled gradients overflowed; ``advance`` then counts the step and updates
        the loss ``scaler``'s scale (gpunn.precision.LossScaler) on the device. ``_update``
        below is the book's rule, the CPU's code and that kernel's NumPy twin.
        """
        if gradients is None:
            self._update_layer(parameters)
            return
        xp = self.backend.xp
        for name in self.STATE:
            if name not in self.state:
                self.state[name] = xp.zeros_like(parameters)
        if tally is not None and self.backend.fused:
            self.backend.optimizer_step(self.rule, parameters, gradients, self.state,
                                        self.config(), tally)
            self.backend.advance(tally, scaler)
            return
        if "scratch" not in self.state or self.state["scratch"].shape != parameters.shape:
            self.state["scratch"] = xp.empty_like(parameters)  # reused; never saved
        self.backend.optimizer_update(self, parameters, gradients)  # _update, or a fused pass

    def _update_layer(self, layer: Any) -> None:
        """The book's per-layer step: the same rule on the layer's own arrays, on its device."""
        if not all(hasattr(layer, name) for name in ("weights", "biases", "dweights",
                                                     "dbiases")):
            raise InvalidTypeError(
                f"update_params expects a layer with weights, biases, dweights and dbiases "
                f"(a gn.Dense after its backward), or the flat parameter and gradient arrays; "
                f"received {layer!r} alone. Call layer.backward(...) before updating it.")
        xp, flat_state = layer.backend.xp, self.state
        states = layer.__dict__.setdefault("optimizer_state", {})
        try:
            for name in ("weights", "biases"):
                parameters = getattr(layer, name)
                self.state = states.setdefault(name, {})
                for key in (*self.STATE, "scratch"):
                    if key not in self.state:
                        self.state[key] = xp.zeros_like(parameters)
                self._update(parameters, getattr(layer, "d" + name), xp)
        finally:
            self.state = flat_state

    @property
    def rule(self) -> str:
        """The name of this update rule's kernel in kernels/optimizers.cu."""
        return type(self).__name__.lower()

    def post_update_params(self) -> None:
        self.iterations += 1

    def saved_state(self) -> dict[str, Any]:
        """The arrays to save with a model (everything but the scratch buffer)."""
        return {name: self.state[name] for name in self.STATE if name in self.state}


class SGD(Optimizer):
    """Stochastic gradient descent, with the book's momentum:
    ``update = momentum * update - lr * grad; param += update``."""

    def __init__(self, learning_rate: float = 1.0, decay: float = 0.0,
                 momentum: float = 0.0) -> None:
        super().__init__(learning_rate, decay)
        self.momentum = _checks.number("momentum", momentum, below=1.0)

    @property
    def STATE(self) -> tuple[str, ...]:  # noqa: N802 (the base's class attribute)
        # asked at every step: a momentum set after construction gets its array then
        return ("momentums",) if self.momentum else ()

    def config(self) -> dict[str, float]:
        return {**super().config(), "momentum": self.momentum}

    @property
    def rule(self) -> str:
        return "sgd_momentum" if self.momentum else "sgd"

    def _update(self, parameters: Any, gradients: Any, xp: Any) -> None:
        if not self.momentum:
            xp.multiply(gradients, -self.current_learning_rate, out=self.state["scratch"])
            parameters += self.state["scratch"]
            return
        updates = self.state["momentums"]
        updates *= self.momentum
        xp.multiply(gradients, self.current_learning_rate, out=self.state["scratch"])
        updates -= self.state["scratch"]
        parameters += updates


class Adagrad(Optimizer):
    """Per-parameter rates from the sum of squared gradients:
    ``cache += grad**2; param -= lr * grad / (sqrt(cache) + epsilon)``."""

    STATE = ("cache",)

    def __init__(self, learning_rate: float = 1.0, decay: float = 0.0,
                 epsilon: float = 1e-7) -> None:
        super().__init__(learning_rate, decay)
        self.epsilon = _checks.number("epsilon", epsilon, above_minimum=True)

    def config(self) -> dict[str, float]:
        return {**super().config(), "epsilon": self.epsilon}

    def _update(self, parameters: Any, gradients: Any, xp: Any) -> None:
        cache, step = self.state["cache"], self.state["scratch"]
        xp.multiply(gradients, gradients, out=step)
        cache += step
        _scaled_step(xp, parameters, gradients, cache, step, self.current_learning_rate,
                     self.epsilon)


class RMSprop(Optimizer):
    """A moving average of squared gradients instead of a sum:
    ``cache = rho * cache + (1 - rho) * grad**2; param -= lr * grad / (sqrt(cache) + eps)``."""

    STATE = ("cache",)

    def __init__(self, learning_rate: float = 0.001, decay: float = 0.0, epsilon: float = 1e-7,
                 rho: float = 0.9) -> None:
        super().__init__(learning_rate, decay)
        self.epsilon = _checks.number("epsilon", epsilon, above_minimum=True)
        self.rho = _checks.number("rho", rho, below=1.0)

    def config(self) -> dict[str, float]:
        return {**super().config(), "epsilon": self.epsilon, "rho": self.rho}

    def _update(self, parameters: Any, gradients: Any, xp: Any) -> None:
        cache, step = self.state["cache"], self.state["scratch"]
        cache *= self.rho
        xp.multiply(gradients, gradients, out=step)
        step *= 1.0 - self.rho
        cache += step
        _scaled_step(xp, parameters, gradients, cache, step, self.current_learning_rate,
                     self.epsilon)


class Adam(Optimizer):
    """RMSprop with momentum and bias correction:
    ``m = b1 m + (1-b1) g; v = b2 v + (1-b2) g**2;
    param -= lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)``, t = iterations + 1."""

    STATE = ("momentums", "cache")

    def __init__(self, learning_rate: float = 0.001, decay: float = 0.0, epsilon: float = 1e-7,
                 beta_1: float = 0.9, beta_2: float = 0.999) -> None:
        super().__init__(learning_rate, decay)
        self.epsilon = _checks.number("epsilon", epsilon, above_minimum=True)
        self.beta_1 = _checks.number("beta_1", beta_1, below=1.0)
        self.beta_2 = _checks.number("beta_2", beta_2, below=1.0)

    def config(self) -> dict[str, float]:
        return {**super().config(), "epsilon": self.epsilon, "beta_1": self.beta_1,
                "beta_2": self.beta_2}

    def _update(self, parameters: Any, gradients: Any, xp: Any) -> None:
        momentums, cache, step = self.state["momentums"], self.state["cache"], self.state["scratch"]
        t = self.iterations + 1
        momentums *= self.beta_1
        xp.multiply(gradients, 1.0 - self.beta_1, out=step)
        momentums += step
        cache *= self.beta_2
        xp.multiply(gradients, gradients, out=step)
        step *= 1.0 - self.beta_2
        cache += step
        # lr * m_hat / (sqrt(v_hat) + eps) with m_hat = m / (1 - b1**t), v_hat = v / (1 - b2**t),
        # rearranged as lr * c * m / (sqrt(v) + eps * s), s = sqrt(1 - b2**t), c = s / (1 - b1**t):
        # the same value, one pass over the parameters fewer.
        s = math.sqrt(1.0 - self.beta_2**t)
        xp.sqrt(cache, out=step)
        step += self.epsilon * s
        xp.divide(momentums, step, out=step)
        step *= self.current_learning_rate * s / (1.0 - self.beta_1**t)
        parameters -= step


def _scaled_step(xp, parameters, gradients, cache, step, learning_rate, epsilon) -> None:
    """``parameters -= learning_rate * gradients / (sqrt(cache) + epsilon)``, using ``step``."""
    xp.sqrt(cache, out=step)
    step += epsilon
    xp.divide(gradients, step, out=step)
    step *= learning_rate
    parameters -= step


OPTIMIZERS = {cls.__name__: cls for cls in (SGD, Adagrad, RMSprop, Adam)}
