"""The training loop: the book's epochs and steps, arranged so that a GPU never waits for the host.

A step is forward, loss, backward and the optimizer update, as in the book. What is added:

- **Metrics stay on the device.** The sum of the losses, the correct predictions, a count of
  non-finite losses and the optimizer's step count live in one small float64 array, the tally,
  which the host reads at the end of an epoch, when a progress bar refreshes its running loss
  (at most every 0.2 s, gpunn.progress) or when a step line is printed (verbose=2); on the CPU,
  where reading costs nothing, after every step.
- **Divergence.** A non-finite loss is counted in the tally and the optimizer's update is skipped
  from that step on (the CUDA optimizer kernels read the count), so whenever it is noticed the
  parameters are those from before the diverging step. The error names that epoch and step.
- **CUDA graphs** (gpunn.backend.graphs): on CUDA the step of a fixed batch shape is captured
  once and replayed; a batch of another shape (the last, shorter one) runs uncaptured.

``Model.train`` checks its arguments and calls ``train`` here.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
from typing import Any

import numpy

from gpunn import _data, distributed, progress
from gpunn.backend import host_random, streaming
from gpunn.backend.kernels import (
    TALLY_CORRECT,
    TALLY_GOOD_STEPS,
    TALLY_ITERATIONS,
    TALLY_LOSS,
    TALLY_NONFINITE,
    TALLY_SCALE,
    TALLY_SIZE,
    TALLY_SKIPPED,
)
from gpunn.backend.numpy_backend import scaler_settings
from gpunn.callbacks import CallbackList
from gpunn.errors import InvalidArgumentError, TrainingDivergedError

log = logging.getLogger("gpunn")


class History(dict):
    """Per-epoch metrics, ``history["loss"][epoch]``; ``interrupted`` is True after Ctrl-C;
    ``stopped`` is None, or where and why a callback stopped training, ``{"epoch": 12,
    "reason": "EarlyStopping: val_loss did not improve ..."}``; ``cuda_graph`` says whether the
    step ran as a CUDA graph: "captured" or "off: <why>"."""

    interrupted = False
    stopped: dict | None = None
    cuda_graph = "off: not trained yet"


class Tally:
    """The running metrics of an epoch in one float64 device array (see the module docstring);
    the counts of samples and compared predictions, known from shapes, stay on the host."""

    def __init__(self, backend: Any, iterations: int, scaler: Any = None) -> None:
        self.backend = backend
        self.values = backend.xp.zeros(TALLY_SIZE, dtype="float64")
        self.values[TALLY_ITERATIONS] = iterations  # the optimizer's step count, on the device
        # A float16 policy's loss scale and its growth count (gpunn.precision.LossScaler),
        # updated on the device by the optimizer's advance kernel; otherwise a scale of 1.
        self.values[TALLY_SCALE] = 1.0 if scaler is None else scaler.scale
        self.values[TALLY_GOOD_STEPS] = 0 if scaler is None else scaler.good_steps
        # 0-d views: adding to one changes the tally in place (also inside a CUDA graph), and
        # the loss and accuracy read their running sums from them (progress displays).
        self.views = [self.values[slot:slot + 1].reshape(()) for slot in range(TALLY_SIZE)]
        self.loss, self.correct = self.views[TALLY_LOSS], self.views[TALLY_CORRECT]
        if not backend.fused:
            self.add = self.add_on_host  # chosen once, not on every call

    def add(self, slot: int, amount: Any) -> None:
        """Add a device scalar to one slot, in place (so also inside a CUDA graph)."""
        self.views[slot] += amount  # one kernel; indexing would copy back as a second

    def add_on_host(self, slot: int, amount: Any) -> None:
        """``add`` where the tally is host memory: NumPy's scalar path takes a fifth of the
        time of an in-place 0-d array operation."""
        self.values[slot] += amount

    def new_epoch(self) -> None:
        self.values[:TALLY_ITERATIONS] = 0

    def read(self) -> numpy.ndarray:
        """A host copy of the values: one synchronisation on a GPU."""
        values = self.backend.to_numpy(self.values)
        return values.copy() if values is self.values else values


class Step:
    """One training step's device work, the same for every batch of one shape, so that CUDA
    can capture it as a graph: in a single process nothing here reads a device value or depends
    on host state that changes between steps (data-parallel steps vote, in ``_combine``, and
    run without graphs)."""

    def __init__(self, model: Any, tally: Tally, comm: Any) -> None:
        self.model, self.tally, self.comm = model, tally, comm
        self.backend = model.backend
        self.share = 1.0  # data-parallel: this rank's rows over the global batch's
        self.diverged = False  # a CPU rank's loss was not finite in this step
        self.interrupt: Any = None  # the loop's Ctrl-C flag
        self.stop = False  # data-parallel: whether any rank had pressed Ctrl-C at the vote
        # On the GPU, the output Softmax, the cross-entropy, its gradient and the accuracy are
        # one kernel (kernels/softmax_ce.cu); on the CPU too with its host kernels
        # (gpunn.backend.host); with NumPy alone the book's separate steps stay faster.
        self.fused_softmax_ce = ((self.backend.fused or self.backend.fused_softmax_ce)
                                 and model._combined is not None)

    def __call__(self, X: Any, y: Any) -> None:
        model, tally = self.model, self.tally
        scaler = model.precision.scaler
        # float16: the loss's gradient times the loss scale, the regularization added after
        # unscaling (gpunn.precision.LossScaler)
        scale = None if scaler is None else tally.views[TALLY_SCALE]
        model._refresh_compute_parameters()  # the update changed the master parameters
        if self.fused_softmax_ce and y.ndim == 1:
            logits = model._forward(X, training=True, layers=model.layers[:-1])
            probs, dlogits = self.backend.softmax_ce(logits, y, tally.values)
            if not self.backend.fused and tally.values[TALLY_NONFINITE]:
                self._diverged_on_host()
            model.layers[-1].output = probs
            if scale is not None:
                dlogits *= scale
            model._backward_from(dlogits, model.layers[:-1], regularize=scale is None)
        else:
            output = model._forward(X, training=True)
            total = model.loss.forward(output, y).sum(dtype="float64")
            correct = self.backend.xp.count_nonzero(
                model.accuracy.compare(model._output_layer_predictions(output), y))
            tally.add(TALLY_LOSS, total)
            tally.add(TALLY_CORRECT, correct)
            if self.backend.fused:
                tally.add(TALLY_NONFINITE, ~self.backend.xp.isfinite(total))
            elif not math.isfinite(total):
                self._diverged_on_host()
            model._backward(output, y, scale=scale)
        if self.comm.size > 1:
            self._combine()
        if scaler is not None:
            # gradients / scale, and a flag in the tally if any is inf or NaN: the optimizer's
            # kernels then skip this step and advance lowers the scale
            self.backend.unscale(model.gradients, tally.values)
            for layer in model.trainable_layers:
                layer.regularization_gradients()
        model.optimizer.update_params(model.parameters, model.gradients, tally=tally.values,
                                      scaler=scaler)

    def _diverged_on_host(self) -> None:
        # On the CPU the check is free: stop before the update, as the GPU kernels do.
        if self.comm.size == 1:
            raise _Diverged
        self.diverged = True  # every rank stops at this step (_combine)

    def _combine(self) -> None:
        """Data-parallel: the gradient of the global batch on every rank, from one in-place
        allreduce of the flat gradient buffer. Each rank's gradient is of its own rows' mean
        loss; weighted by its share of the rows and summed it is the global mean's (the
        regularization gradient, the same on every rank, comes out once). Before that, the
        ranks stop together when any loss was not finite (a synchronisation per step on a
        GPU: the one price of several GPUs here)."""
        diverged = self.diverged or (self.backend.fused
                                     and self.tally.read()[TALLY_NONFINITE] > 0)
        self.diverged = False
        # One vote for both questions: did a loss diverge, and did anyone press Ctrl-C.
        diverged, stop = self.comm.allreduce_values([diverged, self.interrupt.requested])
        self.stop = stop > 0  # the same on every rank, unlike a Ctrl-C arriving after the vote
        if diverged:
            raise _Diverged
        if self.share != 1.0:
            self.model.gradients *= self.share
        self.comm.allreduce(self.model.gradients)

    def compared(self, y: Any) -> int:
        """How many predictions one batch adds to the accuracy's count (known from shapes):
        one per sample for class labels, one per output otherwise."""
        if getattr(self.model.accuracy, "binary", True) is False:  # CategoricalAccuracy
            return len(y)
        return math.prod(y.shape)


class _Diverged(Exception):
    """Raised inside a step before its update when a loss was not finite (on the CPU, or on
    any rank of a data-parallel run); the loop turns it into TrainingDivergedError."""


def train(model: Any, X: Any, y: Any, *, epochs: int, batch_size: int | None, shuffle: bool,
          print_every: int, validation_data: tuple | None, verbose: int,
          callbacks: list, initial_epoch: int, cuda_graph: bool) -> History:
    """The loop behind ``Model.train`` (its docstring says what each argument does); the
    arguments are checked and the data prepared there. ``verbose``: 0 nothing, 1 the progress
    display (gpunn.progress.for_train), 2 the book's step lines every ``print_every``;
    ``callbacks``: gpunn.callbacks.Callback objects, called after the display."""
    comm = distributed.current()
    steps, batch_size = _data.steps(len(X), batch_size)
    step_lines = verbose >= 2
    if comm.size > 1:
        _start_replicas(model, comm, len(X), batch_size, shuffle)
        # Step lines are reduced over the ranks, so all take part; rank 0 alone prints.
        step_lines = comm.any_rank(step_lines)
        if validation_data is not None:  # each rank evaluates its share; the sums are reduced
            validation_data = tuple(part[slice(*_share(0, len(part), comm))]
                                    for part in validation_data)
    tally = Tally(model.backend, model.optimizer.iterations, model.precision.scaler)
    step = Step(model, tally, comm)
    runner = _runner(model, step, cuda_graph, comm)
    history, last = History(), initial_epoch + epochs
    display = progress.Progress()
    if verbose and not step_lines and comm.rank == 0 and epochs > 0:  # only rank 0 draws
        display = progress.for_train(
            model, initial_epoch + 1, last, steps, len(X), batch_size,
            lambda epoch, logs: format_logs(f"epoch {epoch}/{last}: training", logs))
    callbacks = CallbackList([display, *callbacks], model, {
        "epochs": last, "first": initial_epoch + 1, "steps": steps,
        "metrics": metric_names(model, validation_data is not None)})
    epoch_run = _Epoch(model, step, runner, comm, X, y, batch_size, shuffle, steps)
    # The display is closed however the loop ends: a bar left open would swallow what follows.
    with _StopOnInterrupt() as interrupt, numpy.errstate(over="ignore", invalid="ignore"), \
            runner, contextlib.closing(display):
        step.interrupt = epoch_run.interrupt = interrupt
        callbacks.train_begin()
        for epoch in range(initial_epoch + 1, last + 1):
            callbacks.epoch_begin(epoch)
            shown = step_lines and (epoch % print_every == 0 or epoch == initial_epoch + 1
                                    or epoch == last)
            if shown and comm.rank == 0:
                print(f"epoch: {epoch}")
            values = epoch_run(epoch, callbacks, print_every if shown else 0)
            if epoch_run.interrupted:
                history.interrupted = True
                display.close()
                if (verbose or step_lines) and comm.rank == 0:
                    print(f"interrupted in epoch {epoch}; returning the history so far")
                break
            logs = _logs(model, comm, values, validation_data, batch_size, epoch)
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            if shown and comm.rank == 0:
                print(format_logs("training", logs))
            callbacks.epoch_end(epoch, logs)
            if model.stop_training:
                break
        callbacks.train_end()
    history.stopped = callbacks.stop_record()
    if history.stopped and (verbose or step_lines) and comm.rank == 0:
        print(f"stopped after epoch {history.stopped['epoch']}: {history.stopped['reason']}")
    history.cuda_graph = runner.status
    return history


def metric_names(model: Any, validated: bool) -> list[str]:
    """The keys of each epoch's logs (and of the history), in order."""
    names = ["loss", "data_loss", "regularization_loss", "accuracy", "learning_rate"]
    if model.precision.scaler is not None:
        names += ["loss_scale", "skipped_steps"]
    return names + (["val_loss", "val_accuracy"] if validated else [])


