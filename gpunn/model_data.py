"""What a model was trained on, and the data `gpunn evaluate` and `predict` give it.

``gpunn train`` keeps a record in the model file (``model.trained_on``): the data set, the seed
that drew its validation split, the sizes of the two parts and, for a file, its SHA-256. From
it, ``evaluate`` finds the training data set and its held-out split by default, recognises the
training file under any name, and never scores a split that overlaps the training data without
saying so. Both commands refuse data that does not fit the model before running it.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import numpy

from gpunn import datasets, io, tables
from gpunn.errors import GpunnError, InvalidArgumentError
from gpunn.layers import Dense
from gpunn.losses import CategoricalCrossentropy

# Built-in sets whose validation split does not depend on the seed: MNIST's is its test set,
# the sine's is the same curve again (as in the book's regression chapter).
UNSEEDED = ("sine", "fashion-mnist", "mnist")
VALIDATED_ON_TRAINING_DATA = ("sine",)


def record(dataset: str, seed: int, X: numpy.ndarray, X_val: numpy.ndarray,
           validation_split: float | None = None) -> dict[str, Any]:
    """The record ``gpunn train`` keeps in ``model.trained_on`` for data from
    ``datasets.load(dataset, seed=seed, validation_split=validation_split)``."""
    trained = {"dataset": dataset, "seed": seed, "training_samples": len(X),
               "validation_samples": len(X_val)}
    if validation_split is not None:  # --validation-split; absent: the default 20%
        trained["validation_split"] = validation_split
    if dataset not in datasets.NAMES:
        trained["sha256"] = fingerprint(dataset)
    return trained


def fingerprint(path: str | os.PathLike) -> str:
    """The SHA-256 of a data file, which names its contents whatever the file is called."""
    digest = hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def recorded(path: str | os.PathLike) -> dict[str, Any] | None:
    """What the model or checkpoint file at ``path`` was trained on: its ``trained_on``; for a
    file written before gpunn kept one, the data set and seed of its ``gpunn train`` settings (a
    checkpoint's own, or for a model.npz those of the checkpoint.npz beside it when that holds
    the very same parameters: the same run's last epoch). None when no file says."""
    header, arrays = io.read(path, "model", "checkpoint")
    trained = header.get("trained_on")
    if isinstance(trained, dict) and isinstance(trained.get("dataset"), str):
        return trained
    if header["kind"] == "model":
        try:
            header, saved = io.read(Path(path).with_name("checkpoint.npz"), "checkpoint")
        except GpunnError:
            return None
        if not numpy.array_equal(saved.get("parameters"), arrays.get("parameters")):
            return None
    settings = header.get("settings")
    if not isinstance(settings, dict) or not isinstance(settings.get("dataset"), str):
        return None
    return {"dataset": settings["dataset"], "seed": settings.get("seed")}


def seeded(dataset: str) -> bool:
    """Whether the seed chooses the validation split of ``dataset`` (spiral, vertical, files)."""
    return dataset not in UNSEEDED


def is_training_data(dataset: str, trained: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether ``dataset`` (a name or a path) is the data set of ``trained``: the same name, a
    file with the same contents, or the same path; and a warning when it is the same path with
    other contents (the file changed since training, so its split is not the one held out)."""
    name = trained["dataset"]
    if dataset in datasets.NAMES or name in datasets.NAMES:
        return dataset == name, None
    path = Path(dataset).expanduser()
    same_path = path.resolve() == Path(name).expanduser().resolve()
    if trained.get("sha256") is None or not path.is_file():
        return same_path, None
    if fingerprint(path) == trained["sha256"]:
        return True, None
    if same_path:
        return True, (f"{dataset} changed since the model was trained on it (its contents "
                      f"differ), so its validation split is not the one held out in training")
    return False, None


def changed(trained: dict[str, Any] | None) -> str | None:
    """Why a run recorded in ``trained`` cannot go on with its data file as it is now: the
    file's contents changed (another SHA-256), else None."""
    if not trained or trained.get("sha256") is None:
        return None
    path = Path(trained["dataset"]).expanduser()
    if not path.is_file() or fingerprint(path) == trained["sha256"]:
        return None  # a missing file: loading it says so
    return (f"{trained['dataset']} changed since the run started (its SHA-256 differs), so "
            f"resuming would train on other data and another split. Restore the file, or start "
            f"a new run")


def inputs(model: Any, model_path: Any, path: str | os.PathLike) -> numpy.ndarray:
    """X from ``path`` for ``model``: an .npz's X, or a CSV's columns by name (gpunn.tables:
    the model's features in any order, its target, pandas' index and other columns left out,
    said on stderr), or, without a header, exactly the model's features."""
    if Path(path).suffix.lower() == ".csv":
        first = model.input_layer
        table = tables.columns_for(datasets.existing(path), model.feature_names,
                                   first.n_inputs if first is not None else 0,
                                   model.target_names, model=str(model_path))
        for note in table.notes:
            print(f"gpunn: {path}: {note}.", file=sys.stderr)
        return table.X
    X = datasets.load_inputs(path)
    check(model, model_path, path, X)
    return X


def check(model: Any, model_path: Any, source: Any, X: numpy.ndarray,
          y: numpy.ndarray | None = None) -> None:
    """Refuse data from ``source`` (a file or a data set's name) that does not fit the model:
    another number of features, labels outside its classes, or another number of targets."""
    first = model.input_layer
    if first is not None and X.shape[1] != first.n_inputs:
        raise InvalidArgumentError(
            f"{source} has {X.shape[1]} features per sample, but {model_path} expects "
            f"{first.n_inputs} features (its first layer is {first!r}): give data with the "
            f"features it was trained on, in the same order.")
    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    if y is None or not dense:
        return
    outputs = dense[-1].n_neurons
    if model.classes is not None and y.ndim == 1:  # the user's labels: each must be a class
        tables.encode(y, model.classes, source=f"{source}'s labels")
        return
    if isinstance(model.loss, CategoricalCrossentropy) and y.ndim == 1:
        whole = bool(numpy.all(numpy.isfinite(y) & (y == numpy.floor(y))))
        if whole and y.min() >= 0 and y.max() < outputs:
            return
        if outputs == 2 and set(numpy.unique(y).tolist()) == {-1, 1}:
            return  # -1/+1 labels, classes 0 and 1 (gpunn._data)
        found = f"labels from {y.min():g} to {y.max():g}"
        raise InvalidArgumentError(
            f"{source} has {found}{'' if whole else ', not all whole numbers'}, but "
            f"{model_path} classifies {outputs} classes, labels 0 to {outputs - 1}: give data "
            f"labelled as its training data was.")
    width = 1 if y.ndim == 1 else y.shape[1]
    if width != outputs:
        what = "one-hot columns" if isinstance(model.loss, CategoricalCrossentropy) else "targets"
        raise InvalidArgumentError(f"{source} has {width} {what} per sample, but {model_path} "
                                   f"has {outputs} outputs.")
