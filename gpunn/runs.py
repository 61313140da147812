"""A `gpunn train` run's folder and files: where a run goes (runs/<date-time>, with runs/latest
pointing at the run in runs/ that completed last), which run `--resume` continues (the newest,
finished or interrupted), and what it writes as its epochs end (metrics.csv, checkpoint.npz).
A previous run's files are never replaced or deleted."""

from __future__ import annotations

import csv
import math
import os
import shlex
import sys
import time
from io import StringIO
from pathlib import Path
from typing import Any

from gpunn import checkpoint, files, io, plots
from gpunn.callbacks import Callback
from gpunn.errors import FileWriteError, GpunnError

RUNS = Path("runs")  # each default run gets runs/<date-time>/
LATEST = RUNS / "latest"  # a link to the run in runs/ that completed last
CHECKPOINT_SECONDS = 2.0  # checkpoint.npz is rewritten at most this often (see train --help)
METRICS = ("loss", "data_loss", "regularization_loss", "accuracy", "learning_rate", "val_loss",
           "val_accuracy")
METRICS_HEADER = ",".join(["epoch", *METRICS])  # metrics.csv's first line, which says it is ours


def metrics_kind(path: str | os.PathLike) -> str | None:
    """"metrics" for a metrics.csv that gpunn wrote (its first line is METRICS_HEADER), else
    None."""
    try:
        with open(path, "rb") as file:
            first = file.readline(len(METRICS_HEADER) + 2)
    except OSError:
        return None
    return "metrics" if first.rstrip(b"\r\n") == METRICS_HEADER.encode() else None


# A run's files, what gpunn.files calls each, and how it recognises one that gpunn wrote.
FILES = {"model.npz": ("model", io.kind_of), "checkpoint.npz": ("checkpoint", io.kind_of),
         "metrics.csv": ("metrics", metrics_kind), "training.png": (plots.KIND, plots.kind_of)}


def held(out: Path) -> list[str]:
    """The files of a run that ``out`` already holds (a folder that holds any is not reused):
    model.npz and checkpoint.npz that gpunn wrote. Files of these names that gpunn did not
    write are for ``check_files``."""
    return [name for name in ("model.npz", "checkpoint.npz")
            if io.kind_of(out / name) is not None]


def check_files(out: Path, *, force: bool = False,
                reads: dict[str | os.PathLike, str] | None = None) -> None:
    """Before a run writes into ``out``: refuse (gpunn.files.check) where one of its files
    would replace a file gpunn did not write as that file (unless ``force``) or one the run
    reads (``reads``, such as the data set)."""
    for name, (kind, identify) in FILES.items():
        if (out / name).exists():
            files.check(out / name, kind, identify, force=force, reads=reads,
                        force_hint="--force")


def new_folder(out: str | os.PathLike | None) -> tuple[Path, Path | None]:
    """(the new run's folder, the previous complete run or None): ``out``, which must hold no
    run (see ``held``), or a new runs/<date-time>."""
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise FileWriteError(f"--out {out} is a file, not a folder: --out names the folder "
                                 f"a run writes its files into. Give a new folder's name, such "
                                 f"as {RUNS / out.stem}.")
        _mkdir(out)
        return out, None
    previous = LATEST.resolve() if LATEST.exists() else None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    _mkdir(RUNS)
    for attempt in range(1, 1000):
        out = RUNS / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            _mkdir(out, exist_ok=False)
        except FileExistsError:  # two runs started in the same second
            continue
        return out, previous and Path(os.path.relpath(previous))
    raise GpunnError(f"could not make a new run folder in {RUNS}/ (1000 named {stamp}-*)")


def newest() -> Path | None:
    """The newest run in runs/, finished or interrupted: of its folders, the one whose
    checkpoint.npz was written last (a run writes it after every epoch, at most every
    CHECKPOINT_SECONDS, and when it ends or is interrupted). None when there is none."""
    found = []
    for folder in RUNS.iterdir() if RUNS.is_dir() else ():
        saved = folder / "checkpoint.npz"
        if not folder.is_symlink() and saved.is_file():  # runs/latest is a link to one of them
            found.append((saved.stat().st_mtime_ns, folder.name, folder))
    return max(found)[2] if found else None


def _mkdir(folder: Path, *, exist_ok: bool = True) -> None:
    """``folder.mkdir`` with its parents, and any OSError said in one line; FileExistsError
    passes through where not ``exist_ok`` (``new_folder`` then tries the next name)."""
    try:
        folder.mkdir(parents=True, exist_ok=exist_ok)
        return
    except FileExistsError:
        if not exist_ok:
            raise
        why = "a file of that name is in the way"
    except NotADirectoryError:
        why = "a part of that path is a file, not a folder"
    except OSError as error:
        why = error.strerror or " ".join(str(error).split())
    raise FileWriteError(f"Cannot make the run's folder {folder}: {why}. Give --out a folder "
                         f"you can write to.")


