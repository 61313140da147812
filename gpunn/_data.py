"""Checking and moving user data (X, y) onto the model's device, once per call."""

from __future__ import annotations

import math
from typing import Any

import numpy

from gpunn import _checks, tables
from gpunn.backend import device
from gpunn.errors import InvalidArgumentError, InvalidTypeError
from gpunn.layers import Dense
from gpunn.losses import BinaryCrossentropy, CategoricalCrossentropy


def pair(data: Any) -> tuple[Any, Any]:
    """``validation_data`` as (X, y)."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise InvalidArgumentError("validation_data must be a pair (X_val, y_val); received "
                                   f"{type(data).__name__}.")
    return data[0], data[1]


def steps(samples: int, batch_size: int | None) -> tuple[int, int]:
    """(steps per epoch, batch size); ``None`` means the whole data set in one batch."""
    if batch_size is None:
        return 1, max(samples, 1)
    batch_size = _checks.integer("batch_size", batch_size, minimum=1)
    return -(-samples // batch_size), batch_size


def prepare(model: Any, X: Any, y: Any, x_name: str, y_name: str | None, *,
            training: bool = False) -> tuple[Any, Any]:
    """(X, y) checked against the model and moved to its device (or kept in host memory when the
    device should not hold them; training then moves one batch at a time): X as (samples,
    features) in the model's dtype, a DataFrame's columns taken by name when the model knows
    its features' names (``training`` remembers them); y as class indices or one-hot for
    categorical losses (the user's labels through ``model.classes``), else as floats shaped like
    the output, standardized when the model has a target scaling."""
    X = _named_columns(model, X, x_name, training)
    X = _array(X, x_name, model.backend, dtype=model.dtype)
    backend = model.backend if model.backend.holds(X.size * 8) else device("cpu")
    if X.ndim != 2:
        raise InvalidArgumentError(f"{x_name} must be 2-D (samples, features); received an "
                                   f"array of shape {tuple(X.shape)}.")
    if X.shape[0] == 0:
        raise InvalidArgumentError(f"{x_name} is empty (0 samples).")
    first = model.input_layer
    if first is not None and X.shape[1] != first.n_inputs:
        raise InvalidArgumentError(f"{x_name} has {X.shape[1]} features per sample but the "
                                   f"first layer, {first!r}, expects {first.n_inputs}.")
    X = backend.asarray(X, dtype=model.dtype)
    if not backend.all_finite(X):
        raise InvalidArgumentError(f"{x_name} contains NaN or inf; clean or impute the data "
                                   f"before training.")
    if y_name is None:
        return X, None
    width = outputs(model)
    y = _labels(model, y, y_name, training, width)
    # Labels go where X went (the model's device, or the host for data kept there), so the
    # two can be indexed together: CuPy refuses a NumPy array indexed by a device array.
    y = backend.asarray(_array(y, y_name, model.backend))
    if y.ndim == 0 or len(y) != len(X):
        raise InvalidArgumentError(f"{y_name} has {0 if y.ndim == 0 else len(y)} labels but "
                                   f"{x_name} has {len(X)} samples.")
    if isinstance(model.loss, CategoricalCrossentropy):
        return X, _class_labels(backend, y, y_name, width, model.dtype)
    if y.ndim == 1 and width == 1:
        y = y.reshape(-1, 1)
    if width is not None and (y.ndim != 2 or y.shape[1] != width):
        raise InvalidArgumentError(f"{y_name} must have shape ({len(X)}, {width}) to match "
                                   f"the model's {width} outputs; received {tuple(y.shape)}.")
    if isinstance(model.loss, BinaryCrossentropy):
        _binary_targets(y, y_name)
    y = y.astype(model.dtype, copy=False)
    if not bool(backend.xp.isfinite(y).all()):
        raise InvalidArgumentError(f"{y_name} contains NaN or inf.")
    if model.target_scaling is not None:
        scaling = model.target_scaling
        y = (y - backend.asarray(scaling.mean_values, dtype=model.dtype)) / \
            backend.asarray(scaling.std_values, dtype=model.dtype)
    return X, y


def _named_columns(model: Any, X: Any, name: str, training: bool) -> Any:
    """A DataFrame's columns in the order of ``model.feature_names`` (taken by name, in any
    order; a missing one refused); in training, a model without names takes the frame's."""
    if not type(X).__module__.startswith("pandas") or not hasattr(X, "columns"):
        return X
    columns = [str(column) for column in X.columns]
    if model.feature_names is None:
        if training and all(isinstance(column, str) for column in X.columns):
            model.feature_names = columns
        return X
    if columns == model.feature_names:
        return X
    missing = [column for column in model.feature_names if column not in columns]
    if missing:
        raise InvalidArgumentError(f"{name} lacks the column{'s' if len(missing) > 1 else ''} "
                                   f"{', '.join(map(repr, missing))}, which the model was "
                                   f"trained on (model.feature_names: "
                                   f"{', '.join(map(repr, model.feature_names))}).")
    return X[model.feature_names]


