"""Choosing the device: the one place gpunn looks for CuPy and a working GPU.

``device("cpu" | "cuda" | "cuda:N" | "auto")`` returns a backend object; layers, losses and
optimizers do their math through it, so the same model code runs on NumPy or CuPy.
"""

from __future__ import annotations

import logging
import os
import re

import numpy

from gpunn.backend.numpy_backend import NumpyBackend
from gpunn.errors import DeviceUnavailableError, InvalidArgumentError, InvalidTypeError

Backend = NumpyBackend  # the interface; CupyBackend subclasses it
DeviceLike = str | NumpyBackend | None

ENV_VAR = "GPUNN_DEVICE"
log = logging.getLogger("gpunn")
_backends: dict[str, NumpyBackend] = {}
_auto: NumpyBackend | None = None
_host_random = numpy.random.default_rng()
_seed: int | None = None  # applied to backends opened after gpunn.seed()
_CUDA = re.compile(r"cuda(?::(\d+))?")


def device(spec: DeviceLike = None) -> NumpyBackend:
    """The backend for ``spec``: "cpu", "cuda", "cuda:N" or "auto" (default: $GPUNN_DEVICE, else
    "auto"). Example: ``gpunn.device("cuda:0").xp`` is ``cupy``.
    """
    global _auto
    if isinstance(spec, NumpyBackend):
        return spec
    if spec is None:
        spec = os.environ.get(ENV_VAR) or "auto"
    if not isinstance(spec, str):
        raise InvalidTypeError(f"device must be a string such as 'cpu', 'cuda', 'cuda:0' or "
                               f"'auto'; received {spec!r} of type {type(spec).__name__}.")
    key = spec.strip().lower()
    if key == "auto":
        if _auto is None:
            try:
                _auto = _open("cuda:0")
            except DeviceUnavailableError as error:
                _auto = _open("cpu")
                log.info("gpunn: device auto -> cpu (%s)", error)
            else:
                log.info("gpunn: device auto -> %s", _auto.device)
        return _auto
    if key == "cpu":
        return _open("cpu")
    match = _CUDA.fullmatch(key)
    if match is None:
        raise InvalidArgumentError(
            f"Unknown device {spec!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N' with N a "
            f"device index such as 'cuda:0'."
        )
    return _open(f"cuda:{int(match.group(1) or 0)}")


def _open(key: str) -> NumpyBackend:
    backend = _backends.get(key)
    if backend is None:
        if key == "cpu":
            from gpunn.backend import host

            backend = host.cpu_backend()  # with the host kernels when they compile
        else:
            from gpunn.backend.cupy_backend import CupyBackend

            backend = CupyBackend(int(key.split(":")[1]))
        if _seed is not None:
            backend.seed(_seed)
        _backends[key] = backend
    return backend


def seed(value: int) -> None:
    """Seed every random draw gpunn makes (initial weights, shuffling, dropout masks).

    Example: ``gpunn.seed(0)`` before building a model makes CPU training repeatable.
    """
    global _host_random, _seed
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < 0:
        raise InvalidArgumentError(f"seed must be a non-negative integer; received {value!r}.")
    _seed = int(value)
    _host_random = numpy.random.default_rng(_seed)
    for backend in _backends.values():
        backend.seed(_seed)


def host_random() -> numpy.random.Generator:
    """The host generator behind initial weights and shuffling, the same whatever the device, so
    a seeded model starts from the same parameters on CPU and GPU."""
    return _host_random


def random_state() -> dict:
    """The state of gpunn's CPU random generators (JSON-serialisable), for checkpoints."""
    state = {"host": _host_random.bit_generator.state}
    if "cpu" in _backends:
        state["cpu"] = _backends["cpu"].random.bit_generator.state
    return state


def set_random_state(state: dict) -> None:
    """Restore what ``random_state`` returned, so a resumed run draws what the original would."""
    _host_random.bit_generator.state = state["host"]
    if "cpu" in state:
        _open("cpu").random.bit_generator.state = state["cpu"]
