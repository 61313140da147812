"""``gpunn train``: train a network on a data set and write the run to a folder."""

from __future__ import annotations

import argparse
import os
import shlex
import time
from pathlib import Path
from typing import Any

import numpy

import gpunn as gn
from gpunn import (
    backend,
    datasets,
    distributed,
    model_data,
    plots,
    precision,
    progress,
    runs,
    training,
)
from gpunn.accuracy import r_squared
from gpunn.cli._common import (
    UsageError,
    debug_option,
    device_option,
    load_data,
    parse_batch_size,
    parse_columns,
    parse_dataset,
    parse_device,
    parse_integer,
    parse_number,
    parse_widths,
)
from gpunn.cli._train_settings import (
    ACTIVATIONS,
    OPTIMIZERS,
    build_model,
    choose_task,
    encode_labels,
    for_the_task,
    load_checkpoint,
    new_settings,
    resumed_settings,
)
from gpunn.errors import GpunnError

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
                    --no-standardize
  sine              as spiral but --activation tanh --lr 0.02 --decay 1e-3 --l2 0
                    --epochs 2000
  (fashion-)mnist   --hidden 128,128 --lr 0.001 --decay 1e-3 --l2 0 --epochs 10
                    --batch-size 128
  .npz / .csv       as spiral but --lr 0.005 --decay 1e-4 --epochs 100 --batch-size 32
                    --standardize --standardize-target; a regression --lr 0.001
                    --epochs 30