class _Epoch:
    """One pass over the data, step after step; returns the tally's values, read once at the
    end (the one synchronisation of an epoch on a GPU). ``interrupted``: Ctrl-C stopped it,
    and the epoch is not counted."""

    def __init__(self, model: Any, step: Step, runner: Any, comm: Any, X: Any, y: Any,
                 batch_size: int, shuffle: bool, steps: int) -> None:
        self.model, self.step, self.runner, self.comm = model, step, runner, comm
        self.X, self.y, self.batch_size, self.shuffle, self.steps = X, y, batch_size, shuffle, \
            steps
        self.interrupt, self.interrupted = None, False

    def __call__(self, epoch: int, callbacks: CallbackList, print_every: int) -> numpy.ndarray:
        model, step, tally, comm = self.model, self.step, self.step.tally, self.comm
        tally.new_epoch()
        model.loss.new_pass(into=tally.loss)
        model.accuracy.new_pass(into=tally.correct)
        started_at = model.optimizer.iterations
        # Closed when the loop is left early: host-streamed batches then wait for their
        # copies and free their buffers here, not when the generator is collected.
        with contextlib.closing(streaming.batches(model.backend, self.X, self.y,
                                                  self.batch_size, self.shuffle, comm.rank,
                                                  comm.size)) as feed:
            for index, (batch_X, batch_y, rows) in enumerate(feed):
                step.share = len(batch_y) / rows
                printed = print_every and (index % print_every == 0 or index == self.steps - 1)
                before = tally.read() if printed else None
                self._step(epoch, index, batch_X, batch_y)
                model.loss.accumulated_count += len(batch_y)
                model.accuracy.accumulated_count += step.compared(batch_y)
                if printed:  # on every rank: the line shows all ranks' share of the batch
                    _print_step(model, comm, index, before, tally.read(), len(batch_y),
                                step.compared(batch_y))
                callbacks.batch_end(epoch, index, self.steps)
                # with several ranks the step's vote decides: all stop together
                self.interrupted = step.stop if comm.size > 1 else self.interrupt.requested
                if self.interrupted or (model.stop_training and comm.size == 1):
                    break
        return _read_epoch(model, tally, epoch, started_at)

    def _step(self, epoch: int, index: int, batch_X: Any, batch_y: Any) -> None:
        model = self.model
        try:
            model.optimizer.pre_update_params()
            self.runner.run(batch_X, batch_y)
            model.optimizer.post_update_params()
        except _Diverged:
            raise _diverged(model, epoch, index) from None
        except Exception as error:
            if not model.backend.is_out_of_memory(error):
                raise
            raise model._out_of_memory(error, self.batch_size, f"epoch {epoch}, step "
                                       f"{index + 1}") from error


