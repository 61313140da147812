"""The command line: ``gpunn train``, ``evaluate``, ``predict``, ``export``, ``info`` (or
``python -m gpunn``).

``gpunn train`` with no options trains a small network on the book's spiral data in about a
second on a laptop CPU, and writes model.npz, metrics.csv, checkpoint.npz and training.png to a
new runs/<date-time>, which runs/latest then points at. Every error reaches the user as one
line, ``gpunn: error: ...``, with exit status 2 for a bad command line, 1 for anything else
and 130 after Ctrl-C; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy

import gpunn as gn
from gpunn import (
    backend,
    checkpoint,
    datasets,
    distributed,
    export,
    files,
    io,
    model_data,
    plots,
    progress,
    runs,
    training,
)
from gpunn.backend import kernels, nvrtc
from gpunn.errors import FileFormatError, GpunnError

ACTIVATIONS = {"relu": gn.ReLU, "tanh": gn.Tanh, "sigmoid": gn.Sigmoid, "leaky_relu": gn.LeakyReLU}
OPTIMIZERS = {"sgd": gn.SGD, "adagrad": gn.Adagrad, "rmsprop": gn.RMSprop, "adam": gn.Adam}


# The defaults of `gpunn train` per data set; options given on the command line win. The spiral
# ones reach a training accuracy of 0.94-0.98 for every seed from 0 to 39 (validation 0.82-0.90)
# in well under a second on one CPU core. "file" is for .npz and .csv paths.
_SMALL = {"hidden": [64, 64], "activation": "relu", "lr": 0.05, "decay": 5e-4, "epochs": 1000,
          "batch_size": None, "l2": 1e-4}
_IMAGES = {"hidden": [128, 128], "activation": "relu", "lr": 0.001, "decay": 1e-3, "epochs": 10,
           "batch_size": 128, "l2": 0.0}
PRESETS = {
    "spiral": _SMALL,
    "vertical": _SMALL,
    # ReLU from the book's 0.01-scale initial weights stalls on the sine; tanh fits it.
    "sine": {**_SMALL, "activation": "tanh", "lr": 0.02, "decay": 1e-3, "epochs": 2000, "l2": 0.0},
    "fashion-mnist": _IMAGES,
    "mnist": _IMAGES,
    "file": {**_SMALL, "lr": 0.005, "decay": 1e-4, "epochs": 100, "batch_size": 32, "l2": 0.0},
}
COMMON = {"dropout": 0.0, "optimizer": "adam", "seed": 0, "dtype": "float32"}
# The options that define a run; --resume takes them from the checkpoint.
TRAINING_OPTIONS = ("dataset", "hidden", "activation", "dropout", "optimizer", "lr", "decay",
                    "epochs", "batch_size", "l2", "seed", "dtype")


class UsageError(Exception):
    """A bad command line (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print the usage and exit
        raise UsageError(f"{message} (see {self.prog} --help)")


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status. Example: ``main(["train", "--quiet"])``."""
    args, stdout = None, sys.stdout
    sys.stdout = progress.ReaderMayLeave(stdout)
    try:
        args = _parser().parse_args(argv)
        if args.command is None:
            raise UsageError("choose a command: train, evaluate, predict, export or info "
                             "(see gpunn --help)")
        return args.run(args)
    except SystemExit as exit:  # --help and --version
        return exit.code if isinstance(exit.code, int) else 0
    except UsageError as error:
        return _fail(error, 2)
    except KeyboardInterrupt:  # outside training, which turns Ctrl-C into a clean stop
        return _fail("interrupted", 130)
    except (GpunnError, OSError) as error:
        if args is not None and args.debug:
            raise
        return _fail(error, 1)
    finally:
        sys.stdout = stdout


def _fail(error: Exception | str, status: int) -> int:
    message = " ".join(str(error).split())
    comm = distributed.current()
    if comm.size > 1:  # the other ranks would wait for this one for ever: end them all
        comm.abort(status, f"failed: {message}")
    prefix = "gpunn: " if isinstance(error, str) else "gpunn: error: "
    print(prefix + message, file=sys.stderr)
    return status


# ---- the command line ------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gpunn", description="Neural networks from scratch on NumPy or CUDA.")
    parser.add_argument("--version", action="version", version=f"gpunn {gn.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    debug = _Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", help="show the traceback of an error")
    device = _Parser(add_help=False)
    device.add_argument("--device", type=_device, help="auto, cpu, cuda or cuda:N (default: "
                        f"${backend.ENV_VAR}, else auto: the GPU when CuPy finds one)")

    train = commands.add_parser(
        "train", parents=[device, debug], help="train a network and write it to --out",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=_TRAIN_HELP)
    option = train.add_argument
    option("--dataset", type=_dataset, help="spiral (default), vertical, sine, fashion-mnist, "
           "mnist, or a .npz (arrays X, y) or .csv (label last) file")
    option("--task", choices=["classify", "regress"], help="classify (softmax, cross-entropy) or "
           "regress (linear output, mean squared error); default: classify whole-number labels "
           ">= 0, -1/+1 labels and one-hot rows, regress the rest; the header says which and why")
    option("--hidden", type=_widths, help="hidden layer widths, e.g. 64,64")
    option("--activation", choices=sorted(ACTIVATIONS), help="hidden activation")
    option("--dropout", type=_number(below=1.0), metavar="RATE",
           help="dropout after each hidden layer (default 0)")
    option("--optimizer", choices=list(OPTIMIZERS), help="default adam")
    option("--lr", type=_number(above=True), help="learning rate")
    option("--decay", type=_number(), help="learning-rate decay: lr / (1 + decay * step)")
    option("--epochs", type=_integer(1), help="total epochs (with --resume: the total to reach)")
    option("--batch-size", type=_batch_size, help="samples per step, or 'full'")
    option("--l2", type=_number(), help="L2 penalty on the hidden layers' weights and biases")
    option("--seed", type=_integer(0), help="seeds the data, initial weights, shuffling and "
           "dropout (default 0)")
    option("--dtype", choices=["float32", "float64"], help="default float32")
    option("--data-dir", metavar="DIR", help="where the fashion-mnist or mnist files are "
           "(default: $GPUNN_DATA/<name>, else ~/.cache/gpunn/<name>; downloaded if missing)")
    option("--out", metavar="DIR", help=f"the run's folder, which must not hold another run "
           f"(default: a new {runs.RUNS}/<date-time>); when a run in {runs.RUNS}/ completes, "
           f"{runs.LATEST} points at it")
    option("--resume", action="store_true", help=f"continue from DIR/checkpoint.npz (default "
           f"DIR: the newest run in {runs.RUNS}/, finished or interrupted: the one whose "
           f"checkpoint.npz was written last)")
    option("--force", action="store_true", help="replace files in --out named like the run's "
           "(model.npz, checkpoint.npz, metrics.csv, training.png) that gpunn did not write; "
           "another run's files are never replaced, nor the data set")
    option("--quiet", action="store_true", help="print nothing but errors")
    option("--no-cuda-graph", dest="cuda_graph", action="store_false",
           help="on CUDA, launch every step's kernels one by one instead of replaying the step "
                "as a captured CUDA graph (the results are the same)")
    train.set_defaults(run=_train)

    batch = _Parser(add_help=False)
    batch.add_argument("--batch-size", type=_batch_size, default="full", metavar="N",
                       help="samples per forward pass, or 'full' (default full); a smaller "
                            "batch needs less memory")
    evaluate = commands.add_parser(
        "evaluate", parents=[device, batch, debug],
        formatter_class=argparse.RawDescriptionHelpFormatter, description=_EVALUATE_HELP,
        help="loss and accuracy of a model on data it was not trained on")
    evaluate.add_argument("model", metavar="MODEL", help="model.npz or checkpoint.npz")
    evaluate.add_argument("--dataset", type=_dataset,
                          help="as for train (default: the data set MODEL was trained on)")
    evaluate.add_argument("--split", choices=["all", "validation"],
                          help="score the data set's validation split, or all of it (default: "
                               "validation for the training data set and the built-in sets, "
                               "all for any other file)")
    evaluate.add_argument("--seed", type=_integer(0),
                          help="the seed of the validation split (default: the one MODEL was "
                               "trained with; another is refused for its training data set, "
                               "whose split it would overlap)")
    evaluate.add_argument("--data-dir", metavar="DIR", help="as for train")
    evaluate.set_defaults(run=_evaluate)

    predict = commands.add_parser("predict", parents=[device, batch, debug],
                                  help="run a model on the samples of an .npz or .csv file")
    predict.add_argument("model", metavar="MODEL", help="model.npz or checkpoint.npz")
    predict.add_argument("input", metavar="INPUT", help="an .npz holding an array X, or a .csv "
                         "of the model's features, with or without the label last")
    predict.add_argument("--out", default="predictions.npz",
                         help="where to write arrays 'outputs' and 'predictions' "
                         "(default predictions.npz); an existing file is replaced only when it "
                         "holds predictions gpunn wrote, or with --force")
    predict.add_argument("--force", action="store_true",
                         help="replace an existing --out file that gpunn did not write as "
                         "predictions (never MODEL or INPUT)")
    predict.set_defaults(run=_predict)

    export = commands.add_parser("export", parents=[debug],
                                 help="write a model as an ONNX file, for ONNX Runtime and "
                                 "other inference runtimes")
    export.add_argument("model", metavar="MODEL", help="model.npz or checkpoint.npz")
    export.add_argument("out", metavar="OUT", help="the .onnx file to write; an existing file "
                        "is replaced only when it is an ONNX model gpunn exported, or with --force")
    export.add_argument("--force", action="store_true",
                        help="replace an existing OUT that gpunn did not export (never MODEL)")
    export.set_defaults(run=_export)

    info = commands.add_parser("info", parents=[debug],
                               help="versions, devices, and whether the CUDA kernels compile")
    info.set_defaults(run=_info)
    return parser


_TRAIN_HELP = f"""\
Train a network and write into a new folder, runs/<date-time> (or --out DIR); when a run in
{runs.RUNS}/ is complete, {runs.LATEST} points at it. A previous run's files are never replaced or
deleted:
  model.npz       the trained model (gpunn.Model.load reads it)
  metrics.csv     one row per epoch: epoch, loss, data_loss, regularization_loss,
                  accuracy, learning_rate, val_loss, val_accuracy
  checkpoint.npz  model, optimizer state, epoch, history and random state; written after
                  the first epoch, then at most every {runs.CHECKPOINT_SECONDS:g} s (thousands of
                  tiny epochs are not slowed down by disk writes), after the last epoch, and on
                  Ctrl-C, when it keeps the last complete epoch (exit status 130);
                  --resume continues from it
  training.png    loss and accuracy curves, and the decision regions of 2-D data
                  (needs matplotlib: pip install 'gpunn[plot]')

Defaults per data set (options given win):
  spiral, vertical  --hidden 64,64 --activation relu --optimizer adam --lr 0.05
                    --decay 5e-4 --l2 1e-4 --epochs 1000 --batch-size full --seed 0
  sine              as spiral but --activation tanh --lr 0.02 --decay 1e-3 --l2 0
                    --epochs 2000
  (fashion-)mnist   --hidden 128,128 --lr 0.001 --decay 1e-3 --l2 0 --epochs 10
                    --batch-size 128
  .npz / .csv       as spiral but --lr 0.005 --decay 1e-4 --l2 0 --epochs 100
                    --batch-size 32
Labels that are whole numbers >= 0, -1/+1 labels and one-hot rows make a classifier
(softmax, cross-entropy); other targets a regression (linear output, mean squared error).
--task classify|regress says which, e.g. --task regress for whole-number targets.
"""


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


def _number(*, above: bool = False, below: float | None = None):
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


def _integer(minimum: int):
    def parse(text: str) -> int:
        if not re.fullmatch(r"\s*\d+\s*", text) or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}; "
                                             f"received {text!r}")
        return int(text)
    return parse


def _batch_size(text: str) -> int | str:
    if text.strip().lower() == "full":
        return "full"
    return _integer(1)(text)


def _widths(text: str) -> list[int]:
    parts = text.split(",")
    if not all(re.fullmatch(r"\s*\d+\s*", part) and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"expected layer widths > 0 separated by commas, "
                                         f"such as 64,64; received {text!r}")
    return [int(part) for part in parts]


def _device(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text.strip().lower()):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N (such as cuda:0); "
                                         f"received {text!r}")
    return text.strip().lower()


def _dataset(text: str) -> str:
    name = text.strip().lower().replace("_", "-")
    if name in datasets.NAMES:
        return name
    if Path(text).suffix.lower() in (".npz", ".csv"):
        return text
    raise argparse.ArgumentTypeError(f"expected {', '.join(datasets.NAMES)}, or a path to a "
                                     f".npz or .csv file; received {text!r}")


# ---- gpunn train -------------------------------------------------------------------------------

def _train(args: argparse.Namespace) -> int:
    if args.device is None and os.environ.get(backend.ENV_VAR):
        _environment_device()
    # Under mpiexec -n N: data-parallel, rank 0 alone prints and writes (gpunn.distributed).
    comm = distributed.init(args.device)
    lead = comm.rank == 0
    quiet = args.quiet or not lead
    device = gn.device(comm.device if comm.name == "nccl" else args.device)  # fails here,
    if args.resume:  # before any data is read
        out, previous = runs.resumed_folder(args.out), None
        saved = _checkpoint(out, device)
        settings = _resumed_settings(args, saved.settings, saved.epoch, out)
        model, history, done = saved.model, saved.history, saved.epoch
        task = settings.setdefault(  # a checkpoint from before --task: its model says
            "task", "regress" if isinstance(model.layers[-1], gn.Linear) else "classify")
        if args.task is not None and args.task != task:
            raise UsageError(f"--resume continues the run in {out}, which was started with "
                             f"--task {task}; received --task {args.task}. Leave --task out, "
                             f"or start a new run with another --out.")
        why = "as the run was started"
        if (why := model_data.changed(model.trained_on)) is not None:
            raise GpunnError(f"--resume cannot continue the run in {out}: {why}.")
        X, y, X_val, y_val = _load(settings, args)
        if lead:
            runs.check_files(out, force=args.force, reads=_data_file(settings))
    else:
        settings = _settings(args)
        X, y, X_val, y_val = _load(settings, args)
        settings["task"], classes, why = _task(args.task, settings["dataset"], y, y_val)
        gn.seed(settings["seed"])
        model = _build(settings, classes, X, y, device)
        history, done = {}, 0
        if not lead:
            out = previous = None
        elif args.out is not None and runs.held(Path(args.out)):
            raise UsageError(f"{args.out} already holds a run "
                             f"({', '.join(runs.held(Path(args.out)))}), and gpunn never "
                             f"replaces one. Continue it with gpunn train --out "
                             f"{shlex.quote(args.out)} --resume, give another --out, or leave "
                             f"--out out for a new folder under {runs.RUNS}/.")
        else:
            if args.out is not None:
                runs.check_files(Path(args.out), force=args.force, reads=_data_file(settings))
            out, previous = runs.new_folder(args.out)
    if model.trained_on is None:  # a new run, or one started before gpunn kept the record
        model.trained_on = model_data.record(settings["dataset"], settings["seed"], X, X_val)
    batch_size, last = settings["batch_size"], settings["epochs"]  # batch None: full batch
    steps = 1 if batch_size is None else -(-len(X) // batch_size)
    model.accuracy.init(y)  # the regression accuracy's precision, shown before training
    if not quiet:
        if comm.size > 1:
            print(f"data-parallel: {comm.size} processes ({comm.name}), each on "
                  f"{'its own GPU, cuda:<rank on its machine>' if comm.name == 'nccl' else 'cpu'}"
                  f"; batch {settings['batch_size'] or 'full'} shared out among them",
                  flush=True)
        print(_describe(settings, model, X, X_val, done, why), flush=True)
        graph = training.why_no_cuda_graph(model, True, comm) if args.cuda_graph \
            else "--no-cuda-graph"
        if model.backend.fused:  # CUDA: say whether the step runs as a CUDA graph, and why not
            print(f"CUDA graph: {'on' if graph is None else f'off ({graph})'}", flush=True)
        where = f"writing to {out}"
        if args.resume and args.out is None:
            where += f" (the newest run in {runs.RUNS}/: its checkpoint.npz was written last)"
        if previous is not None:
            where += (f" (the previous complete run stays in {previous}, which {runs.LATEST} "
                      f"points at)")
        print(where, flush=True)
    display = progress.choose(quiet, model, done + 1, last, steps, len(X), batch_size)
    run = runs.Run(model, settings, out, history, done, last, display,
                   force=args.force) if lead else None
    started = time.perf_counter()
    try:
        result = model.train(X, y, epochs=last - done, batch_size=batch_size,
                             validation_data=(X_val, y_val), verbose=False, initial_epoch=done,
                             cuda_graph=args.cuda_graph,
                             on_epoch_end=run.on_epoch_end if lead else None,
                             on_batch_end=display.batch_end if display.per_batch else None)
    finally:  # a bar left open would swallow the error line that follows
        display.close()
    seconds = time.perf_counter() - started
    if not lead:
        return 130 if result.interrupted else 0
    if result.interrupted:
        return run.interrupted()
    if last == done:
        run.save_checkpoint()  # nothing to train; metrics.csv and the files are rewritten
    model.save(out / "model.npz", force=args.force)
    written = ["model.npz", "metrics.csv", "checkpoint.npz"]
    reason = plots.missing()
    if reason is None:
        labels = y.argmax(axis=1) if settings["task"] == "classify" and y.ndim == 2 else \
            (y > 0) if settings["task"] == "classify" and y.min() < 0 else y  # one-hot, -1/+1
        plots.training_figure(out / "training.png", run.history, model=model, X=X, y=labels,
                              title=f"gpunn train --dataset {settings['dataset']}",
                              force=args.force)
        written.append("training.png")
    linked = runs.point_latest(out)  # a run in runs/, however it was started
    if not quiet:
        if model.backend.fused and graph is None and result.cuda_graph != "captured":
            print(f"CUDA graph: {result.cuda_graph}")  # a capture that failed after all
        print(_summary(run.history, done, last, seconds, model.device))
        if reason is not None:
            print(f"training.png skipped: {reason}")
        print(f"wrote {', '.join(str(out / name) for name in written)}")
        if linked:
            print(linked)
    return 0


def _load(settings: dict[str, Any], args: argparse.Namespace) -> tuple:
    """The data set, read and checked before any file is written; its warnings as one line each
    (on rank 0 alone under mpiexec)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = datasets.load(settings["dataset"], seed=settings["seed"],
                             data_dir=getattr(args, "data_dir", None))
    if distributed.current().rank == 0:
        for warning in caught:
            print(f"gpunn: warning: {warning.message}.", file=sys.stderr)
    return data


def _data_file(settings: dict[str, Any]) -> dict[str, str]:
    """The data set's file, which a run never writes over, as gpunn.files.check takes it."""
    dataset = settings["dataset"]
    return {} if dataset in datasets.NAMES else {dataset: "the data set"}


def _environment_device() -> None:
    value = os.environ[backend.ENV_VAR]
    try:
        _device(value)
    except argparse.ArgumentTypeError as error:
        raise UsageError(f"environment variable {backend.ENV_VAR}: {error}") from None


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    dataset = args.dataset or "spiral"
    settings = {**COMMON, **PRESETS.get(dataset, PRESETS["file"]), "dataset": dataset}
    for name in TRAINING_OPTIONS:
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if settings["batch_size"] == "full":
        settings["batch_size"] = None
    return settings


def _checkpoint(out: Path, device: Any) -> checkpoint.Checkpoint:
    path = out / "checkpoint.npz"
    if not path.is_file():
        raise GpunnError(f"--resume found no checkpoint at {path}; start a run with "
                         f"gpunn train --out {shlex.quote(str(out))} first.")
    saved = checkpoint.load(path, device=device)
    if not all(name in saved.settings for name in TRAINING_OPTIONS):
        raise FileFormatError(f"{path} was not written by gpunn train (its settings lack the "
                              f"command-line options), so --resume cannot continue it.")
    return saved


def _resumed_settings(args: argparse.Namespace, saved: dict[str, Any], epoch: int,
                      out: Path) -> dict[str, Any]:
    settings = dict(saved)
    for name in TRAINING_OPTIONS:
        given = getattr(args, name)
        if name == "batch_size" and given == "full":
            given = None
        elif name == "epochs" or given is None:
            continue
        if given != saved[name]:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"--resume continues the run in {out}, which was started with "
                             f"{flag} {_show(saved[name])}; received {flag} {_show(given)}. "
                             f"Leave {flag} out, or start a new run with another --out.")
    if args.epochs is not None:
        if args.epochs < epoch:
            raise UsageError(f"--epochs is the total to reach; {out}/checkpoint.npz already "
                             f"holds {epoch} epochs, received --epochs {args.epochs}.")
        settings["epochs"] = args.epochs
    return settings


