"""Fuzzing the loaders: random bytes and mutated real files give a gpunn error or a model,
never another exception, never a message that suggests loading the file unsafely (gpunn never
unpickles), and never hang."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager

import numpy as np
import pytest
from helpers import build_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpunn as gn
from gpunn import checkpoint, datasets

# Derandomized so CI sees the same cases every run; GPUNN_FUZZ_EXAMPLES=5000 GPUNN_FUZZ_RANDOM=1
# explores further (a long local run found the bytes-instead-of-array case fixed in io.py).
FUZZ = settings(max_examples=int(os.environ.get("GPUNN_FUZZ_EXAMPLES", 150)), deadline=None,
                derandomize=not os.environ.get("GPUNN_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@contextmanager
def _time_limit(seconds):
    def expire(signum, frame):
        raise TimeoutError(f"a loader ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    model = build_model("cpu", (2, 4, 3))
    X, y = gn.datasets.spiral_data(10, 3, seed=0)
    history = model.train(X, y, epochs=2, verbose=False)
    model.save(folder / "model.npz")
    checkpoint.save(folder / "checkpoint.npz", model, epoch=2, history=history)
    model.save_parameters(folder / "parameters.npz")
    np.savez(folder / "data.npz", X=X, y=y)
    return {name: (folder / f"{name}.npz").read_bytes()
            for name in ("model", "checkpoint", "parameters", "data")}


def _load_all(path, model):
    for load in (lambda: gn.Model.load(path, device="cpu"),
                 lambda: checkpoint.load(path, device="cpu"),
                 lambda: model.load_parameters(path),
                 lambda: datasets.load_npz(path)):
        with _time_limit(10):
            try:
                load()
            except gn.GpunnError as error:
                assert "allow_pickle" not in str(error), str(error)
                assert "pickle.load" not in str(error), str(error)


def _fresh_model():
    model = gn.Model(device="cpu")
    model.add(gn.Dense(2, 4))
    model.add(gn.ReLU())
    model.add(gn.Dense(4, 3))
    model.add(gn.Softmax())
    model.finalize()
    return model


@FUZZ
@given(content=st.binary(max_size=2048))
def test_random_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("random") / "file.npz"
    path.write_bytes(content)
    _load_all(path, _fresh_model())


@FUZZ
@given(which=st.sampled_from(["model", "checkpoint", "parameters", "data"]),
       mutations=st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "zero"]),
                                    st.floats(0, 1), st.integers(0, 255)),
                          min_size=1, max_size=4))
def test_mutated_files(tmp_path_factory, saved, which, mutations):
    data = bytearray(saved[which])
    for kind, where, value in mutations:
        at = min(int(where * len(data)), max(len(data) - 1, 0))
        if kind == "flip" and data:
            data[at] ^= value or 1
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = bytes([value]) * 8
        elif data:
            data[at:at + 16] = bytes(len(data[at:at + 16]))
    path = tmp_path_factory.mktemp("mutated") / "file.npz"
    path.write_bytes(bytes(data))
    _load_all(path, _fresh_model())