def _labels(model: Any, y: Any, name: str, training: bool, width: int | None) -> Any:
    """A classifier's labels as class indices: text labels, or any labels of a model with
    ``classes``, through the classes (found from the labels in training when the model has
    none: the sorted distinct labels, as scikit-learn's LabelEncoder)."""
    classifies = isinstance(model.loss, CategoricalCrossentropy) or (
        isinstance(model.loss, BinaryCrossentropy) and width == 1)
    if not classifies:
        return y
    if type(y).__module__.startswith("pandas") and str(getattr(y, "dtype", "")) in (
            "object", "str", "string", "category"):
        y = y.astype(str).to_numpy()  # text labels; numbers go through _array's checks
    y = numpy.asarray(y) if isinstance(y, (list, tuple)) else y
    text = isinstance(getattr(y, "dtype", None), numpy.dtype) and y.dtype.kind in "USO"
    if model.classes is None and text:
        if not training:
            raise InvalidArgumentError(f"{name} holds text labels, but the model has no "
                                       f"classes to read them by: train it on them first, or "
                                       f"set model.classes.")
        found = sorted(set(numpy.asarray(y).reshape(-1).astype(str).tolist()))
        expected = 2 if width == 1 else width
        if width is not None and len(found) != expected:
            raise InvalidArgumentError(f"{name} has {len(found)} distinct labels "
                                       f"({', '.join(map(repr, found[:10]))}) but the model has "
                                       f"{width} output{'s' if width > 1 else ''}; give it "
                                       f"{len(found) if len(found) > 2 else '1 sigmoid or 2'} "
                                       f"outputs.")
        model.classes = found
    if model.classes is None or not isinstance(y, numpy.ndarray) or (
            y.ndim == 2 and y.shape[1] > 1):
        return y  # class indices, one-hot rows, or data _array checks and converts first
    return tables.encode(y.astype(str) if text else y, model.classes, source=name)


def _array(data: Any, name: str, model_backend: Any, dtype: str | None = None) -> Any:
    if isinstance(data, (list, tuple)):
        data = numpy.asarray(data)
    if type(data).__module__.startswith("pandas"):  # pandas itself is imported only then
        data = _pandas(data, name, dtype)
    data = _interchange(data, name, model_backend)
    if not hasattr(data, "dtype") or not hasattr(data, "shape"):
        raise InvalidTypeError(f"{name} must be an array (NumPy, CuPy, a PyTorch tensor or any "
                               f"array with DLPack, a pandas DataFrame or Series, or a list of "
                               f"numbers); received {type(data).__name__}.")
    if data.dtype.kind not in "biuf":
        raise InvalidTypeError(f"{name} must hold numbers; received dtype {data.dtype}.")
    return data


def _pandas(data: Any, name: str, dtype: str | None) -> Any:
    """A pandas DataFrame or Series (or Index) as a NumPy array: a view, without a copy, when
    all its columns share one NumPy number dtype (``to_numpy`` of a frame held in one block, as
    most are); otherwise one copy, straight into ``dtype`` (the model's, for X) where it is
    given, else into the columns' common dtype. Nullable columns (Int64, Float64, boolean,
    pyarrow numbers) become their NumPy dtype, and are refused while they hold missing values;
    text, categories and dates are refused with how to encode them."""
    import pandas

    frame = data.to_frame() if isinstance(data, (pandas.Series, pandas.Index)) else data
    if not isinstance(frame, pandas.DataFrame):
        return data  # a pandas array: numpy.asarray (through the checks below) says the rest
    dtypes, series = list(frame.dtypes), frame is not data
    wrong = [f"{column!r} ({kind})" for column, kind in zip(frame.columns, dtypes)
             if kind.kind not in "biuf"]
    if wrong and series:
        codes = f"{name}.cat.codes" if dtypes[0] == "category" else \
            f"{name}.astype('category').cat.codes"
        raise InvalidTypeError(f"{name} is a pandas Series of {dtypes[0]} values, not numbers; "
                               f"encode them as numbers first, e.g. {codes} for class labels.")
    if wrong:
        raise InvalidTypeError(
            f"{name} has non-numeric columns {_listed(wrong)}; encode them as numbers first, "
            f"e.g. pandas.get_dummies({name}, dtype=float) for categories and text, or drop "
            f"them.")
    nullable = [index for index, kind in enumerate(dtypes) if not isinstance(kind, numpy.dtype)]
    if nullable:
        missing = frame.iloc[:, nullable].isna().any().to_numpy()
        gaps = [f"{frame.columns[index]!r} ({dtypes[index]})"
                for index, empty in zip(nullable, missing) if empty]
        if gaps:
            where = f"its {dtypes[0]} values" if series else f"columns {_listed(gaps)}"
            raise InvalidArgumentError(
                f"{name} has missing values (NA) in {where}; fill them first (e.g. "
                f"{name}.fillna({name}.mean())) or drop those rows, from X and y alike.")
    kinds = {getattr(kind, "numpy_dtype", None) or numpy.dtype("float64") for kind in dtypes}
    if not nullable and len(kinds) <= 1:
        array = frame.to_numpy()  # a view of the frame's one block
    else:
        array = frame.to_numpy(dtype=dtype or numpy.result_type(*kinds))
    return array.reshape(-1) if series else array


