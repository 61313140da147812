"""Saving and loading models in a safe format: an .npz archive (plain arrays, read with
``allow_pickle=False``) holding a JSON description of the model. Nothing in a file is executed:
class names are looked up in fixed tables below. Files are written through gpunn.files:
atomically, with the user's umask, replacing only a gpunn file of the same kind unless forced.
The header also says what kind of file it is (``kind_of``): a model, a checkpoint, parameters or
predictions."""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy

from gpunn import accuracy, activations, files, layers, losses, optimizers, precision
from gpunn.errors import FileFormatError, GpunnError

log = logging.getLogger("gpunn")

FORMAT = "gpunn"
VERSION = 1
HEADER = "__gpunn__"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive's first entry, or an empty zip
NPY_MAGIC = b"\x93NUMPY"
PICKLE_MAGIC = b"\x80"  # the PROTO opcode that starts every pickle of protocol 2 or later
LAYERS = {cls.__name__: cls for cls in (
    layers.Dense, layers.Dropout, layers.Standardize, activations.ReLU, activations.LeakyReLU,
    activations.Softmax, activations.Sigmoid, activations.Tanh, activations.Linear)}
LOSSES = {cls.__name__: cls for cls in (
    losses.CategoricalCrossentropy, losses.BinaryCrossentropy, losses.MeanSquaredError,
    losses.MeanAbsoluteError)}
ACCURACIES = {cls.__name__: cls for cls in (accuracy.CategoricalAccuracy,
                                            accuracy.RegressionAccuracy)}


# ---- writing ------------------------------------------------------------------------------------

def write(path: str | os.PathLike, header: dict[str, Any], arrays: dict[str, Any], *,
          force: bool = False) -> Path:
    """Write ``arrays`` and the JSON ``header`` (whose "kind" says what the file is) to ``path``
    atomically; an existing file is replaced only when it is a gpunn file of the same kind, or
    with ``force`` (see gpunn.files)."""
    header = {"format": FORMAT, "version": VERSION, **header}
    encoded = numpy.frombuffer(json.dumps(header).encode(), dtype=numpy.uint8)
    return files.write(path, header["kind"], kind_of,
                       lambda file: numpy.savez(file, **{HEADER: encoded}, **arrays), force=force)


