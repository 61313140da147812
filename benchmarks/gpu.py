"""Run: python -m benchmarks --device cuda        (the kernels alone: --device cuda --only kernels)

On a CUDA GPU: the memory bandwidth gpunn's elementwise kernels (kernels/elementwise.cu) reach,
next to a device-to-device copy (the practical ceiling) and next to the plain CuPy expression a
user would write instead, on float32 arrays of 2^26 elements shaped (2^19, 128) as a hidden
layer's activations. Bandwidth counts the bytes each op must read and write once:

    relu           y = max(x, 0)                      read x, write y           8 bytes/element
    relu_backward  dx = dy where x > 0 else 0         read dy and x, write dx  12 bytes/element
    bias_add       y = x + b                          read x, write y           8 bytes/element
    bias_relu      y = max(x + b, 0), fused           read x, write y           8 bytes/element

A plain expression that makes temporaries (the boolean mask, two passes for bias + ReLU) moves
more bytes than that and so shows a lower rate: that is the point of the kernels. Each op is
timed with CUDA events over many launches. This module imports without CuPy; nothing here
runs unless ``gpunn.device("cuda")`` works.

The MLP comparison on the GPU is benchmarks/mlp.py run with device "cuda"; ``tf32_off`` makes
both sides use full float32 matrix products (CuPy's default; PyTorch's too since 1.12, set
here explicitly).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy

import gpunn
from benchmarks import timing

ELEMENTS = 1 << 26
COLUMNS = 128


def cuda_backend() -> tuple[Any, str | None]:
    """(gpunn's CUDA backend, None), or (None, why there is none). The CuPy double
    (tests/cupy_double) is no GPU: timings taken on it would be meaningless."""
    try:
        backend = gpunn.device("cuda")
    except gpunn.DeviceUnavailableError as error:
        return None, str(error)
    if hasattr(backend.xp, "_sim"):
        return None, "cupy is the CuPy double (simulated devices): it has no GPU to time"
    return backend, None


def gpu_name(backend: Any) -> str:
    """The GPU's name, as the CUDA runtime reports it."""
    properties = backend.xp.cuda.runtime.getDeviceProperties(backend.index)
    name = properties["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


@contextlib.contextmanager
def tf32_off(torch: Any) -> Iterator[dict[str, Any]]:
    """Full float32 matrix products on both sides for the duration; yields the settings."""
    settings = {"CUPY_TF32": os.environ.get("CUPY_TF32", "unset (TF32 off)")}
    if os.environ.get("CUPY_TF32", "0") != "0":
        print("warning: CUPY_TF32 is set, so CuPy's matrix products use TF32 and the GPU "
              "comparison with PyTorch (TF32 off) is not like for like; unset it.")
    if torch is None:
        yield settings
        return
    previous = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    settings["torch.backends.cuda.matmul.allow_tf32"] = False
    try:
        yield settings
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


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
        zero = numpy.float32(0)
        item = x.itemsize
        ops = {
            # name: (bytes moved, gpunn kernel, plain CuPy)
            "copy": (2 * n * item, None,
                     lambda: out.data.copy_from_device_async(x.data, x.nbytes)),
            "relu": (2 * n * item, lambda: backend.relu(x, out=out),
                     lambda: cupy.maximum(x, zero, out=out)),
            "relu_backward": (3 * n * item, lambda: backend.relu_backward(dy, x, out=out),
                              lambda: cupy.where(x > zero, dy, zero)),
            "bias_add": (2 * n * item + b.nbytes, lambda: backend.bias_add(x, b, out=out),
                         lambda: cupy.add(x, b, out=out)),
            "bias_relu": (2 * n * item + b.nbytes, lambda: backend.bias_relu(x, b, out=out),
                          lambda: cupy.maximum(cupy.add(x, b, out=out), zero, out=out)),
        }
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
