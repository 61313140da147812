"""The Model end to end: the issue's example, history, evaluate, predict, parameters, files,
seeding, devices, and bad input that must leave the model exactly as it was."""

from __future__ import annotations

import io
import os
import signal
import sys

import numpy as np
import pytest
from conftest import require
from helpers import build_model, product_bound

import gpunn as gn
from gpunn import _data, training


def _classifier(backend, *, dropout=0.0, optimizer=None, dtype="float32"):
    model = gn.Model(device=backend, dtype=dtype)
    model.add(gn.Dense(2, 64, weight_regularizer_l2=5e-4, bias_regularizer_l2=5e-4))
    model.add(gn.ReLU())
    if dropout:
        model.add(gn.Dropout(dropout))
    model.add(gn.Dense(64, 3))
    model.add(gn.Softmax())
    model.set(loss=gn.CategoricalCrossentropy(),
              optimizer=optimizer or gn.Adam(learning_rate=0.05, decay=5e-5),
              accuracy=gn.CategoricalAccuracy())
    model.finalize()
    return model


@pytest.fixture
def spiral():
    X, y = gn.datasets.spiral_data(samples=100, classes=3, seed=1)
    X_val, y_val = gn.datasets.spiral_data(samples=100, classes=3, seed=2)
    return X, y, X_val, y_val


def test_the_issue_example_trains(backend, spiral, capsys):
    X, y, X_val, y_val = spiral
    model = _classifier(backend, dropout=0.1)
    history = model.train(X, y, epochs=300, batch_size=None, shuffle=False, print_every=100,
                          validation_data=(X_val, y_val))
    printed = capsys.readouterr().out
    assert "epoch: 300" in printed and "validation, acc:" in printed
    assert set(history) == {"loss", "data_loss", "regularization_loss", "accuracy",
                            "learning_rate", "val_loss", "val_accuracy"}
    assert all(len(values) == 300 for values in history.values())
    assert history["loss"][-1] < history["loss"][0] - 0.3
    assert history["accuracy"][-1] > 0.6
    loss, accuracy = model.evaluate(X_val, y_val)
    assert (loss, accuracy) == pytest.approx((history["val_loss"][-1],
                                              history["val_accuracy"][-1]))
    probabilities = model.predict(X_val[:7])
    assert isinstance(probabilities, np.ndarray) and probabilities.shape == (7, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_print_every_counts_epochs_too(spiral, capsys):
    # print_every=2500 once printed three lines for every one of thousands of epochs.
    X, y, *_ = spiral
    _classifier("cpu").train(X, y, epochs=10, print_every=4, verbose=True)
    printed = capsys.readouterr().out
    shown = [line for line in printed.splitlines() if line.startswith("epoch: ")]
    assert shown == ["epoch: 1", "epoch: 4", "epoch: 8", "epoch: 10"]
    assert printed.count("training, acc:") == 4 and printed.count("step: 0,") == 4
    assert "e-" in printed or "loss: 1.0" in printed  # losses in significant digits


@pytest.mark.parametrize("verbose", [False, 0])
def test_verbose_false_prints_nothing(backend, spiral, capsys, verbose):
    X, y, *_ = spiral
    _classifier(backend).train(X, y, epochs=3, batch_size=64, verbose=verbose)
    assert capsys.readouterr().out == ""


def test_the_default_in_a_log_is_one_summary_line_per_epoch_and_one_read_of_the_tally(
        backend, spiral, capsys, monkeypatch):
    # The default once printed the book's step lines, 45 an epoch on digits, each reading the
    # device tally twice.
    X, y, X_val, y_val = spiral
    reads = []
    read = training.Tally.read
    monkeypatch.setattr(training.Tally, "read", lambda tally: reads.append(1) or read(tally))
    _classifier(backend).train(X, y, epochs=3, batch_size=32, validation_data=(X_val, y_val))
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert [line.split(": training, acc: ")[0] for line in lines] == ["epoch 1/3", "epoch 2/3",
                                                                     "epoch 3/3"]
    assert all("; validation, acc: " in line for line in lines)
    assert "\r" not in printed and len(reads) == 3


class _NotebookStream(io.StringIO):
    """What Jupyter makes sys.stdout: not a terminal, but it redraws a bar in place."""


_NotebookStream.__module__ = "ipykernel.iostream"


@pytest.mark.parametrize("where", ["terminal", "notebook"])
@pytest.mark.parametrize("batch_size, epochs, bars, summaries", [
    (16, 3, 3, 3),  # 19 steps an epoch: a bar each, with its running loss, then its summary
    (None, 120, 1, 1),  # many one-step epochs: one bar over all, then the last one's summary
])
def test_the_default_in_a_terminal_or_notebook_draws_bars(spiral, capsys, monkeypatch, where,
                                                          batch_size, epochs, bars, summaries):
    X, y, X_val, y_val = spiral
    if where == "terminal":
        monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    else:
        monkeypatch.setattr(sys, "stdout", _NotebookStream())
    _classifier("cpu").train(X, y, epochs=epochs, batch_size=batch_size,
                             validation_data=(X_val, y_val))
    printed = capsys.readouterr().out if where == "terminal" else sys.stdout.getvalue()
    lines = printed.split("\n")  # a bar's redraws, after carriage returns, on one line
    assert sum("%|" in line for line in lines) == bars
    assert sum(": training, acc: " in line for line in lines) == summaries
    assert f"epoch {epochs}/{epochs}: training, acc: " in lines[-2] and "step:" not in printed


@pytest.mark.parametrize("options", [{"verbose": 2}, {"print_every": 1},
                                     {"print_every": 1, "verbose": True}])
def test_verbose_2_or_print_every_prints_the_books_step_lines(spiral, capsys, options):
    X, y, *_ = spiral
    _classifier("cpu").train(X, y, epochs=2, batch_size=100, **options)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "epoch: 1", "step: 0", "step: 1", "step: 2", "training",
        "epoch: 2", "step: 0", "step: 1", "step: 2", "training"]