A CSV with a header is read by its column names: the target is --label NAME (or a 0-based
position; several, comma-separated, for several targets), else the one column named label,
target, class or y (any case), else the last column; the index pandas writes (an unnamed first
column) is dropped. The model keeps the feature names, so evaluate and predict take the columns
by name, in any order. Text labels and whole numbers with at most 200 distinct values (two
samples each on average) are classes, kept as written (predict answers 'setosa', not 0), as
are one-hot rows; other targets make a regression (linear output, mean squared error), trained
on standardized targets and answering in their units. --task classify|regress says otherwise.
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``gpunn train`` and all its options (those that define a run are also listed in
    _train_settings.TRAINING_OPTIONS)."""
    parser = commands.add_parser(
        "train", parents=[device_option(), debug_option()],
        help="train a network and write it to --out",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=_TRAIN_HELP)
    option = parser.add_argument
    option("--dataset", type=parse_dataset, help="spiral (default), vertical, sine, fashion-mnist, "
           "mnist, or a .npz (arrays X, y) or .csv file")
    option("--label", type=parse_columns, metavar="COLUMN[,COLUMN...]",
           help="the target column of a CSV, by header name or 0-based position (negative from "
                "the end); several, comma-separated, for a regression of several targets "
                "(default: the one column named label, target, class or y, any case, else the "
                "last column)")
    option("--features", type=parse_columns, metavar="COLUMNS",
           help="train on these columns of a CSV only (names or positions, comma-separated)")
    option("--drop", type=parse_columns, metavar="COLUMNS",
           help="leave these columns of a CSV out (an id, a date, ...)")
    option("--keep-first-column", action="store_true", default=None,
           help="keep a first column with an empty, 'index' or 'Unnamed: 0' header as a "
                "feature (by default it is dropped: it is the index pandas' to_csv() writes)")
    option("--task", choices=["classify", "regress"], help="classify (softmax, cross-entropy) or "
           "regress (linear output, mean squared error); default: classify text labels, "
           "one-hot rows and whole-number labels with at most 200 distinct values and two "
           "samples each on average; regress the rest; the header says which and why")
    option("--hidden", type=parse_widths, help="hidden layer widths, e.g. 64,64")
    option("--activation", choices=sorted(ACTIVATIONS), help="hidden activation")
    option("--dropout", type=parse_number(below=1.0), metavar="RATE",
           help="dropout after each hidden layer (default 0)")
    option("--optimizer", choices=list(OPTIMIZERS), help="default adam")
    option("--lr", type=parse_number(above=True), help="learning rate")
    option("--decay", type=parse_number(), help="learning-rate decay: lr / (1 + decay * step)")
    option("--epochs", type=parse_integer(1),
           help="total epochs (with --resume: the total to reach)")
    option("--batch-size", type=parse_batch_size, help="samples per step, or 'full'")
    option("--l2", type=parse_number(), help="L2 penalty on the hidden layers' weights and biases")
    option("--standardize", action=argparse.BooleanOptionalAction,
           help="scale each feature to mean 0 and standard deviation 1 with the training "
                "split's mean and std, kept in the model (a gn.Standardize first layer), so "
                "evaluate, predict and the ONNX export take raw features (default: on for "
                ".npz and .csv files, off for the built-in sets)")
    option("--standardize-target", action=argparse.BooleanOptionalAction,
           help="for a regression, train on the targets scaled to mean 0 and standard deviation "
                "1 (the training split's, kept in the model), so predictions, evaluate and the "
                "ONNX export are in the targets' own units (default: on for .npz and .csv "
                "files, off for the built-in sets)")
    option("--seed", type=parse_integer(0), help="seeds the data, initial weights, shuffling and "
           "dropout (default 0)")
    option("--dtype", choices=["float32", "float64"], help="default float32")
    option("--precision", choices=list(precision.POLICIES),
           help="where products and activations run: float32 (default); tf32 (TF32 tensor "
                "cores), bfloat16 or float16 (mixed precision, float32 master weights; float16 "
                "with a dynamic loss scale): CUDA, except bfloat16, which also runs on the CPU "
                "(for correctness, not faster)")
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
    option("--validation-split", type=parse_number(above=True, below=1.0), metavar="F",
           help="for a .npz or .csv file, the share of its rows held out for validation after "
                "the seeded shuffle (default 0.2); gpunn evaluate scores the same rows")
    option("--early-stopping", type=parse_integer(0), metavar="PATIENCE",
           help="stop when the validation loss has not improved for PATIENCE epochs; model.npz "
                "then holds the best epoch's parameters (the summary says which epoch), "
                "checkpoint.npz the last epoch's, from which --resume continues")
    option("--quiet", action="store_true", help="print nothing but errors")
    option("--no-cuda-graph", dest="cuda_graph", action="store_false",
           help="on CUDA, launch every step's kernels one by one instead of replaying the step "
                "as a captured CUDA graph (the results are the same)")
    parser.set_defaults(run=train)


def train(args: argparse.Namespace) -> int:
    if args.device is None and os.environ.get(backend.ENV_VAR):
        _environment_device()
    # Under mpiexec -n N: data-parallel, rank 0 alone prints and writes (gpunn.distributed).
    comm = distributed.init(args.device)
    lead = comm.rank == 0
    quiet = args.quiet or not lead
    device = gn.device(comm.device if comm.name == "nccl" else args.device)  # fails here,
    if args.resume:  # before any data is read
        out, previous = runs.resumed_folder(args.out), None
        saved = load_checkpoint(out, device)
        settings = resumed_settings(args, saved.settings, saved.epoch, out)
        model, history, done = saved.model, saved.history, saved.epoch
        task = settings.setdefault(  # a checkpoint from before --task: its model says
            "task", "regress" if isinstance(model.layers[-1], gn.Linear) else "classify")
        if args.task is not None and args.task != task:
            raise UsageError(f"--resume continues the run in {out}, which was started with "
                             f"--task {task}; received --task {args.task}. Leave --task out, "
                             f"or start a new run with another --out.")
        if (changed := model_data.changed(model.trained_on)) is not None:
            raise GpunnError(f"--resume cannot continue the run in {out}: {changed}.")
        why = "as the run was started"
        data = load_data(settings, args, notes=False)
        X, y, X_val, y_val = data
        if lead:
            runs.check_files(out, force=args.force, reads=_data_file(settings))
    else:
        settings = new_settings(args)
        data = load_data(settings, args, notes=False)
        X, y, X_val, y_val = data
        chosen = choose_task(args.task, settings["dataset"], y, y_val)
        settings["task"], why = chosen.kind, chosen.why
        for_the_task(settings, args, chosen.kind)
        gn.seed(settings["seed"])
        model = build_model(settings, chosen, X, y, device, data.table)
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
        model.trained_on = model_data.record(settings["dataset"], settings["seed"], X, X_val,
                                             settings["validation_split"])
    batch_size, last = settings["batch_size"], settings["epochs"]  # batch None: full batch
    steps = 1 if batch_size is None else -(-len(X) // batch_size)
    # the regression accuracy's precision, shown before training, from the targets the model
    # trains on (standardized when it scales them)
    model.accuracy.init(y if model.target_scaling is None else
                        (y.reshape(len(y), -1) - model.target_scaling.mean_values) /
                        model.target_scaling.std_values)
    if not quiet:
        if comm.size > 1:
            print(f"data-parallel: {comm.size} processes ({comm.name}), each on "
                  f"{'its own GPU, cuda:<rank on its machine>' if comm.name == 'nccl' else 'cpu'}"
                  f"; batch {settings['batch_size'] or 'full'} shared out among them",
                  flush=True)
        print(_describe(settings, model, X, X_val, done, why, data.table), flush=True)
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
    run = runs.Run(model, settings, out, history, done, last, force=args.force) if lead else None
    started = time.perf_counter()
    try:
        result = training.History() if last == done else model.train(
            X, y, epochs=last - done, batch_size=batch_size, validation_data=(X_val, y_val),
            verbose=False, initial_epoch=done, cuda_graph=args.cuda_graph,
            callbacks=[run, display, *_stopping(args)] if lead else [display, *_stopping(args)])
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
            encode_labels(settings["task"], model.classes, y)[0]  # the user's labels, as indices
        plots.training_figure(out / "training.png", run.history, model=model, X=X, y=labels,
                              title=f"gpunn train --dataset {settings['dataset']}",
                              force=args.force)
        written.append("training.png")
    linked = runs.point_latest(out)  # a run in runs/, however it was started
    if not quiet:
        if model.backend.fused and graph is None and result.cuda_graph != "captured":
            print(f"CUDA graph: {result.cuda_graph}")  # a capture that failed after all
        r2 = (r_squared(model.predict(X_val), y_val)
              if isinstance(model.accuracy, gn.RegressionAccuracy) else None)
        print(_summary(run.history, done, last, seconds, model.device, r2, result.stopped))
        if reason is not None:
            print(f"training.png skipped: {reason}")
        print(f"wrote {', '.join(str(out / name) for name in written)}")
        if linked:
            print(linked)
    return 0


def _data_file(settings: dict[str, Any]) -> dict[str, str]:
    """The data set's file, which a run never writes over, as gpunn.files.check takes it."""
    dataset = settings["dataset"]
    return {} if dataset in datasets.NAMES else {dataset: "the data set"}


