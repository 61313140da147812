"""Progress displays for `gpunn train` and `Model.train`: a tqdm bar in a terminal or a Jupyter
notebook, plain lines in a log, nothing with --quiet (verbose=0). Each gets the training loop's
batch_end and epoch_end calls."""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

from gpunn.callbacks import Callback

MIN_BAR = 10  # columns the bar itself keeps, however narrow the terminal


def choose(quiet: bool, model: Any, first: int, last: int, steps: int, samples: int,
           batch_size: int | None) -> Progress:
    if quiet:
        return Progress()
    if not interactive():
        return Lines(first, last, samples, getattr(model.accuracy, "label", "acc"))
    return bars(model, first, last, steps, samples, batch_size)


def for_train(model: Any, first: int, last: int, steps: int, samples: int, batch_size: int,
              line: Callable[[int, dict], str]) -> Progress:
    """``Model.train``'s default display (verbose=1): in a terminal or a notebook the bars of
    `gpunn train`, each epoch's ``line(epoch, logs)`` (the book's summary) after its bar, or the
    last epoch's after the one bar over all epochs; elsewhere (a log, a pipe) that line alone,
    once per epoch, so a log gets no carriage returns."""
    if not interactive():
        return Summaries(Progress(), line, last)
    return Summaries(bars(model, first, last, steps, samples, batch_size), line, last)


def bars(model: Any, first: int, last: int, steps: int, samples: int,
         batch_size: int) -> Progress:
    """A bar per epoch with its running loss (epochs of ten steps or more, fewer than a hundred
    of them), else one bar over all epochs: a bar per one-step epoch would flood the screen."""
    label = getattr(model.accuracy, "label", "acc")
    if steps >= 10 and last - first < 100:
        return BatchBars(model, last, samples, batch_size, label)
    return EpochBar(first, last, samples, label)


def interactive() -> bool:
    """Whether standard output redraws a bar in place: a terminal, or a Jupyter notebook's
    output, which is not a terminal."""
    return sys.stdout.isatty() or _notebook()


def _notebook() -> bool:
    # ipykernel's OutStream; checked by its type, so that nothing is imported to ask
    return type(sys.stdout).__module__.startswith("ipykernel")


def _tqdm(columns: int, **options: Any) -> Any:
    """A tqdm bar: in a notebook tqdm.auto's widget, as wide as the cell; elsewhere a line of
    text ``columns`` wide."""
    if _notebook():  # tqdm.auto falls back to text where ipywidgets is missing: to stdout too
        from tqdm.auto import tqdm

        return tqdm(file=sys.stdout, **options)
    from tqdm import tqdm

    return tqdm(file=sys.stdout, ncols=columns, **options)


def logs_text(logs: dict[str, float], label: str = "acc") -> str:
    """Losses to four significant digits (a regression's 3.2e-05 stays readable); ``label``
    names the accuracy (``acc(±0.0028)`` for the book's regression accuracy)."""
    text = f"loss {logs['loss']:.4g}, {label} {logs['accuracy']:.4f}"
    if "val_loss" in logs:
        text += f", val_loss {logs['val_loss']:.4g}, val_{label} {logs['val_accuracy']:.4f}"
    if "loss_scale" in logs:  # a float16 policy (gpunn.precision.LossScaler)
        text += f", loss scale {logs['loss_scale']:g} ({int(logs['skipped_steps'])} skipped)"
    return text


def compact_text(logs: dict[str, float], label: str = "acc") -> str:
    """``logs_text`` in fewer columns, for a bar: ``loss 0.1488 acc 0.953 | val 0.3049 0.877``."""
    text = f"loss {logs['loss']:.4g} {label} {logs['accuracy']:.3f}"
    if "val_loss" in logs:
        text += f" | val {logs['val_loss']:.4g} {logs['val_accuracy']:.3f}"
    if "loss_scale" in logs:
        text += f" | scale {logs['loss_scale']:g} skipped {int(logs['skipped_steps'])}"
    return text


def fit_postfix(columns: int, around: str, postfix: str, extras: list[str]) -> str:
    """The text after a bar, fitted so the line takes at most ``columns``: the bar keeps
    MIN_BAR columns and the metrics stay whole; ``extras`` (rates) are added, in order, while
    they fit. ``around`` is the widest text around the bar (percentage, counts, description)."""
    width = len(around) + MIN_BAR + 1
    for extra in extras:
        if width + len(postfix) + len(extra) + 2 <= columns:
            postfix += ", " + extra
    return postfix[:max(columns - width, 0)]


def _columns() -> int:
    """The terminal's width; 80 where it reports none (0 columns: a pseudo-terminal without a
    size, as some CI runners and containers give, where Python before 3.11 passes the 0 on and
    tqdm's ncols=0 drew an empty line per refresh). A notebook's widget has room for all."""
    if _notebook():
        return 1000
    columns = shutil.get_terminal_size().columns
    return columns if columns > 0 else 80


