"""What defines a run of ``gpunn train``: the defaults per data set, the options given, those a
checkpoint holds for --resume, the task the labels ask for, and the network built from them.
gpunn/cli/train.py holds the options themselves; an option that defines a run is added there and
to TRAINING_OPTIONS (and COMMON, for its default) here."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy

import gpunn as gn
from gpunn import checkpoint, datasets, distributed
from gpunn.cli._common import UsageError
from gpunn.errors import FileFormatError, GpunnError

ACTIVATIONS = {"relu": gn.ReLU, "tanh": gn.Tanh, "sigmoid": gn.Sigmoid, "leaky_relu": gn.LeakyReLU}
OPTIMIZERS = {"sgd": gn.SGD, "adagrad": gn.Adagrad, "rmsprop": gn.RMSprop, "adam": gn.Adam}


# The defaults of `gpunn train` per data set; options given on the command line win. The spiral
# ones reach a training accuracy of 0.94-0.98 for every seed from 0 to 39 (validation 0.82-0.90)
# in well under a second on one CPU core. "file" is for .npz and .csv paths: a user's features
# come in any units, so they are standardized (a Standardize layer first, fitted to the training
# split); the built-in sets are already scaled as the book scales them, and stay as they are.
# With it, scikit-learn's digits, breast cancer, wine and diabetes train to the README's scores;
# l2 1e-4 (not 0) raised the worst of seeds 0-4 on three of them (by one to three samples).
_SMALL = {"hidden": [64, 64], "activation": "relu", "lr": 0.05, "decay": 5e-4, "epochs": 1000,
          "batch_size": None, "l2": 1e-4, "standardize": False}
_IMAGES = {"hidden": [128, 128], "activation": "relu", "lr": 0.001, "decay": 1e-3, "epochs": 10,
           "batch_size": 128, "l2": 0.0, "standardize": False}
PRESETS = {
    "spiral": _SMALL,
    "vertical": _SMALL,
    # ReLU from the book's 0.01-scale initial weights stalls on the sine; tanh fits it.
    "sine": {**_SMALL, "activation": "tanh", "lr": 0.02, "decay": 1e-3, "epochs": 2000, "l2": 0.0},
    "fashion-mnist": _IMAGES,
    "mnist": _IMAGES,
    "file": {**_SMALL, "lr": 0.005, "decay": 1e-4, "epochs": 100, "batch_size": 32, "l2": 1e-4,
             "standardize": True},
}
COMMON = {"dropout": 0.0, "optimizer": "adam", "seed": 0, "dtype": "float32",
          "precision": "float32", "validation_split": None}
# The options that define a run; --resume takes them from the checkpoint.
TRAINING_OPTIONS = ("dataset", "hidden", "activation", "dropout", "optimizer", "lr", "decay",
                    "epochs", "batch_size", "l2", "seed", "dtype", "precision", "standardize",
                    "validation_split")
# Options added after checkpoints were first written, with the value older runs had.
_ADDED = {"precision": "float32", "standardize": False, "validation_split": None}


def new_settings(args: argparse.Namespace) -> dict[str, Any]:
    """A new run's settings: the data set's defaults, then the options given."""
    dataset = args.dataset or "spiral"
    settings = {**COMMON, **PRESETS.get(dataset, PRESETS["file"]), "dataset": dataset}
    for name in TRAINING_OPTIONS:
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if settings["batch_size"] == "full":
        settings["batch_size"] = None
    return settings


def load_checkpoint(out: Path, device: Any) -> checkpoint.Checkpoint:
    """The checkpoint that --resume continues, refused unless gpunn train wrote it."""
    path = out / "checkpoint.npz"
    if not path.is_file():
        raise GpunnError(f"--resume found no checkpoint at {path}; start a run with "
                         f"gpunn train --out {shlex.quote(str(out))} first.")
    saved = checkpoint.load(path, device=device)
    for name, value in _ADDED.items():
        saved.settings.setdefault(name, value)
    if not all(name in saved.settings for name in TRAINING_OPTIONS):
        raise FileFormatError(f"{path} was not written by gpunn train (its settings lack the "
                              f"command-line options), so --resume cannot continue it.")
    return saved


def resumed_settings(args: argparse.Namespace, saved: dict[str, Any], epoch: int,
                     out: Path) -> dict[str, Any]:
    """The checkpoint's settings with a new --epochs; any other option given must match them."""
    settings = dict(saved)
    for name in TRAINING_OPTIONS:
        given = getattr(args, name)
        if name == "batch_size" and given == "full":
            given = None
        elif name == "epochs" or given is None:
            continue
        if given != saved[name]:
            flag = "--" + name.replace("_", "-")
            started, received = (_switch(flag, saved[name]), _switch(flag, given)) \
                if isinstance(given, bool) else (f"{flag} {_show(saved[name])}",
                                                 f"{flag} {_show(given)}")
            raise UsageError(f"--resume continues the run in {out}, which was started with "
                             f"{started}; received {received}. "
                             f"Leave {flag} out, or start a new run with another --out.")
    if args.epochs is not None:
        if args.epochs < epoch:
            raise UsageError(f"--epochs is the total to reach; {out}/checkpoint.npz already "
                             f"holds {epoch} epochs, received --epochs {args.epochs}.")
        settings["epochs"] = args.epochs
    return settings