def kind_of(path: str | os.PathLike) -> str | None:
    """The kind of gpunn file at ``path`` ("model", "checkpoint", "parameters", "predictions"),
    or None for anything gpunn did not write. Reads the header entry alone, so asking about a
    large data file costs no more than about a small one."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{HEADER}.npy") as member:
            encoded = numpy.lib.format.read_array(member, allow_pickle=False)
        header = json.loads(encoded.tobytes().decode())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError,
            RuntimeError, MemoryError):
        return None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        return None
    kind = header.get("kind")
    return kind if isinstance(kind, str) else None


def model_header(model: Any) -> dict[str, Any]:
    """The JSON description of a model: architecture, training settings, optimizer counters, and
    what it was trained on (``model.trained_on``)."""
    header: dict[str, Any] = {
        "kind": "model", "dtype": model.dtype, "precision": model.precision.state(),
        "layers": [{"type": _type_name(layer, LAYERS), "config": layer.config()}
                   for layer in model.layers]}
    if model.loss is not None:
        header["loss"] = {"type": _type_name(model.loss, LOSSES)}
    if model.accuracy is not None:
        header["accuracy"] = {"type": _type_name(model.accuracy, ACCURACIES),
                              "binary": getattr(model.accuracy, "binary", False),
                              "precision": getattr(model.accuracy, "precision", None)}
    if getattr(model, "trained_on", None) is not None:
        header["trained_on"] = model.trained_on
    # What the model knows of its data (gpunn.tables): absent from files written before #24.
    for name in ("feature_names", "target_names", "classes"):
        if getattr(model, name, None) is not None:
            header[name] = list(model.__dict__[name])
    if getattr(model, "target_scaling", None) is not None:
        header["target_scaling"] = model.target_scaling.config()
    if model.optimizer is not None:
        optimizer = model.optimizer
        header["optimizer"] = {"type": _type_name(optimizer, optimizers.OPTIMIZERS),
                               "config": optimizer.config(),
                               "iterations": optimizer.iterations,
                               "current_learning_rate": optimizer.current_learning_rate}
    return header


def _type_name(part: Any, table: dict[str, Any]) -> str:
    """The name of the first class of ``part``'s ancestry that ``table`` knows, so that a
    subclass (gpunn.book's Layer_Dense is a Dense) is saved as the gpunn class it extends."""
    return next((cls.__name__ for cls in type(part).__mro__ if cls.__name__ in table),
                type(part).__name__)


def model_arrays(model: Any) -> dict[str, numpy.ndarray]:
    """The flat parameter array and the optimizer's state arrays, on the host, packed (without
    the alignment gaps of the device layout: ``Model.packed``)."""
    arrays = {"parameters": model.packed(model.backend.to_numpy(model.parameters))}
    if model.optimizer is not None:
        for name, array in model.optimizer.saved_state().items():
            arrays[f"optimizer.{name}"] = model.packed(model.backend.to_numpy(array))
    return arrays


# ---- reading ------------------------------------------------------------------------------------

def read_arrays(path: str | os.PathLike, *, what: str = "a readable .npz file",
                remedy: str = "write it with numpy.savez(path, name=array, ...)"
                ) -> dict[str, numpy.ndarray]:
    """Every array of an .npz archive, read without pickle; FileFormatError for anything that
    is not a readable archive (junk, truncated, corrupted, pickled, a forged shape), saying
    ``path`` is not ``what`` and why, then ``remedy``. No message suggests loading unsafely."""
    path = Path(path)
    if not path.is_file():
        raise GpunnError(f"No such file: {path}")
    try:
        with open(path, "rb") as file:
            start = file.read(len(NPY_MAGIC))
            # Checked here, not left to numpy.load: for anything but a zip or .npy, NumPy
            # assumes a pickle and says how to load it unsafely.
            if not start.startswith(ZIP_MAGIC):
                raise FileFormatError(f"{path} is not {what}: {_not_a_zip(start)}; {remedy}.")
            file.seek(0)
            with numpy.load(file, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
    except FileFormatError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError,
            KeyError, RuntimeError, MemoryError) as error:  # MemoryError: a forged array shape
        raise FileFormatError(f"{path} is not {what}: {_damaged(error)}; {remedy}.") from error
    for name, value in arrays.items():
        if not isinstance(value, numpy.ndarray):  # a member not stored as .npy comes as bytes
            raise FileFormatError(f"{path} is not {what}: its entry {name!r} is not a NumPy "
                                  f"array; {remedy}.")
    return arrays


def _not_a_zip(start: bytes) -> str:
    """Why a file that does not begin like a zip archive is refused."""
    if not start:
        return "it is empty (0 bytes), not an .npz (zip) archive"
    if start.startswith(NPY_MAGIC):
        return "it holds a single array (.npy), not an .npz (zip) archive"
    if start.startswith(PICKLE_MAGIC):
        return ("it looks like a Python pickle, not an .npz (zip) archive; gpunn never loads "
                "pickles (loading one can run any code)")
    return f"it is not an .npz (zip) archive (it begins with {start!r})"


def _damaged(error: BaseException) -> str:
    """Why a zip archive could not be read, without NumPy's advice to load it unsafely."""
    text = " ".join(str(error).split())
    if "Object arrays cannot be loaded" in text:
        return ("it holds a pickled object array, which gpunn never loads (loading one can run "
                "any code); save numeric arrays")
    if "max_header_size" in text or "allow_pickle" in text:
        return "an array header is damaged or larger than NumPy reads safely"
    if isinstance(error, MemoryError):
        return "an array claims a shape too large for memory (damaged or forged)"
    return f"it is a damaged or truncated .npz (zip) archive ({text or type(error).__name__})"


def read(path: str | os.PathLike, *kinds: str) -> tuple[dict[str, Any], dict[str, numpy.ndarray]]:
    """The header and arrays of a gpunn file of one of ``kinds``; FileFormatError for anything
    else."""
    arrays = read_arrays(path, what="a gpunn file", remedy=f"give a {' or '.join(kinds)} file "
                         f"written by gpunn (Model.save, checkpoint.save or gpunn train)")
    if HEADER not in arrays:
        raise FileFormatError(f"{path} is not a gpunn file (it has no {HEADER} entry).")
    try:
        header = json.loads(arrays.pop(HEADER).tobytes().decode())
    except (ValueError, UnicodeDecodeError) as error:
        raise FileFormatError(f"{path} has a damaged gpunn header: {error}") from error
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FileFormatError(f"{path} is not a gpunn file (foreign header).")
    if header.get("version") != VERSION:
        raise FileFormatError(f"{path} has gpunn file version {header.get('version')!r}; this "
                              f"gpunn reads version {VERSION}. Save it again with a matching "
                              f"gpunn.")
    if header.get("kind") not in kinds:
        raise FileFormatError(f"{path} holds gpunn {header.get('kind')!r} data, not "
                              f"{' or '.join(kinds)} data.")
    return header, arrays


def build_model(header: dict[str, Any], model_class: Any, device: Any,
                precision_: Any = None) -> Any:
    """A finalized model rebuilt from a header, with freshly initialised parameters; under
    ``precision_``, else the precision policy it was saved with where the device has it, else
    float32 (the weights are float32 whatever the policy: gpunn.precision)."""
    try:
        model = model_class(device=device, dtype=header["dtype"])
        saved = header.get("precision") or {"name": "float32"}  # absent before issue 19
        model.set(precision=saved if precision_ is None else precision_)
        reason = precision.why_not(model.precision, model.backend, model.dtype)
        if reason is not None and precision_ is None:
            log.warning("gpunn: the model was saved under precision=%r, which %s cannot run "
                        "(%s); it loads as float32", saved["name"], model.backend.device, reason)
            model.set(precision="float32")
        for spec in header["layers"]:
            model.add(_lookup(LAYERS, spec["type"], "layer")(**spec["config"], device=device))
        loss = optimizer = accuracy_ = None
        if "loss" in header:
            loss = _lookup(LOSSES, header["loss"]["type"], "loss")()
        if "accuracy" in header:
            spec = header["accuracy"]
            cls = _lookup(ACCURACIES, spec["type"], "accuracy")
            accuracy_ = (cls(binary=bool(spec["binary"]))
                         if cls is accuracy.CategoricalAccuracy else cls())
            if spec.get("precision") is not None:
                accuracy_.precision = float(spec["precision"])
        if "optimizer" in header:
            spec = header["optimizer"]
            optimizer = _lookup(optimizers.OPTIMIZERS, spec["type"], "optimizer")(**spec["config"])
            optimizer.iterations = int(spec["iterations"])
            optimizer.current_learning_rate = float(spec["current_learning_rate"])
        model.set(loss=loss, optimizer=optimizer, accuracy=accuracy_)
        _restore_data_description(model, header)
        model.finalize()
        trained_on = header.get("trained_on")  # absent from files written before issue 20
        model.trained_on = trained_on if isinstance(trained_on, dict) else None
    except FileFormatError:
        raise
    except GpunnError as error:
        if type(error).__name__ == "DeviceUnavailableError":
            raise
        raise FileFormatError(f"the model described in the file is invalid: {error}") from error
    except (KeyError, TypeError, ValueError) as error:
        raise FileFormatError(f"the model description in the file is malformed: {error!r}") \
            from error
    return model


def _restore_data_description(model: Any, header: dict[str, Any]) -> None:
    """The names and classes a model keeps of its data, checked as JSON lists."""
    for name in ("feature_names", "target_names", "classes"):
        value = header.get(name)
        if value is not None and not (isinstance(value, list) and all(
                isinstance(item, (str, int, float)) and not isinstance(item, bool)
                for item in value)):
            raise FileFormatError(f"the file's {name} must be a list of names or numbers; "
                                  f"found {value!r}.")
        setattr(model, name, value)
    if header.get("target_scaling") is not None:
        model.set(target_scaling=layers.Standardize(**header["target_scaling"],
                                                    device=model.backend, dtype=model.dtype))


def restore_arrays(model: Any, arrays: dict[str, numpy.ndarray], path: Any) -> None:
    """Copy saved parameters and optimizer state into ``model``, after checking every shape."""
    parameters = arrays.get("parameters")
    if parameters is None or parameters.shape != (model.parameter_count,):
        raise FileFormatError(f"{path}: the parameters do not fit the architecture (expected "
                              f"{model.parameter_count} values, found "
                              f"{None if parameters is None else parameters.size}).")
    state = {}
    if model.optimizer is not None:
        for name in model.optimizer.STATE:
            array = arrays.get(f"optimizer.{name}")
            if array is None:
                continue  # saved before the first step: no state yet
            if array.shape != parameters.shape:
                raise FileFormatError(f"{path}: optimizer state {name!r} has shape "
                                      f"{array.shape}; expected {parameters.shape}.")
            state[name] = model.backend.asarray(model.unpacked(array), dtype=model.dtype)
    model.parameters[...] = model.backend.asarray(model.unpacked(parameters), dtype=model.dtype)
    if model.optimizer is not None:
        model.optimizer.state.update(state)


def _lookup(table: dict[str, Any], name: Any, what: str) -> Any:
    if name not in table:
        raise FileFormatError(f"unknown {what} type {name!r} in the file; gpunn knows "
                              f"{', '.join(sorted(table))}.")
    return table[name]
