"""Datasets: the book's synthetic sets (spiral, vertical, sine), Fashion-MNIST and MNIST read from
their IDX files, and your own data from .npz or .csv.

Every loader returns NumPy arrays on the host, X as float32; a model moves them to its device.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import struct
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Union

import numpy

from gpunn import _checks, backend, files, io, tables
from gpunn.errors import FileFormatError, GpunnError, InvalidArgumentError, InvalidTypeError

PathLike = Union[str, "os.PathLike[str]"]
Pair = tuple[numpy.ndarray, numpy.ndarray]
Split = tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray, numpy.ndarray]

NAMES = ("spiral", "vertical", "sine", "fashion-mnist", "mnist")
DATA_ENV_VAR = "GPUNN_DATA"
TIMEOUT_S = 30  # per network read, so a dead mirror fails instead of hanging

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MIRRORS = {
    "fashion-mnist": ("Fashion-MNIST",
                      "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
    "mnist": ("MNIST", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
}
# MD5 of each .gz as published by the authors: Fashion-MNIST in the README of
# github.com/zalandoresearch/fashion-mnist ("Get the Data"); MNIST the sums of the files on
# yann.lecun.com/exdb/mnist, which the CVDF mirror serves unchanged (torchvision checks the same).
MD5 = {
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
}


def _rng(seed: int | None) -> numpy.random.Generator:
    if seed is None:
        return backend.host_random()  # looked up per call: gpunn.seed() replaces it
    return numpy.random.default_rng(_checks.integer("seed", seed))


def _sizes(samples: int, classes: int) -> tuple[int, int]:
    samples = _checks.integer("samples", samples, minimum=1)
    classes = _checks.integer("classes", classes, minimum=1)
    if classes > 256:
        raise InvalidArgumentError(f"classes must be <= 256 (labels are uint8); received "
                                   f"classes={classes}.")
    return samples, classes


# ---- the book's synthetic data (nnfs.datasets), rows grouped by class -------------------------

def spiral_data(samples: int, classes: int, *, seed: int | None = None) -> Pair:
    """``classes`` spiral arms of ``samples`` points each. Example: ``X, y = spiral_data(100, 3)``
    gives X of shape (300, 2) float32 and y of shape (300,) uint8."""
    samples, classes = _sizes(samples, classes)
    rng = _rng(seed)
    X = numpy.zeros((samples * classes, 2), dtype=numpy.float32)
    y = numpy.zeros(samples * classes, dtype=numpy.uint8)
    for class_number in range(classes):
        ix = slice(samples * class_number, samples * (class_number + 1))
        r = numpy.linspace(0.0, 1, samples)
        t = (numpy.linspace(class_number * 4, (class_number + 1) * 4, samples)
             + rng.standard_normal(samples) * 0.2)
        X[ix] = numpy.c_[r * numpy.sin(t * 2.5), r * numpy.cos(t * 2.5)]
        y[ix] = class_number
    return X, y


def vertical_data(samples: int, classes: int, *, seed: int | None = None) -> Pair:
    """``classes`` vertical blobs of ``samples`` points each. Example: ``vertical_data(100, 3)``."""
    samples, classes = _sizes(samples, classes)
    rng = _rng(seed)
    X = numpy.zeros((samples * classes, 2), dtype=numpy.float32)
    y = numpy.zeros(samples * classes, dtype=numpy.uint8)
    for class_number in range(classes):
        ix = slice(samples * class_number, samples * (class_number + 1))
        X[ix] = numpy.c_[rng.standard_normal(samples) * 0.1 + class_number / 3,
                         rng.standard_normal(samples) * 0.1 + 0.5]
        y[ix] = class_number
    return X, y


def sine_data(samples: int = 1000) -> Pair:
    """One period of a sine for regression: X and y of shape (samples, 1). Example:
    ``X, y = sine_data()``."""
    samples = _checks.integer("samples", samples, minimum=1)
    X = numpy.arange(samples).reshape(-1, 1) / samples
    y = numpy.sin(2 * numpy.pi * X)
    return X.astype(numpy.float32), y.astype(numpy.float32)


# ---- Fashion-MNIST and MNIST from IDX files ---------------------------------------------------

def fashion_mnist(path: PathLike | None = None, *, download: bool = True) -> Split:
    """(X_train, y_train, X_test, y_test): X (n, 784) float32 in [-1, 1], y uint8. Example:
    ``X, y, X_test, y_test = fashion_mnist()``."""
    return _idx_dataset("fashion-mnist", path, download)


def mnist(path: PathLike | None = None, *, download: bool = True) -> Split:
    """(X_train, y_train, X_test, y_test) of MNIST digits, as ``fashion_mnist`` returns them."""
    return _idx_dataset("mnist", path, download)


def data_dir(name: str, path: PathLike | None = None) -> Path:
    """Where dataset ``name`` lives: ``path``, else $GPUNN_DATA/name, else ~/.cache/gpunn/name."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(DATA_ENV_VAR):
        return Path(os.environ[DATA_ENV_VAR]).expanduser() / name
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "gpunn" / name


