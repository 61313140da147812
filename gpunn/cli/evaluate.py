"""``gpunn evaluate``: a model's loss and accuracy on data it was not trained on."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy

import gpunn as gn
from gpunn import datasets, model_data
from gpunn.accuracy import r_squared
from gpunn.cli._common import (
    UsageError,
    batch_option,
    batch_size_or_none,
    debug_option,
    device_option,
    load_data,
    parse_dataset,
    parse_integer,
)
from gpunn.errors import GpunnError

_EVALUATE_HELP = """\
Print a model's loss and accuracy on data it was not trained on. By default that is the
validation split of the data set MODEL was trained on, drawn with its seed, as train held it
out (gpunn train records the data set, the seed and, for a file, its SHA-256 in the model
file; for a file from an older gpunn, the checkpoint.npz of the same run beside it says).

--dataset FILE scores FILE whole when it is another file than the training data (a separate
test set: all of it is new to the model), and its validation split when it is the training
file, under any name (the rest was trained on). --split says otherwise; scoring the training
file whole, or with another --seed, would include data the model was trained on: the first is
done with a warning, the second refused.
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``gpunn evaluate`` and its options."""
    parser = commands.add_parser(
        "evaluate", parents=[device_option(), batch_option(), debug_option()],
        formatter_class=argparse.RawDescriptionHelpFormatter, description=_EVALUATE_HELP,
        help="loss and accuracy of a model on data it was not trained on")
    parser.add_argument("model", metavar="MODEL", help="model.npz or checkpoint.npz")
    parser.add_argument("--dataset", type=parse_dataset,
                        help="as for train (default: the data set MODEL was trained on)")
    parser.add_argument("--split", choices=["all", "validation"],
                        help="score the data set's validation split, or all of it (default: "
                             "validation for the training data set and the built-in sets, "
                             "all for any other file)")
    parser.add_argument("--seed", type=parse_integer(0),
                        help="the seed of the validation split (default: the one MODEL was "
                             "trained with; another is refused for its training data set, "
                             "whose split it would overlap)")
    parser.add_argument("--data-dir", metavar="DIR", help="as for train")
    parser.set_defaults(run=evaluate)


def evaluate(args: argparse.Namespace) -> int:
    model = gn.Model.load(args.model, device=args.device)
    X, y, what = _evaluation_data(args, model, model_data.recorded(args.model))
    batch_size = batch_size_or_none(args.batch_size)
    loss, accuracy = model.evaluate(X, y, batch_size=batch_size)
    scored = f"accuracy {accuracy:.4f}"
    if isinstance(model.accuracy, gn.RegressionAccuracy):
        if model.accuracy.precision is not None:
            scaled = "standardized " if model.target_scaling is not None else ""
            scored += (f" (predictions within ±{model.accuracy.precision:.2g} of the {scaled}"
                       f"target)")
        scored += f", R² {r_squared(model.predict(X, batch_size=batch_size), y):.4f}"
    print(f"{what}: loss {loss:.4g}, {scored}")
    return 0


def _evaluation_data(args: argparse.Namespace, model: gn.Model,
                     trained: dict[str, Any] | None) -> tuple:
    """(X, y, what they are) for evaluate, checked against the model (see _EVALUATE_HELP)."""
    dataset = args.dataset
    if dataset is None:
        if trained is None:
            raise UsageError(f"{args.model} does not record the data it was trained on (a model "
                             f"saved in Python, or by an older gpunn with no checkpoint.npz "
                             f"of its run beside it); give --dataset NAME or PATH.")
        dataset = trained["dataset"]
        if dataset not in datasets.NAMES and not Path(dataset).expanduser().is_file():
            raise GpunnError(f"{args.model} was trained on {dataset}, which is not there (from "
                             f"{Path.cwd()}); give its path with --dataset.")
    training, changed = (False, None) if trained is None else \
        model_data.is_training_data(dataset, trained)
    split = args.split or ("validation" if training or dataset in datasets.NAMES else "all")
    seed = args.seed
    if training and model_data.seeded(dataset) and trained.get("seed") is not None:
        if seed is not None and seed != trained["seed"]:
            raise UsageError(f"{args.model} was trained on {dataset} with --seed "
                             f"{trained['seed']}, whose validation split it never saw; "
                             f"--seed {seed} draws another split, which would overlap its "
                             f"training data. Leave --seed out.")
        seed = trained["seed"]
    elif seed is None:
        seed = trained.get("seed") if trained and trained.get("seed") is not None else 0
    fraction = trained.get("validation_split") if training else None  # as it was trained
    X, y, X_val, y_val = load_data({"dataset": dataset, "seed": seed,
                                    "validation_split": fraction}, args, model)
    warnings = [changed] if changed else []
    if training and split == "validation" and dataset in model_data.VALIDATED_ON_TRAINING_DATA:
        warnings.append(f"{dataset}'s validation split is its training data (as in the book), "
                        f"so this scores data {args.model} was trained on")
    if trained is None:
        warnings.append(f"{args.model} does not record the data it was trained on, so gpunn "
                        f"cannot check that these samples are not among them")
    if split == "all":
        if training:
            warnings.append(f"scoring all of {dataset}, including the {len(X)} samples "
                            f"{args.model} was trained on (--split validation scores the "
                            f"{len(X_val)} held out)")
        X, y = numpy.concatenate([X, X_val]), numpy.concatenate([y, y_val])
    else:
        X, y = X_val, y_val
    model_data.check(model, args.model, dataset, X, y)
    for warning in warnings:
        print(f"gpunn: warning: {warning}.", file=sys.stderr)
    if split == "all":
        return X, y, f"{dataset}, all {len(X)} samples"
    seeded = f" (seed {seed})" if model_data.seeded(dataset) else ""
    return X, y, f"{dataset} validation split{seeded}, {len(X)} samples"
