"""gpunn/export.py: a model written as ONNX gives model.predict's outputs in ONNX Runtime, for
every layer, activation, head and dtype; what cannot be exported is refused and leaves no file;
an export replaces only gpunn's own exports unless forced, never the model it reads;
``gpunn export`` on the command line."""

from __future__ import annotations

import ast
import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require

import gpunn as gn
from gpunn import checkpoint, cli, export
from gpunn import model as model_module

try:
    import onnx
    import onnx.numpy_helper
    import onnxruntime
except ImportError:
    onnx = onnxruntime = None

HIDDEN = {"relu": gn.ReLU, "leaky_relu": lambda: gn.LeakyReLU(alpha=0.1), "sigmoid": gn.Sigmoid,
          "tanh": gn.Tanh}


@pytest.fixture
def runtime():
    require(onnx is not None and onnxruntime is not None,
            "onnx and onnxruntime are not installed (pip install 'gpunn[onnx]'; the dev extra "
            "brings them)")
    return onnxruntime


# ---- data sets and models ---------------------------------------------------------------------

def _one_hot_data():
    """One-hot inputs (8 categories) and one-hot labels (the category mod 3)."""
    ids = np.random.default_rng(3).integers(0, 8, 300)
    return np.eye(8, dtype=np.float32)[ids], np.eye(3, dtype=np.float32)[ids % 3]


def _data(name):
    if name == "spiral":
        return gn.datasets.spiral_data(100, 3, seed=1)
    if name == "binary":  # two spiral arms, one sigmoid output
        X, y = gn.datasets.spiral_data(100, 2, seed=1)
        return X, y.reshape(-1, 1).astype(np.float32)
    if name == "sine":
        return gn.datasets.sine_data(200)
    return _one_hot_data()


def _trained(data, hidden, head, *, dtype="float32", dropout=0.0, device="cpu", epochs=300):
    """A small network trained on ``data`` (full batch), so its weights are not the initial
    ones; returns it, X and the history."""
    if device == "cpu":  # the backend fixture seeds the others
        gn.seed(0)
    X, y = _data(data)
    outputs = {"softmax": 3, "sigmoid": 1, "linear": 1}[head]
    model = gn.Model(device=device, dtype=dtype)
    model.add(gn.Dense(X.shape[1], 64))
    model.add(HIDDEN[hidden]())
    if dropout:
        model.add(gn.Dropout(dropout))
    model.add(gn.Dense(64, 64))
    model.add(HIDDEN[hidden]())
    model.add(gn.Dense(64, outputs))
    if head == "softmax":
        model.add(gn.Softmax())
        model.set(loss=gn.CategoricalCrossentropy(), accuracy=gn.CategoricalAccuracy())
    elif head == "sigmoid":
        model.add(gn.Sigmoid())
        model.set(loss=gn.BinaryCrossentropy(), accuracy=gn.CategoricalAccuracy(binary=True))
    else:
        model.add(gn.Linear())
        model.set(loss=gn.MeanSquaredError(), accuracy=gn.RegressionAccuracy())
    model.set(optimizer=gn.Adam(learning_rate=0.02))
    model.finalize()
    history = model.train(X, y, epochs=epochs, verbose=False)
    return model, X, history


def _outputs(path, X, dtype):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (outputs,) = session.run(None, {"features": np.asarray(X, dtype=dtype)})
    return outputs


def _assert_same_outputs(model, path, X):
    expected = model.predict(X)
    actual = _outputs(path, X, model.dtype)
    assert actual.dtype == expected.dtype == np.dtype(model.dtype)
    assert actual.shape == expected.shape
    # float64: the same arithmetic up to summation order; float32: also ONNX Runtime's own
    # exp and tanh, a few units in the last place apart from NumPy's.
    tolerance = ({"rtol": 0, "atol": 1e-6} if model.dtype == "float64"
                 else {"rtol": 1e-5, "atol": 1e-6})
    np.testing.assert_allclose(actual, expected, **tolerance)
    assert expected.std(axis=0).max() > 1e-3  # outputs that differ between samples