def _environment_device() -> None:
    value = os.environ[backend.ENV_VAR]
    try:
        parse_device(value)
    except argparse.ArgumentTypeError as error:
        raise UsageError(f"environment variable {backend.ENV_VAR}: {error}") from None


def _describe(settings: dict[str, Any], model: gn.Model, X: numpy.ndarray,
              X_val: numpy.ndarray, done: int, why: str, table: Any) -> str:
    widths = [X.shape[1], *settings["hidden"], model.trainable_layers[-1].n_neurons]
    task = (f"regression ({why})" if isinstance(model.layers[-1], gn.Linear)
            else f"classification into {widths[-1]} classes ({why})")
    batch = settings["batch_size"] or "full"
    if settings["batch_size"] and settings["batch_size"] >= len(X) > 0:
        # a batch is never larger than the data: say what one step really takes
        batch = (f"full ({len(X)} samples; --batch-size {settings['batch_size']} is not smaller "
                 f"than the training split)" if settings["batch_size"] > len(X) else "full")
    start = f"{settings['epochs']} epochs"
    if done:
        start = (f"already at epoch {done} of {settings['epochs']}" if done >= settings["epochs"]
                 else f"resuming at epoch {done + 1} of {settings['epochs']}")
    text = (f"{settings['dataset']}: {len(X)} training and {len(X_val)} validation samples, "
            f"{task}; network {'-'.join(map(str, widths))} ({settings['activation']}), "
            f"{settings['optimizer']} lr {settings['lr']:g}; {start}, batch {batch}; "
            f"device {model.device}")
    if model.precision.name != "float32":
        text += f", precision {model.precision.name}"
    text += ("; features standardized (the training split's mean and std, kept in the model)"
             if settings["standardize"] else "; features as they are (not standardized)")
    if table is not None:
        text += "".join(f"\n{note[0].upper()}{note[1:]}" for note in table.notes)
        text += "\n" + _columns(table, model)
    if isinstance(model.accuracy, gn.RegressionAccuracy):
        scaled = model.target_scaling is not None
        units = (f" (±{model.accuracy.precision * min(model.target_scaling.std_values):.2g} "
                 f"in its units)" if scaled and len(model.target_scaling.std_values) == 1 else "")
        text += (f"\n{model.accuracy.label} is the book's regression accuracy: the share of "
                 f"predictions within ±{model.accuracy.precision:.2g} (std(y) / 250) of the "
                 f"{'standardized ' if scaled else ''}target{units}; the loss (mean squared error"
                 f"{', of the standardized targets' if scaled else ''}) is the measure to "
                 f"watch, and the validation R² (1 - SS_res / SS_tot) the summary gives at the "
                 f"end")
        if scaled:
            text += ("; targets standardized for training (the training split's mean and "
                     "std, kept in the model: predictions are in the targets' units)")
    return text