def _idx_dataset(name: str, path: PathLike | None, download: bool) -> Split:
    title, mirror = MIRRORS[name]
    directory = data_dir(name, path)
    found = {stem: _find(directory, stem) for stem in IDX_FILES}
    missing = [stem + ".gz" for stem, file in found.items() if file is None]
    how = (f"put {', '.join(missing)} (gzipped or not) from {mirror} in {directory}, or point "
           f"gpunn at the folder that has them: gpunn train --dataset {name} --data-dir DIR, "
           f"gpunn.datasets.{name.replace('-', '_')}(path=DIR), or {DATA_ENV_VAR}=DIR with a "
           f"{name} folder in it.")
    if missing and not download:
        raise GpunnError(f"{title} is missing from {directory} and download=False: {how}")
    for filename in missing:
        try:
            found[filename[:-3]] = _download(directory, mirror + filename, MD5[name][filename])
        # URLError, HTTPError, timeouts, refused connections and a connection cut mid-file
        except _NetworkError as error:
            raise GpunnError(f"Downloading {title} failed ({mirror + filename}: {error}). "
                             f"To use it offline, {how}") from error
    split, files = [], list(found.values())  # train images, train labels, test images, labels
    for images, labels in (files[0:2], files[2:4]):
        X, y = _read_idx(images, "images"), _read_idx(labels, "labels")
        if len(X) != len(y):
            raise FileFormatError(f"{images} holds {len(X)} images but {labels} holds {len(y)} "
                                  f"labels; expected one label per image. Replace both files "
                                  f"with a matching pair from {mirror}.")
        split += [(X.astype(numpy.float32) - 127.5) / 127.5, y]
    return tuple(split)


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path, kind: str) -> numpy.ndarray:
    """The uint8 array in an IDX file: images as (n, rows * cols), labels as (n,)."""
    magic, ndim = (0x00000803, 3) if kind == "images" else (0x00000801, 1)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as error:  # a bad or truncated gzip stream
        raise FileFormatError(f"{path} could not be read ({error}); delete it and fetch it "
                              f"again.") from error
    header = 4 + 4 * ndim
    if len(data) < header:
        raise FileFormatError(f"{path} is truncated: an IDX {kind} file starts with a "
                              f"{header}-byte header, received {len(data)} bytes; delete it and "
                              f"fetch it again.")
    (found,) = struct.unpack_from(">I", data)
    if found != magic:
        raise FileFormatError(f"{path} is not an IDX {kind} file: expected magic number "
                              f"0x{magic:08X}, found 0x{found:08X}. Check the file name.")
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    expected = header + math.prod(dims)
    if len(data) != expected:
        problem = "is truncated" if len(data) < expected else "has trailing bytes"
        raise FileFormatError(f"{path} {problem}: its header promises shape {dims}, "
                              f"{expected} bytes, received {len(data)}; delete it and fetch it "
                              f"again.")
    array = numpy.frombuffer(data, dtype=numpy.uint8, offset=header)
    return array.reshape(dims[0], -1) if kind == "images" else array


def _download(directory: Path, url: str, md5: str) -> Path:
    """Fetch ``url`` into ``directory``, checked against ``md5``, written as gpunn writes every
    file (gpunn.files: atomically, with the user's umask; a failed or corrupt download leaves
    nothing behind). Network failures come out as _NetworkError, the disk's as FileWriteError."""
    from tqdm import tqdm  # needed only here, so the rest of gpunn imports without it

    directory.mkdir(parents=True, exist_ok=True)
    target = directory / url.rsplit("/", 1)[1]
    digest = hashlib.md5(usedforsecurity=False)

    def content(out: Any) -> None:
        try:
            response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
        except (OSError, http.client.HTTPException) as error:
            raise _NetworkError(error) from error
        with response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
                while True:
                    try:
                        chunk = response.read(1 << 16)
                    except (OSError, http.client.HTTPException) as error:
                        raise _NetworkError(error) from error
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise FileFormatError(f"{url} arrived with MD5 {digest.hexdigest()}, expected {md5}; "
                                  f"the download is corrupt or the mirror changed. Try again, or "
                                  f"fetch the file by hand into {directory}.")

    # force: a download replaces only a corrupt copy of the same file, which is why it is fetched
    return files.write(target, "download", lambda path: None, content, force=True)