def _read_epoch(model: Any, tally: Tally, epoch: int, started_at: int) -> numpy.ndarray:
    """The tally at the end of an epoch: the optimizer's step count and the loss scale taken
    from it, a divergence noticed there raised."""
    values = tally.read()
    if model.backend.fused:  # the device counted the steps taken (skipped ones are not)
        model.optimizer.iterations = int(values[TALLY_ITERATIONS])
    if values[TALLY_NONFINITE]:
        done = int(values[TALLY_ITERATIONS] + values[TALLY_SKIPPED]) - started_at
        raise _diverged(model, epoch, done)
    scaler = model.precision.scaler
    if scaler is not None:
        scaler.scale = float(values[TALLY_SCALE])
        scaler.good_steps = int(values[TALLY_GOOD_STEPS])
    return values


def _logs(model: Any, comm: Any, values: numpy.ndarray, validation_data: tuple | None,
          batch_size: int, epoch: int) -> dict[str, float]:
    """An epoch's metrics from the tally's values (reduced over the ranks), and the
    validation's."""
    sums = [float(values[TALLY_LOSS]), model.loss.accumulated_count,
            float(values[TALLY_CORRECT]), model.accuracy.accumulated_count]
    if comm.size > 1:
        sums = comm.allreduce_values(sums)
    loss_sum, samples, correct, compared = sums
    logs = _epoch_logs(model, loss_sum / max(samples, 1), correct / max(compared, 1))
    if model.precision.scaler is not None:
        logs["loss_scale"] = model.precision.scaler.scale
        logs["skipped_steps"] = float(values[TALLY_SKIPPED])
    if not math.isfinite(logs["loss"]):
        raise TrainingDivergedError(
            f"The loss became {logs['loss']} at the end of epoch {epoch} "
            f"(regularization loss {logs['regularization_loss']}). Lower the "
            f"learning rate or the regularization strength.")
    if validation_data is not None:
        logs["val_loss"], logs["val_accuracy"] = _validate(model, comm, validation_data,
                                                           batch_size)
    return logs


