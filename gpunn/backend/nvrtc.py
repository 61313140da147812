"""Compiling the kernels with NVRTC through cuda-bindings, with no GPU or driver: the check
behind `gpunn info` and tests/test_kernels.py. (At run time CuPy compiles them itself.)"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpunn.backend import kernels

ARCHITECTURES = ("sm_80", "sm_90")  # Ampere and Hopper: what the checks compile for
# Where CUDA's headers come from without a toolkit: the CUDA runtime wheel (which CuPy's ctk
# extra installs, and where CuPy itself looks first) holds cuda_fp16.h and cuda_bf16.h.
HEADERS_HINT = ("pip install 'gpunn[cuda13]' (CuPy's ctk extra brings the CUDA headers), or "
                "pip install nvidia-cuda-runtime, or set CUDA_PATH to a CUDA toolkit")
# nvidia-cuda-runtime's include folder inside the nvidia namespace package: CUDA 13, CUDA 12.
_WHEEL_INCLUDES = ("cu13/include", "cuda_runtime/include")


def cuda_include_dir() -> Path | None:
    """The folder holding CUDA's cuda_fp16.h and cuda_bf16.h: the nvidia-cuda-runtime wheel's,
    else $CUDA_PATH/include or $CUDA_HOME/include; None when there is none."""
    candidates = []
    try:
        import nvidia  # the namespace package of NVIDIA's wheels

        candidates += [Path(root) / sub for root in nvidia.__path__ for sub in _WHEEL_INCLUDES]
    except ImportError:
        pass
    candidates += [Path(os.environ[name]) / "include" for name in ("CUDA_PATH", "CUDA_HOME")
                   if os.environ.get(name)]
    return next((folder for folder in candidates
                 if (folder / "cuda_fp16.h").is_file() and (folder / "cuda_bf16.h").is_file()),
                None)


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


def compile_file(nvrtc: Any, filename: str, architecture: str, *,
                 low_precision: bool = False) -> Compiled:
    """Compile every template instance of one kernel file to a cubin for ``architecture``,
    with the options CuPy compiles it with; with ``low_precision`` the float16 and bfloat16
    instances, with CUDA's headers on the include path (as CuPy puts them there)."""
    options = kernels.options(low_precision=low_precision) + kernels.CUPY_OPTIONS
    if low_precision:
        include = cuda_include_dir()
        if include is None:
            return Compiled(False, f"CUDA's cuda_fp16.h was not found: {HEADERS_HINT}")
        options += (f"-I{include}",)
    return compile_source(nvrtc, kernels.read_source(filename), filename,
                          kernels.name_expressions(filename, low_precision=low_precision),
                          architecture, options)


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