class _NetworkError(Exception):
    """A download's network failure (URLError, a timeout, a connection cut mid-file), kept
    apart from the disk's OSErrors, which gpunn.files turns into its own messages."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


# ---- your own data ---------------------------------------------------------------------------

def load_npz(path: PathLike) -> Pair:
    """(X, y) from an .npz holding arrays ``X`` (samples, features) and ``y``. Example:
    ``numpy.savez("data.npz", X=X, y=y); X, y = load_npz("data.npz")``."""
    path = existing(path)
    arrays = io.read_arrays(path)  # no pickle: object arrays are refused, as they could run code
    missing = [key for key in ("X", "y") if key not in arrays]
    if missing:
        raise FileFormatError(f"{path} has no array {' or '.join(missing)}: expected keys "
                              f"'X' and 'y', found {sorted(arrays)}. Save it with "
                              f"numpy.savez(path, X=..., y=...).")
    X, y = arrays["X"], arrays["y"]
    return _checked(path, X, y)


def load_csv(path: PathLike, *, label_column: int | str = -1,
             skip_header: bool | None = None) -> Pair:
    """(X, y) from a CSV, one sample a line, the label in ``label_column`` (a position, negative
    from the end, or a header name); a first line that is not data is taken for a header unless
    ``skip_header`` says otherwise; commas, semicolons or tabs separate the cells, quoted cells
    are unquoted, and the index pandas writes (an unnamed first column) is dropped. y holds
    the labels as written: numbers, or text (gpunn.tables reads the rest). Example:
    ``X, y = load_csv("train.csv", label_column=0)``."""
    path = existing(path)
    if not isinstance(label_column, str):
        label_column = _checks.integer("label_column", label_column, minimum=-(2**31))
    table = tables.read_csv(path, label=label_column, label_option="label_column",
                            header=None if skip_header is None else bool(skip_header))
    _warn_about_counting_column(path, table)
    return _checked(path, table.X, _numbers_if_whole(table.y))


def read_table(path: PathLike, **columns: Any) -> tables.Table:
    """A user's data file as a gpunn.tables.Table: an .npz's arrays X and y, or a CSV read by
    ``tables.read_csv`` with ``columns`` (label, features, drop, keep_first_column)."""
    path = existing(path)
    if path.suffix.lower() == ".csv":
        table = tables.read_csv(path, **columns)
        _warn_about_counting_column(path, table)
        _checked(path, table.X, numpy.zeros(len(table.X)))
        return table
    given = [f"--{name.replace('_', '-')}" for name, value in columns.items() if value]
    if given:
        raise InvalidArgumentError(f"{' and '.join(given)} choose{'s' if len(given) == 1 else ''}"
                                   f" columns of a CSV file; {path} is an .npz, whose arrays X "
                                   f"and y are the features and the targets.")
    X, y = load_npz(path)
    return tables.Table(X, y, None, None)


def _numbers_if_whole(y: numpy.ndarray) -> numpy.ndarray:
    """Whole-number labels as int64 (as load_csv always gave them), other numbers as float32."""
    if y.dtype.kind not in "f":
        return y
    return y.astype(numpy.int64) if numpy.all(numpy.mod(y, 1) == 0) else y.astype(numpy.float32)


def _warn_about_counting_column(path: Path, table: tables.Table) -> None:
    """Warn about a headerless first feature that counts the rows, like the index pandas writes
    (DataFrame.to_csv(header=False)): it would be trained on as a feature. A file with a header
    says by its first cell whether that is pandas' index (gpunn.tables drops it)."""
    X = table.X
    if table.feature_names is not None or X.shape[1] < 2 or len(X) < 3:
        return
    first = X[:, 0]
    if numpy.array_equal(first, numpy.arange(len(first))) or \
            numpy.array_equal(first, numpy.arange(1, len(first) + 1)):
        warnings.warn(f"{path}: the first column counts the rows ({first[0]:g}, {first[1]:g}, "
                      f"...) like the index pandas writes, and is used as a feature; write the "
                      f"file with DataFrame.to_csv(..., index=False) or drop that column",
                      UserWarning, stacklevel=3)


def load_inputs(path: PathLike) -> numpy.ndarray:
    """X to predict from: an .npz's array ``X`` (an array ``y`` beside it is ignored), or every
    column of a numeric CSV but pandas' index. Example: ``X = load_inputs("points.csv")``."""
    path = existing(path)
    if path.suffix.lower() == ".csv":
        return tables.read_csv(path, targets=False).X
    arrays = io.read_arrays(path)
    if "X" not in arrays:
        raise FileFormatError(f"{path} has no array X (found {sorted(arrays)}); save one with "
                              f"numpy.savez(path, X=X).")
    X = arrays["X"]
    if X.ndim != 2 or X.dtype.kind not in "biuf":
        raise FileFormatError(f"{path}: X must be a 2-D numeric array (samples, features); "
                              f"received shape {X.shape}, dtype {X.dtype}.")
    return X.astype(numpy.float32)