def why_no_cuda_graph(model: Any, cuda_graph: bool, comm: Any = None) -> str | None:
    """Why ``train`` will run the step without CUDA graphs, or None if it will capture it."""
    if not cuda_graph:
        return "cuda_graph=False"
    if (comm or distributed.current()).size > 1:
        # NCCL inside a graph is neither modelled by the double nor measured on a GPU
        return "data-parallel steps run without CUDA graphs"
    return model.backend.why_no_cuda_graph()


def _runner(model: Any, step: Step, cuda_graph: bool, comm: Any) -> Any:
    reason = why_no_cuda_graph(model, cuda_graph, comm)
    if reason is not None:
        if model.backend.fused:
            log.info("gpunn: training without CUDA graphs: %s", reason)
        return PlainStep(step, f"off: {reason}")
    from gpunn.backend.graphs import GraphedStep

    return GraphedStep(model.backend, step, lambda: _baked(model))


def _baked(model: Any) -> tuple:
    """The host values a captured step passes to its kernels, and the dropout generator: when
    one changes (a callback setting the learning rate or a loss scaler's growth_interval), the
    step is captured again."""
    return (tuple(model.optimizer.config().values()),
            tuple(tuple(layer.config().values()) for layer in model.layers),
            getattr(model.accuracy, "precision", None), id(model.backend.random),
            scaler_settings(model.precision.scaler))