@pytest.mark.parametrize("verbose", [3, -1, "yes", None, 1.0])
def test_verbose_is_0_1_or_2(spiral, verbose):
    X, y, *_ = spiral
    with pytest.raises(gn.InvalidArgumentError, match=rf"verbose must be 0 \(or False\), 1 "
                                                      rf"\(or True\) or 2; received "
                                                      rf"verbose={verbose!r}"):
        _classifier("cpu").train(X, y, verbose=verbose)


def test_book_spiral_result_and_exact_learning_rate():
    # The book's first full model: 10,000 full-batch epochs of Adam(0.05, decay=5e-7).
    gn.seed(5)
    X, y = gn.datasets.spiral_data(samples=100, classes=3)
    model = gn.Model(device="cpu")
    model.add(gn.Dense(2, 64))
    model.add(gn.ReLU())
    model.add(gn.Dense(64, 3))
    model.add(gn.Softmax())
    model.set(loss=gn.CategoricalCrossentropy(), optimizer=gn.Adam(learning_rate=0.05,
                                                                   decay=5e-7),
              accuracy=gn.CategoricalAccuracy())
    model.finalize()
    history = model.train(X, y, epochs=10000, shuffle=False, verbose=False)
    assert history["learning_rate"][-1] == 0.04975126853296942
    assert history["accuracy"][-1] > 0.9 and history["loss"][-1] < 0.2


def test_minibatches_regression_and_binary(backend):
    X, y = gn.datasets.sine_data(samples=200)
    model = build_model(backend, (1, 32, 1), hidden=gn.Tanh, head="linear", learning_rate=0.02)
    history = model.train(X, y, epochs=300, batch_size=32, verbose=False)
    assert history["loss"][-1] < 0.02

    Xb, yb = gn.datasets.spiral_data(samples=100, classes=2, seed=3)
    binary = gn.Model(device=backend)
    binary.add(gn.Dense(2, 64))
    binary.add(gn.LeakyReLU(0.01))
    binary.add(gn.Dense(64, 1))
    binary.add(gn.Sigmoid())
    binary.set(loss=gn.BinaryCrossentropy(), optimizer=gn.Adam(learning_rate=0.02),
               accuracy=gn.CategoricalAccuracy(binary=True))
    binary.finalize()
    history = binary.train(Xb, yb, epochs=300, batch_size=50, verbose=False)
    assert history["accuracy"][-1] > 0.8


def test_seeded_cpu_training_is_bit_for_bit_repeatable(spiral):
    X, y, *_ = spiral
    runs = []
    for _ in range(2):
        gn.seed(42)
        model = _classifier("cpu", dropout=0.2)
        model.train(X, y, epochs=20, batch_size=32, shuffle=True, verbose=False)
        runs.append(model.get_parameters())
    for (w1, b1), (w2, b2) in zip(*runs):
        assert np.array_equal(w1, w2) and np.array_equal(b1, b2)


