"""The training loop (gpunn/training.py): metrics kept on the device, divergence, CUDA graphs and
host data streamed through pinned memory. The CUDA cases run on a GPU or, with
``pytest --cupy-double``, on the double's simulated devices (cuda-sim:N, not a GPU)."""

from __future__ import annotations

import logging
import os
import re
import signal

import numpy as np
import pytest
from helpers import build_model

import gpunn as gn
from gpunn.backend import streaming

OPTIMIZERS = {
    "sgd": lambda: gn.SGD(learning_rate=0.5, decay=1e-3),
    "sgd_momentum": lambda: gn.SGD(learning_rate=0.5, decay=1e-3, momentum=0.9),
    "adagrad": lambda: gn.Adagrad(learning_rate=0.5, decay=1e-3),
    "rmsprop": lambda: gn.RMSprop(learning_rate=0.01, decay=1e-3),
    "adam": lambda: gn.Adam(learning_rate=0.02, decay=1e-3),
}


def _data(samples=70, features=4, classes=3):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((samples, features)).astype(np.float32)
    return X, rng.integers(0, classes, samples)


def _model(backend, optimizer="adam", *, dropout=0.0, head="softmax", sizes=(4, 16, 16, 3)):
    gn.seed(11)
    model = build_model(backend, sizes, head=head)
    if dropout:
        model.layers.insert(2, gn.Dropout(dropout))
    model.set(optimizer=OPTIMIZERS[optimizer]())
    model.finalize()
    return model


def _train(backend, *, cuda_graph, X, y, epochs=3, batch_size=16, **kwargs):
    model = _model(backend, **kwargs)
    gn.seed(12)  # shuffling and dropout masks drawn alike in both runs
    sim = _simulated() if backend.device != "cpu" else None
    if sim is not None:
        sim.reset_counters()  # what training does, not building the model
    history = model.train(X, y, epochs=epochs, batch_size=batch_size, cuda_graph=cuda_graph,
                          verbose=False)
    return model, history


def _simulated():
    import cupy

    return getattr(cupy, "_sim", None)


def _cuda_only(backend):
    if backend.device == "cpu":
        pytest.skip("CUDA graphs are a CUDA feature: this runs on cuda (a GPU or the double)")


def assert_same_training(first, second):
    (model_a, history_a), (model_b, history_b) = first, second
    for (wa, ba), (wb, bb) in zip(model_a.get_parameters(), model_b.get_parameters()):
        np.testing.assert_array_equal(wa, wb)
        np.testing.assert_array_equal(ba, bb)
    assert model_a.optimizer.iterations == model_b.optimizer.iterations
    for key in history_a:
        # Loss sums are added with atomics on a GPU, in any order: the last bits may differ.
        np.testing.assert_allclose(history_a[key], history_b[key], rtol=1e-6, err_msg=key)


def assert_captured(history, replays):
    """The step ran as a CUDA graph: said by the history, and on the double, counted."""
    assert history.cuda_graph == "captured"
    sim = _simulated()
    if sim is not None:
        assert sim.counters["graph_launch"] == replays


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_cuda_graphs_change_no_result(backend, optimizer):
    _cuda_only(backend)
    X, y = _data()  # 70 samples in batches of 16: a shorter last batch in every epoch
    plain = _train(backend, cuda_graph=False, X=X, y=y, optimizer=optimizer)
    assert plain[1].cuda_graph == "off: cuda_graph=False"
    graphed = _train(backend, cuda_graph=True, X=X, y=y, optimizer=optimizer)
    # 3 epochs of 5 steps; each shape's first step (of 16 rows, and of the last 6) runs plain,
    # its second is captured and launched, the rest replay
    assert_captured(graphed[1], replays=3 * 5 - 2)
    assert_same_training(plain, graphed)


@pytest.mark.parametrize("head", ["sigmoid", "linear", "one-hot softmax"])
def test_cuda_graphs_with_dropout_and_other_losses(backend, head):
    _cuda_only(backend)
    X, y = _data()
    if head != "linear":  # one-hot labels: the book's Softmax and cross-entropy, not the fused
        y = (y[:, None] == np.arange(3)).astype(np.float32)
    else:
        y = X[:, :3] * 0.5
    kwargs = {"head": head.split()[-1], "dropout": 0.2, "optimizer": "adam"}
    plain = _train(backend, cuda_graph=False, X=X, y=y, **kwargs)
    graphed = _train(backend, cuda_graph=True, X=X, y=y, **kwargs)
    assert_captured(graphed[1], replays=3 * 5 - 2)
    assert_same_training(plain, graphed)