def _columns(table: Any, model: gn.Model) -> str:
    """Which columns are the target and the features, and why (a file's header line)."""
    names = table.target_names
    target = (f"Target {', '.join(map(repr, names))}" if names else "Target") + \
        (f" ({table.target_why})" if table.target_why else "")
    target = target.replace("(named as a target is)", "(named as a target is: label, target, "
                                                      "class or y)")
    features = table.feature_names
    listed = "" if features is None else ": " + ", ".join(map(repr, features[:8])) + \
        (f" and {len(features) - 8} more" if len(features) > 8 else "")
    text = f"{target}; {_feature_count(model)} features{listed}"
    if model.classes is not None:
        text += f"; classes {', '.join(map(repr, model.classes[:10]))}" + \
            (f" and {len(model.classes) - 10} more" if len(model.classes) > 10 else "")
    return text


def _feature_count(model: gn.Model) -> int:
    first = model.input_layer
    return 0 if first is None else first.n_inputs


def _stopping(args: argparse.Namespace) -> list[gn.callbacks.Callback]:
    """--early-stopping: on every rank, which all see the same (reduced) validation loss."""
    if args.early_stopping is None:
        return []
    return [gn.callbacks.EarlyStopping(patience=args.early_stopping, restore_best_weights=True)]


def _summary(history: dict[str, list[float]], done: int, last: int, seconds: float,
             device: str, r2: float | None, stopped: dict | None = None) -> str:
    final = {key: values[-1] for key, values in history.items() if values}
    ran = f"trained epochs {done + 1}-{last} in {seconds:.1f} s" if last > done else \
        f"already trained {last} epochs"
    if stopped is not None:  # EarlyStopping restored its best epoch: the model holds that one
        best = done + int(numpy.argmin(history["val_loss"][done:]))
        final = {key: values[best] for key, values in history.items() if values}
        ran = (f"trained epochs {done + 1}-{stopped['epoch']} of {last} in {seconds:.1f} s, "
               f"stopped early ({stopped['reason'].removeprefix('EarlyStopping: ')}); "
               f"model.npz holds epoch {best + 1}")
    text = (f"{ran} on {device}: loss {final['loss']:.4g}, accuracy {final['accuracy']:.4f}; "
            f"validation loss {final['val_loss']:.4g}, accuracy {final['val_accuracy']:.4f}")
    return text if r2 is None else f"{text}, R² {r2:.4f}"
