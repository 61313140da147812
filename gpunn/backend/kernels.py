"""Where the CUDA kernel sources live and which template instances gpunn compiles.

This is the one list of kernels: the CuPy backend compiles it with NVRTC at run time, and the
tests compile the same list with NVRTC (no GPU needed) and with g++ on the host.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from gpunn.errors import GpunnError

# Kernel family -> file in kernels/. Each kernel is instantiated for every type in DTYPES.
KERNELS = {
    "relu": "elementwise.cu",
    "relu_backward": "elementwise.cu",
    "bias_add": "elementwise.cu",
    "bias_relu": "elementwise.cu",
}
# The training loop's tally: one float64 device array the kernels add to (kernels/*.cu use the
# same slots): the sum of per-sample losses, correct predictions, non-finite losses seen, and the
# optimizer's step count.
TALLY_LOSS, TALLY_CORRECT, TALLY_NONFINITE, TALLY_ITERATIONS = range(4)
TALLY_SIZE = 4
# NumPy dtype name -> C++ type name.
DTYPES = {"float32": "float", "float64": "double"}
# NVRTC options gpunn gives CuPy at run time.
NVRTC_OPTIONS = ("--std=c++14",)
# What CuPy adds to every compile (cupy/cuda/compiler.py): float32 subnormals flush to zero, in
# inputs and results. So on CUDA a float32 kernel equals its NumPy twin on values with
# subnormals taken as zero; float64 is exact. The compile checks add it too.
CUPY_OPTIONS = ("-ftz=true",)


def kernel_dir() -> Path:
    """The folder holding the .cu files: inside the installed wheel, or kernels/ in a checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "kernels", package.parent / "kernels"):
        if (candidate / "elementwise.cu").is_file():
            return candidate
    raise GpunnError(
        f"gpunn's CUDA kernel sources are missing (looked in {package / 'kernels'} and "
        f"{package.parent / 'kernels'}). Reinstall gpunn: pip install --force-reinstall gpunn"
    )


def source_files() -> list[str]:
    """The kernel files, each once, in a stable order."""
    return sorted(set(KERNELS.values()))


@cache
def read_source(filename: str) -> str:
    """The text of one kernel file."""
    return (kernel_dir() / filename).read_text(encoding="utf-8")


def name_expression(kernel: str, dtype: str) -> str:
    """The C++ name of one template instance, e.g. ``relu<float>``."""
    return f"{kernel}<{DTYPES[dtype]}>"


def name_expressions(filename: str) -> list[str]:
    """Every template instance compiled from one kernel file."""
    return [
        name_expression(kernel, dtype)
        for kernel, file in KERNELS.items()
        if file == filename
        for dtype in DTYPES
    ]
