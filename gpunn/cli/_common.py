"""What the commands share: the parser that turns a bad command line into a UsageError, the
options several commands take, the argument types, and reading a data set."""

from __future__ import annotations

import argparse
import math
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from gpunn import backend, datasets, distributed, tables


class UsageError(Exception):
    """A bad command line (exit status 2)."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print the usage and exit
        raise UsageError(f"{message} (see {self.prog} --help)")


def debug_option() -> Parser:
    """``--debug``, which every command takes."""
    debug = Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return debug


def device_option() -> Parser:
    """``--device``, for the commands that compute."""
    device = Parser(add_help=False)
    device.add_argument("--device", type=parse_device, help="auto, cpu, cuda or cuda:N "
                        f"(default: ${backend.ENV_VAR}, else auto: the GPU when CuPy finds one)")
    return device


def batch_option() -> Parser:
    """``--batch-size`` as evaluate and predict take it (train has its own)."""
    batch = Parser(add_help=False)
    batch.add_argument("--batch-size", type=parse_batch_size, default="full", metavar="N",
                       help="samples per forward pass, or 'full' (default full); a smaller "
                            "batch needs less memory")
    return batch


def parse_number(*, above: bool = False, below: float | None = None):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if (not math.isfinite(value) or value < 0 or (above and value == 0)
                or (below is not None and value >= below)):
            wanted = "a number " + ("> 0" if above else ">= 0")
            wanted += f" and < {below:g}" if below is not None else ""
            raise argparse.ArgumentTypeError(f"expected {wanted}; received {text!r}")
        return value
    return parse


def parse_integer(minimum: int):
    def parse(text: str) -> int:
        if not re.fullmatch(r"\s*\d+\s*", text) or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}; "
                                             f"received {text!r}")
        return int(text)
    return parse


def parse_batch_size(text: str) -> int | str:
    if text.strip().lower() == "full":
        return "full"
    return parse_integer(1)(text)


def parse_widths(text: str) -> list[int]:
    parts = text.split(",")
    if not all(re.fullmatch(r"\s*\d+\s*", part) and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"expected layer widths > 0 separated by commas, "
                                         f"such as 64,64; received {text!r}")
    return [int(part) for part in parts]


def parse_device(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text.strip().lower()):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N (such as cuda:0); "
                                         f"received {text!r}")
    return text.strip().lower()


def parse_dataset(text: str) -> str:
    name = text.strip().lower().replace("_", "-")
    if name in datasets.NAMES:
        return name
    if Path(text).suffix.lower() in (".npz", ".csv"):
        return text
    raise argparse.ArgumentTypeError(f"expected {', '.join(datasets.NAMES)}, or a path to a "
                                     f".npz or .csv file; received {text!r}")


class Data(tuple):
    """(X, y, X_val, y_val), and what the file said of its columns (a gpunn.tables.Table
    without rows, or None for the built-in sets)."""

    table: Any = None


def load_data(settings: dict[str, Any], args: argparse.Namespace, model: Any = None, *,
              notes: bool = True) -> Data:
    """The data set, read and checked before any file is written; its warnings and (unless
    ``notes`` is False: gpunn train puts them in its header) its notes on stderr, a line each
    (on rank 0 alone under mpiexec). A file's columns are chosen as ``settings`` say
    (--label, --features, --drop, --keep-first-column), or, given a ``model`` that knows its
    columns, by the model's feature and target names."""
    dataset = settings["dataset"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if dataset in datasets.NAMES:
            data, table = datasets.load(dataset, seed=settings["seed"],
                                        data_dir=getattr(args, "data_dir", None),
                                        validation_split=settings.get("validation_split")), None
        else:
            table = _read_file(dataset, settings, model, args)
            data = datasets.split(table.X, table.y, settings["seed"], dataset,
                                  validation_split=settings.get("validation_split"))
    lead = distributed.current().rank == 0
    if lead:
        for warning in caught:
            print(f"gpunn: warning: {warning.message}.", file=sys.stderr)
        quiet = getattr(args, "quiet", False) or not notes
        for note in table.notes if table is not None and not quiet else []:
            print(f"gpunn: {dataset}: {note}.", file=sys.stderr)
    result = Data(data)
    result.table = table
    return result


def _read_file(dataset: str, settings: dict[str, Any], model: Any,
               args: argparse.Namespace) -> tables.Table:
    if model is not None and Path(dataset).suffix.lower() == ".csv":
        first = model.input_layer
        return tables.columns_for(datasets.existing(dataset), model.feature_names,
                                  first.n_inputs if first is not None else 0,
                                  model.target_names, with_targets=True,
                                  model=str(getattr(args, "model", "the model")))
    return datasets.read_table(dataset, **{name: settings.get(name) for name in COLUMN_OPTIONS})


COLUMN_OPTIONS = ("label", "features", "drop", "keep_first_column")


def parse_columns(text: str) -> list[str]:
    """Column names or 0-based positions separated by commas (names may hold spaces)."""
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected column names or positions separated by "
                                         f"commas, such as species or 0 or a,b; received "
                                         f"{text!r}")
    return names


def batch_size_or_none(value: int | str) -> int | None:
    return None if value == "full" else value

