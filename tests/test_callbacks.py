"""Callbacks (gpunn/callbacks.py): Keras' EarlyStopping, ModelCheckpoint, ReduceLROnPlateau and
LearningRateScheduler, the stop flag, validation_split; the schedules against PyTorch's, the
rules against Keras' documented examples, and no synchronisation per step on CUDA (counted by
the CuPy double)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import build_model

import gpunn as gn
from gpunn import callbacks as cb
from gpunn import io


def _data(samples=60):
    X, y = gn.datasets.spiral_data(samples // 3, 3, seed=4)
    order = np.random.default_rng(0).permutation(len(X))  # the split's tail holds every class
    return X[order], y[order]


def _model(backend, learning_rate=0.01, sizes=(2, 16, 3)):
    gn.seed(5)
    return build_model(backend, list(sizes), learning_rate=learning_rate)


def _driven(callback, values, *, monitor="val_loss", learning_rate=0.1):
    """Run ``callback`` over epochs whose ``monitor`` takes ``values``, on a small model, as
    the loop would; returns the epochs run and the learning rate of each."""
    model = _model("cpu", learning_rate)
    metrics = ["loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
    callbacks = cb.CallbackList([callback], model, {"metrics": metrics, "first": 1})
    model.stop_training = False
    callbacks.train_begin()
    rates, epochs = [], 0
    for epoch, value in enumerate(values, start=1):
        callbacks.epoch_begin(epoch)
        rates.append(model.optimizer.learning_rate)
        epochs = epoch
        callbacks.epoch_end(epoch, {name: 0.5 for name in metrics} | {monitor: value})
        if model.stop_training:
            break
    callbacks.train_end()
    return epochs, rates, callbacks.stop_record()


def test_early_stopping_runs_four_epochs_in_keras_example():
    # Keras' docstring: EarlyStopping(monitor='loss', patience=3) on a loss that never improves
    # after the first epoch runs 4 of 10 epochs.
    epochs, _, stopped = _driven(cb.EarlyStopping(monitor="loss", patience=3),
                                 [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4, 5, 6, 7], monitor="loss")
    assert epochs == 4
    assert stopped["epoch"] == 4 and "loss did not improve" in stopped["reason"]
    assert "best 1 in epoch 1" in stopped["reason"]


@pytest.mark.parametrize("kwargs, values, expected", [
    ({"patience": 0}, [3, 2, 2.5, 1], 3),  # Keras: stop at the first epoch without improvement
    ({"patience": 2, "min_delta": 0.5}, [3, 2.6, 2.2, 1.9, 1], 5),  # measured from the best
    ({"patience": 2, "min_delta": 0.5}, [3, 2.6, 2.7, 2.8, 1], 3),
    ({"patience": 1, "mode": "max", "monitor": "val_accuracy"}, [0.5, 0.7, 0.6, 0.9], 3),
    ({"patience": 1, "baseline": 1.0}, [3, 2, 1.5, 0.5], 4),  # improving: never stopped
    ({"patience": 1, "baseline": 1.0}, [3, 3, 3, 0.5], 2),  # the baseline never beaten
    ({"patience": 1, "start_from_epoch": 2}, [3, 4, 5, 6, 7], 4),  # epochs 1-2 not watched
    ({"patience": 1}, [3, float("nan"), float("nan"), 1], 2),  # NaN is no improvement
])
def test_early_stopping_follows_keras_rules(kwargs, values, expected):
    monitor = kwargs.get("monitor", "val_loss")
    assert _driven(cb.EarlyStopping(**kwargs), values, monitor=monitor)[0] == expected


def test_early_stopping_restores_the_best_epochs_parameters_and_says_so(backend):
    X, y = _data()
    model = _model(backend, learning_rate=0.3)  # too fast: the validation loss wanders
    kept = {}

    def keep(epoch, logs):
        kept[epoch] = model.get_parameters()

    stop = cb.EarlyStopping(patience=2, restore_best_weights=True)
    history = model.train(X, y, epochs=40, batch_size=10, validation_split=0.25,
                          callbacks=[stop], on_epoch_end=keep, verbose=False)
    best = int(np.argmin(history["val_loss"])) + 1
    assert history.stopped is not None and history.stopped["epoch"] == len(history["loss"]) < 40
    assert stop.best_epoch == best and f"the parameters are epoch {best}'s" in \
        history.stopped["reason"]
    for (w, b), (w_best, b_best) in zip(model.get_parameters(), kept[best]):
        np.testing.assert_array_equal(w, w_best)
        np.testing.assert_array_equal(b, b_best)
    loss, _ = model.evaluate(X[45:], y[45:])
    assert loss == pytest.approx(history["val_loss"][best - 1], rel=1e-5)


def test_a_monitor_the_training_does_not_measure_is_refused_before_training():
    X, y = _data()
    model = _model("cpu")
    before = model.get_parameters()
    with pytest.raises(gn.InvalidArgumentError, match="'val_loss', which this training does not "
                       "measure.*Give validation_data or validation_split"):
        model.train(X, y, epochs=2, callbacks=[cb.EarlyStopping()], verbose=False)
    assert all((w == w0).all() for (w, _), (w0, _) in zip(model.get_parameters(), before))
    with pytest.raises(gn.InvalidTypeError, match="callbacks must be gpunn.callbacks objects"):
        model.train(X, y, callbacks=[lambda epoch, logs: None], verbose=False)
    with pytest.raises(gn.InvalidArgumentError, match="cannot tell whether 'learning_rate'"):
        model.train(X, y, callbacks=[cb.ReduceLROnPlateau(monitor="learning_rate")],
                    verbose=False)


@pytest.mark.parametrize("patience, factor, min_delta, min_lr", [
    (1, 0.5, 0.0, 1e-4), (3, 0.1, 0.05, 1e-6), (2, 0.5, 0.01, 0.02)])  # PyTorch: no
# change under 1e-8 (its eps)
def test_reduce_lr_on_plateau_reduces_as_pytorchs_scheduler(patience, factor, min_delta, min_lr):
    torch = pytest.importorskip("torch")
    values = list(np.random.default_rng(patience).uniform(0.5, 1.0, 30))
    parameter = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    # Keras waits ``patience`` epochs without improvement, PyTorch more than ``patience``;
    # Keras' min_delta is PyTorch's absolute threshold.
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=factor, patience=patience - 1, threshold=min_delta,
        threshold_mode="abs", min_lr=min_lr)
    expected = []
    for value in values:
        expected.append(optimizer.param_groups[0]["lr"])
        scheduler.step(value)
    _, rates, stopped = _driven(cb.ReduceLROnPlateau(patience=patience, factor=factor,
                                                     min_delta=min_delta, min_lr=min_lr), values)
    np.testing.assert_allclose(rates, expected, rtol=1e-12)
    assert stopped is None and rates[-1] < rates[0]


def test_learning_rate_scheduler_trains_as_pytorchs_lambda_schedule(backend):
    torch = pytest.importorskip("torch")
    X, y = _data()
    model = gn.Model(device=backend, dtype="float64")
    model.add(gn.Dense(2, 8))
    model.add(gn.ReLU())
    model.add(gn.Dense(8, 3))
    model.add(gn.Softmax())
    model.set(loss=gn.CategoricalCrossentropy(), optimizer=gn.Adam(learning_rate=0.05),
              accuracy=gn.CategoricalAccuracy())
    model.finalize()
    w1, b1, w2, b2 = (torch.tensor(a, dtype=torch.float64, requires_grad=True)
                      for pair in model.get_parameters() for a in pair)
    optimizer = torch.optim.Adam([w1, b1, w2, b2], lr=0.05, eps=1e-7)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.7 ** epoch)
    inputs, labels = torch.tensor(X, dtype=torch.float64), torch.tensor(y, dtype=torch.int64)
    for _ in range(8):
        optimizer.zero_grad()
        logits = torch.relu(inputs @ w1 + b1) @ w2 + b2
        torch.nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()
        scheduler.step()
    history = model.train(X, y, epochs=8, shuffle=False, verbose=False, callbacks=[
        cb.LearningRateScheduler(lambda epoch: 0.05 * 0.7 ** epoch)])
    np.testing.assert_allclose(history["learning_rate"], [0.05 * 0.7 ** e for e in range(8)])
    for (ours_w, ours_b), theirs_w, theirs_b in zip(model.get_parameters(), (w1, w2), (b1, b2)):
        np.testing.assert_allclose(ours_w, theirs_w.detach().numpy(), rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(ours_b, theirs_b.detach().numpy(), rtol=1e-6, atol=1e-12)


def test_learning_rate_scheduler_passes_keras_epoch_and_rate_and_checks_the_result():
    seen = []

    def halve(epoch, lr):
        seen.append((epoch, lr))
        return lr / 2

    _, rates, _ = _driven(cb.LearningRateScheduler(halve), [1, 1, 1], learning_rate=0.4)
    assert seen == [(0, 0.4), (1, 0.2), (2, 0.1)] and rates == [0.2, 0.1, 0.05]
    with pytest.raises(gn.InvalidArgumentError, match="must return a finite number >= 0; for "
                       "epoch 0 .* returned 'fast'"):
        _driven(cb.LearningRateScheduler(lambda epoch: "fast"), [1])


def test_model_checkpoint_keeps_the_best_epoch_and_never_replaces_a_foreign_file(tmp_path):
    X, y = _data()
    model = _model("cpu", learning_rate=0.3)
    best = tmp_path / "best.npz"
    every = str(tmp_path / "m-{epoch:02d}-{val_accuracy:.2f}.npz")
    history = model.train(X, y, epochs=12, batch_size=10, validation_split=0.25, verbose=False,
                          callbacks=[cb.ModelCheckpoint(best, save_best_only=True),
                                     cb.ModelCheckpoint(every, save_weights_only=True)])
    saved = gn.Model.load(best, device="cpu")
    loss, _ = saved.evaluate(X[45:], y[45:])
    assert loss == pytest.approx(min(history["val_loss"]), rel=1e-5)
    names = sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("m-"))
    assert names == [f"m-{epoch:02d}-{accuracy:.2f}.npz"
                     for epoch, accuracy in enumerate(history["val_accuracy"], start=1)]
    assert io.kind_of(tmp_path / names[0]) == "parameters"

    table = tmp_path / "data.csv"
    table.write_text("a,b\n1,2\n")
    with pytest.raises(gn.OverwriteRefusedError, match="not one of gpunn's model files"):
        model.train(X, y, epochs=1, callbacks=[cb.ModelCheckpoint(table)], verbose=False)
    assert table.read_text() == "a,b\n1,2\n"


class _StopAt(cb.Callback):
    def __init__(self, epoch, step=None):
        self.epoch, self.step = epoch, step

    def on_batch_end(self, epoch, step, steps):
        if (epoch, step) == (self.epoch, self.step):
            self.model.stop_training = True
            self.stop_reason = "asked in a batch"

    def on_epoch_end(self, epoch, logs):
        if self.step is None and epoch == self.epoch:
            self.model.stop_training = True


def test_a_callback_or_function_stops_training_and_the_history_says_where_and_why(backend):
    X, y = _data()
    model = _model(backend)
    history = model.train(X, y, epochs=10, batch_size=10, callbacks=[_StopAt(3)], verbose=False)
    assert len(history["loss"]) == 3 and not history.interrupted
    assert history.stopped["epoch"] == 3 and "set model.stop_training" in \
        history.stopped["reason"]
    # stopped in a step: that epoch ends there and is counted, as in Keras
    history = model.train(X, y, epochs=10, batch_size=10, callbacks=[_StopAt(2, step=1)],
                          verbose=False)
    assert len(history["loss"]) == 2
    assert history.stopped == {"epoch": 2, "reason": "asked in a batch"}

    def stop(epoch, logs):
        model.stop_training = epoch == 4

    history = model.train(X, y, epochs=10, on_epoch_end=stop, verbose=False)
    assert len(history["loss"]) == 4 and history.stopped["epoch"] == 4
    assert model.train(X, y, epochs=2, verbose=False).stopped is None  # the flag is reset


def test_a_stop_is_printed_after_the_epochs_line(capsys):
    X, y = _data()
    _model("cpu").train(X, y, epochs=10, callbacks=[_StopAt(2)])
    lines = capsys.readouterr().out.strip().split("\n")
    assert lines[-2].startswith("epoch 2/10: training")
    assert lines[-1].startswith("stopped after epoch 2: ")


def test_validation_split_holds_out_the_last_rows_before_shuffling(backend):
    X, y = _data()
    histories = []
    for kwargs in ({"validation_split": 0.2}, {"validation_data": (X[48:], y[48:])}):
        model = _model(backend)
        gn.seed(6)
        rows = len(X) if "validation_split" in kwargs else 48
        histories.append(model.train(X[:rows], y[:rows], epochs=3, batch_size=16,
                                     verbose=False, **kwargs))
    assert histories[0] == histories[1] and "val_loss" in histories[0]
    with pytest.raises(gn.InvalidArgumentError, match="not both"):
        model.train(X, y, validation_split=0.1, validation_data=(X, y), verbose=False)
    with pytest.raises(gn.InvalidArgumentError, match="leaves no validation sample"):
        model.train(X, y, validation_split=1e-17, verbose=False)
    with pytest.raises(gn.InvalidArgumentError, match="leaves no training sample"):
        model.train(X[:1], y[:1], validation_split=0.5, verbose=False)
    with pytest.raises(gn.InvalidArgumentError, match="validation_split must be"):
        model.train(X, y, validation_split=1.0, verbose=False)


def test_callbacks_add_no_synchronisation_per_step_on_cuda(backend, tmp_path):
    if backend.device == "cpu":  # the device parametrisation, not a missing tool
        pytest.skip("synchronisations per step are a CUDA question: this runs on cuda")
    import cupy

    sim = getattr(cupy, "_sim", None)
    if sim is None:
        pytest.skip("synchronisations are counted by the CuPy double (pytest --cupy-double)")
    X, y = gn.datasets.spiral_data(60, 3, seed=0)
    counts = {}
    for batch_size in (60, 20):  # 3 and 9 steps an epoch
        model = _model(backend)
        callbacks = [cb.EarlyStopping(monitor="loss", patience=50, restore_best_weights=True),
                     cb.ReduceLROnPlateau(monitor="loss", patience=50),
                     cb.ModelCheckpoint(tmp_path / "m.npz", monitor="loss", save_best_only=True)]
        sim.reset_counters()
        history = model.train(X, y, epochs=5, batch_size=batch_size, callbacks=callbacks,
                              verbose=False)
        assert history.cuda_graph == "captured"
        counts[batch_size] = {key: sim.counters.get(key, 0) for key in ("sync", "graph_launch")}
    assert counts[60]["graph_launch"] == 5 * 3 - 1 and counts[20]["graph_launch"] == 5 * 9 - 1
    assert counts[20]["sync"] == counts[60]["sync"], counts