class PlainStep:
    """Runs every step as it comes (the CPU, and CUDA without graphs)."""

    def __init__(self, step: Step, status: str) -> None:
        self.run, self.status = step, status

    def __enter__(self) -> PlainStep:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def _start_replicas(model: Any, comm: Any, samples: int, batch_size: int,
                    shuffle: bool) -> None:
    """Data-parallel: refuse ranks that differ, then start every replica from rank 0's
    parameters and optimizer state."""
    comm.agree("model", {"layers": [repr(layer) for layer in model.layers],
                         "loss": repr(model.loss), "optimizer": repr(model.optimizer),
                         "accuracy": repr(model.accuracy), "dtype": model.dtype,
                         "iterations": model.optimizer.iterations})
    comm.agree("data set size and batch size", {"samples": samples, "batch_size": batch_size,
                                                "shuffle": shuffle})
    # The shuffling order is drawn on every rank: the same seed gives the same order.
    comm.agree("random seed (gpunn.seed)", host_random().bit_generator.state)
    last = samples % batch_size or batch_size
    if min(batch_size, last) < comm.size:
        raise InvalidArgumentError(
            f"{comm.size} processes share each batch, but a batch of {min(batch_size, last)} "
            f"samples (batch_size={batch_size} over {samples} samples) leaves some with none. "
            f"Use a batch size of at least {comm.size} that leaves a last batch of at least "
            f"{comm.size} samples, or fewer processes.")
    comm.broadcast(model.parameters)
    for name in sorted(model.optimizer.state):
        comm.broadcast(model.optimizer.state[name])


