"""Run: python -m benchmarks --device cuda        (the kernels alone: --device cuda --only kernels)

On a CUDA GPU: the memory bandwidth gpunn's elementwise kernels (kernels/elementwise.cu) reach,
next to a device-to-device copy (the practical ceiling) and next to the plain CuPy expression a
user would write instead, on float32 arrays of 2^26 elements shaped (2^19, 128) as a hidden
layer's activations. Bandwidth counts the bytes each op must read and write once:

    relu           y = max(x, 0)                      read x, write y           8 bytes/element
    relu_backward  dx = dy where x > 0 else 0         read dy and x, write dx  12 bytes/element
    bias_add       y = x + b                          read x, write y           8 bytes/element
    bias_relu      y = max(x + b, 0), fused           read x, write y           8 bytes/element
    dropout        mask, y from x and uniform u       read x and u, write both 16 bytes/element
    sgd_momentum   the optimizer's whole update       read g, read+write p, m  20 bytes/element
    adam           the optimizer's whole update       read g, read+write p, m, v 28 bytes/element
    softmax_ce     probs and dlogits of 10-class rows read logits, write both 12 bytes/element

The optimizers' plain side is the optimizer's own NumPy-style update run on CuPy (a dozen
whole-array operations); softmax_ce's is the book's Softmax and combined gradient. softmax_ce
adds each row's loss and hit to one tally with atomics: on (2^26 / 10) rows those collide, so
expect it below copy speed here and look at it at training batch sizes too.

A plain expression that makes temporaries (the boolean mask, two passes for bias + ReLU) moves
more bytes than that and so shows a lower rate: that is the point of the kernels. Each op is
timed with CUDA events over many launches. This module imports without CuPy; nothing here
runs unless ``gpunn.device("cuda")`` works.

The MLP comparison on the GPU is benchmarks/mlp.py run with device "cuda"; ``tf32_off`` makes
both sides use full float32 matrix products (CuPy's default; PyTorch's too since 1.12, set
here explicitly), ``torch_tf32(torch, True)`` puts PyTorch's on TF32 beside gpunn's tf32
policy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy

import gpunn
from benchmarks import timing
from gpunn.backend import kernels
from gpunn.backend.numpy_backend import NumpyBackend

ELEMENTS = 1 << 26
COLUMNS = 128


def cuda_backend(*, simulated: bool = False) -> tuple[Any, str | None]:
    """(gpunn's CUDA backend, None), or (None, why there is none). The CuPy double
    (tests/cupy_double) is no GPU: timings taken on it would be meaningless, so it is refused
    unless ``simulated`` (the rehearsal of benchmarks/gpu_check.py, which says so)."""
    try:
        backend = gpunn.device("cuda")
    except gpunn.DeviceUnavailableError as error:
        return None, str(error)
    if hasattr(backend.xp, "_sim") and not simulated:
        return None, "cupy is the CuPy double (simulated devices): it has no GPU to time"
    return backend, None


def gpu_name(backend: Any) -> str:
    """The GPU's name, as the CUDA runtime reports it."""
    properties = backend.xp.cuda.runtime.getDeviceProperties(backend.index)
    name = properties["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def tf32_off(torch: Any) -> contextlib.AbstractContextManager[dict[str, Any]]:
    """Full float32 matrix products on both sides for the duration; yields the settings."""
    return torch_tf32(torch, False)


@contextlib.contextmanager
def torch_tf32(torch: Any, on: bool) -> Iterator[dict[str, Any]]:
    """PyTorch's float32 matrix products on TF32 tensor cores (``on``) or in full float32 for
    the duration; yields the settings. gpunn's TF32 is a precision policy of each model
    (``Model(precision="tf32")``); CUPY_TF32 would put every CuPy product of gpunn's float32
    rows on TF32 too, so it is warned about."""
    settings = {"CUPY_TF32": os.environ.get("CUPY_TF32", "unset (TF32 off)")}
    if os.environ.get("CUPY_TF32", "0") != "0":
        print("warning: CUPY_TF32 is set, so CuPy's matrix products use TF32 and the GPU "
              "comparison with PyTorch is not like for like; unset it (gpunn's TF32 is "
              "Model(precision='tf32')).")
    if torch is None:
        yield settings
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    # PyTorch 2.9 made fp32_precision ("ieee" or "tf32") the switch; reading allow_tf32 after a
    # script set fp32_precision raises, so allow_tf32 only where it is the only switch.
    name = "fp32_precision" if hasattr(matmul, "fp32_precision") else "allow_tf32"
    value: Any = on if name == "allow_tf32" else ("tf32" if on else "ieee")
    previous = (getattr(matmul, name), getattr(cudnn, name))
    setattr(matmul, name, value)
    setattr(cudnn, name, value)
    settings[f"torch.backends.cuda.matmul.{name}"] = value
    try:
        yield settings
    finally:
        setattr(matmul, name, previous[0])
        setattr(cudnn, name, previous[1])


def _event_seconds(cupy: Any, work: Any, *, launches: int, repeats: int) -> list[float]:
    """Seconds per call of ``work``, from CUDA events around ``launches`` calls, per repeat."""
    work()
    cupy.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(launches):
            work()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1000.0 / launches)
    return times


def kernel_bandwidth(backend: Any, *, elements: int = ELEMENTS, repeats: int = 5,
                     launches: int = 20) -> dict[str, Any]:
    """GB/s of each gpunn kernel, its plain CuPy expression and a device-to-device copy."""
    cupy = backend.xp
    rows = max(elements // COLUMNS, 1)
    n = rows * COLUMNS
    with backend.activate():
        rng = cupy.random.default_rng(0)
        x = rng.standard_normal((rows, COLUMNS), dtype=cupy.float32)
        dy = rng.standard_normal((rows, COLUMNS), dtype=cupy.float32)
        b = rng.standard_normal((1, COLUMNS), dtype=cupy.float32)
        out = cupy.empty_like(x)
        ops = _ops(backend, x, dy, b, out)
        result: dict[str, Any] = {"elements": n, "shape": [rows, COLUMNS], "dtype": "float32",
                                  "launches_per_repeat": launches, "ops": {}}
        for name, (nbytes, kernel, plain) in ops.items():
            entry: dict[str, Any] = {"bytes": nbytes}
            for side, work in (("gpunn", kernel), ("cupy", plain)):
                if work is None:
                    continue
                seconds = timing.summary(_event_seconds(cupy, work, launches=launches,
                                                        repeats=repeats))
                entry[side] = {"seconds": seconds,
                               "gb_per_second": nbytes / seconds["median"] / 1e9}
            result["ops"][name] = entry
    copy = result["ops"]["copy"]["cupy"]["gb_per_second"]
    for entry in result["ops"].values():
        for side in ("gpunn", "cupy"):
            if side in entry:
                entry[side]["share_of_copy"] = entry[side]["gb_per_second"] / copy
    return result


def _ops(backend: Any, x: Any, dy: Any, b: Any, out: Any) -> dict[str, tuple]:
    """name: (bytes moved, gpunn kernel, plain CuPy), each a callable on the arrays given."""
    cupy = backend.xp
    n, item, zero = x.size, x.itemsize, numpy.float32(0)
    u = cupy.random.default_rng(1).random(x.shape, dtype=cupy.float32)
    mask = cupy.empty_like(x)
    flat = [cupy.ascontiguousarray(a.ravel()) for a in (x, dy, out, mask)]
    params, grads = flat[0].copy(), flat[1]
    sgd = gpunn.SGD(learning_rate=1e-3, momentum=0.9)
    adam = gpunn.Adam(learning_rate=1e-3)
    for optimizer in (sgd, adam):
        optimizer.to(backend)
        optimizer.state = {name: cupy.zeros_like(params) for name in optimizer.STATE}
        optimizer.state["scratch"] = cupy.empty_like(params)
    tally = cupy.zeros(kernels.TALLY_SIZE, dtype=cupy.float64)
    classes = 10
    # Whole 10-class rows of x's first elements: a contiguous view (2^26 elements are no whole
    # number of rows, and a strided view would be copied before every launch, and timed).
    logits = x.reshape(-1)[:n // classes * classes].reshape(-1, classes)
    labels = cupy.zeros(len(logits), dtype=cupy.int64)
    probs, dlogits = cupy.empty_like(logits), cupy.empty_like(logits)
    softmax = gpunn.Softmax()
    softmax.to(backend, "float32")
    combined = gpunn.losses.SoftmaxCategoricalCrossentropy(backend)

    def book_softmax_ce() -> None:
        softmax.forward(logits)
        combined.backward(softmax.output, labels)

    return {
        "copy": (2 * n * item, None, lambda: out.data.copy_from_device_async(x.data, x.nbytes)),
        "relu": (2 * n * item, lambda: backend.relu(x, out=out),
                 lambda: cupy.maximum(x, zero, out=out)),
        "relu_backward": (3 * n * item, lambda: backend.relu_backward(dy, x, out=out),
                          lambda: cupy.where(x > zero, dy, zero)),
        "bias_add": (2 * n * item + b.nbytes, lambda: backend.bias_add(x, b, out=out),
                     lambda: cupy.add(x, b, out=out)),
        "bias_relu": (2 * n * item + b.nbytes, lambda: backend.bias_relu(x, b, out=out),
                      lambda: cupy.maximum(cupy.add(x, b, out=out), zero, out=out)),
        "dropout": (4 * n * item, lambda: backend.dropout(x, u, 0.9, mask=mask, out=out),
                    lambda: NumpyBackend.dropout(backend, x, u, 0.9, mask=mask, out=out)),
        "sgd_momentum": (5 * n * item,
                         lambda: backend.optimizer_step("sgd_momentum", params, grads,
                                                        sgd.state, sgd.config(), tally),
                         lambda: sgd._update(params, grads, cupy)),
        "adam": (7 * n * item,
                 lambda: backend.optimizer_step("adam", params, grads, adam.state,
                                                adam.config(), tally),
                 lambda: adam._update(params, grads, cupy)),
        "softmax_ce": (3 * logits.size * item + labels.nbytes,
                       lambda: backend.softmax_ce(logits, labels, tally, probs=probs,
                                                  dlogits=dlogits),
                       book_softmax_ce),
    }
