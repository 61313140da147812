"""``gpunn info``: versions, devices, and whether the CUDA kernels compile."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Any

import numpy

import gpunn as gn
from gpunn import backend, precision
from gpunn.backend import host, kernels, nvrtc
from gpunn.cli._common import debug_option
from gpunn.errors import GpunnError


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``gpunn info``."""
    parser = commands.add_parser("info", parents=[debug_option()],
                                 help="versions, devices, and whether the CUDA kernels compile")
    parser.set_defaults(run=info)


def info(args: argparse.Namespace) -> int:
    rows = [("gpunn", gn.__version__),
            ("Python", f"{platform.python_version()} ({sys.executable})"),
            ("NumPy", numpy.__version__)]
    devices, architectures = ["cpu (NumPy)"], list(nvrtc.ARCHITECTURES)
    try:
        import cupy
    except ImportError:
        rows += [("CuPy", "not installed (for a GPU: pip install 'gpunn[cuda12]' or "
                          "'gpunn[cuda13]')"),
                 ("CUDA runtime", "not used without CuPy"), ("CUDA driver", _driver_version())]
    else:
        from gpunn.backend.cupy_backend import count_devices

        runtime = cupy.cuda.runtime
        rows += [("CuPy", cupy.__version__),
                 ("CUDA runtime", _cuda_version(runtime.runtimeGetVersion)),
                 ("CUDA driver", _cuda_version(runtime.driverGetVersion))]
        try:
            for index in range(count_devices(cupy)):
                devices.append(_gpu(cupy, index))
                # CuPy gives the compute capability as a string such as "90"
                architectures.append(f"sm_{cupy.cuda.Device(index).compute_capability}")
        except GpunnError as error:
            devices.append(f"no CUDA device ({error})")
    rows.append(("devices", "; ".join(devices)))
    rows.append(("CPU fast path", host.status_line()))
    rows.append(("precisions", _precisions(sum(d.startswith("cuda:") for d in devices))))
    try:
        spec = os.environ.get(backend.ENV_VAR) or "auto"
        rows.append(("default device", f"{spec} -> {gn.device(None).device}"))
    except GpunnError as error:
        rows.append(("default device", f"unusable: {error}"))
    kernel_status, ok = _kernel_check(sorted(set(architectures)))
    rows.append(("CUDA kernels", kernel_status))
    # Compiling is not running: say what this release's CUDA path has been run on (README,
    # "What has run where").
    rows.append(("tested", "the CPU path measured; the CUDA path verified on a simulated CuPy "
                           "double, not yet run on a GPU (see README, What has run where)"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name + ':':<{width + 1}} {value}")
    return 0 if ok else 1


def _precisions(gpus: int) -> str:
    """The precision policies each device can train with (gpunn.precision): bfloat16 and TF32
    need compute capability 8.0, float16 tensor cores 7.0."""
    parts = [f"cpu: {', '.join(precision.supported(gn.device('cpu')))} (bfloat16 for "
             f"correctness, not speed)"]
    for index in range(gpus):
        try:
            parts.append(f"cuda:{index}: "
                         f"{', '.join(precision.supported(gn.device(f'cuda:{index}')))}")
        except GpunnError as error:
            parts.append(f"cuda:{index}: none ({error})")
    return "; ".join(parts)


def _cuda_version(getter: Any) -> str:
    try:
        version = int(getter())
    except Exception as error:  # CuPy raises CUDARuntimeError, or others when CUDA is broken
        return f"not found ({error})"
    if version == 0:  # what CUDA reports for the driver when there is none
        return "not found (no NVIDIA driver)"
    return f"{version // 1000}.{version % 1000 // 10}"


def _driver_version() -> str:
    try:
        from cuda.bindings import driver
    except ImportError:
        return "not checked: neither CuPy nor cuda-bindings is installed"
    try:
        error, version = driver.cuDriverGetVersion()
    except Exception as error:  # the driver library itself is missing: no NVIDIA driver
        return f"not found ({error})"
    return f"{version // 1000}.{version % 1000 // 10}" if version else f"not found ({error})"


def _gpu(cupy: Any, index: int) -> str:
    properties = cupy.cuda.runtime.getDeviceProperties(index)
    name = properties["name"]
    name = name.decode() if isinstance(name, bytes) else name
    with cupy.cuda.Device(index):
        free, total = cupy.cuda.runtime.memGetInfo()
    return f"cuda:{index} {name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free)"


def _kernel_check(architectures: list[str]) -> tuple[str, bool]:
    """Compile every kernel instance with NVRTC, as tests/test_kernels.py does (no GPU needed)."""
    module, version = nvrtc.load()
    if module is None:
        return f"not checked: {version}", True
    failures = [f"{filename} for {architecture}: {compiled.log.splitlines()[:1]}"
                for filename in kernels.source_files() for architecture in architectures
                if not (compiled := nvrtc.compile_file(module, filename, architecture)).ok]
    if failures:
        return f"FAILED to compile with NVRTC {version}: {'; '.join(failures)}", False
    count = sum(len(kernels.name_expressions(name)) for name in kernels.source_files())
    text = (f"all {count} compile with NVRTC {version} for {', '.join(architectures)} "
            f"(compiled, not run)")
    # The float16/bfloat16 instances need CUDA's headers; without them the 16-bit precision
    # policies are unavailable, the rest works: said, not a failure.
    half = [nvrtc.compile_file(module, filename, architecture, low_precision=True)
            for filename in kernels.source_files() for architecture in architectures
            if kernels.name_expressions(filename, low_precision=True)]
    failed = [compiled for compiled in half if not compiled.ok]
    if failed:
        text += (f"; the float16/bfloat16 ones do not ({failed[0].log.splitlines()[0][:200]}): "
                 f"precision bfloat16 and float16 need them")
    else:
        low = sum(len(kernels.name_expressions(name, low_precision=True))
                  for name in kernels.source_files())
        text += f"; with the CUDA headers, the {low} float16/bfloat16 ones too"
    return text, True
