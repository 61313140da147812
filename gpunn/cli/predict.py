"""``gpunn predict``: run a model on the samples of a file and write its outputs."""

from __future__ import annotations

import argparse
import csv
import io as text_io
import sys
from pathlib import Path
from typing import Any

import numpy

import gpunn as gn
from gpunn import files, io, model_data
from gpunn.cli._common import (
    UsageError,
    batch_option,
    batch_size_or_none,
    debug_option,
    device_option,
)

_PREDICT_HELP = """\
Run MODEL on the rows of INPUT and write what it predicts. A CSV with a header is read by
column name, in any order: the model's features are taken, its target column, pandas' index
and any other column are left out (a line says which); a CSV without a header must hold exactly
the model's features, in the order it was trained on.

--out FILE.csv (or - for standard output) writes CSV: the predicted label (as the training
data wrote it) under the target's name, then the probability of each class, P(<class>); for a
regression, the predicted value of each target in the targets' own units. --out FILE.npz writes
the arrays 'outputs' and 'predictions' (class indices), and 'labels' for a model that knows its
classes' names.
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``gpunn predict`` and its options."""
    parser = commands.add_parser("predict",
                                 parents=[device_option(), batch_option(), debug_option()],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description=_PREDICT_HELP,
                                 help="run a model on the samples of an .npz or .csv file")
    parser.add_argument("model", metavar="MODEL", help="model.npz or checkpoint.npz")
    parser.add_argument("input", metavar="INPUT", help="an .npz holding an array X, or a .csv "
                        "(read by column name when it has a header)")
    parser.add_argument("--out", default="predictions.npz",
                        help="where to write: a .csv, - (CSV on standard output) or an .npz "
                        "(default predictions.npz); an existing file is replaced only when it "
                        "holds predictions gpunn wrote, or with --force")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing --out file that gpunn did not write as "
                        "predictions (never MODEL or INPUT)")
    parser.set_defaults(run=predict)


def predict(args: argparse.Namespace) -> int:
    kind = _format(args.out)
    reads = {args.model: "the model", args.input: "the input data"}
    if kind == "npz":  # before any work; a CSV's header is known once the model is read
        files.check(args.out, "predictions", io.kind_of, force=args.force, force_hint="--force",
                    reads=reads)
    model = gn.Model.load(args.model, device=args.device)
    X = model_data.inputs(model, args.model, args.input)
    outputs = model.predict(X, batch_size=batch_size_or_none(args.batch_size))
    classifier = isinstance(model.layers[-1], (gn.Softmax, gn.Sigmoid))
    predictions = model.backend.to_numpy(
        model.layers[-1].predictions(model.backend.asarray(outputs))) if classifier else outputs
    if kind == "npz":
        arrays = {"outputs": outputs, "predictions": predictions}
        if classifier and model.classes is not None:
            arrays["labels"] = model.predict_labels(X)
        io.write(args.out, {"kind": "predictions"}, arrays, force=args.force)
        print(f"wrote predictions for {len(X)} samples to {args.out} (arrays "
              f"{', '.join(repr(name) for name in arrays)})")
        return 0
    header, rows = _table(model, outputs, predictions, classifier)
    text = _csv_text(header, rows)
    if kind == "stdout":
        sys.stdout.write(text)
        return 0
    files.write(args.out, "predictions", _csv_identifier(header),
                lambda file: file.write(text.encode()), force=args.force, reads=reads)
    print(f"wrote predictions for {len(X)} samples to {args.out} (CSV: "
          f"{', '.join(header[:4])}{', ...' if len(header) > 4 else ''})")
    return 0


def _format(out: str) -> str:
    if out == "-":
        return "stdout"
    suffix = Path(out).suffix.lower()
    if suffix not in (".csv", ".npz"):
        raise UsageError(f"--out {out}: expected a path ending in .csv (CSV) or .npz (NumPy "
                         f"arrays), or - for CSV on standard output.")
    return suffix[1:]


def _table(model: gn.Model, outputs: numpy.ndarray, predictions: numpy.ndarray,
           classifier: bool) -> tuple[list[str], list[list[Any]]]:
    """The CSV's header and rows: the label and each class's probability, or the values."""
    names = model.target_names
    if not classifier:
        width = outputs.shape[1]
        header = names if names and len(names) == width else (
            ["prediction"] if width == 1 else [f"prediction_{i}" for i in range(width)])
        return header, [[_number(v) for v in row] for row in outputs]
    one_sigmoid = isinstance(model.layers[-1], gn.Sigmoid) and outputs.shape[1] == 1
    classes = model.classes or list(range(2 if one_sigmoid else outputs.shape[1]))
    if isinstance(model.layers[-1], gn.Sigmoid) and not one_sigmoid:  # several yes/no outputs
        header = names if names and len(names) == outputs.shape[1] else [
            f"prediction_{i}" for i in range(outputs.shape[1])]
        return header + [f"P({name})" for name in header], [
            [*map(int, labels), *map(_number, row)] for labels, row in zip(predictions, outputs)]
    indices = predictions.reshape(-1).astype(numpy.int64)
    probabilities = numpy.hstack([1 - outputs, outputs]) if one_sigmoid else outputs
    header = [names[0] if names else "label"] + [f"P({label})" for label in classes]
    return header, [[classes[index], *map(_number, row)]
                    for index, row in zip(indices, probabilities)]


def _number(value: Any) -> float:
    return float(f"{float(value):.9g}")  # a float32's digits, without float64's noise


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buffer = text_io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _csv_identifier(header: list[str]) -> Any:
    """A file's kind for gpunn.files: "predictions" when its first line is the header this
    model's predictions have (so predicting again replaces them), else None (not replaced
    without --force)."""
    first = _csv_text(header, []).encode()

    def identify(path: Path) -> str | None:
        try:
            with open(path, "rb") as file:
                return "predictions" if file.readline(len(first) + 2) == first else None
        except OSError:
            return None
    return identify
