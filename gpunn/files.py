"""Writing a file, the one way gpunn writes every file it makes (models, checkpoints,
parameters, predictions, ONNX exports, metrics.csv, training.png).

- **Nothing a user made is replaced.** A file already at the path is replaced only when it is
  gpunn's own output of the same kind, recognised by its content (a model over a model,
  predictions over predictions, as Keras' ``model.save`` and ``torch.save`` replace without
  asking), and is writable. Anything else (a data file, a CSV, a checkpoint where a model is
  being saved, a read-only file) is refused unless the caller forces it (``force=True``,
  ``--force``); a file the same command reads is never replaced, forced or not.
- **Atomically**: the content goes to a temporary file in the same folder, flushed to disk,
  then renamed over the path, so a reader sees the old file or the new one, never half of one,
  and a failed write leaves the old file and no temporary one.
- **With the user's umask** (0644 under umask 022), as any new file: not ``tempfile.mkstemp``,
  whose files are private (0600) and which a teammate on a shared machine could not load.
- **Errors in one line** that name the path, say what failed and what to do, never a raw
  ``[Errno N]`` or the temporary file's name.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

from gpunn.errors import FileWriteError, OverwriteRefusedError

Identify = Callable[[Path], "str | None"]  # the kind of gpunn output a file holds, or None


def check(path: str | os.PathLike, kind: str, identify: Identify, *, force: bool = False,
          reads: Mapping[str | os.PathLike, str] | None = None,
          force_hint: str = "force=True") -> Path:
    """Raise if writing gpunn's ``kind`` of output ("model", "predictions", ...) to ``path``
    would fail or replace what it must not (see the module docstring); ``identify`` tells what
    kind of gpunn output a file holds (None: not gpunn's), ``reads`` maps the files the command
    reads to what they are ("the model"), and ``force_hint`` is how the caller forces. Example::

        files.check("out.npz", "predictions", io.kind_of, reads={"model.npz": "the model"})
    """
    path = Path(path)
    for source, role in (reads or {}).items():
        if path.exists() and Path(source).exists() and path.samefile(source):
            raise OverwriteRefusedError(
                f"Not writing the {kind} to {path}: that is {role} this command reads, which "
                f"gpunn never replaces. Give another path for the {kind}.")
    if path.is_dir():
        raise FileWriteError(f"Cannot write the {kind} to {path}: it is a folder. Give a "
                             f"file's name, in that folder or elsewhere.")
    if not path.parent.is_dir():
        missing = errno.ENOTDIR if path.parent.exists() else errno.ENOENT
        raise FileWriteError(_failure(missing, None, path, kind))
    if not path.exists():
        return path
    if not path.is_file():  # a device such as /dev/null, a socket: never replaced by a file
        raise OverwriteRefusedError(f"Not writing the {kind} to {path}: it is not a regular "
                                    f"file. Give the path of a file.")
    if force:
        return path
    found = identify(path)
    if found != kind:
        what = (f"it is not one of gpunn's {kind} files, and gpunn replaces no other file"
                if found is None else f"it is a gpunn {found} file, not a {kind} file")
        raise OverwriteRefusedError(f"Not replacing {path} with the {kind}: {what}. Give another "
                                    f"path, or {force_hint} to replace it.")
    # Write permission taken away (chmod a-w), which root's os.access would not see.
    if not os.access(path, os.W_OK) or not path.stat().st_mode & stat.S_IWUSR:
        raise OverwriteRefusedError(
            f"Not replacing {path} with the {kind}: it is read-only. Make it writable, give "
            f"another path, or {force_hint} to replace it.")
    return path


def write(path: str | os.PathLike, kind: str, identify: Identify,
          content: Callable[[BinaryIO], object], *, force: bool = False,
          reads: Mapping[str | os.PathLike, str] | None = None) -> Path:
    """Check ``path`` as ``check`` does, then write it atomically: ``content(file)`` writes the
    bytes into an open binary file. Returns the path. Example::

        files.write("notes.bin", "notes", lambda path: None, lambda file: file.write(b"hi"))
    """
    path = check(path, kind, identify, force=force, reads=reads)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        # 0666 less the umask, as open() gives any new file; O_EXCL: never another's file.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)  # Windows
        with os.fdopen(os.open(temporary, flags, 0o666), "wb") as file:
            content(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass  # the first error is the one to report
        if isinstance(error, OSError) and not isinstance(error, FileWriteError):
            failure = FileWriteError(_failure(error.errno, error, path, kind))
            failure.errno = error.errno  # for callers that test it; the text stays one line
            raise failure from error
        raise
    return path


def _failure(number: int | None, error: OSError | None, path: Path, kind: str) -> str:
    """One line for a failed write: the path, what failed and what to do, in words that never
    name the temporary file (an OSError's own text does: ``[Errno 13] ...: '.x.1f2e.tmp'``)."""
    folder = path.parent
    if number in (errno.EACCES, errno.EPERM):
        why, remedy = (f"permission denied in the folder {folder}",
                       "Give a path in a folder you can write to")
    elif number == errno.ENOENT:
        why, remedy = (f"the folder {folder} does not exist",
                       "Create it, or give a path in an existing folder")
    elif number == errno.ENOTDIR:
        why, remedy = f"{folder} is not a folder", "Give a path in an existing folder"
    elif number == errno.EROFS:
        why, remedy = "the file system is read-only", "Give a path on a writable disk"
    elif number in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        why, remedy = (f"{error.strerror if error else 'no space left'} (the disk is full)",
                       "Free some space, or give a path on another disk")
    else:
        text = (error.strerror or " ".join(str(error).split())) if error else ""
        why, remedy = text or type(error).__name__, "Check the path and the disk, then try again"
    return f"Cannot write the {kind} to {path}: {why}. {remedy}."
