"""The book's classes under the book's names, over gpunn's own: a script from *Neural Networks
from Scratch* runs with its class definitions replaced by ``from gpunn.book import *``.

Every class here is gpunn's (``Layer_Dense`` is a ``gn.Dense``, ``Optimizer_Adam`` a
``gn.Adam``, ``Model`` a ``gn.Model``); what is added is what the book's scripts call and
what makes them print the book's numbers:

- the book's initial weights, ``0.01 * np.random.randn(n_inputs, n_neurons)`` from NumPy's
  global generator (so ``nnfs.init()`` seeds them), and its dropout masks,
  ``np.random.binomial(1, 1 - rate, shape)``, applied by gpunn's dropout op;
- both generations of methods: ``forward(inputs)`` (chapters 10-17, where dropout always
  drops) and ``forward(inputs, training)`` (chapters 18-22); ``Loss.calculate(...,
  include_regularization=True)``, ``loss.regularization_loss(layer)`` and
  ``loss.regularization_loss()``; ``optimizer.update_params(layer)``;
- the book's learning-rate decay written as the book writes it (the scripts print the float);
- ``Model.train`` as the book's loop: chapter 18's lines without ``batch_size``, chapter
  19-22's (``epoch:``, ``step:``, ``training,`` and ``validation,``) with it.

On CUDA: ``use("cuda")`` before the classes are made puts them there (``Model(device=
"cuda")`` does it for one model); a manual loop also moves its data, ``X, y = to_device(X,
y)``, so that its NumPy calls on the outputs (``np.argmax``, ``np.mean(predictions == y)``)
run on the device. Saved files are gpunn's (``gpunn.io``), not the book's pickles.

Example::

    import nnfs
    from nnfs.datasets import spiral_data
    from gpunn.book import *

    nnfs.init()
    X, y = spiral_data(samples=100, classes=3)
    dense1 = Layer_Dense(2, 64)
"""

from __future__ import annotations

import math
from typing import Any

import numpy

from gpunn import _checks, accuracy, activations, layers, losses, model, optimizers
from gpunn.backend import DeviceLike
from gpunn.backend import device as _open_device
from gpunn.errors import InvalidArgumentError

__all__ = [
    "Accuracy_Categorical", "Accuracy_Regression", "Activation_Linear", "Activation_ReLU",
    "Activation_Sigmoid", "Activation_Softmax",
    "Activation_Softmax_Loss_CategoricalCrossentropy", "Layer_Dense", "Layer_Dropout",
    "Layer_Input", "Loss_BinaryCrossentropy", "Loss_CategoricalCrossentropy",
    "Loss_MeanAbsoluteError", "Loss_MeanSquaredError", "Model", "Optimizer_Adagrad",
    "Optimizer_Adam", "Optimizer_RMSprop", "Optimizer_SGD", "to_device", "use",
]

# The book's classes start on the CPU, whatever gpunn's default: its scripts call NumPy on
# their outputs. use("cuda") moves the classes made after it.
_device: DeviceLike = "cpu"


def use(device: DeviceLike) -> None:
    """Make the book's classes created from now on live on ``device`` ("cpu", "cuda",
    "cuda:N"). Example: ``use("cuda")`` at the top of a chapter's script."""
    global _device
    _open_device(device)  # refuses an unknown or absent device now, with gpunn's message
    _device = device


def to_device(*arrays: Any) -> Any:
    """The arrays on the device ``use`` chose (one array, or a tuple for several).
    Example: ``X, y = to_device(X, y)``."""
    backend = _open_device(_device)
    moved = tuple(backend.asarray(array) for array in arrays)
    return moved[0] if len(moved) == 1 else moved


class _OnBookDevice:
    """Layers and activations made on ``use``'s device unless given one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("device", _device)
        super().__init__(*args, **kwargs)


# ---- layers ----------------------------------------------------------------------------------

class Layer_Dense(_OnBookDevice, layers.Dense):
    """gn.Dense with the book's initial weights, drawn from NumPy's global generator.
    Chapter 17's listing scales them by 0.1: ``Layer_Dense.initial_scale = 0.1``."""

    initial_scale = 0.01

    def __init__(self, n_inputs: int, n_neurons: int, weight_regularizer_l1: float = 0,
                 weight_regularizer_l2: float = 0, bias_regularizer_l1: float = 0,
                 bias_regularizer_l2: float = 0, **kwargs: Any) -> None:
        super().__init__(n_inputs, n_neurons, weight_regularizer_l1=weight_regularizer_l1,
                         weight_regularizer_l2=weight_regularizer_l2,
                         bias_regularizer_l1=bias_regularizer_l1,
                         bias_regularizer_l2=bias_regularizer_l2, **kwargs)
        # looked up at each call: nnfs.init() replaces randn with a float32 one
        weights = self.initial_scale * numpy.random.randn(self.n_inputs, self.n_neurons)
        self.set_parameters(weights, self.biases)

    def get_parameters(self) -> tuple[Any, Any]:
        return self.weights, self.biases

    def set_parameters(self, weights: Any, biases: Any) -> None:
        """Copy in new weights and biases (in place: a model's flat arrays keep them)."""
        for name, value in (("weights", weights), ("biases", biases)):
            target = getattr(self, name)
            value = self.backend.asarray(value, dtype=self.dtype)
            if value.shape != target.shape:
                raise InvalidArgumentError(f"{self!r}: {name} must have shape "
                                           f"{tuple(target.shape)}; received "
                                           f"{tuple(value.shape)}.")
            with self.backend.activate():
                target[...] = value