def _show(value: Any) -> str:
    if value is None:
        return "full"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _task(requested: str | None, dataset: str, y: numpy.ndarray,
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


def _build(settings: dict[str, Any], classes: int | None, X: numpy.ndarray, y: numpy.ndarray,
           device: Any) -> gn.Model:
    model = gn.Model(device=device, dtype=settings["dtype"])
    inputs, l2 = X.shape[1], settings["l2"]
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


def _describe(settings: dict[str, Any], model: gn.Model, X: numpy.ndarray,
              X_val: numpy.ndarray, done: int, why: str) -> str:
    widths = [X.shape[1], *settings["hidden"], model.trainable_layers[-1].n_neurons]
    task = (f"regression ({why})" if isinstance(model.layers[-1], gn.Linear)
            else f"classification into {widths[-1]} classes ({why})")
    batch = settings["batch_size"] or "full"
    start = f"{settings['epochs']} epochs"
    if done:
        start = (f"already at epoch {done} of {settings['epochs']}" if done >= settings["epochs"]
                 else f"resuming at epoch {done + 1} of {settings['epochs']}")
    text = (f"{settings['dataset']}: {len(X)} training and {len(X_val)} validation samples, "
            f"{task}; network {'-'.join(map(str, widths))} ({settings['activation']}), "
            f"{settings['optimizer']} lr {settings['lr']:g}; {start}, batch {batch}; "
            f"device {model.device}")
    if isinstance(model.accuracy, gn.RegressionAccuracy):
        text += (f"\n{model.accuracy.label} is the book's regression accuracy: the share of "
                 f"predictions within ±{model.accuracy.precision:.2g} (std(y) / 250) of the "
                 f"target; the loss (mean squared error) is the measure to watch")
    return text


def _summary(history: dict[str, list[float]], done: int, last: int, seconds: float,
             device: str) -> str:
    final = {key: values[-1] for key, values in history.items() if values}
    ran = f"trained epochs {done + 1}-{last} in {seconds:.1f} s" if last > done else \
        f"already trained {last} epochs"
    return (f"{ran} on {device}: loss {final['loss']:.4g}, accuracy {final['accuracy']:.4f}; "
            f"validation loss {final['val_loss']:.4g}, accuracy {final['val_accuracy']:.4f}")


# ---- gpunn evaluate, predict, info ---------------------------------------------------------------

def _batch(value: int | str) -> int | None:
    return None if value == "full" else value


def _evaluate(args: argparse.Namespace) -> int:
    model = gn.Model.load(args.model, device=args.device)
    X, y, what = _evaluation_data(args, model, model_data.recorded(args.model))
    loss, accuracy = model.evaluate(X, y, batch_size=_batch(args.batch_size))
    scored = f"accuracy {accuracy:.4f}"
    if isinstance(model.accuracy, gn.RegressionAccuracy) and model.accuracy.precision is not None:
        scored += f" (predictions within ±{model.accuracy.precision:.2g} of the target)"
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
    X, y, X_val, y_val = _load({"dataset": dataset, "seed": seed}, args)
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


def _predict(args: argparse.Namespace) -> int:
    files.check(args.out, "predictions", io.kind_of, force=args.force, force_hint="--force",
                reads={args.model: "the model", args.input: "the input data"})  # before any work
    model = gn.Model.load(args.model, device=args.device)
    X = model_data.inputs(model, args.model, args.input)
    outputs = model.predict(X, batch_size=_batch(args.batch_size))
    predictions = model.backend.to_numpy(
        model.layers[-1].predictions(model.backend.asarray(outputs)))
    io.write(args.out, {"kind": "predictions"}, {"outputs": outputs, "predictions": predictions},
             force=args.force)
    print(f"wrote predictions for {len(X)} samples to {args.out} (arrays 'outputs' and "
          f"'predictions')")
    return 0


def _export(args: argparse.Namespace) -> int:
    beside = Path(args.model).with_name("checkpoint.npz")  # read for the data set's name
    files.check(args.out, export.KIND, export.kind_of, force=args.force, force_hint="--force",
                reads={args.model: "the model", beside: "the checkpoint"})  # before any work
    model = gn.Model.load(args.model, device="cpu")
    dataset = export.training_dataset(args.model)
    path = export.to_onnx(model, args.out, dataset=dataset, force=args.force)
    print(f"wrote {path} (ONNX opset {export.OPSET}: {export.describe(model)}; trained on "
          f"{dataset or 'an unknown data set'})")
    return 0


def _info(args: argparse.Namespace) -> int:
    rows = [("gpunn", gn.__version__),
            ("Python", f"{platform.python_version()} ({sys.executable})"),
            ("NumPy", numpy.__version__)]
    devices, architectures = ["cpu (NumPy)"], list(nvrtc.ARCHITECTURES)
    try:
        import cupy
    except ImportError:
        rows += [("CuPy", "not installed (for a GPU: pip install 'gpunn[cuda12]' or "
                          "'gpunn[cuda13]')"),
                 ("CUDA runtime", "not used without CuPy"), ("CUDA driver", _driver_version())]
    else:
        from gpunn.backend.cupy_backend import count_devices

        runtime = cupy.cuda.runtime
        rows += [("CuPy", cupy.__version__),
                 ("CUDA runtime", _cuda_version(runtime.runtimeGetVersion)),
                 ("CUDA driver", _cuda_version(runtime.driverGetVersion))]
        try:
            for index in range(count_devices(cupy)):
                devices.append(_gpu(cupy, index))
                # CuPy gives the compute capability as a string such as "90"
                architectures.append(f"sm_{cupy.cuda.Device(index).compute_capability}")
        except GpunnError as error:
            devices.append(f"no CUDA device ({error})")
    rows.append(("devices", "; ".join(devices)))
    try:
        spec = os.environ.get(backend.ENV_VAR) or "auto"
        rows.append(("default device", f"{spec} -> {gn.device(None).device}"))
    except GpunnError as error:
        rows.append(("default device", f"unusable: {error}"))
    kernel_status, ok = _kernel_check(sorted(set(architectures)))
    rows.append(("CUDA kernels", kernel_status))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name + ':':<{width + 1}} {value}")
    return 0 if ok else 1


