"""Checkpoints: a run stopped and resumed ends exactly where an uninterrupted run ends (CPU);
written with the user's umask, over a gpunn checkpoint only, unless forced."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import gpunn as gn
from gpunn import checkpoint


def _model():
    model = gn.Model(device="cpu")
    model.add(gn.Dense(2, 32))
    model.add(gn.ReLU())
    model.add(gn.Dropout(0.2))
    model.add(gn.Dense(32, 3))
    model.add(gn.Softmax())
    model.set(loss=gn.CategoricalCrossentropy(), optimizer=gn.Adam(learning_rate=0.02),
              accuracy=gn.CategoricalAccuracy())
    model.finalize()
    return model


def test_resumed_training_equals_uninterrupted_training(tmp_path):
    X, y = gn.datasets.spiral_data(60, 3, seed=0)
    gn.seed(7)
    straight = _model()
    straight.train(X, y, epochs=6, batch_size=32, verbose=False)

    gn.seed(7)
    first = _model()
    path = tmp_path / "checkpoint.npz"
    history = first.train(X, y, epochs=4, batch_size=32, verbose=False)
    checkpoint.save(path, first, epoch=4, history=history, settings={"epochs": 6})
    gn.seed(999)  # whatever happens in between is undone by loading
    restored = checkpoint.load(path, device="cpu")
    assert restored.epoch == 4 and restored.settings == {"epochs": 6}
    assert restored.history["loss"] == history["loss"]
    restored.model.train(X, y, epochs=2, batch_size=32, verbose=False)
    for (w1, b1), (w2, b2) in zip(straight.get_parameters(), restored.model.get_parameters()):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(b1, b2)


def test_a_checkpoint_loads_as_a_model_but_a_model_is_not_a_checkpoint(tmp_path):
    model = _model()
    checkpoint.save(tmp_path / "c.npz", model, epoch=0, history={})
    assert gn.Model.load(tmp_path / "c.npz", device="cpu").layers[0].n_neurons == 32
    model.save(tmp_path / "m.npz")
    with pytest.raises(gn.FileFormatError, match="not checkpoint data"):
        checkpoint.load(tmp_path / "m.npz")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_a_checkpoint_gets_the_users_umask(tmp_path):
    # issue 20: checkpoint.npz was 0600 whatever the umask, so a teammate could not resume it
    previous = os.umask(0o022)
    try:
        checkpoint.save(tmp_path / "checkpoint.npz", _model(), epoch=0, history={})
    finally:
        os.umask(previous)
    assert (tmp_path / "checkpoint.npz").stat().st_mode & 0o777 == 0o644


def test_a_checkpoint_replaces_a_checkpoint_and_nothing_else_unless_forced(tmp_path):
    model = _model()
    path = tmp_path / "checkpoint.npz"
    checkpoint.save(path, model, epoch=1, history={})
    checkpoint.save(path, model, epoch=2, history={})  # as a run does after each epoch
    assert checkpoint.load(path, device="cpu").epoch == 2
    model.save(tmp_path / "model.npz")
    np.savez(tmp_path / "data.npz", X=np.ones((2, 2)), y=np.zeros(2))
    for name in ("model.npz", "data.npz"):
        before = (tmp_path / name).read_bytes()
        with pytest.raises(gn.OverwriteRefusedError, match="with the checkpoint"):
            checkpoint.save(tmp_path / name, model, epoch=3, history={})
        assert (tmp_path / name).read_bytes() == before
    checkpoint.save(tmp_path / "data.npz", model, epoch=3, history={}, force=True)
    assert checkpoint.load(tmp_path / "data.npz", device="cpu").epoch == 3
