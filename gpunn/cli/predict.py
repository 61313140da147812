"""``gpunn predict``: run a model on the samples of a file and write its outputs."""

from __future__ import annotations

import argparse

import gpunn as gn
from gpunn import files, io, model_data
from gpunn.cli._common import batch_option, batch_size_or_none, debug_option, device_option


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``gpunn predict`` and its options."""
    parser = commands.add_parser("predict",
                                 parents=[device_option(), batch_option(), debug_option()],
                                 help="run a model on the samples of an .npz or .csv file")
    parser.add_argument("model", metavar="MODEL", help="model.npz or checkpoint.npz")
    parser.add_argument("input", metavar="INPUT", help="an .npz holding an array X, or a .csv "
                        "of the model's features, with or without the label last")
    parser.add_argument("--out", default="predictions.npz",
                        help="where to write arrays 'outputs' and 'predictions' "
                        "(default predictions.npz); an existing file is replaced only when it "
                        "holds predictions gpunn wrote, or with --force")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing --out file that gpunn did not write as "
                        "predictions (never MODEL or INPUT)")
    parser.set_defaults(run=predict)


def predict(args: argparse.Namespace) -> int:
    files.check(args.out, "predictions", io.kind_of, force=args.force, force_hint="--force",
                reads={args.model: "the model", args.input: "the input data"})  # before any work
    model = gn.Model.load(args.model, device=args.device)
    X = model_data.inputs(model, args.model, args.input)
    outputs = model.predict(X, batch_size=batch_size_or_none(args.batch_size))
    predictions = model.backend.to_numpy(
        model.layers[-1].predictions(model.backend.asarray(outputs)))
    io.write(args.out, {"kind": "predictions"}, {"outputs": outputs, "predictions": predictions},
             force=args.force)
    print(f"wrote predictions for {len(X)} samples to {args.out} (arrays 'outputs' and "
          f"'predictions')")
    return 0
