"""``gpunn export``: write a model as an ONNX file (the work is gpunn.export's)."""

from __future__ import annotations

import argparse
from pathlib import Path

import gpunn as gn
from gpunn import export as onnx_export
from gpunn import files
from gpunn.cli._common import debug_option


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``gpunn export`` and its options."""
    parser = commands.add_parser("export", parents=[debug_option()],
                                 help="write a model as an ONNX file, for ONNX Runtime and "
                                 "other inference runtimes")
    parser.add_argument("model", metavar="MODEL", help="model.npz or checkpoint.npz")
    parser.add_argument("out", metavar="OUT", help="the .onnx file to write; an existing file "
                        "is replaced only when it is an ONNX model gpunn exported, or with --force")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing OUT that gpunn did not export (never MODEL)")
    parser.set_defaults(run=export)


def export(args: argparse.Namespace) -> int:
    beside = Path(args.model).with_name("checkpoint.npz")  # read for the data set's name
    files.check(args.out, onnx_export.KIND, onnx_export.kind_of, force=args.force,
                force_hint="--force",
                reads={args.model: "the model", beside: "the checkpoint"})  # before any work
    model = gn.Model.load(args.model, device="cpu")
    dataset = onnx_export.training_dataset(args.model)
    path = onnx_export.to_onnx(model, args.out, dataset=dataset, force=args.force)
    print(f"wrote {path} (ONNX opset {onnx_export.OPSET}: {onnx_export.describe(model)}; "
          f"trained on {dataset or 'an unknown data set'})")
    return 0