def _prediction_bound(model, X):
    """How far two devices' softmax outputs of ``_classifier`` may differ from rounding alone:
    each product within ``product_bound`` of the exact one (any order of summation), one
    rounding per bias addition, ReLU and the max shift exact, the softmax's exp, sum and
    division a few roundings more; doubled, as both devices stray from the exact values."""
    (w1, b1), (w2, b2) = model.get_parameters()
    eps = np.finfo(np.float32).eps
    pre = X.astype(np.float64) @ w1 + b1
    hidden = np.maximum(pre, 0)
    hidden_error = product_bound(X, w1) + eps * np.abs(pre)
    logits = hidden @ w2 + b2
    logits_error = (product_bound(hidden, w2) + hidden_error @ np.abs(w2)
                    + eps * np.abs(logits)).max(axis=1, keepdims=True)
    # softmax moves by at most 2 * max|change of a logit| (exp(d) - 1 ~ d for small d), each
    # output by p_i times that
    return 2 * (2 * logits_error + 8 * eps)


def test_get_and_set_parameters(backend):
    model = _classifier(backend)
    parameters = model.get_parameters()
    assert [tuple(w.shape) for w, _ in parameters] == [(2, 64), (64, 3)]
    assert all(isinstance(w, np.ndarray) for w, _ in parameters)
    parameters[0][0][...] = 0.5
    model.set_parameters(parameters)
    assert (model.get_parameters()[0][0] == 0.5).all()


def test_save_and_load_round_trip(backend, spiral, tmp_path):
    X, y, X_val, _ = spiral
    model = _classifier(backend)
    model.train(X, y, epochs=5, verbose=False)
    model.save(tmp_path / "model.npz")
    for target in {"cpu", backend.device}:
        loaded = gn.Model.load(tmp_path / "model.npz", device=target)
        assert loaded.device == target
        if target == backend.device:
            np.testing.assert_array_equal(loaded.predict(X_val), model.predict(X_val))
        else:  # a GPU sums the products in another order than NumPy: equal up to rounding
            difference = np.abs(loaded.predict(X_val) - model.predict(X_val))
            assert (difference <= _prediction_bound(loaded, X_val)).all(), difference.max()
        assert loaded.optimizer.iterations == 5
        assert repr(loaded.optimizer) == repr(model.optimizer)
        assert loaded.trained_on is None  # nothing recorded, nothing invented
    model.trained_on = {"dataset": "spiral", "seed": 3}
    model.save(tmp_path / "recorded.npz")
    assert gn.Model.load(tmp_path / "recorded.npz", device="cpu").trained_on == model.trained_on
    # training continues identically from the saved state (optimizer state included)
    model.train(X, y, epochs=3, shuffle=False, verbose=False)
    loaded = gn.Model.load(tmp_path / "model.npz", device=backend)
    loaded.train(X, y, epochs=3, shuffle=False, verbose=False)
    for (w1, b1), (w2, b2) in zip(model.get_parameters(), loaded.get_parameters()):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(b1, b2)


def test_save_and_load_parameters(backend, tmp_path):
    model, other = _classifier(backend), _classifier(backend)
    model.save_parameters(tmp_path / "parameters.npz")
    other.load_parameters(tmp_path / "parameters.npz")
    for (w1, b1), (w2, b2) in zip(model.get_parameters(), other.get_parameters()):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(b1, b2)


def test_model_moves_between_devices_with_its_optimizer_state(backend, spiral):
    X, y, *_ = spiral
    model = _classifier("cpu")
    model.train(X, y, epochs=2, verbose=False)
    before = model.optimizer.state["momentums"].copy()
    model.to(backend)
    assert model.device == backend.device
    np.testing.assert_array_equal(backend.to_numpy(model.optimizer.state["momentums"]), before)
    model.train(X, y, epochs=1, verbose=False)


def test_ctrl_c_returns_the_history_so_far(spiral):
    X, y, *_ = spiral
    model = _classifier("cpu")

    def interrupt(epoch, logs):
        if epoch == 3:
            os.kill(os.getpid(), signal.SIGINT)

    history = model.train(X, y, epochs=50, batch_size=30, verbose=False, on_epoch_end=interrupt)
    assert history.interrupted and len(history["loss"]) == 3


def test_ctrl_c_under_a_bar_ends_the_bar_before_saying_so(spiral, capsys, monkeypatch):
    X, y, *_ = spiral
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)

    def interrupt(epoch, step, steps):
        if (epoch, step) == (2, 3):
            os.kill(os.getpid(), signal.SIGINT)

    history = _classifier("cpu").train(X, y, epochs=5, batch_size=16, on_batch_end=interrupt)
    lines = capsys.readouterr().out.split("\n")
    assert history.interrupted and len(history["loss"]) == 1
    assert lines[-2] == "interrupted in epoch 2; returning the history so far"
    assert "epoch 2/5" in lines[-3] and "%|" in lines[-3]  # the bar, left as it stopped


