"""Exporting a model to ONNX, the format ONNX Runtime, TensorRT, OpenVINO and most serving
stacks read: ``gpunn export MODEL.npz MODEL.onnx``, or ``export.to_onnx(model, "model.onnx")``.

Each gpunn layer becomes the ONNX operator that computes what its ``forward`` computes at
inference: Dense is Gemm (``inputs @ weights + biases``), ReLU, Sigmoid, Tanh and Softmax are
their namesakes, LeakyReLU is LeakyRelu, Linear and Dropout (the identity at inference) are
Identity, Standardize is Sub and Div (``(inputs - mean) / std``, so the served model takes raw
features as ``predict`` does). The input is "features" of shape [batch, n_inputs] with any batch
size; the output is "probabilities" after Softmax or Sigmoid, else "outputs". Needs
``pip install 'gpunn[onnx]'``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy

from gpunn import activations, datasets, files, layers, model_data
from gpunn.errors import GpunnError, InvalidArgumentError

if TYPE_CHECKING:
    from gpunn.model import Model

# Opset 13 (ONNX 1.8, 2020) runs on ONNX Runtime 1.6 and later and on every current runtime.
# Older opsets would gain little and Softmax before 13 flattened its input to 2-D around
# ``axis``; from 13 on it normalises along ``axis`` alone, which is gpunn's per-row softmax for
# any input rank. IR version 7 is the oldest that carries opset 13: the onnx package would
# otherwise stamp its newest IR version, which older runtimes refuse to load.
OPSET = 13
IR_VERSION = 7
INPUT = "features"
BATCH = "batch"  # the symbolic first dimension: any batch size
KIND = "ONNX model"  # what gpunn.files calls an exported file
PRODUCER = b"\x12\x05gpunn"  # producer_name "gpunn" as protobuf serialises it
KNOWN = (layers.Dense, layers.Dropout, layers.Standardize, activations.ReLU, activations.LeakyReLU,
         activations.Sigmoid, activations.Tanh, activations.Softmax, activations.Linear)
HEADS = {
    activations.Softmax: ("probabilities", "class probabilities, one row per sample (the "
                                           "argmax is the predicted class)"),
    activations.Sigmoid: ("probabilities", "probability of the positive class per output "
                                           "(> 0.5 predicts it)"),
    activations.Linear: ("outputs", "the predicted values (regression)"),
}


def to_onnx(model: Model, path: str | os.PathLike, *, dataset: str | None = None,
            force: bool = False) -> Path:
    """Write ``model`` as an ONNX file at ``path`` (atomically) and return the path; ``dataset``
    is the training data set's name, kept in the file's metadata. An existing file is replaced
    only when it is an ONNX model gpunn exported, or with ``force``. Example::

        export.to_onnx(model, "model.onnx", dataset="spiral")
    """
    _check_exportable(model)
    if dataset is not None and not isinstance(dataset, str):
        raise InvalidArgumentError(f"dataset must be the training data set's name, a string; "
                                   f"received {dataset!r}.")
    files.check(path, KIND, kind_of, force=force)  # before the work, as the write checks again
    onnx = _import_onnx()
    proto = _model_proto(onnx, model, dataset or "unknown")
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    return files.write(path, KIND, kind_of, lambda file: file.write(data), force=force)


def kind_of(path: str | os.PathLike) -> str | None:
    """``KIND`` for an ONNX file that gpunn exported, else None: one whose producer is gpunn
    and whose metadata has gpunn_version. Read as bytes, so no onnx package is needed."""
    try:
        with open(path, "rb") as file:
            # A serialised ModelProto starts with field 1 (ir_version), then field 2,
            # producer_name: tag 0x12, length 5, "gpunn". A foreign file stops here.
            if PRODUCER not in file.read(16):
                return None
            data = file.read()
    except OSError:
        return None
    return KIND if b"\x0a\x0dgpunn_version" in data else None  # the metadata entry's key


def describe(model: Model) -> str:
    """The exported graph's signature, such as
    ``features float32 [batch, 2] -> probabilities float32 [batch, 3]``."""
    inputs, outputs = _widths(model)
    return (f"{INPUT} {model.dtype} [{BATCH}, {inputs}] -> {_head(model)[0]} {model.dtype} "
            f"[{BATCH}, {outputs}]")


def training_dataset(path: str | os.PathLike) -> str | None:
    """The data set a gpunn file was trained on, as ``gpunn train`` recorded it (see
    ``gpunn.model_data.recorded``). None when no file says."""
    trained = model_data.recorded(path)
    if trained is None or not trained["dataset"]:
        return None
    name = trained["dataset"]
    # A file's name, not its folder: a full path would publish the trainer's directories.
    return name if name in datasets.NAMES else Path(name).name


# ---- checks -------------------------------------------------------------------------------------

def _check_exportable(model: Model) -> None:
    if not getattr(model, "finalized", False):
        raise GpunnError("Call model.finalize() after adding layers before exporting the "
                         "model to ONNX.")
    known = ", ".join(cls.__name__ for cls in KNOWN)
    for index, layer in enumerate(model.layers):
        # The exact class: a subclass may compute something else in its forward.
        if type(layer) not in KNOWN:
            kind = type(layer).__name__
            parents = [cls.__name__ for cls in KNOWN if isinstance(layer, cls)]
            why = (f", which is not a {parents[0]}: a subclass may compute something else"
                   if parents else "")
            raise InvalidArgumentError(
                f"Cannot export model.layers[{index}], a {kind}, to ONNX: the exporter knows "
                f"{known}; received a {kind}{why}. Build the model from those layers, or "
                f"write the ONNX nodes of {kind} yourself.")


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError as error:
        raise GpunnError(f"Exporting to ONNX needs the onnx package, which is not installed "
                         f"({error}). Install it with: pip install 'gpunn[onnx]'") from None
    return onnx


# ---- the graph ----------------------------------------------------------------------------------

def _widths(model: Model) -> tuple[int | str, int | str]:
    """Input and output widths; a model without Dense keeps its width, whatever it is."""
    first = model.input_layer
    dense = [layer for layer in model.layers if isinstance(layer, layers.Dense)]
    if first is None:
        return "n_features", "n_features"
    return first.n_inputs, dense[-1].n_neurons if dense else first.n_inputs


def _head(model: Model) -> tuple[str, str]:
    """The output's name and what it means, from the last layer."""
    return HEADS.get(type(model.layers[-1]), ("outputs", "the network's outputs"))