class Progress(Callback):
    """Shows nothing (--quiet); the base of the three displays below. A callback
    (gpunn.callbacks): the loop's batch and epoch ends draw it, its end closes it."""

    per_batch = False

    def __repr__(self) -> str:
        return f"the progress display ({type(self).__name__})"

    def on_batch_end(self, epoch: int, step: int, steps: int) -> None:
        if self.per_batch:
            self.batch_end(epoch, step, steps)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch_end(epoch, logs)

    def on_train_end(self) -> None:
        self.close()

    def batch_end(self, epoch: int, step: int, steps: int) -> None:
        pass

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class Lines(Progress):
    """Plain lines for logs and pipes: every epoch of ten or fewer, else about ten lines."""

    def __init__(self, first: int, last: int, samples: int, label: str = "acc") -> None:
        self.first, self.last, self.samples, self.label = first, last, samples, label
        self.every = max(1, math.ceil((last - first + 1) / 10))
        self.started = time.perf_counter()

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if (epoch - self.first + 1) % self.every == 0 or epoch == self.last:
            rate = (epoch - self.first + 1) * self.samples / (time.perf_counter() - self.started)
            print(f"epoch {epoch}/{self.last}: {logs_text(logs, self.label)}, lr "
                  f"{logs['learning_rate']:.3g}, {rate:,.0f} samples/s", flush=True)


class EpochBar(Progress):
    """One bar over all epochs, for many short ones (a bar per epoch would flood the screen).
    The line fits the terminal: the metrics, validation included, always show."""

    FORMAT = "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{postfix}"  # tqdm adds ", "

    def __init__(self, first: int, last: int, samples: int, label: str = "acc") -> None:
        self.columns = _columns()
        self.around = f"100%|| {last}/{last}, "
        self.bar = _tqdm(self.columns, total=last, initial=first - 1, unit="epoch",
                         bar_format=self.FORMAT)
        self.first, self.samples, self.label = first, samples, label
        self.started = self.shown = time.perf_counter()
        self.epoch, self.logs = first - 1, None

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.bar.update(1)
        self.epoch, self.logs = epoch, logs
        now = time.perf_counter()
        if now - self.shown >= 0.2:  # formatting costs more than a tiny epoch; not every one
            self.shown = now
            self._show(now)

    def _show(self, now: float) -> None:
        seconds, done = now - self.started, self.epoch - self.first + 1
        extras = [f"{done / seconds:,.0f} epoch/s",
                  f"{done * self.samples / seconds:,.0f} samples/s"] if seconds > 0 else []
        self.bar.set_postfix_str(fit_postfix(self.columns, self.around,
                                             compact_text(self.logs, self.label), extras),
                                 refresh=False)

    def close(self) -> None:
        if self.logs is not None:
            self._show(time.perf_counter())  # the bar left on screen shows the last epoch
            self.logs = None  # closed: a second close (Summaries, then the loop) adds nothing
        self.bar.close()


class BatchBars(Progress):
    """A bar per epoch over its samples, with the running loss and accuracy, fitted to the
    terminal like EpochBar's."""

    per_batch = True
    FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{postfix}"

    def __init__(self, model: Any, last: int, samples: int, batch_size: int,
                 label: str = "acc") -> None:
        self.model, self.last, self.samples, self.batch_size = model, last, samples, batch_size
        self.label, self.columns, self.bar = label, _columns(), None
        self.around = f"epoch {last}/{last} 100%|| 999.9k/999.9k, "

    def batch_end(self, epoch: int, step: int, steps: int) -> None:
        if step == 0:
            self.close()
            self.bar = _tqdm(self.columns, total=self.samples, unit="sample", unit_scale=True,
                             desc=f"epoch {epoch}/{self.last}", bar_format=self.FORMAT)
            self.started = self.shown = time.perf_counter()
        self.bar.update(min(self.batch_size, self.samples - step * self.batch_size))
        now = time.perf_counter()
        if now - self.shown >= 0.2:  # reading the running loss syncs a GPU; not every step
            self.shown = now
            running = (f"loss {self.model.loss.calculate_accumulated():.4g} {self.label} "
                       f"{self.model.accuracy.calculate_accumulated():.3f}")
            self._postfix(running, now)

    def _postfix(self, text: str, now: float) -> None:
        seconds = now - self.started
        extras = [f"{self.bar.n / seconds:,.0f} samples/s"] if seconds > 0 else []
        self.bar.set_postfix_str(fit_postfix(self.columns, self.around, text, extras),
                                 refresh=False)

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self._postfix(compact_text(logs, self.label), time.perf_counter())
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Summaries(Progress):
    """Another display, and a line of text after each epoch (Model.train: the book's summary);
    after one bar over all epochs, only the last epoch's, below the bar."""

    def __init__(self, display: Progress, line: Callable[[int, dict], str], last: int) -> None:
        self.display, self.line, self.last = display, line, last
        self.per_batch = display.per_batch
        self.every = not isinstance(display, EpochBar)

    def batch_end(self, epoch: int, step: int, steps: int) -> None:
        self.display.batch_end(epoch, step, steps)

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.display.epoch_end(epoch, logs)  # a BatchBars' bar ends here
        if self.every or epoch == self.last:
            if epoch == self.last:
                self.display.close()
            print(self.line(epoch, logs), flush=True)

    def close(self) -> None:
        self.display.close()


class ReaderMayLeave:
    """Standard output whose reader may go away (``gpunn train | head -2``): from then on what
    gpunn prints is dropped, so training goes on and saves everything, and the exit is quiet,
    as with other Unix tools, instead of an error in the middle of a run."""

    def __init__(self, stream: Any) -> None:
        self._stream, self.reader_left = stream, False

    def write(self, text: str) -> int:
        if not self.reader_left:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._left()
        return len(text)

    def flush(self) -> None:
        if not self.reader_left:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._left()

    def _left(self) -> None:
        self.reader_left = True
        try:  # what is still buffered would fail again when Python exits: send it nowhere
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
