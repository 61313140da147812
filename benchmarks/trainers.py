"""Run: python -m benchmarks (this module holds the two trainers every comparison uses)

The same network trained two ways: by gpunn (``gpunn.Model.train``, as a user calls it) and by
an idiomatic PyTorch loop doing the same work per step: forward, softmax cross-entropy, backward,
an Adam step, and the batch loss and accuracy kept for the epoch as gpunn keeps them. PyTorch
starts from gpunn's initial parameters, so both runs start on the same path and their losses
can be compared as a check that the work is the same.
"""

from __future__ import annotations

from typing import Any

import numpy

import gpunn

ADAM_OPTIONS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}


class GpunnTrainer:
    """A gpunn Model of Dense layers ``sizes[i] -> sizes[i + 1]``, ReLU between, softmax out."""

    name = "gpunn"

    def __init__(self, sizes: tuple[int, ...], X: numpy.ndarray, y: numpy.ndarray, *,
                 device: str, learning_rate: float, decay: float, seed: int,
                 shuffle: bool) -> None:
        gpunn.seed(seed)
        self.backend = gpunn.device(device)
        self.shuffle = shuffle
        self.cuda_graph = True  # gpunn's default; benchmarks/step_counts.py counts both
        self.model = gpunn.Model(device=self.backend)
        pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
        for index, (n_in, n_out) in enumerate(pairs):
            self.model.add(gpunn.Dense(n_in, n_out, device=self.backend))
            last = index == len(pairs) - 1
            self.model.add(gpunn.Softmax(device=self.backend) if last
                           else gpunn.ReLU(device=self.backend))
        self.model.set(loss=gpunn.CategoricalCrossentropy(),
                       optimizer=gpunn.Adam(learning_rate=learning_rate, decay=decay),
                       accuracy=gpunn.CategoricalAccuracy())
        self.model.finalize()
        # On the device before any clock starts, as a user's data would be.
        self.X, self.y = self.backend.asarray(X), self.backend.asarray(y)

    def parameters(self) -> list[tuple[numpy.ndarray, numpy.ndarray]]:
        """The initial (weights, biases) of each layer, for the peer to start from."""
        return self.model.get_parameters()

    def epoch(self, samples: int, batch_size: int) -> dict[str, float]:
        """One epoch over the first ``samples`` samples; its loss and accuracy."""
        return self.epochs(1, samples, batch_size)

    def epochs(self, epochs: int, samples: int, batch_size: int) -> dict[str, float]:
        """``epochs`` epochs over the first ``samples`` samples; the last one's metrics."""
        history = self.model.train(self.X[:samples], self.y[:samples], epochs=epochs,
                                   batch_size=batch_size, shuffle=self.shuffle, verbose=False,
                                   cuda_graph=self.cuda_graph)
        self.backend.synchronize()
        return {"loss": history["loss"][-1], "accuracy": history["accuracy"][-1]}

    def full_batch_steps(self, steps: int) -> dict[str, float]:
        """``steps`` full-batch steps (one per epoch, as the book trains the spiral)."""
        history = self.model.train(self.X, self.y, epochs=steps, batch_size=None, shuffle=False,
                                   verbose=False, cuda_graph=self.cuda_graph)
        self.backend.synchronize()
        return {"loss": history["loss"][-1], "accuracy": history["accuracy"][-1]}


class TorchTrainer:
    """The same network in PyTorch: nn.Sequential of Linear and ReLU, CrossEntropyLoss on the
    logits (softmax and cross-entropy fused, the idiomatic form), torch.optim.Adam."""

    name = "PyTorch"

    def __init__(self, torch: Any, parameters: list, X: numpy.ndarray, y: numpy.ndarray, *,
                 device: str, learning_rate: float, decay: float, shuffle: bool,
                 adam: str = "default") -> None:
        self.torch = torch
        self.device = torch.device(device)
        self.shuffle = shuffle
        layers: list[Any] = []
        for weights, biases in parameters:
            linear = torch.nn.Linear(*weights.shape)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(numpy.ascontiguousarray(weights.T)))
                linear.bias.copy_(torch.from_numpy(biases.ravel()))
            layers += [linear, torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers[:-1]).to(self.device)
        self.loss_function = torch.nn.CrossEntropyLoss()
        # eps as gpunn's (the book's) 1e-7; PyTorch's default is 1e-8.
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate, eps=1e-7,
                                          **ADAM_OPTIONS[adam])
        self.learning_rate, self.decay, self.iterations = learning_rate, decay, 0
        self.X = torch.from_numpy(X).to(self.device)
        self.y = torch.from_numpy(y.astype(numpy.int64)).to(self.device)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def _step(self, X: Any, y: Any) -> tuple[float, Any]:
        if self.decay:  # the book's decay, lr / (1 + decay * iterations), as gpunn applies it
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate / (1.0 + self.decay * self.iterations)
        logits = self.model(X)
        loss = self.loss_function(logits, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.iterations += 1
        # gpunn reads each step's loss on the host (to stop on NaN) and counts correct
        # predictions on the device; the same here.
        return loss.item() * len(y), (logits.argmax(dim=1) == y).sum()

    def epoch(self, samples: int, batch_size: int) -> dict[str, float]:
        X, y = self.X[:samples], self.y[:samples]
        if self.shuffle:
            order = self.torch.randperm(samples, device=self.device)
            X, y = X[order], y[order]
        loss_sum, correct = 0.0, 0
        for start in range(0, samples, batch_size):
            loss, right = self._step(X[start:start + batch_size], y[start:start + batch_size])
            loss_sum += loss
            correct += right
        self.synchronize()
        return {"loss": loss_sum / samples, "accuracy": float(correct) / samples}

    def full_batch_steps(self, steps: int) -> dict[str, float]:
        for _ in range(steps):
            loss, right = self._step(self.X, self.y)
        self.synchronize()
        return {"loss": loss / len(self.y), "accuracy": float(right) / len(self.y)}