def _model_proto(onnx: Any, model: Model, dataset: str) -> Any:
    from gpunn import __version__

    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    element = helper.np_dtype_to_tensor_dtype(numpy.dtype(model.dtype))
    parameters = iter(model.get_parameters())  # host copies, from whatever device
    nodes, initializers, tensor = [], [], INPUT
    output, meaning = _head(model)
    for index, layer in enumerate(model.layers):
        name = f"layer{index}.{type(layer).__name__}"
        last = index == len(model.layers) - 1 and model.target_scaling is None
        result = output if last else f"{name}.output"

        def constant(suffix: str, value: Any, name: str = name) -> str:
            array = numpy.asarray(value, dtype=model.dtype)
            initializers.append(numpy_helper.from_array(array, f"{name}.{suffix}"))
            return f"{name}.{suffix}"

        if isinstance(layer, layers.Dense):
            weights, biases = next(parameters)
            nodes.append(helper.make_node(
                "Gemm", [tensor, constant("weights", weights),
                         constant("biases", biases.reshape(-1))], [result], name=name))
        elif isinstance(layer, layers.Standardize):
            # The same two operations in the same dtype as forward, so the outputs agree.
            centred = f"{name}.centred"
            nodes += [
                helper.make_node("Sub", [tensor, constant("mean", layer.mean_values)],
                                 [centred], name=f"{name}.sub"),
                helper.make_node("Div", [centred, constant("std", layer.std_values)],
                                 [result], name=name)]
        elif isinstance(layer, activations.LeakyReLU) and model.dtype == "float64":
            # ONNX Runtime (1.32) has no float64 LeakyRelu; gpunn's own formula runs anywhere.
            positive = f"{name}.positive"
            scaled = f"{name}.scaled"
            nodes += [
                helper.make_node("Greater", [tensor, constant("zero", 0.0)], [positive],
                                 name=f"{name}.greater"),
                helper.make_node("Mul", [tensor, constant("alpha", layer.alpha)], [scaled],
                                 name=f"{name}.mul"),
                helper.make_node("Where", [positive, tensor, scaled], [result], name=name)]
        elif isinstance(layer, activations.LeakyReLU):
            nodes.append(helper.make_node("LeakyRelu", [tensor], [result], name=name,
                                          alpha=layer.alpha))
        elif isinstance(layer, activations.Softmax):
            nodes.append(helper.make_node("Softmax", [tensor], [result], name=name, axis=-1))
        else:
            operator = {activations.ReLU: "Relu", activations.Sigmoid: "Sigmoid",
                        activations.Tanh: "Tanh"}.get(type(layer), "Identity")
            nodes.append(helper.make_node(operator, [tensor], [result], name=name))
        tensor = result
    if model.target_scaling is not None:  # predictions in the targets' units, as predict's
        scaling, name = model.target_scaling, "target_scaling"
        initializers += [
            numpy_helper.from_array(numpy.asarray(scaling.std_values, dtype=model.dtype),
                                    f"{name}.std"),
            numpy_helper.from_array(numpy.asarray(scaling.mean_values, dtype=model.dtype),
                                    f"{name}.mean")]
        nodes += [helper.make_node("Mul", [tensor, f"{name}.std"], [f"{name}.scaled"],
                                   name=f"{name}.mul"),
                  helper.make_node("Add", [f"{name}.scaled", f"{name}.mean"], [output],
                                   name=name)]
    inputs, outputs = _widths(model)
    architecture = " -> ".join(map(repr, model.layers))
    graph = helper.make_graph(
        nodes, "gpunn", initializer=initializers,
        inputs=[helper.make_tensor_value_info(INPUT, element, [BATCH, inputs],
                                              doc_string="one row of features per sample")],
        outputs=[helper.make_tensor_value_info(output, element, [BATCH, outputs],
                                               doc_string=meaning)])
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
        producer_name="gpunn", producer_version=__version__,
        doc_string=(f"A gpunn network, {architecture}, trained on {dataset}. Input "
                    f"'{INPUT}': {model.dtype} [{BATCH}, {inputs}], one row per sample. Output "
                    f"'{output}': {model.dtype} [{BATCH}, {outputs}], {meaning}."))
    props = {"gpunn_version": __version__, "dataset": dataset, "dtype": model.dtype,
             "architecture": architecture}
    # What the model knows of its data (gpunn.tables), as JSON lists: output i is classes[i]
    for key in ("classes", "feature_names", "target_names"):
        if getattr(model, key) is not None:
            props[key] = json.dumps(getattr(model, key))
    helper.set_model_props(proto, props)
    return proto