def _cuda_version(getter: Any) -> str:
    try:
        version = int(getter())
    except Exception as error:  # CuPy raises CUDARuntimeError, or others when CUDA is broken
        return f"not found ({error})"
    if version == 0:  # what CUDA reports for the driver when there is none
        return "not found (no NVIDIA driver)"
    return f"{version // 1000}.{version % 1000 // 10}"


def _driver_version() -> str:
    try:
        from cuda.bindings import driver
    except ImportError:
        return "not checked: neither CuPy nor cuda-bindings is installed"
    try:
        error, version = driver.cuDriverGetVersion()
    except Exception as error:  # the driver library itself is missing: no NVIDIA driver
        return f"not found ({error})"
    return f"{version // 1000}.{version % 1000 // 10}" if version else f"not found ({error})"


def _gpu(cupy: Any, index: int) -> str:
    properties = cupy.cuda.runtime.getDeviceProperties(index)
    name = properties["name"]
    name = name.decode() if isinstance(name, bytes) else name
    with cupy.cuda.Device(index):
        free, total = cupy.cuda.runtime.memGetInfo()
    return f"cuda:{index} {name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free)"


def _kernel_check(architectures: list[str]) -> tuple[str, bool]:
    """Compile every kernel instance with NVRTC, as tests/test_kernels.py does (no GPU needed)."""
    module, version = nvrtc.load()
    if module is None:
        return f"not checked: {version}", True
    failures = [f"{filename} for {architecture}: {compiled.log.splitlines()[:1]}"
                for filename in kernels.source_files() for architecture in architectures
                if not (compiled := nvrtc.compile_file(module, filename, architecture)).ok]
    if failures:
        return f"FAILED to compile with NVRTC {version}: {'; '.join(failures)}", False
    count = sum(len(kernels.name_expressions(name)) for name in kernels.source_files())
    return f"all {count} compile with NVRTC {version} for {', '.join(architectures)}", True
