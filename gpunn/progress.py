"""Progress displays for `gpunn train`: a tqdm bar in a terminal, plain lines in a log, nothing
with --quiet. Each gets the training loop's batch_end and epoch_end calls."""

from __future__ import annotations

import math
import sys
import time
from typing import Any


def choose(quiet: bool, model: Any, first: int, last: int, steps: int, samples: int,
              batch_size: int | None) -> Progress:
    if quiet:
        return Progress()
    if not sys.stdout.isatty():
        return Lines(first, last, samples)
    if steps >= 10 and last - first < 100:
        return BatchBars(model, last, samples, batch_size)
    return EpochBar(first, last, samples)


def logs_text(logs: dict[str, float]) -> str:
    text = f"loss {logs['loss']:.4f}, acc {logs['accuracy']:.4f}"
    if "val_loss" in logs:
        text += f", val_loss {logs['val_loss']:.4f}, val_acc {logs['val_accuracy']:.4f}"
    return text


class Progress:
    """Shows nothing (--quiet); the base of the three displays below."""

    per_batch = False

    def batch_end(self, epoch: int, step: int, steps: int) -> None:
        pass

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class Lines(Progress):
    """Plain lines for logs and pipes: every epoch of ten or fewer, else about ten lines."""

    def __init__(self, first: int, last: int, samples: int) -> None:
        self.first, self.last, self.samples = first, last, samples
        self.every = max(1, math.ceil((last - first + 1) / 10))
        self.started = time.perf_counter()

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if (epoch - self.first + 1) % self.every == 0 or epoch == self.last:
            rate = (epoch - self.first + 1) * self.samples / (time.perf_counter() - self.started)
            print(f"epoch {epoch}/{self.last}: {logs_text(logs)}, lr "
                  f"{logs['learning_rate']:.3g}, {rate:,.0f} samples/s", flush=True)


class EpochBar(Progress):
    """One bar over all epochs, for many short ones (a bar per epoch would flood the screen)."""

    def __init__(self, first: int, last: int, samples: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=last, initial=first - 1, unit="epoch", desc="training",
                        file=sys.stdout, dynamic_ncols=True)
        self.first, self.samples = first, samples
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
        rate = (self.epoch - self.first + 1) * self.samples / (now - self.started)
        self.bar.set_postfix_str(f"{logs_text(self.logs)}, {rate:,.0f} samples/s",
                                 refresh=False)

    def close(self) -> None:
        if self.logs is not None:
            self._show(time.perf_counter())  # the bar left on screen shows the last epoch
        self.bar.close()


class BatchBars(Progress):
    """A bar per epoch over its samples, with the running loss and accuracy."""

    per_batch = True

    def __init__(self, model: Any, last: int, samples: int, batch_size: int) -> None:
        self.model, self.last, self.samples, self.batch_size = model, last, samples, batch_size
        self.bar = None

    def batch_end(self, epoch: int, step: int, steps: int) -> None:
        from tqdm import tqdm

        if step == 0:
            self.close()
            self.bar = tqdm(total=self.samples, unit="sample", unit_scale=True,
                            desc=f"epoch {epoch}/{self.last}", file=sys.stdout,
                            dynamic_ncols=True)
            self.shown = time.perf_counter()
        self.bar.update(min(self.batch_size, self.samples - step * self.batch_size))
        now = time.perf_counter()
        if now - self.shown >= 0.2:  # reading the running loss syncs a GPU; not every step
            self.shown = now
            self.bar.set_postfix_str(f"loss {self.model.loss.calculate_accumulated():.4f}, "
                                     f"acc {self.model.accuracy.calculate_accumulated():.4f}",
                                     refresh=False)

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(logs_text(logs), refresh=False)
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