class Layer_Dropout(_OnBookDevice, layers.Dropout):
    """gn.Dropout with the book's masks. ``forward(inputs)`` drops, as in chapters 15-17."""

    def forward(self, inputs: Any, training: bool = True) -> None:
        if not training or self.rate == 0.0:
            super().forward(inputs, training=False)
            return
        inputs = self._input(inputs)
        keep = 1.0 - self.rate
        # The book's 0/1 draws as gpunn's dropout op's samples: floor(draw + keep) / keep is
        # 0 or 1 / keep exactly where the book's mask is.
        draws = numpy.random.binomial(1, keep, size=tuple(inputs.shape))
        draws = self.backend.asarray(draws, dtype=self.dtype)
        self.inputs = inputs
        self.mask, self.output = self.backend.dropout(inputs, draws, keep)

    @property
    def binary_mask(self) -> Any:
        return self.mask


class Layer_Input:
    """The book's input layer (chapters 18-22): its output is its input."""

    def forward(self, inputs: Any, training: bool = False) -> None:
        self.output = inputs


class Activation_ReLU(_OnBookDevice, activations.ReLU):
    pass


class Activation_Softmax(_OnBookDevice, activations.Softmax):
    pass


class Activation_Sigmoid(_OnBookDevice, activations.Sigmoid):
    pass


class Activation_Linear(_OnBookDevice, activations.Linear):
    pass


# ---- losses and accuracies ---------------------------------------------------------------------

class _BookLoss:
    """The book's Loss methods over a gpunn loss; targets may be host arrays."""

    def __init__(self) -> None:
        super().__init__()
        self.to(_open_device(_device))

    def _targets(self, y: Any, output: Any) -> Any:
        # float targets in the outputs' dtype (the book's sine_data is float64): a float64
        # gradient would reach Dense.backward's float32 products, which CuPy refuses
        y = self.backend.asarray(y)
        return y.astype(output.dtype) if y.dtype.kind == "f" and y.dtype != output.dtype else y

    def calculate(self, output: Any, y: Any, *, include_regularization: bool = False) -> Any:
        data_loss = super().calculate(output, self._targets(y, output))
        if not include_regularization:
            return data_loss
        return data_loss, self.regularization_loss()

    def calculate_accumulated(self, *, include_regularization: bool = False) -> Any:
        data_loss = super().calculate_accumulated()
        if not include_regularization:
            return data_loss
        return data_loss, self.regularization_loss()

    def regularization_loss(self, layer: Any = None) -> float:
        """One layer's penalties (chapters 14-17), or the remembered trainable layers'
        (chapters 18-22)."""
        return super().regularization_loss() if layer is None else layer.regularization_loss()

    def backward(self, dvalues: Any, y_true: Any) -> None:
        super().backward(dvalues, self._targets(y_true, dvalues))


class Loss_CategoricalCrossentropy(_BookLoss, losses.CategoricalCrossentropy):
    pass


class Loss_BinaryCrossentropy(_BookLoss, losses.BinaryCrossentropy):
    pass


class Loss_MeanSquaredError(_BookLoss, losses.MeanSquaredError):
    pass


class Loss_MeanAbsoluteError(_BookLoss, losses.MeanAbsoluteError):
    pass


class Activation_Softmax_Loss_CategoricalCrossentropy:
    """Softmax and cross-entropy with the combined gradient: ``forward(inputs, y_true)``
    returns the loss (chapters 10-17); ``backward`` is gpunn's SoftmaxCategoricalCrossentropy."""

    def __init__(self) -> None:
        self.activation = Activation_Softmax()
        self.loss = Loss_CategoricalCrossentropy()

    def forward(self, inputs: Any, y_true: Any) -> Any:
        self.activation.forward(inputs)
        self.output = self.activation.output
        return self.loss.calculate(self.output, y_true)

    def backward(self, dvalues: Any, y_true: Any) -> None:
        backend = self.activation.backend
        combined = losses.SoftmaxCategoricalCrossentropy(backend)
        combined.backward(backend.asarray(dvalues), backend.asarray(y_true))
        self.dinputs = combined.dinputs


class _BookAccuracy:
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.to(_open_device(_device))

    def calculate(self, predictions: Any, y: Any) -> Any:
        return super().calculate(predictions, self.backend.asarray(y))


class Accuracy_Categorical(_BookAccuracy, accuracy.CategoricalAccuracy):
    pass


class Accuracy_Regression(_BookAccuracy, accuracy.RegressionAccuracy):
    pass


