"""Callbacks: small objects the training loop calls as it goes, as Keras' ``fit`` does.

``Model.train(..., callbacks=[...])`` calls, on every callback in order, ``on_train_begin()``,
``on_epoch_begin(epoch)``, ``on_batch_end(epoch, step, steps)`` after each step,
``on_epoch_end(epoch, logs)`` with the epoch's metrics (the keys of ``history``), and
``on_train_end()``. Epochs are numbered from 1 (from ``initial_epoch + 1`` when resuming), as
gpunn's history and lines number them. Any callback may set ``model.stop_training = True``:
the loop stops after the current step's epoch, and ``history.stopped`` says where and why.

``on_batch_end`` gets no metrics, unlike Keras': on CUDA they stay on the device until the
epoch ends, and reading them after every step would make the GPU wait for the host every step.
In data-parallel training every rank calls its callbacks with the same (reduced) logs, and
the ranks stop together only when each decides alike, as a decision from the logs does; there
a stop asked in ``on_batch_end`` takes effect at the epoch's end.

EarlyStopping, ModelCheckpoint, ReduceLROnPlateau and LearningRateScheduler take Keras' names,
defaults and rules (keras/src/callbacks/); the progress display, the CLI's checkpoint writer
and the functions given as ``on_epoch_end=``/``on_batch_end=`` are callbacks too.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpunn import _checks
from gpunn.errors import InvalidArgumentError, InvalidTypeError


class Callback:
    """The base: every method does nothing. ``self.model`` is the model being trained and
    ``self.params`` holds ``epochs`` (the last epoch's number), ``steps`` and ``metrics``
    (the keys each epoch's logs will have). A callback that stops training may set
    ``stop_reason``, which ``history.stopped`` repeats."""

    model: Any = None
    params: dict[str, Any] = {}
    stop_reason: str | None = None

    def on_train_begin(self) -> None:
        pass

    def on_epoch_begin(self, epoch: int) -> None:
        pass

    def on_batch_end(self, epoch: int, step: int, steps: int) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        pass

    def on_train_end(self) -> None:
        pass


class CallbackList:
    """Calls each callback in turn and notes which one stopped the run and why."""

    def __init__(self, callbacks: list[Callback], model: Any, params: dict[str, Any]) -> None:
        self.callbacks, self.model, self.stopped = callbacks, model, None
        for callback in callbacks:
            callback.model, callback.params = model, params

    def __iter__(self):
        return iter(self.callbacks)

    def train_begin(self) -> None:
        self.model.stop_training = False
        for callback in self.callbacks:
            callback.on_train_begin()

    def epoch_begin(self, epoch: int) -> None:
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch)

    def batch_end(self, epoch: int, step: int, steps: int) -> None:
        for callback in self.callbacks:
            callback.on_batch_end(epoch, step, steps)
            self._note(callback, epoch)

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)
            self._note(callback, epoch)

    def train_end(self) -> None:
        for callback in self.callbacks:
            callback.on_train_end()

    def _note(self, callback: Callback, epoch: int) -> None:
        if self.model.stop_training and self.stopped is None:
            self.stopped = (epoch, callback)

    def stop_record(self) -> dict[str, Any] | None:
        """Where and why a callback stopped training (asked after ``train_end``, where
        EarlyStopping says which epoch's parameters it restored), or None."""
        if self.stopped is None:
            return None
        epoch, callback = self.stopped
        return {"epoch": epoch,
                "reason": callback.stop_reason or f"{callback!r} set model.stop_training"}


class Functions(Callback):
    """``Model.train``'s ``on_epoch_end(epoch, logs)`` and ``on_batch_end(epoch, step,
    steps)`` functions as a callback; either may set ``model.stop_training``."""

    def __init__(self, on_epoch_end: Callable | None = None,
                 on_batch_end: Callable | None = None) -> None:
        self.epoch_end, self.batch_end = on_epoch_end, on_batch_end

    def __repr__(self) -> str:
        return "on_epoch_end" if self.epoch_end is not None else "on_batch_end"

    def on_batch_end(self, epoch: int, step: int, steps: int) -> None:
        if self.batch_end is not None:
            self.batch_end(epoch, step, steps)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.epoch_end is not None:
            self.epoch_end(epoch, logs)


class _Monitor(Callback):
    """What EarlyStopping, ModelCheckpoint and ReduceLROnPlateau share: a metric of the logs,
    and whether lower or higher is better ("auto": higher for accuracies, lower for losses)."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0) -> None:
        if not isinstance(monitor, str):
            raise InvalidTypeError(f"monitor must be the name of a metric such as 'val_loss'; "
                                   f"received monitor={monitor!r}.")
        if mode not in ("auto", "min", "max"):
            raise InvalidArgumentError(f"mode must be 'auto', 'min' or 'max'; received "
                                       f"mode={mode!r}.")
        self.monitor, self.mode = monitor, mode
        self.min_delta = abs(_checks.number("min_delta", min_delta))

    def on_train_begin(self) -> None:
        metrics = self.params.get("metrics", [])
        if self.monitor not in metrics:
            hint = (" Give validation_data or validation_split, or monitor a training metric."
                    if self.monitor.startswith("val_") else "")
            raise InvalidArgumentError(
                f"{type(self).__name__} monitors {self.monitor!r}, which this training does not "
                f"measure; it measures {', '.join(map(repr, metrics))}.{hint}")
        name = self.monitor.removeprefix("val_")
        if self.mode == "auto" and not (name == "accuracy" or name.endswith("loss")):
            raise InvalidArgumentError(
                f"{type(self).__name__} cannot tell whether {self.monitor!r} should rise or "
                f"fall; pass mode='min' or mode='max'.")
        self.higher = self.mode == "max" or (self.mode == "auto" and name == "accuracy")
        self.best = -math.inf if self.higher else math.inf

    def better(self, value: float, reference: float) -> bool:
        """Whether ``value`` beats ``reference`` by more than min_delta."""
        if self.higher:
            return value - self.min_delta > reference
        return value + self.min_delta < reference


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs (Keras' EarlyStopping). With ``restore_best_weights`` the model ends with the
    parameters of its best epoch (kept as a copy on the model's device: no transfer).

    Example: ``model.train(X, y, epochs=500, validation_split=0.1,
    callbacks=[gn.callbacks.EarlyStopping(patience=10, restore_best_weights=True)])``.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline: float | None = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0) -> None:
        super().__init__(monitor, mode, min_delta)
        self.patience = _checks.integer("patience", patience, minimum=0)
        self.start_from_epoch = _checks.integer("start_from_epoch", start_from_epoch, minimum=0)
        self.baseline = None if baseline is None else _checks.number("baseline", baseline)
        self.verbose, self.restore_best_weights = verbose, bool(restore_best_weights)

    def __repr__(self) -> str:
        return f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience})"

    def on_train_begin(self) -> None:
        super().on_train_begin()
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, None
        self.best_weights, self.stop_reason = None, None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        current = logs[self.monitor]
        if epoch <= self.start_from_epoch:  # Keras' 0-based epoch < start_from_epoch
            return
        if self.restore_best_weights and self.best_weights is None:
            self._keep(epoch)
        self.wait += 1
        if self.better(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self._keep(epoch)
            if self.baseline is None or self.better(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 1:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            self.stop_reason = (f"EarlyStopping: {self.monitor} did not improve by more than "
                                f"{self.min_delta:g} for {self.wait} epochs (best {self.best:.4g} "
                                f"in epoch {self.best_epoch})")

    def _keep(self, epoch: int) -> None:
        self.best_weights, self.best_epoch = self.model.parameters.copy(), epoch

    def on_train_end(self) -> None:
        if self.stopped_epoch and self.verbose:
            print(f"epoch {self.stopped_epoch}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            with self.model.backend.activate():
                self.model.parameters[...] = self.best_weights
            if self.stop_reason:
                self.stop_reason += f"; the parameters are epoch {self.best_epoch}'s"
            if self.verbose:
                print(f"restored the parameters of the best epoch, {self.best_epoch}")


class ModelCheckpoint(_Monitor):
    """Save the model (``Model.save``; with ``save_weights_only``, ``save_parameters``) after
    every epoch, or with ``save_best_only`` after each epoch that improves ``monitor``
    (Keras' ModelCheckpoint). ``filepath`` may name the epoch and metrics,
    ``"model-{epoch:03d}-{val_loss:.3f}.npz"``; its folder is made if missing. Files are written
    as gpunn writes every file: atomically, and never over a file that is not a gpunn model
    (checked before training)."""

    def __init__(self, filepath: str | Path, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False,
                 mode: str = "auto", save_freq: str = "epoch",
                 initial_value_threshold: float | None = None) -> None:
        super().__init__(monitor, mode)
        if save_freq != "epoch":
            raise InvalidArgumentError(f"ModelCheckpoint saves at the end of epochs "
                                       f"(save_freq='epoch'); received save_freq={save_freq!r}.")
        self.filepath, self.verbose = str(filepath), verbose
        self.save_best_only, self.save_weights_only = bool(save_best_only), save_weights_only
        self.initial_value_threshold = initial_value_threshold

    def __repr__(self) -> str:
        return f"ModelCheckpoint({self.filepath!r})"

    def on_train_begin(self) -> None:
        if self.save_best_only:
            super().on_train_begin()
            if self.initial_value_threshold is not None:
                self.best = self.initial_value_threshold
        from gpunn import files, io

        kind = "parameters" if self.save_weights_only else "model"
        example = {name: 0.0 for name in self.params.get("metrics", [])}
        try:
            first = self.filepath.format(epoch=self.params.get("first", 1), **example)
        except (KeyError, IndexError, ValueError) as error:
            raise InvalidArgumentError(
                f"ModelCheckpoint's filepath {self.filepath!r} names {error}, which is not the "
                f"epoch or a metric of this training ({', '.join(example)}).") from None
        Path(first).parent.mkdir(parents=True, exist_ok=True)  # as Keras makes the folder
        files.check(first, kind, io.kind_of)  # refused now, not after the first epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        path = self.filepath.format(epoch=epoch, **logs)
        if self.save_best_only:
            current = logs[self.monitor]
            if not self.better(current, self.best):
                return
            if self.verbose:
                print(f"epoch {epoch}: {self.monitor} improved from {self.best:.5g} to "
                      f"{current:.5g}, saving the model to {path}")
            self.best = current
        if self.save_weights_only:
            self.model.save_parameters(path)
        else:
            self.model.save(path)


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved by more than
    ``min_delta`` for ``patience`` epochs, then wait ``cooldown`` epochs; never below
    ``min_lr`` (Keras' ReduceLROnPlateau)."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 verbose: int = 0, mode: str = "auto", min_delta: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0) -> None:
        super().__init__(monitor, mode, min_delta)
        self.factor = _checks.number("factor", factor, below=1.0)
        self.patience = _checks.integer("patience", patience, minimum=0)
        self.cooldown = _checks.integer("cooldown", cooldown, minimum=0)
        self.min_lr = _checks.number("min_lr", min_lr)
        self.verbose = verbose

    def __repr__(self) -> str:
        return f"ReduceLROnPlateau(monitor={self.monitor!r}, factor={self.factor})"

    def on_train_begin(self) -> None:
        super().on_train_begin()
        self.wait = self.cooldown_counter = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        current = logs[self.monitor]
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.better(current, self.best):
            self.best, self.wait = current, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            optimizer = self.model.optimizer
            if self.wait >= self.patience and optimizer.learning_rate > self.min_lr:
                optimizer.learning_rate = max(optimizer.learning_rate * self.factor,
                                              self.min_lr)
                self.cooldown_counter, self.wait = self.cooldown, 0
                if self.verbose:
                    print(f"epoch {epoch}: ReduceLROnPlateau set the learning rate to "
                          f"{optimizer.learning_rate:.4g}")


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch to ``schedule(epoch, lr)`` (or
    ``schedule(epoch)``), with ``epoch`` counted from 0 and ``lr`` the current rate, as
    Keras' LearningRateScheduler calls it. Example, halve the rate every 10 epochs:
    ``LearningRateScheduler(lambda epoch, lr: lr / 2 if epoch and epoch % 10 == 0 else lr)``.
    """

    def __init__(self, schedule: Callable, verbose: int = 0) -> None:
        if not callable(schedule):
            raise InvalidTypeError(f"LearningRateScheduler takes a function schedule(epoch, lr) "
                                   f"-> lr; received {schedule!r}.")
        self.schedule, self.verbose = schedule, verbose
        parameters = inspect.signature(schedule).parameters.values()
        self.takes_rate = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                              for p in parameters) >= 2 or any(
            p.kind == p.VAR_POSITIONAL for p in parameters)

    def __repr__(self) -> str:
        return f"LearningRateScheduler({getattr(self.schedule, '__name__', self.schedule)})"

    def on_epoch_begin(self, epoch: int) -> None:
        optimizer = self.model.optimizer
        index = epoch - 1  # Keras counts epochs from 0
        rate = (self.schedule(index, optimizer.learning_rate) if self.takes_rate
                else self.schedule(index))
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not \
                math.isfinite(rate) or rate < 0:
            raise InvalidArgumentError(
                f"LearningRateScheduler's schedule must return a finite number >= 0; for epoch "
                f"{index} (counted from 0) it returned {rate!r}.")
        optimizer.learning_rate = float(rate)
        if self.verbose:
            print(f"epoch {epoch}: LearningRateScheduler set the learning rate to {rate:.4g}")
