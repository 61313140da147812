"""Reading gpunn files (gpunn/io.py): whatever a file holds that is not a gpunn model (junk,
nothing, a pickle, a single array, a truncated or forged archive), loading it gives one
FileFormatError that says what is wrong with the file, and never NumPy's advice to load it
unsafely (gpunn never unpickles). Writing them: with the user's umask, over a gpunn file of the
same kind only, unless forced (the rules themselves: test_files.py)."""

from __future__ import annotations

import io as stdio
import os
import pickle
import re
import struct
import sys
import zipfile

import numpy as np
import pytest

import gpunn as gn
from gpunn import checkpoint, cli, datasets, io

UNSAFE_ADVICE = ("allow_pickle", "pickle.load", "unsafely", "If you trust")


def _model():
    model = gn.Model(device="cpu")
    model.add(gn.Dense(2, 3))
    model.add(gn.Softmax())
    model.set(loss=gn.CategoricalCrossentropy(), optimizer=gn.Adam(),
              accuracy=gn.CategoricalAccuracy())
    model.finalize()
    return model


def _model_bytes(tmp_path) -> bytes:
    _model().save(tmp_path / "model.npz")
    return (tmp_path / "model.npz").read_bytes()


def _truncated(content: bytes) -> bytes:
    return content[: len(content) // 2]


def _npz(**arrays) -> bytes:
    buffer = stdio.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy(array) -> bytes:
    buffer = stdio.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _huge_header_npz() -> bytes:
    """An archive whose .npy entry has a 20,000-byte header, which NumPy refuses to parse
    (its message tells the reader to pass allow_pickle=True)."""
    header = b"{" + b" " * 20_000 + b"}\n"
    member = b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header
    buffer = stdio.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("parameters.npy", member)
    return buffer.getvalue()


# Each bad file, and what the message must say about it.
BAD_FILES = {
    "junk": (lambda tmp: b"junk\n", r"is not an \.npz \(zip\) archive \(it begins with b'junk"),
    "empty": (lambda tmp: b"", r"it is empty \(0 bytes\)"),
    "pickle": (lambda tmp: pickle.dumps({"parameters": [1, 2, 3]}),
               "looks like a Python pickle.*never loads pickles"),
    "npy": (lambda tmp: _npy(np.ones(3)), r"single array \(\.npy\)"),
    "npy-of-objects": (lambda tmp: _npy(np.array([{"a": 1}], dtype=object)),
                       r"single array \(\.npy\)"),
    "object-array": (lambda tmp: _npz(__gpunn__=np.array([{"format": "gpunn"}], dtype=object)),
                     "pickled object array, which gpunn never loads"),
    "huge-header": (lambda tmp: _huge_header_npz(), "larger than NumPy reads safely"),
    "zip-magic-only": (lambda tmp: b"PK\x03\x04 truncated", "damaged or truncated"),
    "truncated-model": (lambda tmp: _truncated(_model_bytes(tmp)), "damaged or truncated"),
}


def _bad_file(tmp_path, kind):
    content, reason = BAD_FILES[kind]
    path = tmp_path / "bad.npz"
    path.write_bytes(content(tmp_path))
    return path, reason


def _assert_safe(message: str) -> None:
    for advice in UNSAFE_ADVICE:
        assert advice not in message, message


def test_a_junk_file_is_not_a_gpunn_file(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_text("junk\n")
    with pytest.raises(gn.FileFormatError) as caught:
        gn.Model.load(path, device="cpu")
    assert str(caught.value).startswith(f"{path} is not a gpunn file: it is not an .npz (zip) "
                                        f"archive")
    assert "written by gpunn" in str(caught.value)
    _assert_safe(str(caught.value))


def test_gpunn_evaluate_on_a_junk_file_is_one_line_without_unsafe_advice(tmp_path, capsys):
    path = tmp_path / "bad.npz"
    path.write_text("junk\n")
    assert cli.main(["evaluate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"gpunn: error: {path} is not a gpunn file: it is not an .npz "
                               f"(zip) archive"), err
    _assert_safe(err)


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_every_loader_says_why_and_never_suggests_unsafe_loading(tmp_path, kind):
    path, reason = _bad_file(tmp_path, kind)
    loaders = {"Model.load": lambda: gn.Model.load(path, device="cpu"),
               "checkpoint.load": lambda: checkpoint.load(path, device="cpu"),
               "io.read_arrays": lambda: io.read_arrays(path),
               "datasets.load_npz": lambda: datasets.load_npz(path)}
    for name, load in loaders.items():
        with pytest.raises(gn.FileFormatError, match=reason) as caught:
            load()
        assert str(caught.value).startswith(str(path)), name
        _assert_safe(str(caught.value))


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_the_command_line_says_why_in_one_line(tmp_path, capsys, kind, command):
    path, reason = _bad_file(tmp_path, kind)
    if command == "evaluate":
        argv = ["evaluate", str(path), "--device", "cpu"]
    else:  # a good model, a bad input file
        (tmp_path / "good.npz").write_bytes(_model_bytes(tmp_path))
        argv = ["predict", str(tmp_path / "good.npz"), str(path), "--device", "cpu",
                "--out", str(tmp_path / "predictions.npz")]
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1 and err.startswith(f"gpunn: error: {path} is not "), err
    assert re.search(reason, err), err
    _assert_safe(err)
    assert not (tmp_path / "predictions.npz").exists()


def test_a_data_file_is_not_a_gpunn_file(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.ones((2, 2)), y=np.zeros(2))
    with pytest.raises(gn.FileFormatError, match=r"is not a gpunn file \(it has no __gpunn__"):
        gn.Model.load(path, device="cpu")


# ---- writing ------------------------------------------------------------------------------------

@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_saved_files_get_the_users_umask(tmp_path):
    # issue 20: model.npz was 0600 whatever the umask (tempfile.mkstemp), unreadable to others
    model = _model()
    previous = os.umask(0o022)
    try:
        model.save(tmp_path / "model.npz")
        model.save_parameters(tmp_path / "parameters.npz")
    finally:
        os.umask(previous)
    for name in ("model.npz", "parameters.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_save_replaces_a_gpunn_model_and_nothing_else_unless_forced(tmp_path):
    model = _model()
    model.save(tmp_path / "model.npz")
    model.save(tmp_path / "model.npz")  # its own kind: replaced, as Keras' model.save does
    np.savez(tmp_path / "data.npz", X=np.ones((2, 2)))
    (tmp_path / "notes.txt").write_text("the user's own notes\n")
    checkpoint.save(tmp_path / "checkpoint.npz", model, epoch=0, history={})
    for name, says in [("data.npz", "it is not one of gpunn's model files"),
                       ("notes.txt", "it is not one of gpunn's model files"),
                       ("checkpoint.npz", "it is a gpunn checkpoint file, not a model file")]:
        before = (tmp_path / name).read_bytes()
        with pytest.raises(gn.OverwriteRefusedError, match=f"{says}.*force=True") as caught:
            model.save(tmp_path / name)
        assert str(caught.value).startswith(f"Not replacing {tmp_path / name} with the model")
        assert (tmp_path / name).read_bytes() == before
        with pytest.raises(gn.OverwriteRefusedError, match="not a parameters file|not one of"):
            model.save_parameters(tmp_path / name)
        assert (tmp_path / name).read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "checkpoint.npz", "data.npz", "model.npz", "notes.txt"]
    model.save(tmp_path / "data.npz", force=True)
    assert io.kind_of(tmp_path / "data.npz") == "model"
    model.save_parameters(tmp_path / "notes.txt", force=True)
    assert io.kind_of(tmp_path / "notes.txt") == "parameters"


def test_save_to_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(gn.FileWriteError) as caught:
        _model().save(tmp_path / "missing" / "model.npz")
    assert str(caught.value) == (f"Cannot write the model to {tmp_path / 'missing' / 'model.npz'}"
                                 f": the folder {tmp_path / 'missing'} does not exist. Create "
                                 f"it, or give a path in an existing folder.")


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_kind_of_says_none_for_anything_gpunn_did_not_write(tmp_path, kind):
    path, _ = _bad_file(tmp_path, kind)
    assert io.kind_of(path) is None
    assert io.kind_of(tmp_path / "missing.npz") is None and io.kind_of(tmp_path) is None
    np.savez(tmp_path / "data.npz", X=np.ones(3), __gpunn__=np.frombuffer(b"{}", np.uint8))
    assert io.kind_of(tmp_path / "data.npz") is None  # the entry's name alone is not enough
    model = _model()
    model.save(tmp_path / "model.npz")
    checkpoint.save(tmp_path / "checkpoint.npz", model, epoch=0, history={})
    assert io.kind_of(tmp_path / "model.npz") == "model"
    assert io.kind_of(tmp_path / "checkpoint.npz") == "checkpoint"


def test_a_standardize_of_784_features_round_trips_exactly(tmp_path):
    # mean and std live in the JSON header as lists: every float64 digit must come back
    rng = np.random.default_rng(0)
    mean, std = rng.standard_normal(784) * 100, rng.uniform(1e-4, 1e3, 784)
    model = gn.Model(device="cpu", dtype="float64")
    model.add(gn.Standardize(mean, std))
    model.add(gn.Dense(784, 3))
    model.add(gn.Softmax())
    model.set(loss=gn.CategoricalCrossentropy(), optimizer=gn.Adam(),
              accuracy=gn.CategoricalAccuracy())
    model.finalize()
    model.save(tmp_path / "model.npz")
    assert io.kind_of(tmp_path / "model.npz") == "model"
    loaded = gn.Model.load(tmp_path / "model.npz", device="cpu")
    np.testing.assert_array_equal(loaded.layers[0].mean_values, mean)
    np.testing.assert_array_equal(loaded.layers[0].std_values, std)
    X = rng.standard_normal((5, 784)) * 100
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
