"""Training checkpoints: the model with its optimizer state, plus where training stood (epoch,
history so far, random generator state), in one file written atomically. Resuming from one
continues exactly as the uninterrupted run would have (on the CPU, with the same seed)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from gpunn import backend, io
from gpunn.backend import DeviceLike
from gpunn.errors import FileFormatError
from gpunn.model import Model


@dataclass
class Checkpoint:
    """What ``load`` returns: the model, the last completed epoch and the history up to it."""

    model: Model
    epoch: int
    history: dict[str, list[float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def save(path: str | os.PathLike, model: Model, *, epoch: int,
         history: dict[str, list[float]], settings: dict[str, Any] | None = None,
         force: bool = False) -> None:
    """Write a checkpoint after ``epoch`` completed epochs; ``settings`` is free-form JSON (the
    CLI keeps its options there). An existing file is replaced only when it is a gpunn
    checkpoint, or with ``force``."""
    header = {**io.model_header(model), "kind": "checkpoint", "epoch": int(epoch),
              "history": {key: list(values) for key, values in history.items()},
              "random_state": backend.random_state(), "settings": settings or {}}
    io.write(path, header, io.model_arrays(model), force=force)


def load(path: str | os.PathLike, device: DeviceLike = None) -> Checkpoint:
    """Read a checkpoint and restore gpunn's random generators to where they stood."""
    header, arrays = io.read(path, "checkpoint")
    model = io.build_model(header, Model, device)
    io.restore_arrays(model, arrays, path)
    try:
        epoch, history = int(header["epoch"]), dict(header["history"])
        backend.set_random_state(header["random_state"])
    except (KeyError, TypeError, ValueError) as error:
        raise FileFormatError(f"{path}: incomplete checkpoint ({error!r}).") from error
    return Checkpoint(model, epoch, history, dict(header.get("settings", {})))


@dataclass
class Snapshot:
    """What a checkpoint holds of the model's training state, copied in memory (microseconds for
    a small network): the CLI takes one after each epoch, so that Ctrl-C can restore and save
    the last complete epoch between checkpoints written to disk."""

    epoch: int
    parameters: Any
    state: dict[str, Any]
    iterations: int
    learning_rate: float
    random_state: dict

    @classmethod
    def take(cls, model: Model, epoch: int) -> Snapshot:
        optimizer = model.optimizer
        return cls(epoch, model.parameters.copy(),
                   {name: array.copy() for name, array in optimizer.saved_state().items()},
                   optimizer.iterations, optimizer.current_learning_rate, backend.random_state())

    def restore(self, model: Model) -> None:
        with model.backend.activate():
            model.parameters[...] = self.parameters
        model.optimizer.state.update(self.state)
        model.optimizer.iterations = self.iterations
        model.optimizer.current_learning_rate = self.learning_rate
        backend.set_random_state(self.random_state)
