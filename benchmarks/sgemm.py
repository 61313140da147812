"""Run: python -m benchmarks --only sgemm

The machine's float32 matrix-multiply rate, the bound a training step is held against:
gpunn's array library (NumPy's sgemm on the CPU, CuPy's cuBLAS on a GPU) and PyTorch's matmul
at every matrix product one MLP training step makes, and at one big square product.

The products of one step of a network of Dense layers (n_in, n_out) at batch B are, per layer,
forward ``inputs (B, n_in) @ weights (n_in, n_out)``, ``dweights = inputs.T @ dvalues`` and
``dinputs = dvalues @ weights.T``; the first layer's dinputs is needed by nobody and neither
trainer computes it. Each costs ``2 * B * n_in * n_out`` FLOPs, so a step costs
``6 * B * sum(n_in * n_out) - 2 * B * n_in(first) * n_out(first)``, forward 2B·sum and backward
about twice that. (Bias, ReLU, softmax and Adam are elementwise and left out; Adam, about 12
FLOPs per parameter or 1.4 MFLOP a step, would add 9% at batch 32, 2% at 128, 0.3% at 1024.)

The step's GEMM bound is the time those products take back to back at the measured rates;
a trainer's share of it is that time over its measured step time: 100% would mean nothing but
the matrix products costs anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy

from benchmarks import timing


@dataclass(frozen=True)
class Gemm:
    """One matrix product ``a (m, k) @ b (k, n)``; a transposed operand is a transposed view,
    as the layer's backward passes it."""

    name: str
    m: int
    k: int
    n: int
    transpose_a: bool = False
    transpose_b: bool = False

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


def step_gemms(sizes: tuple[int, ...], batch_size: int) -> list[Gemm]:
    """The matrix products of one training step of Dense layers ``sizes[i] -> sizes[i + 1]``."""
    gemms = []
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layer = f"dense{index + 1}"
        gemms.append(Gemm(f"{layer}.forward", batch_size, n_in, n_out))
        gemms.append(Gemm(f"{layer}.dweights", n_in, batch_size, n_out, transpose_a=True))
        if index > 0:
            gemms.append(Gemm(f"{layer}.dinputs", batch_size, n_out, n_in, transpose_b=True))
    return gemms


def step_flops(sizes: tuple[int, ...], batch_size: int) -> int:
    """FLOPs of the matrix products of one training step (see the module docstring)."""
    return sum(gemm.flops for gemm in step_gemms(sizes, batch_size))


def _operands(gemm: Gemm, make: Any) -> tuple[Any, Any]:
    a = make((gemm.k, gemm.m)).T if gemm.transpose_a else make((gemm.m, gemm.k))
    b = make((gemm.n, gemm.k)).T if gemm.transpose_b else make((gemm.k, gemm.n))
    return a, b


class Library:
    """How to make float32 operands, multiply them and wait for the device, for one library."""

    def __init__(self, name: str, make: Any, matmul: Any, synchronize: Any) -> None:
        self.name, self.make, self.matmul, self.synchronize = name, make, matmul, synchronize

    def seconds(self, gemm: Gemm, *, min_seconds: float, repeats: int) -> list[float]:
        a, b = _operands(gemm, self.make)
        return timing.per_call(lambda: self.matmul(a, b), self.synchronize,
                               min_seconds=min_seconds, repeats=repeats)


def gpunn_library(backend: Any) -> Library:
    """The array library behind a gpunn backend (numpy or cupy), as Dense uses it."""
    xp = backend.xp

    def make(shape: tuple[int, int]) -> Any:
        return backend.asarray(_host_random(shape))

    return Library(f"{xp.__name__} ({backend.device})", make, xp.dot, backend.synchronize)


def torch_library(torch: Any, device: str) -> Library:
    """PyTorch's matmul on ``device``."""
    target = torch.device(device)

    def make(shape: tuple[int, int]) -> Any:
        return torch.from_numpy(_host_random(shape)).to(target)

    def synchronize() -> None:
        if target.type == "cuda":
            torch.cuda.synchronize(target)

    return Library(f"torch ({device})", make, torch.matmul, synchronize)


def _host_random(shape: tuple[int, int]) -> numpy.ndarray:
    return numpy.random.default_rng(0).uniform(-1, 1, shape).astype(numpy.float32)


def measure(libraries: list[Library], *, sizes: tuple[int, ...], batch_sizes: list[int],
            square: int, min_seconds: float, repeats: int) -> dict[str, Any]:
    """GFLOP/s of each library at a ``square``-sized product and at each batch size's step
    products, with the step's GEMM time (the bound the trainers are held against)."""
    result: dict[str, Any] = {"square_size": square, "libraries": [lib.name for lib in libraries],
                              "square": {}, "steps": {}}
    big = Gemm(f"square {square}", square, square, square)
    for library in libraries:
        timing.settle()
        seconds = timing.summary(library.seconds(big, min_seconds=min_seconds, repeats=repeats))
        result["square"][library.name] = {"seconds": seconds,
                                          "gflops": big.flops / seconds["median"] / 1e9}
    for batch_size in batch_sizes:
        gemms = step_gemms(sizes, batch_size)
        flops = sum(gemm.flops for gemm in gemms)
        step: dict[str, Any] = {"flops": flops, "gemms": {}}
        for library in libraries:
            timing.settle()
            per_gemm = {}
            for gemm in gemms:
                seconds = timing.summary(library.seconds(gemm, min_seconds=min_seconds,
                                                         repeats=repeats))
                per_gemm[gemm.name] = {"shape": [gemm.m, gemm.k, gemm.n],
                                       "transposed": [gemm.transpose_a, gemm.transpose_b],
                                       "seconds": seconds,
                                       "gflops": gemm.flops / seconds["median"] / 1e9}
            total = sum(entry["seconds"]["median"] for entry in per_gemm.values())
            step["gemms"][library.name] = {"step_seconds": total,
                                           "gflops": flops / total / 1e9, "products": per_gemm}
        result["steps"][str(batch_size)] = step
    return result