def test_divergence_stops_with_the_epoch_and_step(backend, spiral):
    X, y, *_ = spiral
    model = gn.Model(device=backend)
    model.add(gn.Dense(2, 64))
    model.add(gn.ReLU())
    model.add(gn.Dense(64, 3))
    model.add(gn.Softmax())
    model.set(loss=gn.CategoricalCrossentropy(), optimizer=gn.SGD(learning_rate=1e30),
              accuracy=gn.CategoricalAccuracy())
    model.finalize()
    with pytest.raises(gn.TrainingDivergedError, match=r"in epoch \d+, step \d+; the parameters"):
        model.train(X, y, epochs=50, verbose=False)
    assert np.isfinite(model.get_parameters()[0][0]).all()


def test_divergence_of_the_regularization_loss_is_caught_at_the_epoch_end(backend, spiral):
    X, y, *_ = spiral
    model = _classifier(backend, optimizer=gn.SGD(learning_rate=1e30))
    with pytest.raises(gn.TrainingDivergedError, match=r"at the end of epoch \d+ "
                                                       r"\(regularization loss inf\)"):
        model.train(X, y, epochs=50, verbose=False)


# ---- bad input: refused before anything changes ---------------------------------------------

def _snapshot(model):
    return ([p.copy() for pair in model.get_parameters() for p in pair],
            model.optimizer.iterations,
            {k: model.backend.to_numpy(v).copy() for k, v in model.optimizer.saved_state().items()})


def _unchanged(model, snapshot):
    after = _snapshot(model)
    assert all(np.array_equal(a, b) for a, b in zip(snapshot[0], after[0]))
    assert snapshot[1] == after[1]
    assert snapshot[2].keys() == after[2].keys()
    assert all(np.array_equal(snapshot[2][k], after[2][k]) for k in snapshot[2])


X_OK = np.zeros((4, 2), np.float32)
Y_OK = np.array([0, 1, 2, 0])
BAD_TRAIN = [
    ({"X": np.zeros((4, 3))}, "X has 3 features per sample but the first layer"),
    ({"X": np.zeros((4, 2, 1))}, "X must be 2-D"),
    ({"X": np.array([[np.nan, 0]] * 4)}, "X contains NaN or inf"),
    ({"X": np.zeros((0, 2)), "y": np.zeros(0)}, "X is empty"),
    ({"y": np.array([0, 1, 2])}, "y has 3 labels but X has 4 samples"),
    ({"y": np.array([0, 1, 3, 0])}, "must be in 0..2"),
    ({"y": np.array([0, -1, 2, 0])}, "must be in 0..2"),
    ({"y": np.array([0.0, 1.5, 2.0, 0.0])}, "whole class indices"),
    ({"y": np.eye(4)}, "one-hot with 4 columns"),
    ({"X": "data"}, "X must be an array"),
    ({"X": np.array([["a", "b"]] * 4)}, "X must hold numbers"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"epochs": -1}, "epochs must be >= 1"),
    ({"validation_data": (X_OK,)}, "validation_data must be a pair"),
    ({"validation_data": (X_OK, np.array([0, 1, 7, 0]))}, "y_val holds class indices"),
]


@pytest.mark.parametrize("change, message", BAD_TRAIN)
def test_bad_training_input_is_refused_and_changes_nothing(backend, spiral, change, message):
    X, y, *_ = spiral
    model = _classifier(backend)
    model.train(X, y, epochs=1, verbose=False)
    snapshot = _snapshot(model)
    arguments = {"X": X_OK, "y": Y_OK, "epochs": 2, "verbose": False, **change}
    with pytest.raises(gn.GpunnError, match=message) as raised:
        model.train(arguments.pop("X"), arguments.pop("y"), **arguments)
    assert isinstance(raised.value, (ValueError, TypeError))
    _unchanged(model, snapshot)


@pytest.mark.parametrize("parameters, message", [
    ([], "expects 2 \\(weights, biases\\) pairs"),
    ([(np.zeros((2, 64)), np.zeros((1, 64))), (np.zeros((64, 4)), np.zeros((1, 3)))],
     r"weights of layer 1 \(Dense\(64, 3\)\) must have shape \(64, 3\); received \(64, 4\)"),
    ([(np.zeros((2, 64)), np.zeros((1, 64))), (np.full((64, 3), np.inf), np.zeros((1, 3)))],
     "contains NaN or inf"),
])
def test_bad_parameters_are_refused_and_change_nothing(backend, parameters, message):
    model = _classifier(backend)
    snapshot = _snapshot(model)
    with pytest.raises(gn.InvalidArgumentError, match=message):
        model.set_parameters(parameters)
    _unchanged(model, snapshot)


