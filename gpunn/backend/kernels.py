"""Where the CUDA kernel sources live and which template instances gpunn compiles.

This is the one list of kernels: the CuPy backend compiles it with NVRTC at run time, and the
tests compile the same list with NVRTC (no GPU needed) and with g++ on the host.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from gpunn.errors import GpunnError

# Kernel family -> file in kernels/. Each kernel is instantiated for every type in DTYPES,
# except those in UNTYPED, which take no element type and have one instance of their own name.
KERNELS = {
    "relu": "elementwise.cu",
    "relu_backward": "elementwise.cu",
    "bias_add": "elementwise.cu",
    "bias_relu": "elementwise.cu",
    "softmax_ce": "softmax_ce.cu",
    "dropout": "dropout.cu",
    "sgd": "optimizers.cu",
    "sgd_momentum": "optimizers.cu",
    "adagrad": "optimizers.cu",
    "rmsprop": "optimizers.cu",
    "adam": "optimizers.cu",
    "unscale": "optimizers.cu",
    "advance": "optimizers.cu",
}
UNTYPED = ("advance",)
# NumPy dtype name -> C++ type name: every typed kernel has these instances.
DTYPES = {"float32": "float", "float64": "double"}
# The half-precision instances, of the kernels in LOW_PRECISION_KERNELS only (bfloat16 is
# ml_dtypes.bfloat16 in NumPy). They need CUDA's cuda_fp16.h and cuda_bf16.h, so they are a
# second compile of the same files with LOW_PRECISION_OPTIONS (which includes those headers and
# defines the types' arithmetic traits in common.cuh), so a failure there leaves float32 and
# float64 working. (CuPy 14 itself refuses every compile without CUDA's headers, whatever the
# source includes: cupy/_core/core.pyx, assemble_cupy_compiler_options.) These kernels compute
# in float and round once to the element type.
LOW_PRECISION_DTYPES = {"float16": "__half", "bfloat16": "__nv_bfloat16"}
LOW_PRECISION_KERNELS = ("relu", "relu_backward", "bias_add", "bias_relu", "dropout")
LOW_PRECISION_OPTIONS = ("-DGPUNN_LOW_PRECISION",)
# NVRTC options gpunn gives CuPy at run time. NVRTC's default --fmad=true stays: a * b + c
# becomes one fused multiply-add, so on a GPU a kernel can differ from its NumPy twin in the last
# bit (the host build in tests/kernel_host does not contract, and matches it exactly).
NVRTC_OPTIONS = ("--std=c++14",)
# What CuPy adds to every compile (cupy/cuda/compiler.py): float32 subnormals flush to zero, in
# inputs and results. So on CUDA a float32 kernel equals its NumPy twin on values with
# subnormals taken as zero; float64 is exact. The compile checks add it too.
CUPY_OPTIONS = ("-ftz=true",)

# The tally: a float64 device array of TALLY_SIZE numbers that a training step updates on the
# GPU, so metrics and the divergence check need no copy to the host per step. The kernels use
# the same slots (enum in kernels/common.cuh; a test checks they agree).
# The loss scaler (unscale and advance in optimizers.cu) keeps its state here too, as PyTorch's
# GradScaler keeps its scale and growth tracker in device tensors. The training loop resets the
# slots below TALLY_ITERATIONS every epoch, so TALLY_SKIPPED counts per epoch.
TALLY_LOSS = 0        # sum of per-sample data losses
TALLY_CORRECT = 1     # correct predictions
TALLY_NONFINITE = 2   # non-finite losses seen, or gradients that overflow at the smallest scale
TALLY_SKIPPED = 3     # steps skipped because their gradients held an inf or NaN
TALLY_ITERATIONS = 4  # optimizer steps done
TALLY_SCALE = 5       # the loss scale (a float32 value, as GradScaler's scale tensor)
TALLY_GOOD_STEPS = 6  # steps since the scale last changed (GradScaler's growth tracker)
TALLY_FOUND_INF = 7   # this step's gradients held an inf or NaN (unscale sets it, advance resets)
TALLY_SIZE = 8

# Optimizer update rule (a kernel in optimizers.cu) -> (the optimizer state arrays it takes after
# params and grads, the hyperparameters it takes after learning_rate and decay), in the kernel's
# argument order and by the names gpunn/optimizers.py uses.
OPTIMIZER_RULES = {
    "sgd": ((), ()),
    "sgd_momentum": (("momentums",), ("momentum",)),
    "adagrad": (("cache",), ("epsilon",)),
    "rmsprop": (("cache",), ("rho", "epsilon")),
    "adam": (("momentums", "cache"), ("epsilon", "beta_1", "beta_2")),
}


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


_LOCAL_INCLUDE = re.compile(r'^#include "([\w.]+)"[ \t]*$', re.M)


@cache
def read_source(filename: str) -> str:
    """The text of one kernel file, with the headers it includes from kernels/ pasted in.

    One self-contained text is what NVRTC compiles with no include path, and what CuPy's kernel
    cache is keyed by: a changed header changes the key, where an #include would not."""
    text = (kernel_dir() / filename).read_text(encoding="utf-8")
    return _LOCAL_INCLUDE.sub(lambda match: read_source(match.group(1)), text)


def dtypes(kernel: str, *, low_precision: bool = False) -> list[str | None]:
    """The dtypes ``kernel`` is instantiated for: every one in DTYPES, or [None] if untyped;
    with ``low_precision``, those of LOW_PRECISION_DTYPES it has instead (maybe none)."""
    if low_precision:
        return list(LOW_PRECISION_DTYPES) if kernel in LOW_PRECISION_KERNELS else []
    return [None] if kernel in UNTYPED else list(DTYPES)


def is_low_precision(dtype: str | None) -> bool:
    """Whether instances for ``dtype`` (a NumPy dtype name) are in the low-precision compile."""
    return dtype in LOW_PRECISION_DTYPES


def name_expression(kernel: str, dtype: str | None) -> str:
    """The C++ name of one instance, e.g. ``relu<float>`` or ``relu<__half>``; an untyped
    kernel's own name."""
    if kernel in UNTYPED:
        return kernel
    return f"{kernel}<{DTYPES.get(dtype) or LOW_PRECISION_DTYPES[dtype]}>"


def name_expressions(filename: str, *, low_precision: bool = False) -> list[str]:
    """Every kernel instance compiled from one kernel file: the float32 and float64 ones, or
    with ``low_precision`` the float16 and bfloat16 ones (compiled with LOW_PRECISION_OPTIONS)."""
    return [
        name_expression(kernel, dtype)
        for kernel, file in KERNELS.items()
        if file == filename
        for dtype in dtypes(kernel, low_precision=low_precision)
    ]


def options(*, low_precision: bool = False) -> tuple[str, ...]:
    """The NVRTC options gpunn compiles with (CuPy adds CUPY_OPTIONS)."""
    return NVRTC_OPTIONS + (LOW_PRECISION_OPTIONS if low_precision else ())
