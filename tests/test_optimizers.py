"""Optimizers: one step by hand, learning-rate decay, and whole training runs against PyTorch's
autograd and optimizers."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require
from helpers import build_model

import gpunn


def _step(backend, optimizer, parameters, gradients):
    optimizer.to(backend)
    p, g = backend.asarray(np.array(parameters)), backend.asarray(np.array(gradients))
    optimizer.pre_update_params()
    optimizer.update_params(p, g)
    optimizer.post_update_params()
    return backend.to_numpy(p)


def test_sgd_steps_by_hand(backend):
    sgd = gpunn.SGD(learning_rate=0.5)
    np.testing.assert_allclose(_step(backend, sgd, [1.0, 2.0], [0.2, -0.4]), [0.9, 2.2])


def test_sgd_momentum_with_decay_follows_the_book(backend):
    sgd = gpunn.SGD(learning_rate=1.0, decay=0.5, momentum=0.9)
    sgd.to(backend)
    p, g = backend.asarray(np.array([1.0])), backend.asarray(np.array([0.5]))
    expected, update = 1.0, 0.0
    for iteration in range(3):
        sgd.pre_update_params()
        sgd.update_params(p, g)
        sgd.post_update_params()
        lr = 1.0 / (1 + 0.5 * iteration)
        update = 0.9 * update - lr * 0.5
        expected += update
        assert sgd.current_learning_rate == lr
    np.testing.assert_allclose(backend.to_numpy(p), [expected])


def test_adagrad_rmsprop_adam_one_step_by_hand(backend):
    g = np.array([0.5, -2.0])
    np.testing.assert_allclose(_step(backend, gpunn.Adagrad(learning_rate=0.1), [0.0, 0.0], g),
                               -0.1 * g / (np.abs(g) + 1e-7))
    cache = 0.1 * g * g
    np.testing.assert_allclose(_step(backend, gpunn.RMSprop(learning_rate=0.1), [0.0, 0.0], g),
                               -0.1 * g / (np.sqrt(cache) + 1e-7))
    m, v = 0.1 * g / 0.1, 0.001 * g * g / 0.001  # bias-corrected after one step: g and g**2
    np.testing.assert_allclose(_step(backend, gpunn.Adam(learning_rate=0.1), [0.0, 0.0], g),
                               -0.1 * m / (np.sqrt(v) + 1e-7))


def test_learning_rates_after_ten_thousand_updates_are_the_books():
    # lr / (1 + decay * (updates - 1)): the rate used by update number 10,000
    for optimizer, expected in ((gpunn.Adam(learning_rate=0.05, decay=5e-7), 0.04975126853296942),
                                (gpunn.Adam(learning_rate=0.02, decay=5e-7), 0.019900507413187767)):
        optimizer.iterations = 9999
        optimizer.pre_update_params()
        assert optimizer.current_learning_rate == expected


def test_optimizer_state_is_float32_for_float32_parameters(backend):
    adam = gpunn.Adam()
    adam.to(backend)
    p = backend.asarray(np.ones(4, np.float32))
    adam.update_params(p, backend.asarray(np.ones(4, np.float32)))
    assert p.dtype == np.float32
    assert all(array.dtype == np.float32 for array in adam.state.values())


@pytest.mark.parametrize("make, message", [
    (lambda: gpunn.SGD(learning_rate=-1), "learning_rate must be a finite number > 0"),
    (lambda: gpunn.SGD(momentum=1.0), "momentum must be a finite number >= 0.0 and < 1.0"),
    (lambda: gpunn.Adam(beta_1=1.5), "beta_1"),
    (lambda: gpunn.Adam(decay=-1), "decay"),
    (lambda: gpunn.RMSprop(rho=float("nan")), "rho"),
    (lambda: gpunn.Adagrad(epsilon=0), "epsilon"),
    (lambda: gpunn.Adam(learning_rate="fast"), "learning_rate must be a number"),
])
def test_invalid_hyperparameters_are_refused(make, message):
    with pytest.raises(gpunn.GpunnError, match=message):
        make()


# ---- against PyTorch ---------------------------------------------------------------------------

def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


OPTIMIZERS = {
    "sgd": (lambda: gpunn.SGD(learning_rate=0.5),
            lambda torch, params: torch.optim.SGD(params, lr=0.5)),
    "sgd-momentum": (lambda: gpunn.SGD(learning_rate=0.5, momentum=0.9),
                     # the book's momentum equals PyTorch's while the learning rate is constant
                     lambda torch, params: torch.optim.SGD(params, lr=0.5, momentum=0.9)),
    "adagrad-decay": (lambda: gpunn.Adagrad(learning_rate=0.5, decay=1e-2),
                      lambda torch, params: torch.optim.Adagrad(params, lr=0.5, lr_decay=1e-2,
                                                                eps=1e-7)),
    "rmsprop": (lambda: gpunn.RMSprop(learning_rate=0.01, rho=0.9),
                lambda torch, params: torch.optim.RMSprop(params, lr=0.01, alpha=0.9, eps=1e-7)),
    "adam": (lambda: gpunn.Adam(learning_rate=0.05),
             lambda torch, params: torch.optim.Adam(params, lr=0.05, betas=(0.9, 0.999),
                                                    eps=1e-7)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_training_matches_pytorch_step_by_step(backend, name):
    torch = _torch()
    require(torch is not None, "PyTorch is not installed (pip install torch) for the reference run")
    ours, theirs = OPTIMIZERS[name]
    l2 = 5e-4
    X, y = gpunn.datasets.spiral_data(50, 3, seed=0)
    model = gpunn.Model(device=backend, dtype="float64")
    model.add(gpunn.Dense(2, 16, weight_regularizer_l2=l2, bias_regularizer_l2=l2))
    model.add(gpunn.ReLU())
    model.add(gpunn.Dense(16, 3))
    model.add(gpunn.Softmax())
    model.set(loss=gpunn.CategoricalCrossentropy(), optimizer=ours(),
              accuracy=gpunn.CategoricalAccuracy())
    model.finalize()
    start = model.get_parameters()

    w1, b1, w2, b2 = (torch.tensor(a, dtype=torch.float64, requires_grad=True)
                      for pair in start for a in pair)
    optimizer = theirs(torch, [w1, b1, w2, b2])
    inputs = torch.tensor(X, dtype=torch.float64)
    labels = torch.tensor(y, dtype=torch.int64)
    for _ in range(25):
        optimizer.zero_grad()
        logits = torch.relu(inputs @ w1 + b1) @ w2 + b2
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss = loss + l2 * (w1 * w1).sum() + l2 * (b1 * b1).sum()
        loss.backward()
        optimizer.step()

    model.train(X, y, epochs=25, shuffle=False, verbose=False)
    for (ours_w, ours_b), theirs_w, theirs_b in zip(model.get_parameters(), (w1, w2), (b1, b2)):
        np.testing.assert_allclose(ours_w, theirs_w.detach().numpy(), rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(ours_b, theirs_b.detach().numpy(), rtol=1e-6, atol=1e-12)


# The book's momentum is PyTorch's only while the rate is constant (PyTorch multiplies its
# velocity of gradients by the new rate; the book's velocity holds past rates' steps).
CHANGEABLE = sorted(set(OPTIMIZERS) - {"sgd-momentum"})


@pytest.mark.parametrize("name", CHANGEABLE)
def test_a_changed_learning_rate_is_used_from_the_next_step_as_pytorch_does(backend, name):
    torch = _torch()
    require(torch is not None, "PyTorch is not installed (pip install torch) for the reference run")
    ours, theirs = OPTIMIZERS[name]
    X, y = gpunn.datasets.spiral_data(30, 3, seed=1)
    model = gpunn.Model(device=backend, dtype="float64")
    model.add(gpunn.Dense(2, 8))
    model.add(gpunn.ReLU())
    model.add(gpunn.Dense(8, 3))
    model.add(gpunn.Softmax())
    model.set(loss=gpunn.CategoricalCrossentropy(), optimizer=ours(),
              accuracy=gpunn.CategoricalAccuracy())
    model.finalize()
    first = model.optimizer.learning_rate
    w1, b1, w2, b2 = (torch.tensor(a, dtype=torch.float64, requires_grad=True)
                      for pair in model.get_parameters() for a in pair)
    optimizer = theirs(torch, [w1, b1, w2, b2])
    inputs, labels = torch.tensor(X, dtype=torch.float64), torch.tensor(y, dtype=torch.int64)
    for epoch in range(1, 13):
        optimizer.zero_grad()
        logits = torch.relu(inputs @ w1 + b1) @ w2 + b2
        torch.nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()
        if epoch == 6:
            optimizer.param_groups[0]["lr"] = first / 5

    def slower(epoch, logs):
        if epoch == 6:
            model.optimizer.learning_rate = first / 5

    history = model.train(X, y, epochs=12, shuffle=False, verbose=False, on_epoch_end=slower)
    for (ours_w, ours_b), theirs_w, theirs_b in zip(model.get_parameters(), (w1, w2), (b1, b2)):
        np.testing.assert_allclose(ours_w, theirs_w.detach().numpy(), rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(ours_b, theirs_b.detach().numpy(), rtol=1e-6, atol=1e-12)
    decay = model.optimizer.decay
    np.testing.assert_allclose(history["learning_rate"],
                               [(first if epoch < 6 else first / 5) / (1 + decay * epoch)
                                for epoch in range(12)])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_learning_rate_set_to_zero_stops_the_gradient_steps(backend, name):
    model = build_model(backend, [2, 8, 3])
    model.set(optimizer=OPTIMIZERS[name][0]())
    model.finalize()
    if name == "sgd-momentum":  # the book's velocity still coasts: no velocity, no motion
        model.optimizer.momentum = 0.0
    X, y = gpunn.datasets.spiral_data(20, 3, seed=2)
    model.train(X, y, epochs=2, verbose=False)
    model.optimizer.learning_rate = 0.0
    before = model.get_parameters()
    history = model.train(X, y, epochs=3, batch_size=16, verbose=False)
    assert history["learning_rate"] == [0.0, 0.0, 0.0]
    for (w0, b0), (w1, b1) in zip(before, model.get_parameters()):
        np.testing.assert_array_equal(w0, w1)
        np.testing.assert_array_equal(b0, b1)


def test_momentum_given_after_construction_is_used(backend):
    torch = _torch()
    require(torch is not None, "PyTorch is not installed (pip install torch) for the reference run")
    sgd = gpunn.SGD(learning_rate=0.5)
    sgd.momentum = 0.9
    p, g = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True), [0.2, -0.4]
    reference = torch.optim.SGD([p], lr=0.5, momentum=0.9)
    ours = np.array([1.0, -1.0])
    for _ in range(3):
        p.grad = torch.tensor(g, dtype=torch.float64)
        reference.step()
        ours = _step(backend, sgd, ours, g)
    np.testing.assert_allclose(ours, p.detach().numpy(), rtol=1e-12)