# ---- optimizers ------------------------------------------------------------------------------

class _BookDecay:
    """The book's decay, ``lr * (1 / (1 + decay * iterations))``: the scripts print the float,
    and gpunn's ``lr / (1 + ...)`` differs from it in the last bit on about one step in five."""

    def pre_update_params(self) -> None:
        if self.decay:
            self.current_learning_rate = self.learning_rate * \
                (1. / (1. + self.decay * self.iterations))


class Optimizer_SGD(_BookDecay, optimizers.SGD):
    pass


class Optimizer_Adagrad(_BookDecay, optimizers.Adagrad):
    pass


class Optimizer_RMSprop(_BookDecay, optimizers.RMSprop):
    pass


class Optimizer_Adam(_BookDecay, optimizers.Adam):
    pass


# ---- the model -------------------------------------------------------------------------------

class Model(model.Model):
    """gn.Model with the book's attributes and its printing loop. Example:
    ``Model(device="cuda")`` runs a chapter 18-22 script on a GPU."""

    def __init__(self, device: DeviceLike = None, **kwargs: Any) -> None:
        super().__init__(device=_device if device is None else device, **kwargs)
        self.softmax_classifier_output = None

    def finalize(self) -> None:
        super().finalize()
        self.output_layer_activation = self.layers[-1]
        self.softmax_classifier_output = self._combined

    def train(self, X: Any, y: Any, *, epochs: int = 1, batch_size: int | None = None,
              print_every: int = 1, validation_data: tuple | None = None) -> None:
        """The book's loop: chapter 18's (one step per epoch, a line every ``print_every``
        epochs) without ``batch_size``, chapter 19's with it."""
        self._require_ready(training=True)
        epochs = _checks.integer("epochs", epochs, minimum=0)
        print_every = _checks.integer("print_every", print_every, minimum=1)
        if batch_size is not None:
            batch_size = _checks.integer("batch_size", batch_size, minimum=1)
        X, y = self.backend.asarray(X, dtype=self.dtype), self.backend.asarray(y)
        if len(X) != len(y) or len(X) == 0:
            raise InvalidArgumentError(f"Model.train expects as many targets as samples, at "
                                       f"least one; received {len(X)} samples and {len(y)} "
                                       f"targets.")
        self.accuracy.init(y)
        steps = 1 if batch_size is None else math.ceil(len(X) / batch_size)
        for epoch in range(1, epochs + 1):
            if batch_size is not None:
                print(f'epoch: {epoch}')
            self.loss.new_pass()
            self.accuracy.new_pass()
            for step in range(steps):
                if batch_size is None:
                    batch_X, batch_y = X, y
                else:
                    batch_X = X[step * batch_size:(step + 1) * batch_size]
                    batch_y = y[step * batch_size:(step + 1) * batch_size]
                logs = self._book_step(batch_X, batch_y)
                if batch_size is None and not epoch % print_every:
                    print(f'epoch: {epoch}, ' + self._format(*logs))
                elif batch_size is not None and (not step % print_every or step == steps - 1):
                    print(f'step: {step}, ' + self._format(*logs))
            if batch_size is not None:
                print('training, ' + self._format(self.accuracy.calculate_accumulated(),
                                                  self.loss.calculate_accumulated(),
                                                  self.loss.regularization_loss()))
                if validation_data is not None:
                    self.evaluate(*validation_data, batch_size=batch_size)
        if batch_size is None and validation_data is not None:
            self.evaluate(*validation_data)

    def _book_step(self, X: Any, y: Any) -> tuple[Any, Any, Any]:
        # gpunn's own methods, so that a model read by Model.load (gpunn's classes) trains too
        output = self.forward(X, training=True)
        data_loss = self.loss.calculate(output, y)
        regularization_loss = self.loss.regularization_loss()
        accuracy = self.accuracy.calculate(self.output_layer_activation.predictions(output), y)
        self.backward(output, y)
        self.optimizer.pre_update_params()
        # every trainable layer's update at once: gn.Model keeps them in one flat array
        self.optimizer.update_params(self.parameters, self.gradients)
        self.optimizer.post_update_params()
        return accuracy, data_loss, regularization_loss

    def _format(self, accuracy: Any, data_loss: Any, regularization_loss: Any) -> str:
        accuracy, data_loss = float(accuracy), float(data_loss)
        return (f'acc: {accuracy:.3f}, ' +
                f'loss: {data_loss + regularization_loss:.3f} (' +
                f'data_loss: {data_loss:.3f}, ' +
                f'reg_loss: {regularization_loss:.3f}), ' +
                f'lr: {self.optimizer.current_learning_rate}')

    def evaluate(self, X_val: Any, y_val: Any, *, batch_size: int | None = None) -> None:
        """Print the book's ``validation, acc: ..., loss: ...`` line."""
        loss, accuracy = super().evaluate(X_val, y_val, batch_size=batch_size)
        print(f'validation, acc: {accuracy:.3f}, loss: {loss:.3f}')
