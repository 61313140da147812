"""The Model: layers in order, a loss, an optimizer and an accuracy; train, evaluate, predict.

As in the book, with three differences that keep it fast on either device: every parameter
lives in one flat array (so the optimizer does a few whole-array operations per step), a Dense
layer followed by ReLU runs as one fused bias + ReLU kernel, and input checks happen once per
call, before anything is changed.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy

from gpunn import _checks, _data, io, precision, tables
from gpunn._data import outputs as data_outputs
from gpunn.accuracy import Accuracy, CategoricalAccuracy
from gpunn.activations import ReLU, Sigmoid, Softmax
from gpunn.backend import DeviceLike, device
from gpunn.errors import (
    DeviceOutOfMemoryError,
    FileFormatError,
    GpunnError,
    InvalidArgumentError,
    InvalidTypeError,
)
from gpunn.layers import Dense, Layer, Standardize
from gpunn.losses import CategoricalCrossentropy, Loss, SoftmaxCategoricalCrossentropy
from gpunn.optimizers import Optimizer
from gpunn.training import History, format_logs
from gpunn.training import train as _train_loop

ALIGNMENT = 256  # bytes: where each weight and bias array starts in the flat parameter buffer


def _on_device(method: Any) -> Any:
    """Run a Model method with the model's device current: CuPy allocates, computes and draws
    random numbers on the current device, which for cuda:N (N >= 1) is not the model's."""
    @functools.wraps(method)
    def wrapper(self: Model, *args: Any, **kwargs: Any) -> Any:
        with self.backend.activate():
            return method(self, *args, **kwargs)
    return wrapper