def test_the_spiral_models_full_batch_step_is_captured(backend):
    _cuda_only(backend)
    X, y = gn.datasets.spiral_data(samples=100, classes=3, seed=0)
    runs = []
    for cuda_graph in (False, True):
        gn.seed(5)
        model = build_model(backend, (2, 64, 3))
        model.finalize()
        sim = _simulated()
        if sim is not None:
            sim.reset_counters()
        runs.append((model, model.train(X, y, epochs=6, cuda_graph=cuda_graph, verbose=False)))
    assert_captured(runs[1][1], replays=6 - 1)  # one step an epoch
    assert_same_training(*runs)


@pytest.mark.parametrize("change", ["learning rate", "dropout rate", "reseed",
                                    "loss scaler setting"])
def test_a_change_between_steps_is_captured_again_not_replayed_stale(backend, change):
    # A captured step bakes in the host values it passed (learning rate, dropout rate, the loss
    # scaler's settings) and the dropout generator: changed by a callback, the graph must be
    # captured again.
    _cuda_only(backend)
    X, y = _data()
    results = []
    for cuda_graph in (False, True):
        model = _model(backend, "sgd", dropout=0.3)
        if change == "loss scaler setting":
            model.set(precision="float16")
            model.finalize()

        def change_at(epoch, step, steps, model=model):
            if (epoch, step) != (2, 1):
                return
            if change == "learning rate":
                model.optimizer.learning_rate *= 0.1
            elif change == "dropout rate":
                model.layers[2].rate = 0.6
            elif change == "loss scaler setting":
                model.precision.scaler.growth_interval = 8  # from 2,000: grows at step 8
            else:
                gn.seed(99)

        gn.seed(12)
        history = model.train(X, y, epochs=3, batch_size=16, cuda_graph=cuda_graph,
                              on_batch_end=change_at, verbose=False)
        results.append((model, history))
    assert results[1][1].cuda_graph == "captured"
    assert_same_training(*results)