def _metadata(path):
    return {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}


# ---- outputs equal model.predict --------------------------------------------------------------

CASES = [
    *[pytest.param("spiral", hidden, "softmax", 0.0, id=f"spiral-softmax-{hidden}")
      for hidden in HIDDEN],
    pytest.param("spiral", "relu", "softmax", 0.1, id="spiral-softmax-relu-dropout"),
    pytest.param("binary", "tanh", "sigmoid", 0.0, id="binary-sigmoid-tanh"),
    pytest.param("sine", "tanh", "linear", 0.0, id="sine-linear-tanh"),
    pytest.param("one-hot", "leaky_relu", "softmax", 0.0, id="one-hot-softmax-leaky_relu"),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("data, hidden, head, dropout", CASES)
def test_onnx_runtime_gives_what_predict_gives(runtime, tmp_path, data, hidden, head, dropout,
                                               dtype):
    model, X, history = _trained(data, hidden, head, dtype=dtype, dropout=dropout)
    assert history["loss"][-1] < 0.97 * history["loss"][0]  # weights that learned
    path = export.to_onnx(model, tmp_path / "model.onnx")
    _assert_same_outputs(model, path, X)
    # Random points where the data lie: far outside, logits grow to hundreds and float32's
    # rounding of them alone moves near-even probabilities by 1e-5, whatever runs the model.
    random = np.random.default_rng(5).uniform(X.min(axis=0), X.max(axis=0), (1000, X.shape[1]))
    _assert_same_outputs(model, path, random)


def test_any_batch_size_runs(runtime, tmp_path):
    model, X, _ = _trained("spiral", "relu", "softmax")
    path = export.to_onnx(model, tmp_path / "model.onnx")
    session = runtime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (given,), (returned,) = session.get_inputs(), session.get_outputs()
    assert (given.name, given.shape) == ("features", ["batch", 2])
    assert (returned.name, returned.shape) == ("probabilities", ["batch", 3])
    for rows in (1, 1000):
        batch = np.random.default_rng(rows).standard_normal((rows, 2)).astype(np.float32)
        (outputs,) = session.run(["probabilities"], {"features": batch})
        assert outputs.shape == (rows, 3)
        np.testing.assert_allclose(outputs, model.predict(batch), rtol=1e-5, atol=1e-6)


def test_a_model_of_activations_alone_keeps_any_width(runtime, tmp_path):
    model = gn.Model(device="cpu", dtype="float64")
    model.add(gn.Tanh())
    model.add(gn.Softmax())
    model.finalize()
    path = export.to_onnx(model, tmp_path / "model.onnx")
    X = np.random.default_rng(0).standard_normal((7, 5))
    np.testing.assert_allclose(_outputs(path, X, "float64"), model.predict(X), rtol=0, atol=1e-12)


def test_a_model_on_any_device_exports_its_parameters_from_there(backend, runtime, tmp_path):
    # The parameters come to the host through the backend: numpy.asarray on a CuPy array
    # raises (as the CuPy double's does too).
    model, X, _ = _trained("spiral", "relu", "softmax", device=backend, epochs=10)
    path = export.to_onnx(model, tmp_path / "model.onnx")
    stored = {tensor.name: onnx.numpy_helper.to_array(tensor)
              for tensor in onnx.load(str(path)).graph.initializer}
    dense = [index for index, layer in enumerate(model.layers) if isinstance(layer, gn.Dense)]
    for index, (weights, biases) in zip(dense, model.get_parameters()):
        np.testing.assert_array_equal(stored[f"layer{index}.Dense.weights"], weights)
        np.testing.assert_array_equal(stored[f"layer{index}.Dense.biases"], biases.ravel())
    _assert_same_outputs(model, path, X)


# ---- what the file says about itself ----------------------------------------------------------

@pytest.mark.parametrize("dtype, element", [("float32", "FLOAT"), ("float64", "DOUBLE")])
def test_the_file_describes_its_input_output_origin_and_opset(runtime, tmp_path, dtype, element):
    model, _, _ = _trained("sine", "tanh", "linear", dtype=dtype, epochs=2)
    path = export.to_onnx(model, tmp_path / "sine.onnx", dataset="sine")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [(entry.domain, entry.version) for entry in proto.opset_import] == [("", 13)]
    assert proto.ir_version == 7  # what runtimes that know opset 13 accept
    (given,), (returned,) = proto.graph.input, proto.graph.output
    for value, name, width in ((given, "features", 1), (returned, "outputs", 1)):
        assert value.name == name
        assert value.type.tensor_type.elem_type == getattr(onnx.TensorProto, element)
        batch, columns = value.type.tensor_type.shape.dim
        assert (batch.dim_param, columns.dim_value) == ("batch", width)
    assert [node.op_type for node in proto.graph.node] == [
        "Gemm", "Tanh", "Gemm", "Tanh", "Gemm", "Identity"]
    assert _metadata(path) == {"gpunn_version": gn.__version__, "dataset": "sine",
                               "dtype": dtype, "architecture": " -> ".join(map(repr,
                                                                               model.layers))}
    assert proto.producer_name == "gpunn" and proto.producer_version == gn.__version__
    assert "Dense(1, 64) -> Tanh()" in proto.doc_string and "'outputs'" in proto.doc_string


def test_without_a_data_set_the_metadata_says_unknown(runtime, tmp_path):
    model, _, _ = _trained("spiral", "relu", "softmax", epochs=2)
    assert _metadata(export.to_onnx(model, tmp_path / "model.onnx"))["dataset"] == "unknown"


# ---- refusals leave no file -------------------------------------------------------------------

class Doubler(gn.layers.Layer):
    """A layer gpunn's exporter cannot know."""

    def forward(self, inputs, training=False):
        self.output = self._input(inputs) * 2


class SquaredReLU(gn.ReLU):
    """A known layer's subclass computes something else: refused too."""

    def forward(self, inputs, training=False):
        super().forward(inputs, training)
        self.output = self.output * self.output


@pytest.mark.parametrize("custom", [Doubler, SquaredReLU])
def test_a_layer_the_exporter_does_not_know_is_refused(tmp_path, custom):
    model = gn.Model(device="cpu")
    model.add(gn.Dense(2, 4))
    model.add(custom())
    model.add(gn.Dense(4, 3))
    model.add(gn.Softmax())
    model.finalize()
    with pytest.raises(gn.InvalidArgumentError) as error:
        export.to_onnx(model, tmp_path / "model.onnx")
    message = str(error.value)
    assert f"model.layers[1], a {custom.__name__}, to ONNX" in message
    assert "Dense, Dropout, Standardize, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Linear" in message
    assert ("which is not a ReLU" in message) == (custom is SquaredReLU)
    assert list(tmp_path.iterdir()) == []


def test_an_unfinalized_model_is_refused(tmp_path):
    model = gn.Model(device="cpu")
    model.add(gn.Dense(2, 3))
    with pytest.raises(gn.GpunnError, match=r"model\.finalize\(\)"):
        export.to_onnx(model, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_without_onnx_the_error_says_what_to_install(tmp_path, monkeypatch):
    model, _, _ = _trained("spiral", "relu", "softmax", epochs=2)
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    with pytest.raises(gn.GpunnError, match=r"pip install 'gpunn\[onnx\]'"):
        export.to_onnx(model, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_the_previous_file_and_no_temporary_one(runtime, tmp_path,
                                                                      monkeypatch):
    model, _, _ = _trained("spiral", "relu", "softmax", epochs=2)
    path = export.to_onnx(model, tmp_path / "model.onnx", dataset="the previous export")
    before = path.read_bytes()

    def disk_full(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(gn.FileWriteError, match="No space left"):
        export.to_onnx(model, path)
    assert list(tmp_path.iterdir()) == [path]
    assert path.read_bytes() == before


def test_an_export_replaces_an_export_and_anything_else_only_with_force(runtime, tmp_path):
    model, X, _ = _trained("spiral", "relu", "softmax", epochs=2)
    path = export.to_onnx(model, tmp_path / "model.onnx", dataset="first")
    assert export.kind_of(path) == export.KIND
    export.to_onnx(model, path, dataset="second")  # its own kind: replaced
    assert _metadata(path)["dataset"] == "second"
    foreign = onnx.helper.make_model(onnx.load(path).graph, producer_name="someone else")
    onnx.save(foreign, tmp_path / "theirs.onnx")
    model.save(tmp_path / "model.npz")
    for name, says in [("theirs.onnx", "it is not one of gpunn's ONNX model files"),
                       ("model.npz", "it is not one of gpunn's ONNX model files")]:
        before = (tmp_path / name).read_bytes()
        with pytest.raises(gn.OverwriteRefusedError, match=f"{says}.*force=True"):
            model.to_onnx(tmp_path / name)
        assert (tmp_path / name).read_bytes() == before
    model.to_onnx(tmp_path / "theirs.onnx", force=True)
    _assert_same_outputs(model, tmp_path / "theirs.onnx", X)


def test_an_unwritable_folder_is_one_line_without_the_temporary_name(runtime, tmp_path,
                                                                     monkeypatch):
    # issue 20: "[Errno 13] Permission denied: '.../.model.onnx.5f0c....tmp'"
    model, _, _ = _trained("spiral", "relu", "softmax", epochs=2)
    real_open = os.open

    def read_only_folder(name, *args, **kwargs):  # as the OS answers where root is not asking
        if Path(name).parent == tmp_path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(name))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_folder)
    with pytest.raises(gn.FileWriteError) as caught:
        export.to_onnx(model, tmp_path / "model.onnx")
    assert str(caught.value) == (f"Cannot write the ONNX model to {tmp_path / 'model.onnx'}: "
                                 f"permission denied in the folder {tmp_path}. Give a path in a "
                                 f"folder you can write to.")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_an_export_is_readable_by_others(runtime, tmp_path):
    # A file from tempfile.mkstemp is private (0600); a model made to be served is not.
    model, _, _ = _trained("spiral", "relu", "softmax", epochs=2)
    umask = os.umask(0o022)
    try:
        path = export.to_onnx(model, tmp_path / "model.onnx")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


# ---- the data set a file was trained on -------------------------------------------------------

def test_the_data_set_comes_from_the_checkpoint_of_the_same_run(tmp_path):
    model, _, _ = _trained("spiral", "relu", "softmax", epochs=2)
    checkpoint.save(tmp_path / "checkpoint.npz", model, epoch=1, history={},
                    settings={"dataset": "/home/someone/data/points.csv"})
    model.save(tmp_path / "model.npz")
    assert export.training_dataset(tmp_path / "checkpoint.npz") == "points.csv"  # not the path
    assert export.training_dataset(tmp_path / "model.npz") == "points.csv"
    other, _, _ = _trained("spiral", "tanh", "softmax", epochs=2)
    other.save(tmp_path / "other.npz")  # beside a checkpoint of another model
    assert export.training_dataset(tmp_path / "other.npz") is None
    (tmp_path / "alone").mkdir()
    model.save(tmp_path / "alone" / "model.npz")
    assert export.training_dataset(tmp_path / "alone" / "model.npz") is None


# ---- gpunn export --------------------------------------------------------------------------------

def _gpunn(capsys, *argv):
    status = cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run of ``gpunn train``: model.npz and checkpoint.npz."""
    folder = tmp_path_factory.mktemp("run")
    assert cli.main(["train", "--device", "cpu", "--epochs", "20", "--quiet", "--out",
                     str(folder)]) == 0
    return folder


def test_a_standardize_layer_exports_so_raw_features_give_what_predict_gives(runtime, tmp_path):
    # Features in thousands and in thousandths: without the layer's Sub and Div in the graph,
    # the served model would need the scaling as extra code.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 2)) * [1e3, 1e-3] + [5e3, 0.0]
    y = np.eye(2, dtype=np.float32)[(X[:, 0] / 1e3 - 5 + X[:, 1] * 1e3 > 0).astype(int)]
    gn.seed(0)
    model = gn.Model(device="cpu")
    model.add(gn.Standardize.fit(X))
    model.add(gn.Dense(2, 16))
    model.add(gn.Tanh())
    model.add(gn.Dense(16, 2))
    model.add(gn.Softmax())
    model.set(loss=gn.CategoricalCrossentropy(), optimizer=gn.Adam(learning_rate=0.02),
              accuracy=gn.CategoricalAccuracy())
    model.finalize()
    model.train(X, y, epochs=100, verbose=False)
    path = export.to_onnx(model, tmp_path / "model.onnx")
    assert export.describe(model) == ("features float32 [batch, 2] -> probabilities float32 "
                                      "[batch, 2]")
    _assert_same_outputs(model, path, X)
    operators = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert operators[:2] == ["Sub", "Div"]


@pytest.mark.parametrize("name", ["model.npz", "checkpoint.npz"])
def test_gpunn_export_writes_what_predict_gives(runtime, run, tmp_path, capsys, name):
    out = tmp_path / "spiral.onnx"
    status, stdout, err = _gpunn(capsys, "export", run / name, out)
    assert (status, err) == (0, "")
    assert stdout == (f"wrote {out} (ONNX opset 13: features float32 [batch, 2] -> "
                      f"probabilities float32 [batch, 3]; trained on spiral)\n")
    assert _metadata(out)["dataset"] == "spiral"
    model = gn.Model.load(run / name, device="cpu")
    X, _, X_val, _ = gn.datasets.load("spiral", seed=0)
    _assert_same_outputs(model, out, np.concatenate([X, X_val]))


@pytest.mark.parametrize("target, says", [
    ("missing/model.onnx", "the folder {tmp}/missing does not exist"),
    (".", "it is a folder"),
])
def test_gpunn_export_to_a_bad_place_is_one_line(runtime, run, tmp_path, capsys, target, says):
    status, stdout, err = _gpunn(capsys, "export", run / "model.npz", tmp_path / target)
    (line,) = err.splitlines()
    assert status == 1 and stdout == ""
    assert line.startswith("gpunn: error: Cannot write the ONNX model to ")
    assert says.format(tmp=tmp_path) in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("force", [[], ["--force"]])
@pytest.mark.parametrize("target, role", [("model.npz", "the model"),
                                          ("checkpoint.npz", "the checkpoint")])
def test_gpunn_export_never_writes_over_what_it_reads(run, capsys, force, target, role):
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    status, stdout, err = _gpunn(capsys, "export", run / "model.npz", run / target, *force)
    assert (status, stdout) == (1, "")
    assert err == (f"gpunn: error: Not writing the ONNX model to {run / target}: that is "
                   f"{role} this command reads, which gpunn never replaces. Give another "
                   f"path for the ONNX model.\n")
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before


def test_gpunn_export_replaces_a_file_it_did_not_export_only_with_force(runtime, run, tmp_path,
                                                                        capsys):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"someone's own file")
    status, stdout, err = _gpunn(capsys, "export", run / "model.npz", out)
    assert (status, stdout) == (1, "")
    assert err == (f"gpunn: error: Not replacing {out} with the ONNX model: it is not one of "
                   f"gpunn's ONNX model files, and gpunn replaces no other file. Give another "
                   f"path, or --force to replace it.\n")
    assert out.read_bytes() == b"someone's own file"
    assert _gpunn(capsys, "export", run / "model.npz", out, "--force")[0] == 0
    assert _gpunn(capsys, "export", run / "model.npz", out)[0] == 0  # now gpunn's own
    assert export.kind_of(out) == export.KIND


def test_gpunn_export_of_a_missing_model_is_one_line(tmp_path, capsys):
    status, stdout, err = _gpunn(capsys, "export", tmp_path / "none.npz", tmp_path / "m.onnx")
    assert (status, stdout) == (1, "")
    assert err == f"gpunn: error: No such file: {tmp_path / 'none.npz'}\n"
    assert list(tmp_path.iterdir()) == []


def test_gpunn_export_without_onnx_says_what_to_install(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    status, _, err = _gpunn(capsys, "export", run / "model.npz", tmp_path / "m.onnx")
    (line,) = err.splitlines()
    assert status == 1 and line.startswith("gpunn: error: Exporting to ONNX needs the onnx")
    assert line.endswith("pip install 'gpunn[onnx]'")
    assert list(tmp_path.iterdir()) == []


def test_gpunn_export_needs_both_paths(run, capsys):
    status, _, err = _gpunn(capsys, "export", run / "model.npz")
    assert status == 2 and "OUT" in err and len(err.splitlines()) == 1


def test_model_to_onnx_is_export_to_onnx(runtime, tmp_path):
    model, X, _ = _trained("spiral", "relu", "softmax", epochs=2)
    _assert_same_outputs(model, model.to_onnx(tmp_path / "m.onnx", dataset="spiral"), X)


def _imports_the_exporter(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[:2] == ["gpunn", "export"] for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        module = ("gpunn." if node.level else "") + (node.module or "")
        names = [alias.name for alias in node.names]
        return (module.rstrip(".").split(".")[:2] == ["gpunn", "export"]
                or (module.rstrip(".") == "gpunn" and "export" in names))
    return False


def test_the_model_never_imports_the_exporter_when_it_loads():
    # STYLE.md: export imports model, not both. Model.to_onnx imports gpunn.export inside the
    # method; anywhere a module runs as it loads (its top level, a class body) would be a cycle.
    tree = ast.parse(Path(model_module.__file__).read_text(encoding="utf-8"))
    loading, found = list(ast.iter_child_nodes(tree)), []
    while loading:
        node = loading.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue  # runs when called
        if _imports_the_exporter(node):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        loading.extend(ast.iter_child_nodes(node))
    assert found == [], f"gpunn/model.py imports gpunn.export as it loads: {found}"
    # Nor does anything else `import gpunn` loads.
    root = Path(model_module.__file__).resolve().parent.parent
    check = "import sys, gpunn; print('gpunn.export' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], cwd=root, capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False", result.stdout + result.stderr


def test_gpunn_export_of_a_csv_run_takes_raw_features(runtime, tmp_path, capsys):
    # gpunn train standardizes a user's file by default; the export must carry that scaling.
    rng = np.random.default_rng(1)
    X = rng.standard_normal((120, 3)) * [1e3, 1e-3, 1.0] + [5e3, 0.0, 0.0]
    np.savetxt(tmp_path / "data.csv", np.c_[X, (X[:, 2] > 0).astype(int)], delimiter=",")
    assert _gpunn(capsys, "train", "--device", "cpu", "--epochs", "5", "--quiet", "--dataset",
                  tmp_path / "data.csv", "--out", tmp_path / "run")[0] == 0
    status, _, err = _gpunn(capsys, "export", tmp_path / "run" / "model.npz",
                            tmp_path / "model.onnx")
    assert (status, err) == (0, "")
    model = gn.Model.load(tmp_path / "run" / "model.npz", device="cpu")
    assert isinstance(model.layers[0], gn.Standardize)
    _assert_same_outputs(model, tmp_path / "model.onnx", X)