def _listed(names: list[str], most: int = 10) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


_DLPACK_CPU = (1, 3)  # kDLCPU, kDLCUDAHost (pinned host memory)
_DLPACK_CUDA = 2  # kDLCUDA


def _interchange(data: Any, name: str, model_backend: Any) -> Any:
    """Arrays of other libraries (PyTorch, JAX, ...) through DLPack, without a copy: host
    memory as a NumPy view, GPU memory as a CuPy array when it is the model's GPU. Host data
    goes to a GPU model as NumPy data does (one copy); device data on another device than the
    model's is refused with how to move it, never copied behind the user's back."""
    if isinstance(data, numpy.ndarray) or not hasattr(data, "__dlpack_device__"):
        return data
    kind, index = (int(value) for value in data.__dlpack_device__())
    on_model_gpu = kind == _DLPACK_CUDA and model_backend.device == f"cuda:{index}"
    if model_backend.is_array(data):  # a CuPy array
        if on_model_gpu:
            return data
    elif kind in _DLPACK_CPU or on_model_gpu:
        xp = numpy if kind in _DLPACK_CPU else model_backend.xp
        try:
            with model_backend.activate():
                return xp.from_dlpack(data)
        except (BufferError, TypeError, RuntimeError, ValueError) as error:
            raise InvalidTypeError(
                f"{name} ({type(data).__name__}) could not be shared through DLPack: {error}. "
                f"A PyTorch tensor that requires grad needs {name}.detach() first.") from error
    where = f"cuda:{index}" if kind == _DLPACK_CUDA else f"DLPack device type {kind}"
    target = model_backend.device
    raise InvalidArgumentError(
        f"{name} is on {where} but the model is on {target}; gpunn does not copy between "
        f"devices unasked. Move the data (PyTorch: {name}.to('{target}'); CuPy: "
        + (f"{name}.get()" if target == "cpu" else
           f"cupy.asarray({name}) inside `with cupy.cuda.Device({target.split(':')[-1]})`")
        + f") or the model: model.to('{where}').")


def outputs(model: Any) -> int | None:
    """The width of the model's last Dense layer (its outputs), or None without one."""
    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    return dense[-1].n_neurons if dense else None


def _class_labels(backend: Any, y: Any, name: str, classes: int | None, dtype: str) -> Any:
    xp = backend.xp
    if y.ndim == 2 and y.shape[1] == 1 and classes != 1:
        y = y.reshape(-1)  # class indices in a column (a one-column DataFrame), not one-hot
    if y.ndim == 2:  # one-hot
        if classes is not None and y.shape[1] != classes:
            raise InvalidArgumentError(f"{name} is one-hot with {y.shape[1]} columns but the "
                                       f"model has {classes} outputs.")
        return y.astype(dtype, copy=False)
    if y.ndim != 1:
        raise InvalidArgumentError(f"{name} must be class indices (1-D) or one-hot (2-D); "
                                   f"received shape {tuple(y.shape)}.")
    if y.dtype.kind == "f" and not bool(xp.all(xp.isfinite(y) & (y == xp.floor(y)))):
        raise InvalidArgumentError(f"{name} must hold whole class indices; it has fractional, "
                                   f"NaN or inf values.")
    low, high = int(y.min()), int(y.max())
    if classes == 2 and low == -1 and high == 1 and bool(xp.all(xp.abs(y) == 1)):
        return (y > 0).astype(xp.int64)  # -1/+1 labels, as SVMs take them: classes 0 and 1
    if low < 0 or (classes is not None and high >= classes):
        raise InvalidArgumentError(f"{name} holds class indices from {low} to {high}; the model "
                                   f"has {classes} outputs, so they must be in 0..{classes - 1}.")
    return y.astype(xp.int64, copy=False)


def _binary_targets(y: Any, name: str) -> None:
    """Refuse binary cross-entropy targets outside [0, 1]: log(1 - p) and log(p) would then be
    weighted by negative amounts, and training would push the outputs away from every target
    without a word. NaN propagates through min and max, so two reductions check everything."""
    low, high = float(y.min()), float(y.max())
    if 0.0 <= low and high <= 1.0:
        return
    received = ("NaN" if math.isnan(low) or math.isnan(high)
                else f"values from {low:g} to {high:g}")
    raise InvalidArgumentError(f"{name} must hold targets in [0, 1] for BinaryCrossentropy (0/1 "
                               f"labels or probabilities); received {received}. Map the "
                               f"classes to 0 and 1 first (e.g. y = (y == positive_class)), or "
                               f"use CategoricalCrossentropy with a Softmax output for more "
                               f"than two classes.")