def _switch(flag: str, on: bool) -> str:
    return flag if on else flag.replace("--", "--no-", 1)


def _show(value: Any) -> str:
    if value is None:
        return "full"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def choose_task(requested: str | None, dataset: str, y: numpy.ndarray,
                y_val: numpy.ndarray) -> tuple[str, int | None, str]:
    """(task, classes or None, why): what --task asked for, else what the labels look like."""
    labels = numpy.concatenate([y, y_val])
    values, counts = numpy.unique(labels, return_counts=True) if labels.ndim == 1 else ([], [])
    classes, why = None, "targets that are not whole numbers"
    if labels.ndim == 2 and labels.shape[1] > 1:
        why = f"{labels.shape[1]} target columns"
        if numpy.isin(labels, (0, 1)).all() and (labels.sum(axis=1) == 1).all():
            classes, why = labels.shape[1], f"one-hot labels in {labels.shape[1]} columns"
    elif labels.ndim == 1 and labels.size and numpy.all(labels % 1 == 0):
        if set(values.tolist()) == {-1, 1}:
            classes, why = 2, "labels -1 and +1, read as classes 0 and 1"
        elif values[0] >= 0:
            classes = int(values[-1]) + 1
            why = f"{len(values)} distinct whole-number labels"
        else:
            why = "whole-number targets below 0"
    if requested == "regress":
        return "regress", None, "--task regress"
    if classes is None:
        if requested == "classify":
            raise UsageError(f"--task classify needs class labels (whole numbers >= 0 or -1/+1 "
                             f"in one column, or one-hot rows); {dataset} has {why}. Leave "
                             f"--task out for a regression.")
        return "regress", None, why
    if requested == "classify":
        return "classify", classes, f"--task classify ({why})"
    singles = int(numpy.sum(numpy.asarray(counts) == 1))
    # The built-in sets are known classifications, however small a test's copy of them.
    doubtful = (labels.ndim == 1 and dataset not in datasets.NAMES
                and (singles or len(values) * 5 > len(labels)))
    if doubtful and distributed.current().rank == 0:
        print(f"gpunn: warning: {dataset}'s labels may be a regression's targets: "
              f"{len(values)} distinct whole-number labels for {len(labels)} samples"
              f"{f', {singles} of them with one sample' if singles else ''}; use --task regress "
              f"for a regression, or --task classify to keep the classes without this warning.",
              file=sys.stderr)
    return "classify", classes, f"{why}; use --task regress for a regression"


def build_model(settings: dict[str, Any], classes: int | None, X: numpy.ndarray,
                y: numpy.ndarray, device: Any) -> gn.Model:
    """The network the settings describe: a classifier when ``classes``, else a regression."""
    model = gn.Model(device=device, dtype=settings["dtype"], precision=settings["precision"])
    inputs, l2 = X.shape[1], settings["l2"]
    if settings["standardize"]:  # X is the training split: the validation split stays unseen
        model.add(gn.Standardize.fit(X))
    for width in settings["hidden"]:
        model.add(gn.Dense(inputs, width, weight_regularizer_l2=l2, bias_regularizer_l2=l2))
        model.add(ACTIVATIONS[settings["activation"]]())
        if settings["dropout"]:
            model.add(gn.Dropout(settings["dropout"]))
        inputs = width
    optimizer = OPTIMIZERS[settings["optimizer"]](learning_rate=settings["lr"],
                                                  decay=settings["decay"])
    if classes is None:
        model.add(gn.Dense(inputs, y.shape[1] if y.ndim == 2 else 1))
        model.add(gn.Linear())
        model.set(loss=gn.MeanSquaredError(), optimizer=optimizer,
                  accuracy=gn.RegressionAccuracy())
    else:
        model.add(gn.Dense(inputs, classes))
        model.add(gn.Softmax())
        model.set(loss=gn.CategoricalCrossentropy(), optimizer=optimizer,
                  accuracy=gn.CategoricalAccuracy())
    model.finalize()
    return model