class Model:
    """A sequential network. Example::

        model = gn.Model()
        model.add(gn.Dense(2, 64)); model.add(gn.ReLU()); model.add(gn.Dense(64, 3))
        model.add(gn.Softmax())
        model.set(loss=gn.CategoricalCrossentropy(), optimizer=gn.Adam(),
                  accuracy=gn.CategoricalAccuracy())
        model.finalize()
        model.train(X, y, epochs=10)
    """

    def __init__(self, device: DeviceLike = None, dtype: str = "float32",
                 precision: Any = "float32") -> None:
        self.backend = _device(device)
        self.dtype = _checks.dtype_name(dtype)
        # In which type products and activations run: "float32" (the dtype itself), "tf32",
        # "bfloat16" or "float16" (gpunn.precision); checked against the device at finalize.
        self.precision = _precision(precision)
        self.layers: list[Layer] = []
        self.loss: Loss | None = None
        self.optimizer: Optimizer | None = None
        self.accuracy: Accuracy | None = None
        self.finalized = False
        # What the model was trained on, kept in its file (JSON): gpunn train records the data
        # set, its seed and split, so that `gpunn evaluate` scores the data held out.
        self.trained_on: dict[str, Any] | None = None
        # What the model knows of its data (gpunn.tables), kept in its file: the names of the
        # features and targets it was trained on (as scikit-learn's feature_names_in_), the
        # user's class labels (sorted, any type; output i is classes[i]) and a regression's
        # target scaling (trained on (y - mean) / std; predict answers in the user's units).
        self.feature_names: list[str] | None = None
        self.target_names: list[str] | None = None
        self.classes: list | None = None
        self.target_scaling: Standardize | None = None
        # Set by a callback (gpunn.callbacks) to end training after the current epoch.
        self.stop_training = False

    def __repr__(self) -> str:
        return f"Model({', '.join(map(repr, self.layers))}; device={self.device})"

    def summary(self, print_fn: Any = print) -> None:
        """Print, as Keras' ``model.summary()`` does, each layer with its output width and
        parameter count, the totals, the loss, optimizer and accuracy, the precision policy
        and the device (``print(model)`` stays one line). ``print_fn`` takes each line."""
        rows, width, trainable = [], getattr(self.input_layer, "n_inputs", None), 0
        for layer in self.layers:
            width = getattr(layer, "n_neurons", width)  # Dense changes it, the rest keep it
            count = layer.weights.size + layer.biases.size if layer.trainable else 0
            fixed = getattr(layer, "mean_values", ())  # Standardize: a mean and a std each
            rows.append((repr(layer), "?" if width is None else str(width), count or
                         2 * len(fixed)))
            trainable += count
        name = max([len("Layer"), *(len(row[0]) for row in rows)])
        lines = [f"{'Layer':<{name}}  {'Output':>8}  {'Parameters':>12}"]
        lines += [f"{layer:<{name}}  {output:>8}  {count:>12,}" for layer, output, count in rows]
        total = sum(row[2] for row in rows)
        size = total * numpy.dtype(self.dtype).itemsize
        lines.append(f"Total parameters: {total:,} ({size / 1024:,.1f} KiB as {self.dtype}): "
                     f"{trainable:,} trainable, {total - trainable:,} fixed")
        parts = [f"{kind} {getattr(self, kind)!r}" for kind in ("loss", "optimizer", "accuracy")
                 if getattr(self, kind) is not None]
        if parts:
            lines.append(", ".join(parts))
        lines.append(f"Precision {self.precision.name}, device {self.device}"
                     + ("" if self.finalized else "; not finalized yet (model.finalize())"))
        for line in lines:
            print_fn(line)

    @property
    def trainable_layers(self) -> list[Layer]:
        """The layers with parameters (Dense), in order."""
        return [layer for layer in self.layers if layer.trainable]

    @property
    def input_layer(self) -> Layer | None:
        """The first layer that fixes the number of input features (Standardize or Dense), or
        None when no layer does."""
        return next((layer for layer in self.layers if layer.n_inputs is not None), None)

    @property
    def device(self) -> str:
        """The device the model's parameters live on, such as "cpu" or "cuda:0"."""
        return self.backend.device

    # ---- building ---------------------------------------------------------------------------

    def add(self, layer: Layer) -> None:
        """Append a layer or activation."""
        if not isinstance(layer, Layer):
            raise InvalidTypeError(f"Model.add expects a gpunn layer such as gn.Dense(2, 64); "
                                   f"received {layer!r}.")
        self.layers.append(layer)
        self.finalized = False

    def set(self, *, loss: Loss | None = None, optimizer: Optimizer | None = None,
            accuracy: Accuracy | None = None, precision: Any = None,
            target_scaling: Standardize | None = None) -> None:
        """Choose the loss, the optimizer, the accuracy measure, the precision policy
        ("float32", "tf32", "bfloat16" or "float16"; see gpunn.precision) and, for a regression,
        a target scaling: ``target_scaling=gn.Standardize.fit(y_train.reshape(len(y_train),
        -1))`` trains on standardized targets while ``predict`` answers in y's units."""
        if precision is not None:
            self.precision = _precision(precision)
        if target_scaling is not None:
            if not isinstance(target_scaling, Standardize):
                raise InvalidTypeError(f"target_scaling must be a gn.Standardize (e.g. "
                                       f"gn.Standardize.fit(y.reshape(len(y), -1))); received "
                                       f"{target_scaling!r}.")
            self.target_scaling = target_scaling
        for name, value, kind in (("loss", loss, Loss), ("optimizer", optimizer, Optimizer),
                                  ("accuracy", accuracy, Accuracy)):
            if value is not None and not isinstance(value, kind):
                raise InvalidTypeError(f"{name} must be a gpunn {kind.__name__}; "
                                       f"received {value!r}.")
        self.loss = loss or self.loss
        self.optimizer = optimizer or self.optimizer
        self.accuracy = accuracy or self.accuracy
        self.finalized = False

    @_on_device
    def finalize(self) -> None:
        """Check the architecture, move everything to the model's device and dtype, and pack
        the parameters into one flat array."""
        if not self.layers:
            raise InvalidArgumentError("The model has no layers: call model.add(...) first.")
        sized = [layer for layer in self.layers if layer.n_inputs is not None]
        for before, after in zip(sized, sized[1:]):
            gives = getattr(before, "n_neurons", before.n_inputs)  # Standardize keeps the width
            if gives != after.n_inputs:
                raise InvalidArgumentError(
                    f"{after!r} expects {after.n_inputs} inputs but the layer before it, "
                    f"{before!r}, gives {gives}.")
        self._check_head()
        self.to(self.backend)

    def _check_head(self) -> None:
        """Refuse, before training, a last layer the loss cannot use, classes that do not match
        the outputs, a target scaling that does not; a categorical accuracy on sigmoid outputs
        compares each output with its 0/1 label (binary), as nothing else is meaningful."""
        last, outputs = self.layers[-1], data_outputs(self)
        if isinstance(self.loss, CategoricalCrossentropy) and not isinstance(last, Softmax):
            raise InvalidArgumentError(
                f"CategoricalCrossentropy needs probabilities: add gn.Softmax() as the last "
                f"layer (the model ends with {last!r}). For one sigmoid output use "
                f"gn.BinaryCrossentropy(); for a regression gn.MeanSquaredError().")
        if isinstance(self.accuracy, CategoricalAccuracy) and isinstance(last, Sigmoid):
            self.accuracy.binary = True
        if self.classes is not None and outputs is not None:
            expected = 1 if isinstance(last, Sigmoid) and len(self.classes) == 2 else outputs
            if len(self.classes) != expected:
                raise InvalidArgumentError(
                    f"model.classes has {len(self.classes)} labels but the model has "
                    f"{outputs} output{'s' if outputs > 1 else ''}; give one label per output "
                    f"(or two for one sigmoid output).")
        if self.target_scaling is not None and outputs is not None and \
                self.target_scaling.n_inputs != outputs:
            raise InvalidArgumentError(f"target_scaling scales {self.target_scaling.n_inputs} "
                                       f"targets but the model has {outputs} outputs.")

    def to(self, target: DeviceLike) -> Model:
        """Move the model (parameters and optimizer state) to ``target``; returns the model."""
        backend = _device(target)
        reason = precision.why_not(self.precision, backend, self.dtype)
        if reason is not None:
            raise InvalidArgumentError(reason)
        self.backend = backend
        with self.backend.activate():
            return self._move()

    def _move(self) -> Model:
        compute = self.precision.compute_dtype(self.dtype)
        trainable = self.trainable_layers
        # Backward stops at the first layer with parameters: nobody uses the input gradient of
        # it or of the layers before it (Standardize, an input Dropout), and skipping it skips
        # the largest matrix product of the backward pass.
        self._first_trainable = trainable[0] if trainable else None
        for layer in self.layers:
            layer.to(self.backend, self.dtype)
            if layer.low_precision:
                layer.compute_dtype = compute
            if isinstance(layer, Dense):
                layer.compute_dinputs = layer is not self._first_trainable
                layer.tf32 = self.precision.tf32
        for part in (self.loss, self.accuracy, self.optimizer):
            if part is not None:
                part.to(self.backend)
        if self.target_scaling is not None:
            self.target_scaling.to(self.backend, self.dtype)
        if self.loss is not None:
            self.loss.remember_trainable_layers(self.trainable_layers)
        self._combined = (SoftmaxCategoricalCrossentropy(self.backend)
                          if isinstance(self.layers[-1], Softmax)
                          and isinstance(self.loss, CategoricalCrossentropy) else None)
        self._pack_parameters()
        self.finalized = True
        return self

    def _pack_parameters(self) -> None:
        xp = self.backend.xp
        # Each array starts ALIGNMENT bytes into the flat buffer (cuBLAS's recommendation for
        # its operands: with an odd layer width a packed offset would lose even 16-byte
        # alignment, and cuBLAS its fastest kernels); the gaps stay zero, with zero gradients.
        # Files hold the arrays packed without the gaps (packed/unpacked below).
        step = max(ALIGNMENT // numpy.dtype(self.dtype).itemsize, 1)
        self._segments, offset = [], 0
        for layer in self.trainable_layers:
            for value in (layer.weights, layer.biases):
                self._segments.append((offset, value.size))
                offset += -(-value.size // step) * step
        total = offset
        self.parameters = xp.zeros(total, dtype=self.dtype)
        self.gradients = xp.zeros(total, dtype=self.dtype)
        segments = iter(self._segments)
        for layer in self.trainable_layers:
            for name in ("weights", "biases"):
                value = getattr(layer, name)
                offset, size = next(segments)
                view = self.parameters[offset:offset + size].reshape(value.shape)
                view[...] = value
                setattr(layer, name, view)
                setattr(layer, "d" + name,
                        self.gradients[offset:offset + size].reshape(value.shape))
        # Under a 16-bit policy the products use a copy of the parameters in the compute dtype,
        # refreshed from the master parameters at every forward pass (_forward).
        compute = self.precision.compute_dtype(self.dtype)
        self.compute_parameters = (self.parameters if compute == self.dtype
                                   else xp.zeros(total, dtype=compute))
        for layer, (offset, size) in zip(self.trainable_layers, self._segments[::2]):
            layer.compute_weights = self.compute_parameters[
                offset:offset + size].reshape(layer.weights.shape)

    def packed(self, flat: numpy.ndarray) -> numpy.ndarray:
        """A host array laid out as ``parameters`` without the alignment gaps: every weight and
        bias in order, as gpunn's files hold them."""
        return numpy.concatenate([flat[offset:offset + size] for offset, size in self._segments])

    def unpacked(self, values: numpy.ndarray) -> numpy.ndarray:
        """The inverse of ``packed``: ``values`` spread to the aligned layout, zeros between."""
        flat = numpy.zeros(self.parameters.size, dtype=values.dtype)
        start = 0
        for offset, size in self._segments:
            flat[offset:offset + size] = values[start:start + size]
            start += size
        return flat

    @property
    def parameter_count(self) -> int:
        """How many weights and biases the model has (``parameters`` holds gaps beside them)."""
        return sum(size for _, size in self._segments)

    # ---- forward and backward -------------------------------------------------------------

    @_on_device
    def forward(self, X: Any, training: bool) -> Any:
        """Run every layer; a Dense followed by ReLU runs as one fused kernel."""
        self._refresh_compute_parameters()
        return self._forward(X, training)

    @_on_device
    def backward(self, output: Any, y: Any) -> None:
        """Gradients of the loss for every layer, last to first."""
        self._backward(output, y)

    # train, evaluate and predict make the device current once per call, not once per step.

    def _forward(self, X: Any, training: bool, layers: list | None = None) -> Any:
        """The output of ``layers`` (default: all) for X, in the model's dtype, with the
        products' copy of the parameters as ``_refresh_compute_parameters`` last made it."""
        backend = self.backend
        layers, i = self.layers if layers is None else layers, 0
        while i < len(layers):
            layer = layers[i]
            # into and out of a 16-bit policy's layers (a list, from model.forward, is left to
            # the layer's own conversion)
            if getattr(X, "dtype", layer.compute_dtype) != layer.compute_dtype:
                X = backend.cast(X, layer.compute_dtype)
            if (isinstance(layer, Dense) and i + 1 < len(layers)
                    and type(layers[i + 1]) is ReLU):
                layer.forward(X, training, fused_relu=layers[i + 1])
                i += 1
            else:
                layer.forward(X, training)
            X = layers[i].output
            i += 1
        return X if X.dtype == self.dtype else backend.cast(X, self.dtype)

    def _refresh_compute_parameters(self) -> None:
        """Under a 16-bit policy, the products' copy of the parameters, cast from the master
        ones: at every training step (inside the captured step) and once per forward,
        evaluate or predict call, not per batch."""
        if self.compute_parameters is not self.parameters:
            self.backend.cast(self.parameters, out=self.compute_parameters)

    def _backward(self, output: Any, y: Any, *, scale: Any = None) -> None:
        """Every layer's gradients of the loss, last to first; with ``scale`` (a float16
        policy's loss scale, a device scalar), of the loss times the scale, and without the
        regularization terms (added after unscaling: gpunn.training)."""
        if self._combined is not None:
            self._combined.backward(output, y)
            dvalues, layers = self._combined.dinputs, self.layers[:-1]
        else:
            self.loss.backward(output, y)
            dvalues, layers = self.loss.dinputs, self.layers
        if scale is not None:
            dvalues *= scale
        self._backward_from(dvalues, layers, regularize=scale is None)

    def _backward_from(self, dvalues: Any, layers: list, *, regularize: bool = True) -> None:
        for layer in reversed(layers):
            if dvalues.dtype != layer.compute_dtype:
                dvalues = self.backend.cast(dvalues, layer.compute_dtype)
            if layer.trainable:
                layer.backward(dvalues, regularize=regularize)
            else:
                layer.backward(dvalues)
            if layer is self._first_trainable:
                break
            dvalues = layer.dinputs

    # ---- training, evaluation, prediction -----------------------------------------------------

    @_on_device
    def train(self, X: Any, y: Any, *, epochs: int = 1, batch_size: int | None = None,
              shuffle: bool = True, print_every: int | None = None,
              validation_data: tuple | None = None, validation_split: float = 0.0,
              verbose: int = 1, callbacks: list | None = None, on_epoch_end: Any = None,
              on_batch_end: Any = None, initial_epoch: int = 0,
              cuda_graph: bool = True) -> History:
        """Train for ``epochs`` passes over (X, y) and return the per-epoch history.

        Args:
            X, y: NumPy or CuPy arrays, arrays with DLPack, numeric pandas DataFrames and
                Series, or lists (``validation_data`` too, a pair).
            validation_split: the fraction of (X, y) held out for validation, taken from the
                end before any shuffling, as Keras takes it (so shuffle data that is sorted
                first); not with ``validation_data``.
            verbose: 1 (or True, the default): as Keras, a progress bar per epoch with the
                running loss and accuracy in a terminal or a Jupyter notebook (one bar over all
                epochs when they are many or of few steps), and the book's summary line after
                each epoch; where the output is a log or a pipe, only that line. 0 (or False):
                nothing. 2, or any ``print_every``: the book's lines, ``epoch: E``, its step
                lines and its ``training, ...`` summary for the first epoch, every
                ``print_every``-th epoch and the last one; within those, a step line every
                ``print_every`` steps and for the last step (``print_every`` defaults to 1).
            callbacks: gpunn.callbacks objects (EarlyStopping, ModelCheckpoint,
                ReduceLROnPlateau, LearningRateScheduler, your own Callback), called in order;
                any may stop training with ``model.stop_training = True``, and
                ``history.stopped`` then says where and why.
            on_epoch_end, on_batch_end: functions ``on_epoch_end(epoch, logs)`` and
                ``on_batch_end(epoch, step, steps)``, called after the callbacks.
            initial_epoch: epochs are numbered from ``initial_epoch + 1`` (resumed runs).
            cuda_graph: on CUDA, each step of the full batch size runs as a captured CUDA
                graph unless False; the results are the same (gpunn.training says more).

        Raises:
            TrainingDivergedError: a loss became NaN or infinite; the message names the epoch
                and step, and the parameters are those from before that step.

        Ctrl-C stops after the current step and returns the history so far
        (``history.interrupted``). After ``gpunn.distributed.init()`` in each of N processes
        (``mpiexec -n N``), training is data-parallel: ``batch_size`` is the global batch and
        rank 0 alone prints.
        """
        from gpunn import callbacks as callbacks_module

        self._require_ready(training=True)
        epochs = _checks.integer("epochs", epochs, minimum=1)
        initial_epoch = _checks.integer("initial_epoch", initial_epoch, minimum=0)
        verbose = _verbosity(verbose, print_every)
        print_every = 1 if print_every is None else _checks.integer("print_every", print_every,
                                                                    minimum=1)
        listed = _callbacks(callbacks, callbacks_module.Callback)
        if on_epoch_end is not None or on_batch_end is not None:
            listed.append(callbacks_module.Functions(on_epoch_end, on_batch_end))
        X, y = _data.prepare(self, X, y, "X", "y", training=True)
        if validation_split:
            if validation_data is not None:
                raise InvalidArgumentError("Give validation_data or validation_split, not both.")
            X, y, validation_data = _split(X, y, validation_split)
        elif validation_data is not None:
            X_val, y_val = _data.pair(validation_data)
            validation_data = _data.prepare(self, X_val, y_val, "X_val", "y_val")
        _data.steps(len(X), batch_size)  # checks batch_size before anything changes
        self.accuracy.init(y)
        self.stop_training = False
        return _train_loop(self, X, y, epochs=epochs, batch_size=batch_size,
                           shuffle=shuffle, print_every=print_every,
                           validation_data=validation_data, verbose=verbose,
                           callbacks=listed, initial_epoch=initial_epoch,
                           cuda_graph=bool(cuda_graph))

    def _out_of_memory(self, error: BaseException, batch_size: int,
                       where: str) -> DeviceOutOfMemoryError:
        # The optimizer updates in place into buffers it already holds, so memory runs out in
        # forward or backward, before any parameter has changed.
        return DeviceOutOfMemoryError(
            f"{self.device} ran out of memory in {where} ({error}). The parameters are those "
            f"before this step. Try batch_size={max(1, batch_size // 2)}.")

    @_on_device
    def evaluate(self, X: Any, y: Any, *, batch_size: int | None = None,
                 verbose: bool = False) -> tuple[float, float]:
        """The data loss and accuracy on (X, y), without training."""
        self._require_ready(training=True)
        X, y = _data.prepare(self, X, y, "X", "y")
        loss, accuracy = self._evaluate(X, y, _data.steps(len(X), batch_size)[1])
        if verbose:
            print(format_logs("validation", {"loss": loss, "accuracy": accuracy}))
        return loss, accuracy

    def _evaluate(self, X: Any, y: Any, batch_size: int) -> tuple[float, float]:
        self._refresh_compute_parameters()
        self.loss.new_pass()
        self.accuracy.new_pass()
        for start in range(0, len(X), batch_size):
            output = self._forward_inference(X[start:start + batch_size], batch_size)
            batch_y = self.backend.asarray(y[start:start + batch_size])
            self.loss.calculate(output, batch_y)
            self.accuracy.calculate(self._output_layer_predictions(output), batch_y)
        return self.loss.calculate_accumulated(), self.accuracy.calculate_accumulated()

    @_on_device
    def predict(self, X: Any, *, batch_size: int | None = None,
                as_device_array: bool = False) -> Any:
        """The outputs of the last layer for X, as a NumPy array whatever the device; with
        ``as_device_array=True`` as an array on the model's device (CuPy on a GPU), for
        pipelines that stay there. X may be any array with DLPack (a PyTorch tensor, ...) or a
        numeric pandas DataFrame."""
        self._require_ready(training=False)
        X = _data.prepare(self, X, None, "X", None)[0]
        batch_size = _data.steps(len(X), batch_size)[1]
        self._refresh_compute_parameters()
        outputs = [self._forward_inference(X[start:start + batch_size], batch_size)
                   for start in range(0, len(X), batch_size)]
        if not outputs:
            raise InvalidArgumentError("predict received no samples (X has 0 rows).")
        if self.target_scaling is not None:  # in the user's units
            scale = self.target_scaling
            outputs = [output * scale.std + scale.mean for output in outputs]
        if as_device_array:
            return outputs[0] if len(outputs) == 1 else self.backend.xp.concatenate(outputs)
        return numpy.concatenate([self.backend.to_numpy(output) for output in outputs])

    def predict_labels(self, X: Any, *, batch_size: int | None = None) -> numpy.ndarray:
        """A classifier's predicted labels for X, as the user wrote them (``model.classes``;
        class indices where the model has none), as a NumPy array. Example:
        ``model.predict_labels(df_new)`` gives ``array(['setosa', 'virginica', ...])``."""
        if not isinstance(self.layers[-1], (Softmax, Sigmoid)):
            raise InvalidArgumentError(f"predict_labels is for classifiers (a Softmax or "
                                       f"Sigmoid output); this model ends with "
                                       f"{self.layers[-1]!r}: use model.predict(X).")
        outputs = self.predict(X, batch_size=batch_size)
        with self.backend.activate():
            indices = self.backend.to_numpy(self._output_layer_predictions(
                self.backend.asarray(outputs)))
        if self.classes is not None and indices.ndim == 2 and indices.shape[1] == 1:
            indices = indices[:, 0]
        return tables.decode(indices.astype(numpy.int64), self.classes)

    def _forward_inference(self, X: Any, batch_size: int) -> Any:
        try:
            return self._forward(X, training=False)
        except Exception as error:
            if not self.backend.is_out_of_memory(error):
                raise
            raise self._out_of_memory(error, batch_size, "inference") from error

    def _output_layer_predictions(self, output: Any) -> Any:
        return self.layers[-1].predictions(output)

    def _require_ready(self, *, training: bool) -> None:
        if training:
            missing = [name for name in ("loss", "optimizer", "accuracy")
                       if getattr(self, name) is None]
            if missing:
                raise GpunnError(f"Call model.set({', '.join(m + '=...' for m in missing)}) "
                                 f"before training or evaluating.")
        if not self.finalized:
            raise GpunnError("Call model.finalize() after adding layers and setting the loss, "
                             "optimizer and accuracy.")

    # ---- parameters -----------------------------------------------------------------------

    @_on_device
    def get_parameters(self) -> list[tuple[numpy.ndarray, numpy.ndarray]]:
        """(weights, biases) of every trainable layer, as NumPy copies."""
        return [(self.backend.to_numpy(layer.weights).copy(),
                 self.backend.to_numpy(layer.biases).copy()) for layer in self.trainable_layers]

    @_on_device
    def set_parameters(self, parameters: list) -> None:
        """Set every trainable layer's (weights, biases); checks all shapes before changing
        anything."""
        layers = self.trainable_layers
        parameters = list(parameters)
        if len(parameters) != len(layers):
            raise InvalidArgumentError(f"set_parameters expects {len(layers)} (weights, biases) "
                                       f"pairs, one per trainable layer; received "
                                       f"{len(parameters)}.")
        checked = []
        for index, (layer, pair) in enumerate(zip(layers, parameters)):
            if len(pair) != 2:
                raise InvalidArgumentError(f"set_parameters expects (weights, biases) pairs; "
                                           f"item {index} has {len(pair)} entries.")
            values = []
            for name, value in zip(("weights", "biases"), pair):
                value = numpy.asarray(self.backend.to_numpy(value))
                expected = tuple(getattr(layer, name).shape)
                if value.shape != expected:
                    raise InvalidArgumentError(
                        f"set_parameters: {name} of layer {index} ({layer!r}) must have shape "
                        f"{expected}; received {value.shape}.")
                if not numpy.isfinite(value).all():
                    raise InvalidArgumentError(f"set_parameters: {name} of layer {index} "
                                               f"({layer!r}) contains NaN or inf.")
                values.append(value)
            checked.append(values)
        for layer, (weights, biases) in zip(layers, checked):
            layer.weights[...] = self.backend.asarray(weights, dtype=layer.dtype)
            layer.biases[...] = self.backend.asarray(biases, dtype=layer.dtype)


    # ---- files ----------------------------------------------------------------------------

    def save_parameters(self, path: str, *, force: bool = False) -> None:
        """Write every trainable layer's weights and biases to ``path`` (safe .npz format); an
        existing file is replaced only when it holds gpunn parameters, or with ``force``."""
        arrays = {}
        for index, (weights, biases) in enumerate(self.get_parameters()):
            arrays[f"layer{index}.weights"], arrays[f"layer{index}.biases"] = weights, biases
        io.write(path, {"kind": "parameters", "count": len(arrays) // 2}, arrays, force=force)

    def load_parameters(self, path: str) -> None:
        """Read parameters written by ``save_parameters`` into this model's layers."""
        header, arrays = io.read(path, "parameters")
        try:
            pairs = [(arrays[f"layer{i}.weights"], arrays[f"layer{i}.biases"])
                     for i in range(int(header["count"]))]
        except (KeyError, TypeError, ValueError) as error:
            raise FileFormatError(f"{path}: incomplete parameter file ({error!r}).") from error
        self.set_parameters(pairs)

    def save(self, path: str, *, force: bool = False) -> None:
        """Write the whole model (architecture, loss, optimizer and its state, parameters, and
        ``trained_on`` when set) to ``path``; ``Model.load(path)`` restores it on any device. An
        existing file is replaced only when it is a gpunn model (as Keras' save would), or with
        ``force``: never a data file or a checkpoint by mistake."""
        self._require_ready(training=False)
        io.write(path, io.model_header(self), io.model_arrays(self), force=force)

    def to_onnx(self, path: str, *, dataset: str | None = None, force: bool = False) -> Any:
        """Write the model as an ONNX file (pip install 'gpunn[onnx]'); see gpunn.export."""
        # A shortcut the README documents. gpunn.export imports the model, not the other way
        # round, so the exporter is imported here, when called (tests/test_export.py checks).
        from gpunn import export

        return export.to_onnx(self, path, dataset=dataset, force=force)

    @classmethod
    def load(cls, path: str, device: DeviceLike = None, precision: Any = None) -> Model:
        """A model saved with ``save`` (or a training checkpoint), on ``device`` (default:
        $GPUNN_DEVICE, else auto), under ``precision`` (default: the policy it was saved
        with, or float32 where the device cannot run that one, with a warning)."""
        header, arrays = io.read(path, "model", "checkpoint")
        model = io.build_model(header, cls, device, precision)
        with model.backend.activate():
            io.restore_arrays(model, arrays, path)
        return model


def _device(spec: DeviceLike):
    return device(spec)


def _precision(spec: Any) -> precision.Policy:
    if isinstance(spec, dict):  # as saved in a model file
        return precision.policy(spec["name"], scaler=spec.get("scaler"))
    return precision.policy(spec)


def _callbacks(callbacks: Any, kind: type) -> list:
    if callbacks is None:
        return []
    listed = [callbacks] if isinstance(callbacks, kind) else list(callbacks)
    wrong = [callback for callback in listed if not isinstance(callback, kind)]
    if wrong:
        raise InvalidTypeError(f"callbacks must be gpunn.callbacks objects (EarlyStopping(), "
                               f"a subclass of gn.callbacks.Callback, ...); received "
                               f"{wrong[0]!r}. A plain function goes in on_epoch_end=.")
    return listed


def _split(X: Any, y: Any, fraction: Any) -> tuple[Any, Any, tuple[Any, Any]]:
    """Keras' validation_split: the last ``fraction`` of the rows, before shuffling."""
    fraction = _checks.number("validation_split", fraction, below=1.0)
    split_at = int(len(X) * (1.0 - fraction))
    if split_at == 0 or split_at == len(X):
        raise InvalidArgumentError(
            f"validation_split={fraction} of {len(X)} samples leaves "
            f"{'no training' if split_at == 0 else 'no validation'} sample; use a fraction "
            f"that leaves at least one of each.")
    return X[:split_at], y[:split_at], (X[split_at:], y[split_at:])


def _verbosity(verbose: Any, print_every: Any) -> int:
    """``Model.train``'s verbose as 0, 1 or 2: a given ``print_every`` asks for step lines."""
    if verbose not in (0, 1, 2) or not isinstance(verbose, (bool, int, numpy.integer)):
        raise InvalidArgumentError(f"verbose must be 0 (or False), 1 (or True) or 2; received "
                                   f"verbose={verbose!r}.")
    return 2 if verbose and print_every is not None else int(verbose)