def resumed_folder(out: str | os.PathLike | None) -> Path:
    """The folder of the run to continue: ``out``, else the newest run in runs/ (``newest``)."""
    if out is None:
        found = newest()
        if found is None:
            raise GpunnError(f"--resume found no run to continue: no folder in {RUNS}/ holds a "
                             f"checkpoint.npz. Start one with gpunn train, or give --out DIR "
                             f"for a run elsewhere.")
        return found
    out = Path(out)
    return Path(os.path.relpath(out.resolve())) if out.is_symlink() else out


def in_runs(out: Path) -> bool:
    """Whether ``out`` is a run folder directly in runs/ (which runs/latest can point at)."""
    return (out.resolve().parent == RUNS.resolve() and out.name != LATEST.name
            and not out.is_symlink())


def point_latest(out: Path) -> str | None:
    """Point runs/latest at ``out``, a complete run, when it is a folder directly in runs/
    (however it was started: a new run, --out runs/NAME, or --resume); returns what to tell the
    user, or None for a run elsewhere."""
    if not in_runs(out):
        return None
    note = ""
    if LATEST.exists() and not LATEST.is_symlink():  # a folder an older gpunn wrote: keep it
        modified = time.localtime(LATEST.stat().st_mtime)
        kept = RUNS / f"latest-{time.strftime('%Y%m%d-%H%M%S', modified)}"
        LATEST.rename(kept)
        note = f" (the folder that was there is now {kept})"
    link = RUNS / f".latest-{os.getpid()}"
    try:
        link.unlink(missing_ok=True)
        os.symlink(out.resolve().name, link, target_is_directory=True)
        os.replace(link, LATEST)  # atomic: a reader sees the old link or the new one
    except OSError as error:
        return f"{LATEST} was not updated ({error}); the run is in {out}"
    return f"{LATEST} -> {out}{note}"


class Run(Callback):
    """The files of one `gpunn train` as its epochs end: history, metrics.csv, checkpoint.npz
    (a callback of Model.train, gpunn.callbacks)."""

    def __init__(self, model: Any, settings: dict[str, Any], out: Path,
                 history: dict[str, list[float]], done: int, last: int, *,
                 force: bool = False) -> None:
        self.model, self.settings, self.out, self.last = model, settings, out, last
        self.force = force  # replace files in out that gpunn did not write (--force)
        self.history = {key: list(values) for key, values in history.items()}
        self.epoch = done
        self.saved_epoch = done if done else None  # the epoch checkpoint.npz holds
        self.saved_at = -math.inf
        self.snapshot: checkpoint.Snapshot | None = None

    def __repr__(self) -> str:
        return f"the run's checkpoint writer ({self.out})"

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        self.epoch = epoch
        if epoch == self.last or time.monotonic() - self.saved_at >= CHECKPOINT_SECONDS:
            self.save_checkpoint()
        else:
            self.snapshot = checkpoint.Snapshot.take(self.model, epoch)

    def on_train_end(self) -> None:
        # Stopped early (--early-stopping): checkpoint.npz keeps the last epoch trained, before
        # EarlyStopping, called after this, restores the best one for model.npz.
        if self.model.stop_training and self.snapshot is not None:
            self.save_checkpoint()

    def save_checkpoint(self) -> None:
        checkpoint.save(self.out / "checkpoint.npz", self.model, epoch=self.epoch,
                        history=self.history, settings=self.settings, force=self.force)
        write_metrics(self.out / "metrics.csv", self.history, force=self.force)
        self.saved_epoch, self.saved_at, self.snapshot = self.epoch, time.monotonic(), None

    def interrupted(self) -> int:
        """After Ctrl-C: keep the last complete epoch in checkpoint.npz and say how to go on."""
        if self.snapshot is not None:
            self.snapshot.restore(self.model)
            self.epoch = self.snapshot.epoch
            self.save_checkpoint()
        if self.saved_epoch is None:
            message = "interrupted before the first epoch completed; nothing was saved"
        else:
            message = (f"interrupted: {self.out / 'checkpoint.npz'} keeps epoch "
                       f"{self.saved_epoch} of {self.last}; continue with: gpunn train --out "
                       f"{shlex.quote(str(self.out))} --resume")
        print(message, file=sys.stderr)
        return 130


def write_metrics(path: Path, history: dict[str, list[float]], *, force: bool = False) -> None:
    """metrics.csv: a row per epoch, every metric of ``history``; written atomically (a reader
    never sees half a file) over a metrics.csv gpunn wrote, or anything with ``force``."""
    text = StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(METRICS_HEADER.split(","))
    for index in range(len(history.get("loss", []))):
        writer.writerow([index + 1, *(repr(history[key][index]) if key in history else ""
                                      for key in METRICS)])
    files.write(path, "metrics", metrics_kind, lambda file: file.write(text.getvalue().encode()),
                force=force)
