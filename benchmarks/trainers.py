"""Run: python -m benchmarks (this module holds the two trainers every comparison uses)

The same network trained two ways: by gpunn (``gpunn.Model.train``, as a user calls it) and by
an idiomatic PyTorch loop doing the same work per step: forward, softmax cross-entropy, backward,
an Adam step, and the batch loss and accuracy kept for the epoch as gpunn keeps them. PyTorch
starts from gpunn's initial parameters, so both runs start on the same path and their losses
can be compared as a check that the work is the same.

Both train under one precision policy (gpunn.precision.POLICIES): gpunn's
``Model(precision=...)``, PyTorch's idiom for each: full float32; TF32 matrix products (a global
switch in PyTorch, ``allow_tf32``, which benchmarks/gpu.py's ``torch_tf32`` sets around the run);
``torch.autocast`` to bfloat16; and to float16 with ``torch.amp.GradScaler``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy

import gpunn

ADAM_OPTIONS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
AUTOCAST = ("bfloat16", "float16")  # the policies PyTorch runs under torch.autocast


class GpunnTrainer:
    """A gpunn Model of Dense layers ``sizes[i] -> sizes[i + 1]``, ReLU between, softmax out."""

    name = "gpunn"

    def __init__(self, sizes: tuple[int, ...], X: numpy.ndarray, y: numpy.ndarray, *,
                 device: str, learning_rate: float, decay: float, seed: int,
                 shuffle: bool, precision: str = "float32") -> None:
        gpunn.seed(seed)
        self.backend = gpunn.device(device)
        self.shuffle = shuffle
        self.cuda_graph = True  # gpunn's default; benchmarks/step_counts.py counts both
        self.on_batch_end: Any = None  # Model.train's callback (benchmarks/gpu_measure.py)
        self.history: Any = None  # the last call's, with its cuda_graph status
        self.model = gpunn.Model(device=self.backend, precision=precision)
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
        return self._train(self.X[:samples], self.y[:samples], epochs, batch_size, self.shuffle)

    def full_batch_steps(self, steps: int) -> dict[str, float]:
        """``steps`` full-batch steps (one per epoch, as the book trains the spiral)."""
        return self._train(self.X, self.y, steps, None, False)

    def _train(self, X: Any, y: Any, epochs: int, batch_size: int | None,
               shuffle: bool) -> dict[str, float]:
        self.history = history = self.model.train(
            X, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle, verbose=False,
            cuda_graph=self.cuda_graph, on_batch_end=self.on_batch_end)
        self.backend.synchronize()
        return {"loss": history["loss"][-1], "accuracy": history["accuracy"][-1]}


class TorchTrainer:
    """The same network in PyTorch: nn.Sequential of Linear and ReLU, CrossEntropyLoss on the
    logits (softmax and cross-entropy fused, the idiomatic form), torch.optim.Adam."""

    name = "PyTorch"

    def __init__(self, torch: Any, parameters: list, X: numpy.ndarray, y: numpy.ndarray, *,
                 device: str, learning_rate: float, decay: float, shuffle: bool,
                 adam: str = "default", capturable: bool = False,
                 precision: str = "float32") -> None:
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
        # eps as gpunn's (the book's) 1e-7; PyTorch's default is 1e-8. capturable keeps the
        # step count on the device, so that a CUDA graph can capture the step.
        options = {**ADAM_OPTIONS[adam], **({"capturable": True} if capturable else {})}
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate, eps=1e-7,
                                          **options)
        self.learning_rate, self.decay, self.iterations = learning_rate, decay, 0
        # float32 and tf32 run without autocast (TF32 is torch's global allow_tf32); a 16-bit
        # policy autocasts the forward pass and the loss; float16 scales the loss as gpunn does.
        self.autocast = getattr(torch, precision) if precision in AUTOCAST else None
        self.scaler = torch.amp.GradScaler(device) if precision == "float16" else None
        self.cache_casts = True
        self.X = torch.from_numpy(X).to(self.device)
        self.y = torch.from_numpy(y.astype(numpy.int64)).to(self.device)
        # The loss sum and the correct predictions, kept on the device and read once per epoch,
        # as gpunn keeps its tally (gpunn.training).
        self.sums = torch.zeros(2, dtype=torch.float64, device=self.device)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def _step(self, X: Any, y: Any) -> None:
        if self.decay:  # the book's decay, lr / (1 + decay * iterations), as gpunn applies it
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate / (1.0 + self.decay * self.iterations)
        with self._autocast():
            logits = self.model(X)
            loss = self.loss_function(logits, y)
        self.optimizer.zero_grad()
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.iterations += 1
        with self.torch.no_grad():
            self.sums[0] += loss.detach() * len(y)
            self.sums[1] += (logits.argmax(dim=1) == y).sum()

    def _autocast(self) -> Any:
        # No context at all in float32: the CPU comparisons (the spiral's 100 µs steps) stay
        # as they were.
        if self.autocast is None:
            return contextlib.nullcontext()
        return self.torch.autocast(self.device.type, dtype=self.autocast,
                                   cache_enabled=self.cache_casts)

    def _read(self, samples: int) -> dict[str, float]:
        loss_sum, correct = self.sums.tolist()  # the one synchronisation of an epoch
        return {"loss": loss_sum / samples, "accuracy": correct / samples}

    def epoch(self, samples: int, batch_size: int) -> dict[str, float]:
        X, y = self.X[:samples], self.y[:samples]
        if self.shuffle:
            order = self.torch.randperm(samples, device=self.device)
            X, y = X[order], y[order]
        self.sums.zero_()
        for start in range(0, samples, batch_size):
            self._step(X[start:start + batch_size], y[start:start + batch_size])
        return self._read(samples)

    def full_batch_steps(self, steps: int) -> dict[str, float]:
        for _ in range(steps):  # a step is an epoch, read as gpunn reads its tally
            self.sums.zero_()
            self._step(self.X, self.y)
            metrics = self._read(len(self.y))
        return metrics


class TorchGraphTrainer(TorchTrainer):
    """The same PyTorch loop with each batch shape's whole step captured once as a CUDA graph
    and replayed, as PyTorch's CUDA graphs documentation captures a training step: three
    warm-up steps on a side stream (real updates, on the first batch of that shape; their
    metrics are not counted), gradients set to None before the capture, Adam with
    ``capturable=True``, and static input tensors each batch is copied into. Under autocast
    the cast weights are not cached, as PyTorch requires in a captured region. The float16
    policy is not capturable: GradScaler's step reads on the host whether the gradients
    overflowed."""

    name = "PyTorch, CUDA graph"

    @staticmethod
    def why_not(precision: str) -> str | None:
        """Why the step under ``precision`` cannot be captured, or None."""
        if precision == "float16":
            return ("PyTorch, CUDA graph left out under float16: GradScaler.step reads "
                    "found_inf on the host (a synchronisation a graph cannot capture)")
        return None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, capturable=True, **kwargs)
        if self.scaler is not None:
            raise ValueError(self.why_not("float16"))
        self.cache_casts = False
        if self.decay:
            raise ValueError("a captured step bakes in its learning rate: decay must be 0; "
                             f"received decay={self.decay}")
        self.graphs: dict[tuple, tuple] = {}

    def _step(self, X: Any, y: Any) -> None:
        captured = self.graphs.get(tuple(X.shape))
        if captured is None:
            captured = self.graphs[tuple(X.shape)] = self._capture(X, y)
        static_X, static_y, graph = captured
        static_X.copy_(X)
        static_y.copy_(y)
        graph.replay()

    def _capture(self, X: Any, y: Any) -> tuple:
        torch = self.torch
        static_X, static_y = X.clone(), y.clone()
        counted = self.sums.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                super()._step(static_X, static_y)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.sums.copy_(counted)
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            super()._step(static_X, static_y)
        return static_X, static_y, graph