def existing(path: PathLike) -> Path:
    """``path`` as a Path to a file that is there, or an error saying where it looked."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidTypeError(f"path must be a string or a path; received {path!r}.")
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidArgumentError(f"No file at {path} (absolute: {path.resolve()}); check the "
                                   f"path and the working directory.")
    return path


def _checked(path: Path, X: numpy.ndarray, y: numpy.ndarray) -> Pair:
    if X.ndim != 2:
        raise FileFormatError(f"{path}: X must be 2-D (samples, features); received shape "
                              f"{X.shape}. Flatten it first, e.g. X.reshape(len(X), -1).")
    if y.ndim not in (1, 2) or len(y) != len(X):
        raise FileFormatError(f"{path}: y must hold one label (or target row) per row of X, "
                              f"{len(X)} in all; received y of shape {y.shape}.")
    for name, array in (("X", X), ("y", y)):
        if name == "y" and array.dtype.kind in "US":
            continue  # text labels (a CSV's): gpunn.tables encodes them
        if array.dtype.kind not in "biuf":
            raise FileFormatError(f"{path}: {name} must be numeric; received dtype "
                                  f"{array.dtype}.")
        bad = numpy.argwhere(~numpy.isfinite(array))
        if len(bad):
            where = ", ".join(f"{axis} {index}" for axis, index in zip(("row", "column"), bad[0]))
            raise FileFormatError(f"{path}: {name} {where} (counting from 0) is "
                                  f"{array[tuple(bad[0])]} ({len(bad)} such values in all); "
                                  f"expected finite numbers. Remove or impute them first.")
    return X.astype(numpy.float32), y


# ---- one entry point for the command line ----------------------------------------------------

def load(name_or_path: PathLike, *, seed: int | None = None,
         data_dir: PathLike | None = None, validation_split: float | None = None) -> Split:
    """(X, y, X_val, y_val) for a name in NAMES or a .npz/.csv path (whose last
    ``validation_split``, default 20%, after a seeded shuffle is held out); ``data_dir``: where
    (fashion-)mnist's files are. Example: ``X, y, X_val, y_val = load("spiral")``."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InvalidTypeError(f"dataset must be a name or a path; received {name_or_path!r}.")
    text = os.fspath(name_or_path)
    key = text.strip().lower().replace("_", "-")
    if validation_split is not None and key in NAMES:
        raise InvalidArgumentError(
            f"{key} comes with its own validation set (a separate draw, or the test set), so "
            f"a validation split applies to .npz and .csv files only; received "
            f"validation_split={validation_split}.")
    # The validation set is a fresh draw: the next seed, or the generator's next numbers.
    val_seed = None if seed is None else _checks.integer("seed", seed) + 1
    if key == "spiral":
        return (*spiral_data(100, 3, seed=seed), *spiral_data(100, 3, seed=val_seed))
    if key == "vertical":
        return (*vertical_data(100, 3, seed=seed), *vertical_data(100, 3, seed=val_seed))
    if key == "sine":
        return (*sine_data(), *sine_data())  # deterministic, as in the book's regression chapter
    if key in ("fashion-mnist", "mnist"):
        return (fashion_mnist if key == "fashion-mnist" else mnist)(data_dir)
    suffix = Path(text).suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise InvalidArgumentError(f"Unknown dataset {text!r}: expected one of "
                                   f"{', '.join(NAMES)}, or a path ending in .npz or .csv.")
    X, y = load_npz(text) if suffix == ".npz" else load_csv(text)
    return split(X, y, seed, text, validation_split=validation_split)


def split(X: numpy.ndarray, y: numpy.ndarray, seed: int | None, name: Any = "the data", *,
          validation_split: float | None = None) -> Split:
    """(X, y, X_val, y_val): the last ``validation_split`` (default 20%) of a seeded shuffle
    held out, as ``gpunn train`` splits a file."""
    if len(X) < 2:
        raise InvalidArgumentError(f"{name} has {len(X)} sample; at least 2 are needed to hold "
                                   f"out a validation set.")
    order = _rng(seed).permutation(len(X))
    n_val = max(1, len(X) // 5 if validation_split is None else int(len(X) * validation_split))
    if n_val >= len(X):
        raise InvalidArgumentError(f"validation_split={validation_split} of {len(X)} samples "
                                   f"leaves none to train on; hold out less.")
    train, val = order[:-n_val], order[-n_val:]
    return X[train], y[train], X[val], y[val]