def _share(start: int, stop: int, comm: Any) -> tuple[int, int]:
    return streaming.share(start, stop, comm.rank, comm.size)


def _validate(model: Any, comm: Any, validation_data: tuple, batch_size: int) -> tuple:
    """The validation loss and accuracy; data-parallel, over every rank's share."""
    loss, accuracy = model._evaluate(*validation_data, batch_size)
    if comm.size == 1:
        return loss, accuracy
    loss_sum, samples, correct, compared = comm.allreduce_values(
        [float(model.loss.accumulated_sum), model.loss.accumulated_count,
         float(model.accuracy.accumulated_sum), model.accuracy.accumulated_count])
    return loss_sum / max(samples, 1), correct / max(compared, 1)


def _diverged(model: Any, epoch: int, index: int) -> TrainingDivergedError:
    return TrainingDivergedError(
        f"The loss became NaN or infinite in epoch {epoch}, step {index + 1}; the parameters "
        f"are those before this step. Lower the learning rate or check the data.")


def _print_step(model: Any, comm: Any, index: int, before: numpy.ndarray, after: numpy.ndarray,
                samples: int, compared: int) -> None:
    change = after - before
    loss_sum, samples, correct, compared = comm.allreduce_values(
        [change[TALLY_LOSS], samples, change[TALLY_CORRECT], compared])
    if comm.rank != 0:
        return
    data_loss, accuracy = loss_sum / max(samples, 1), correct / max(compared, 1)
    regularization = model.loss.regularization_loss()
    print(f"step: {index}, acc: {accuracy:.3f}, loss: {data_loss + regularization:.4g} "
          f"(data_loss: {data_loss:.4g}, reg_loss: {regularization:.4g}), "
          f"lr: {model.optimizer.current_learning_rate}")


def _epoch_logs(model: Any, data_loss: float, accuracy: float) -> dict[str, float]:
    # From the tally already read (what calculate_accumulated would read again).
    regularization = model.loss.regularization_loss()
    return {"loss": data_loss + regularization, "data_loss": data_loss,
            "regularization_loss": regularization, "accuracy": accuracy,
            "learning_rate": model.optimizer.current_learning_rate}


def format_logs(prefix: str, logs: dict[str, float]) -> str:
    """One line of epoch metrics, as the book prints them."""
    # Losses with four significant digits: a regression's 3.2e-05 must not print as 0.000.
    text = f"{prefix}, acc: {logs['accuracy']:.3f}, loss: {logs['loss']:.4g}"
    if "data_loss" in logs:
        text += (f" (data_loss: {logs['data_loss']:.4g}, "
                 f"reg_loss: {logs['regularization_loss']:.4g}), lr: {logs['learning_rate']}")
    if "loss_scale" in logs:
        text += (f", loss scale: {logs['loss_scale']:g} ({int(logs['skipped_steps'])} steps "
                 f"skipped)")
    if "val_loss" in logs:
        text += f"; validation, acc: {logs['val_accuracy']:.3f}, loss: {logs['val_loss']:.4g}"
    return text


class _StopOnInterrupt:
    """Turns Ctrl-C into a request to stop after the current step, so the model is never left
    half-updated. Only the main thread can receive signals; elsewhere this does nothing."""

    requested = False

    def __enter__(self) -> _StopOnInterrupt:
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