def test_without_nvmath_the_step_runs_plain_and_says_why(backend, monkeypatch, caplog):
    _cuda_only(backend)
    from gpunn.backend import blas

    def missing():
        raise ImportError("No module named 'nvmath'")

    monkeypatch.setattr(blas, "load", missing)
    monkeypatch.setattr(backend, "_blas", None)
    monkeypatch.setattr(backend, "_blas_error", None)  # remembered per device once it failed
    X, y = _data()
    plain = _train(backend, cuda_graph=False, X=X, y=y)
    with caplog.at_level(logging.INFO, logger="gpunn"):
        graphed = _train(backend, cuda_graph=True, X=X, y=y)
    assert graphed[1].cuda_graph.startswith(
        f"off: matrix products cannot be captured on {backend.device}: No module named")
    assert any("training without CUDA graphs" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert_same_training(plain, graphed)


def test_the_cpu_says_it_runs_no_cuda_graphs():
    X, y = _data()
    _, history = _train(gn.device("cpu"), cuda_graph=True, X=X, y=y, epochs=1)
    assert history.cuda_graph == "off: the CPU runs no CUDA graphs"


class _SyncingLoss(gn.MeanSquaredError):
    """A loss that reads a device value in every step: a step CUDA cannot capture."""

    def forward(self, y_pred, y_true):
        self.seen = float(y_pred.sum())
        return super().forward(y_pred, y_true)


def test_a_step_that_cannot_be_captured_runs_without_graphs(backend, caplog):
    _cuda_only(backend)
    X, _ = _data()
    y = X[:, :3] * 0.5
    results = []
    for cuda_graph in (False, True):
        model = _model(backend, head="linear")
        model.set(loss=_SyncingLoss())
        model.finalize()
        gn.seed(12)
        with caplog.at_level(logging.INFO, logger="gpunn"):
            history = model.train(X, y, epochs=2, batch_size=16, cuda_graph=cuda_graph,
                                  verbose=False)
        results.append((model, history))
    said = [r for r in caplog.records if "without CUDA graphs" in r.getMessage()]
    # one INFO line for the failed capture (and one for the run with cuda_graph=False)
    assert [r.levelno for r in said] == [logging.INFO, logging.INFO]
    assert "the capture failed" in said[1].getMessage()
    assert results[1][1].cuda_graph.startswith("off: the capture failed (RuntimeError: the "
                                               "current stream is capturing")
    assert_same_training(*results)


def test_divergence_leaves_the_parameters_from_before_the_diverging_step(backend):
    X, y = _data()
    model = _model(backend, "sgd")
    model.set(optimizer=gn.SGD(learning_rate=1e30))
    model.finalize()
    snapshots = {}

    def remember(epoch, step, steps):
        snapshots[(epoch, step)] = [w.copy() for pair in model.get_parameters() for w in pair]

    initial = [w.copy() for pair in model.get_parameters() for w in pair]
    with pytest.raises(gn.TrainingDivergedError,
                       match=r"in epoch (\d+), step (\d+); the parameters are those before"
                       ) as raised:
        model.train(X, y, epochs=20, batch_size=16, on_batch_end=remember, verbose=False)
    epoch, step = (int(n) for n in re.search(r"epoch (\d+), step (\d+)",
                                             str(raised.value)).groups())
    before = snapshots.get((epoch, step - 2)) if step > 1 else (
        snapshots[max(k for k in snapshots if k[0] == epoch - 1)] if epoch > 1 else initial)
    after = [w for pair in model.get_parameters() for w in pair]
    for expected, actual in zip(before, after):
        np.testing.assert_array_equal(actual, expected)
        assert np.isfinite(actual).all()


def test_host_data_streams_through_pinned_memory(backend, monkeypatch):
    _cuda_only(backend)
    X, y = _data()
    on_device = _train(backend, cuda_graph=True, X=X, y=y)
    monkeypatch.setattr(type(backend), "holds", lambda self, nbytes: False)
    streamed = _train(backend, cuda_graph=True, X=X, y=y)
    sim = _simulated()
    if sim is not None:  # X and y of every batch, nothing else
        assert sim.counters["h2d"] == 2 * 3 * 5
    assert_same_training(on_device, streamed)


def _leave_early(model, leave, X, y):
    """Train until on_batch_end leaves the first epoch after its second batch."""

    def stop(epoch, index, steps):
        if index == 1 and leave == "exception":
            raise RuntimeError("stopped by on_batch_end")
        if index == 1:
            os.kill(os.getpid(), signal.SIGINT)

    if leave == "exception":
        with pytest.raises(RuntimeError, match="stopped by on_batch_end"):
            model.train(X, y, epochs=2, batch_size=16, on_batch_end=stop, verbose=False)
    else:
        history = model.train(X, y, epochs=2, batch_size=16, on_batch_end=stop, verbose=False)
        assert history.interrupted and not history.get("loss")


@pytest.mark.parametrize("leave", ["exception", "ctrl-c"])
def test_an_epoch_left_early_waits_for_its_copies_before_freeing_their_buffers(backend,
                                                                              monkeypatch, leave):
    # Left after its second batch, while the copy of the third may still be running; the double
    # also fails the test if pinned memory was freed before the host waited for its copies.
    _cuda_only(backend)
    monkeypatch.setattr(type(backend), "holds", lambda self, nbytes: False)
    copy_streams, synchronized = [], []
    make, synchronize = streaming.HostToDevice.__init__, backend.xp.cuda.Stream.synchronize

    def spy_make(self, *args, **kwargs):
        make(self, *args, **kwargs)
        copy_streams.append(self.copy_stream)

    def spy_synchronize(self):
        synchronized.append(self)
        synchronize(self)

    monkeypatch.setattr(streaming.HostToDevice, "__init__", spy_make)
    monkeypatch.setattr(backend.xp.cuda.Stream, "synchronize", spy_synchronize)
    _leave_early(_model(backend), leave, *_data())
    assert len(copy_streams) == 1 and any(s is copy_streams[0] for s in synchronized)


@pytest.mark.parametrize("leave", ["exception", "ctrl-c"])
def test_the_loop_closes_the_epochs_batches_when_it_leaves_early(backend, monkeypatch, leave):
    # Then host-streamed buffers are released at once, after their copies, on any Python; an
    # abandoned generator is closed only when collected (at once in CPython, by reference count).
    closed = []
    batches = streaming.batches

    class Batches:
        def __init__(self, *args):
            self.feed = batches(*args)

        def __iter__(self):
            return self

        def __next__(self):
            return next(self.feed)

        def close(self):
            closed.append(True)
            self.feed.close()

    monkeypatch.setattr(streaming, "batches", Batches)
    _leave_early(_model(backend), leave, *_data())
    assert closed == [True]


def test_the_cli_trains_without_cuda_graphs_when_asked(tmp_path, capsys):
    from gpunn import cli

    code = cli.main(["train", "--epochs", "2", "--out", str(tmp_path / "run"),
                     "--no-cuda-graph"])
    assert code == 0 and (tmp_path / "run" / "model.npz").is_file()
    if gn.device("auto").fused:  # CUDA says so; the CPU, which runs no graphs, says nothing
        assert "CUDA graph: off (--no-cuda-graph)" in capsys.readouterr().out.splitlines()[:4]
    else:
        assert "CUDA graph" not in capsys.readouterr().out