def test_mismatched_layers_are_refused_at_finalize():
    model = gn.Model(device="cpu")
    model.add(gn.Dense(2, 8))
    model.add(gn.Dense(4, 3))
    with pytest.raises(gn.InvalidArgumentError, match=r"Dense\(4, 3\) expects 4 inputs but the "
                                                      r"layer before it, Dense\(2, 8\), gives 8"):
        model.finalize()


def test_using_a_model_before_finalize_or_set_says_what_to_call():
    model = gn.Model(device="cpu")
    model.add(gn.Dense(2, 3))
    with pytest.raises(gn.GpunnError, match=r"model.set\(loss=..., optimizer=..., accuracy=...\)"):
        model.train(X_OK, Y_OK)
    with pytest.raises(gn.GpunnError, match="model.finalize()"):
        model.predict(X_OK)
    with pytest.raises(gn.InvalidTypeError, match="Model.add expects a gpunn layer"):
        model.add("Dense")


@pytest.mark.parametrize("content", [
    b"", b"not a zip at all", b"PK\x03\x04 truncated",
])
def test_loading_garbage_is_refused(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(gn.FileFormatError):
        gn.Model.load(path, device="cpu")


def test_loading_pickles_foreign_and_other_versions_is_refused(tmp_path):
    import pickle

    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"parameters": [1, 2, 3]}))
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, parameters=np.zeros(3))
    objects = tmp_path / "objects.npz"
    np.savez(objects, __gpunn__=np.array([{"format": "gpunn"}], dtype=object))
    for path in (pickled, foreign, objects):
        with pytest.raises(gn.FileFormatError):
            gn.Model.load(path, device="cpu")

    model = _classifier("cpu")
    model.save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as archive:
        arrays = dict(archive)
    header = bytes(arrays["__gpunn__"]).replace(b'"version": 1', b'"version": 99')
    np.savez(tmp_path / "future.npz", **{**arrays, "__gpunn__": np.frombuffer(header, np.uint8)})
    with pytest.raises(gn.FileFormatError, match="version 99"):
        gn.Model.load(tmp_path / "future.npz", device="cpu")
    truncated = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(truncated[: len(truncated) // 2])
    with pytest.raises(gn.FileFormatError):
        gn.Model.load(tmp_path / "truncated.npz", device="cpu")


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    model = _classifier("cpu")
    path = tmp_path / "model.npz"
    model.save(path)
    before = path.read_bytes()

    def fail_part_way(file, **arrays):
        file.write(b"PK partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", fail_part_way)
    with pytest.raises(OSError, match="No space left"):
        model.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_out_of_memory_names_the_step_suggests_a_batch_size_and_keeps_parameters(spiral,
                                                                                  monkeypatch):
    X, y, *_ = spiral
    model = _classifier("cpu")
    saved = {}

    def remember(epoch, logs):
        saved["parameters"] = model.get_parameters()
        saved["iterations"] = model.optimizer.iterations
        dense = model.layers[0]
        original = dense.forward

        def exhausted(*args, **kwargs):
            if dense.inputs.shape[0] == 64:  # the second step of epoch 2
                saved["before_failure"] = model.get_parameters()
                raise MemoryError("Out of memory allocating 1,073,741,824 bytes")
            return original(*args, **kwargs)

        monkeypatch.setattr(dense, "forward", exhausted)

    with pytest.raises(gn.DeviceOutOfMemoryError,
                       match=r"cpu ran out of memory in epoch 2, step 2 \(Out of memory allocating "
                             r"1,073,741,824 bytes\).*Try batch_size=32"):
        model.train(X, y, epochs=3, batch_size=64, shuffle=False, verbose=False,
                    on_epoch_end=lambda epoch, logs: epoch == 1 and remember(epoch, logs))
    # step 1 of epoch 2 completed; step 2 failed before any update
    assert model.optimizer.iterations == saved["iterations"] + 1
    for (w1, b1), (w2, b2) in zip(saved["before_failure"], model.get_parameters()):
        assert np.array_equal(w1, w2) and np.array_equal(b1, b2)
    assert isinstance(gn.DeviceOutOfMemoryError("x"), MemoryError)


def test_data_the_device_should_not_hold_moves_one_batch_at_a_time(backend, spiral, monkeypatch):
    X, y, X_val, y_val = spiral
    results = []
    for holds in (True, False):
        monkeypatch.setattr(type(backend), "holds", lambda self, nbytes, holds=holds: holds)
        gn.seed(3)
        model = _classifier(backend, dropout=0.1)
        history = model.train(X, y, epochs=3, batch_size=64, validation_data=(X_val, y_val),
                              verbose=False)
        results.append((history["loss"], model.evaluate(X_val, y_val), model.predict(X_val)))
    (loss_on, evaluated_on, predicted_on), (loss_off, evaluated_off, predicted_off) = results
    assert loss_on == loss_off and evaluated_on == evaluated_off
    np.testing.assert_array_equal(predicted_on, predicted_off)


@pytest.mark.parametrize("holds", [True, False], ids=["data-on-device", "data-on-host"])
@pytest.mark.parametrize("labels", ["indices", "float-indices", "one-hot", "regression"])
def test_labels_and_targets_go_where_the_data_goes(backend, spiral, monkeypatch, holds, labels):
    # On CUDA, X indexed by a device permutation met y still in host memory: CuPy refuses that
    # (every shuffled CUDA training with class labels failed in its first epoch).
    monkeypatch.setattr(type(backend), "holds", lambda self, nbytes: holds)
    X, y, X_val, y_val = spiral
    targets = {"indices": lambda v: v, "float-indices": lambda v: v.astype(np.float32),
               "one-hot": lambda v: np.eye(3, dtype=np.float32)[v],
               "regression": lambda v: (v.astype(np.float32) / 2).reshape(-1, 1)}[labels]
    if labels == "regression":
        model = build_model(backend, (2, 16, 1), head="linear", learning_rate=0.01)
    else:
        model = _classifier(backend, dropout=0.1)
    history = model.train(X, targets(y), epochs=2, batch_size=64, shuffle=True,
                          validation_data=(X_val, targets(y_val)), verbose=False)
    assert len(history["val_loss"]) == 2 and np.isfinite(history["loss"][-1])
    loss, _ = model.evaluate(X_val, targets(y_val), batch_size=100)
    assert np.isfinite(loss) and model.predict(X_val, batch_size=50).shape[0] == len(X_val)


def test_plus_minus_one_labels_are_classes_zero_and_one_as_on_the_command_line(backend):
    X, y = gn.datasets.spiral_data(30, 2, seed=0)
    signs = 2 * y.astype(np.int64) - 1
    results = []
    for labels in (y, signs):
        gn.seed(0)
        model = build_model(backend, (2, 16, 2), learning_rate=0.01)
        history = model.train(X, labels, epochs=3, validation_data=(X, labels), verbose=False)
        results.append((history["loss"], history["val_accuracy"], model.evaluate(X, labels)))
    assert results[0] == results[1]


def test_a_model_on_a_second_device_stays_there_whatever_device_is_current(
        second_cuda_device, spiral, tmp_path):
    # CuPy allocates, computes and draws random numbers on the *current* device; a model on
    # cuda:1 must do all of that on cuda:1 while cuda:0 is current.
    cupy = second_cuda_device.xp
    X, y, X_val, y_val = spiral
    runs = []
    for device in ("cuda:0", "cuda:1"):
        assert cupy.cuda.runtime.getDevice() == 0
        gn.seed(11)
        model = _classifier(device, dropout=0.2)
        history = model.train(X, y, epochs=3, batch_size=64, validation_data=(X_val, y_val),
                              verbose=False)
        runs.append((history, model.evaluate(X_val, y_val), model.predict(X_val),
                     model.get_parameters()))
        assert cupy.cuda.runtime.getDevice() == 0
    history, evaluated, predicted, parameters = runs[1]
    assert history == runs[0][0] and evaluated == runs[0][1]
    np.testing.assert_array_equal(predicted, runs[0][2])
    arrays = [model.parameters, model.gradients, *model.optimizer.state.values(),
              *(getattr(layer, name) for layer in model.trainable_layers
                for name in ("weights", "biases", "dweights", "dbiases"))]
    assert {array.device.id for array in arrays} == {1}

    model.set_parameters(parameters)
    model.save(tmp_path / "model.npz")
    loaded = gn.Model.load(tmp_path / "model.npz", device="cuda:1")
    assert loaded.parameters.device.id == 1
    np.testing.assert_array_equal(loaded.predict(X_val), predicted)
    moved = loaded.to("cuda:0").to("cuda:1")
    assert {a.device.id for a in moved.optimizer.state.values()} == {1}
    moved.train(X, y, epochs=1, batch_size=64, verbose=False)
    assert cupy.cuda.runtime.getDevice() == 0


def _torch():
    try:
        import torch
    except ImportError:
        torch = None
    require(torch is not None, "PyTorch is not installed (the interchange reference; CI installs "
                               "the CPU build)")
    return torch


def test_pytorch_tensors_train_evaluate_and_predict_like_numpy_arrays(backend, spiral):
    torch = _torch()
    X, y, X_val, y_val = spiral
    results = []
    for convert in (lambda a: a, torch.from_numpy):
        gn.seed(5)
        model = _classifier(backend)
        history = model.train(convert(X), convert(y.astype(np.int64)), epochs=3, batch_size=64,
                              validation_data=(convert(X_val), convert(y_val.astype(np.int64))),
                              verbose=False)
        results.append((history, model.evaluate(convert(X_val), convert(y_val)),
                        model.predict(convert(X_val))))
    assert results[0][:2] == results[1][:2]
    np.testing.assert_array_equal(results[0][2], results[1][2])


def test_host_tensors_are_shared_not_copied_on_the_cpu(spiral):
    torch = _torch()
    X, y, *_ = spiral
    tensor = torch.from_numpy(X)  # float32, the model's dtype
    prepared, _ = _data.prepare(_classifier("cpu"), tensor, torch.from_numpy(y), "X", "y")
    assert np.shares_memory(prepared, tensor.numpy())


def test_a_tensor_that_requires_grad_says_detach(spiral):
    torch = _torch()
    X, *_ = spiral
    with pytest.raises(gn.InvalidTypeError, match=r"X\.detach\(\)"):
        _classifier("cpu").predict(torch.from_numpy(X).requires_grad_())


class _GpuArray:
    """Any array that says, through DLPack, that it lives on a CUDA device."""

    def __init__(self, index):
        self.index = index

    def __dlpack_device__(self):
        return (2, self.index)

    def __dlpack__(self, **kwargs):
        raise AssertionError("gpunn must not read an array from another device")


def test_arrays_on_another_device_are_refused_with_how_to_move_them(backend, spiral):
    X, *_ = spiral
    model = _classifier(backend)
    other = 1 if backend.device == "cuda:0" else 0
    with pytest.raises(gn.InvalidArgumentError, match=rf"X is on cuda:{other} but the model is "
                                                      rf"on {backend.device}.*\.to\("):
        model.predict(_GpuArray(other))


def test_a_cupy_array_of_another_gpu_is_refused(second_cuda_device, spiral):
    X, *_ = spiral
    model = _classifier("cuda:0")
    with pytest.raises(gn.InvalidArgumentError, match="X is on cuda:1 but the model is on "
                                                      "cuda:0"):
        model.predict(second_cuda_device.asarray(X))


def test_predict_can_keep_the_outputs_on_the_device(backend, spiral):
    X, y, X_val, _ = spiral
    model = _classifier(backend)
    model.train(X, y, epochs=2, verbose=False)
    device_X = backend.asarray(X_val)
    for batch_size in (None, 64):
        kept = model.predict(device_X, batch_size=batch_size, as_device_array=True)
        assert backend.is_array(kept) and kept.shape == (len(X_val), 3)
        np.testing.assert_array_equal(backend.to_numpy(kept),
                                      model.predict(X_val, batch_size=batch_size))
    if backend.device != "cpu":  # data already on the device is used as it is
        assert _data.prepare(model, device_X, None, "X", None)[0] is device_X


def _scaled_features(samples, seed):
    """Two classes split by x0 + x1 after scaling; raw, x0 is in thousands and x1 in
    thousandths."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((samples, 2))
    return z * [1e3, 1e-3] + [5e3, 0.0], (z.sum(axis=1) > 0).astype(np.int64)


def test_a_standardize_first_layer_travels_with_the_model(backend, tmp_path):
    X, y = _scaled_features(200, seed=0)
    X_new, _ = _scaled_features(50, seed=1)
    gn.seed(0)
    model = gn.Model(device=backend)
    model.add(gn.Standardize.fit(X))
    model.add(gn.Dense(2, 16))
    model.add(gn.ReLU())
    model.add(gn.Dense(16, 2))
    model.add(gn.Softmax())
    model.set(loss=gn.CategoricalCrossentropy(), optimizer=gn.Adam(learning_rate=0.02),
              accuracy=gn.CategoricalAccuracy())
    model.finalize()
    assert model.trainable_layers[0].compute_dinputs is False  # nobody uses that gradient
    history = model.train(X, y, epochs=200, verbose=False)
    assert history["accuracy"][-1] > 0.95  # from raw features in thousands and thousandths
    model.save(tmp_path / "model.npz")
    loaded = gn.Model.load(tmp_path / "model.npz", device=backend)
    assert isinstance(loaded.layers[0], gn.Standardize)
    assert loaded.layers[0].mean_values == model.layers[0].mean_values  # exact, as floats
    np.testing.assert_array_equal(loaded.predict(X_new), model.predict(X_new))
    assert loaded.evaluate(X, y) == model.evaluate(X, y)
    with pytest.raises(gn.InvalidArgumentError, match=r"the first layer, Standardize\(2 "
                       r"features\), expects 2"):
        loaded.predict(np.zeros((3, 5)))


def test_a_standardize_of_another_width_than_the_first_dense_is_refused():
    model = gn.Model(device="cpu")
    model.add(gn.Standardize([0.0] * 3, [1.0] * 3))
    model.add(gn.Dense(2, 4))
    with pytest.raises(gn.InvalidArgumentError, match=r"Dense\(2, 4\) expects 2 inputs but the "
                       r"layer before it, Standardize\(3 features\), gives 3"):
        model.finalize()


def _address(array) -> int:
    """Where an array's first element lives: a host address or a device pointer."""
    data = getattr(array, "data", None)
    return data.ptr if hasattr(data, "ptr") else array.__array_interface__["data"][0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_weight_and_bias_starts_256_bytes_aligned(backend, dtype, tmp_path):
    # Packed end to end, a layer of odd width left the next array at an odd offset: cuBLAS's
    # operands lose 16-byte alignment and with it its fastest kernels (cuBLAS recommends 256).
    # The files keep the packed layout, so the gaps change no file.
    model = gn.Model(device=backend, dtype=dtype)
    for n_inputs, n_neurons in ((3, 7), (7, 5), (5, 3)):
        model.add(gn.Dense(n_inputs, n_neurons))
        model.add(gn.ReLU())
    model.set(loss=gn.MeanSquaredError(), optimizer=gn.Adam(),
              accuracy=gn.RegressionAccuracy())
    model.finalize()
    for layer in model.trainable_layers:
        for array, flat in ((layer.weights, model.parameters), (layer.biases, model.parameters),
                            (layer.dweights, model.gradients), (layer.dbiases, model.gradients)):
            assert (_address(array) - _address(flat)) % 256 == 0
    X = np.random.default_rng(0).standard_normal((16, 3)).astype(dtype)
    model.train(X, X, epochs=2, batch_size=8, verbose=False)
    model.save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as saved:
        assert saved["parameters"].size == 3 * 7 + 7 + 7 * 5 + 5 + 5 * 3 + 3
    loaded = gn.Model.load(tmp_path / "model.npz", device=backend)
    for (w1, b1), (w2, b2) in zip(loaded.get_parameters(), model.get_parameters()):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(backend.to_numpy(loaded.optimizer.state["cache"]),
                                  backend.to_numpy(model.optimizer.state["cache"]))


def test_summary_counts_parameters_as_pytorch_does_and_names_the_policy(capsys):
    torch = pytest.importorskip("torch")
    model = gn.Model(device="cpu")
    for layer in (gn.Standardize([0.0] * 5, [1.0] * 5), gn.Dense(5, 32), gn.ReLU(),
                  gn.Dropout(0.2), gn.Dense(32, 16), gn.Tanh(), gn.Dense(16, 3), gn.Softmax()):
        model.add(layer)
    model.set(loss=gn.CategoricalCrossentropy(), optimizer=gn.Adam(),
              accuracy=gn.CategoricalAccuracy())
    model.summary()
    before = capsys.readouterr().out
    assert before.rstrip().endswith("not finalized yet (model.finalize())")
    model.finalize()
    model.summary()
    lines = capsys.readouterr().out.strip().split("\n")
    reference = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.ReLU(),
                                    torch.nn.Linear(32, 16), torch.nn.Tanh(),
                                    torch.nn.Linear(16, 3))
    counts = [int(line.split()[-1].replace(",", "")) for line in lines[1:9]]
    theirs = [p.numel() for p in reference.parameters()]
    assert counts == [10, sum(theirs[0:2]), 0, 0, sum(theirs[2:4]), 0, sum(theirs[4:6]), 0]
    assert [line.split()[-2] for line in lines[1:9]] == ["5", "32", "32", "32", "16", "16",
                                                          "3", "3"]
    trainable = sum(theirs)
    assert lines[9] == (f"Total parameters: {trainable + 10:,} "
                        f"({(trainable + 10) * 4 / 1024:,.1f} KiB as float32): "
                        f"{trainable:,} trainable, 10 fixed")
    assert lines[-1] == "Precision float32, device cpu"
    assert "optimizer Adam(learning_rate=0.001" in lines[-2]
    assert "\n" not in repr(model)
