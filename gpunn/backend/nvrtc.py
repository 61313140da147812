"""Compiling the kernels with NVRTC through cuda-bindings, with no GPU or driver: the check
behind `gpunn info` and tests/test_kernels.py. (At run time CuPy compiles them itself.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpunn.backend import kernels

ARCHITECTURES = ("sm_80", "sm_90")  # Ampere and Hopper: what the checks compile for


@dataclass
class Compiled:
    """The outcome of compiling one kernel file for one architecture."""

    ok: bool
    log: str
    cubin_size: int = 0
    lowered_names: dict[str, str] = field(default_factory=dict)


def load() -> tuple[Any, str]:
    """(the nvrtc bindings module, its version "major.minor"), or (None, why it is missing)."""
    try:
        from cuda.bindings import nvrtc

        error, major, minor = nvrtc.nvrtcVersion()
    except Exception as error:  # ImportError, or the NVRTC library behind the bindings missing
        return None, f"NVRTC unavailable ({error}); pip install -e '.[dev]' brings it"
    if error != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        return None, f"NVRTC did not load ({error})"
    return nvrtc, f"{major}.{minor}"


def compile_file(nvrtc: Any, filename: str, architecture: str) -> Compiled:
    """Compile every template instance of one kernel file to a cubin for ``architecture``,
    with the options CuPy compiles it with."""
    return compile_source(nvrtc, kernels.read_source(filename), filename,
                          kernels.name_expressions(filename), architecture,
                          kernels.NVRTC_OPTIONS + kernels.CUPY_OPTIONS)


def compile_source(nvrtc: Any, source: str, filename: str, names: list[str], architecture: str,
                   options: tuple[str, ...]) -> Compiled:
    """Compile ``source`` with NVRTC and ``options`` for ``architecture``, instantiating
    ``names`` (name expressions such as ``relu<float>``)."""
    ok = nvrtc.nvrtcResult.NVRTC_SUCCESS
    error, program = nvrtc.nvrtcCreateProgram(source.encode(), filename.encode(), 0, [], [])
    if error != ok:
        return Compiled(False, f"nvrtcCreateProgram failed: {error}")
    try:
        for name in names:
            nvrtc.nvrtcAddNameExpression(program, name.encode())
        options = [f"--gpu-architecture={architecture}".encode(),
                   *(option.encode() for option in options)]
        (error,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
        _, size = nvrtc.nvrtcGetProgramLogSize(program)
        # A bytearray, never b" " * size: NVRTC writes into the buffer, and for an empty log
        # (size 1) b" " * 1 is CPython's shared one-byte b" ", which would become b"\x00" for
        # the whole process (every " " encoded after that printed as NUL).
        log = bytearray(size)
        nvrtc.nvrtcGetProgramLog(program, log)
        log = bytes(log).decode(errors="replace").rstrip("\x00 ")
        if error != ok:
            return Compiled(False, log or str(error))
        _, cubin_size = nvrtc.nvrtcGetCUBINSize(program)
        lowered = {}
        for name in names:
            error, symbol = nvrtc.nvrtcGetLoweredName(program, name.encode())
            if error == ok and symbol:
                lowered[name] = symbol.decode()
        return Compiled(True, log, int(cubin_size), lowered)
    finally:
        nvrtc.nvrtcDestroyProgram(program)
