"""Compile kernels/*.cu as C++ with the host shim and launch any kernel instance through ctypes.

The kernel signatures are read from the .cu sources and every instance listed in
``gpunn.backend.kernels`` gets a C entry point, so a new kernel needs no code here. The kernel
tests and the CuPy double (tests/cupy_double) both launch kernels through this module.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from gpunn.backend import kernels, nvrtc

HERE = Path(__file__).resolve().parent
# C scalar type -> (NumPy dtype of the same width and kind, ctypes type)
SCALARS = {
    "float": (np.dtype(np.float32), ctypes.c_float),
    "double": (np.dtype(np.float64), ctypes.c_double),
    "int": (np.dtype(np.int32), ctypes.c_int),
    "unsigned": (np.dtype(np.uint32), ctypes.c_uint),
    "unsigned int": (np.dtype(np.uint32), ctypes.c_uint),
    "long long": (np.dtype(np.int64), ctypes.c_longlong),
    "unsigned long long": (np.dtype(np.uint64), ctypes.c_ulonglong),
    "bool": (np.dtype(np.bool_), ctypes.c_bool),
    # CUDA's half types (the low-precision compile), as arrays only: no kernel takes one by value
    "__half": (np.dtype(np.float16), None),
    "__nv_bfloat16": (np.dtype(ml_dtypes.bfloat16), None),
}
# Accum<T> (kernels/common.cuh): the type a kernel over T computes in
ACCUM = {"float": "float", "double": "double", "__half": "float", "__nv_bfloat16": "float"}
# The instances that flush float32 subnormals under CuPy's -ftz=true: those computing in float.
FLUSHED = {np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)}
_KERNEL = re.compile(r"(?:template\s*<\s*typename\s+(\w+)\s*>\s*)?__global__\s+void\s+(\w+)\s*"
                     r"\(([^)]*)\)", re.S)


@dataclass(frozen=True)
class Param:
    """One kernel parameter with the template argument substituted: ``const float*`` etc."""

    name: str
    base: str  # the C scalar type, e.g. "float" or "long long"
    pointer: bool
    const: bool

    @property
    def dtype(self) -> np.dtype:
        return SCALARS[self.base][0]

    @property
    def c_type(self) -> str:
        return f"{'const ' if self.const else ''}{self.base}{'*' if self.pointer else ''}"


def compiler() -> str | None:
    """The host C++ compiler, or None."""
    return shutil.which("g++") or shutil.which("c++")


def signatures(source: str) -> dict[str, tuple[str | None, list[str]]]:
    """Kernel name -> (template parameter or None, parameter declarations) in a .cu source."""
    found = {}
    for template, name, params in _KERNEL.findall(source):
        declarations = [" ".join(p.split()) for p in params.split(",") if p.strip()]
        found[name] = (template or None, declarations)
    return found


def parameters(source: str, expression: str) -> list[Param]:
    """The parameters of one instance such as ``relu<float>``, template argument substituted."""
    match = re.fullmatch(r"(\w+)(?:<(.+)>)?", expression.replace(" ", ""))
    name, argument = match.group(1), match.group(2)
    template, declarations = signatures(source)[name]
    result = []
    for declaration in declarations:
        if template is not None:
            declaration = re.sub(rf"\b{template}\b", argument, declaration)
            declaration = re.sub(r"\bAccum<(\w+)>", lambda m: ACCUM[m.group(1)], declaration)
        declaration = declaration.replace("__restrict__", " ")
        pointer = "*" in declaration
        words = declaration.replace("*", " ").split()
        const = "const" in words
        words = [word for word in words if word != "const"]
        base, param_name = " ".join(words[:-1]), words[-1]
        if base not in SCALARS:
            raise ValueError(f"kernel {expression}: parameter type {base!r} is not one the host "
                             f"shim knows ({', '.join(SCALARS)})")
        result.append(Param(param_name, base, pointer, const))
    return result


class HostModule:
    """Every kernel instance of some kernel files, compiled for the host."""

    def __init__(self, library: ctypes.CDLL, params: dict[str, list[Param]]) -> None:
        self.library = library
        self.params = params
        self._entries = {name: getattr(library, f"gpunn_host_{i}")
                         for i, name in enumerate(params)}

    def launch(self, expression: str, grid: int, block: int, values: list, *, ftz: bool) -> None:
        """Run ``expression`` over ``grid`` blocks of ``block`` threads. ``values``: one per
        parameter, an address (int) for pointers and a number for scalars; the caller checks
        them. ``ftz``: run with float32 flush-to-zero, as CuPy's -ftz=true does on a GPU."""
        params = self.params[expression]
        if len(values) != len(params):
            raise TypeError(f"{expression} takes {len(params)} arguments; received {len(values)}")
        cells = [ctypes.c_void_p(value) if param.pointer else SCALARS[param.base][1](value)
                 for param, value in zip(params, values)]
        pointers = (ctypes.c_void_p * max(len(cells), 1))(
            *[ctypes.cast(ctypes.pointer(cell), ctypes.c_void_p) for cell in cells])
        self._entries[expression](ctypes.c_uint(grid), ctypes.c_uint(block), ctypes.c_int(ftz),
                                  pointers)


def low_precision_flags() -> list[str]:
    """g++'s flags for the low-precision compile: the define and CUDA's headers (cuda_fp16.h,
    and the crt/ and nv/ headers it includes on the host), or RuntimeError saying what to
    install."""
    include = nvrtc.cuda_include_dir()
    if include is None:
        raise RuntimeError(f"the float16 and bfloat16 kernels need CUDA's cuda_fp16.h: "
                           f"{nvrtc.HEADERS_HINT}")
    flags = ["-DGPUNN_LOW_PRECISION", "-I", str(include)]
    if (include / "cccl").is_dir():  # a CUDA 13 toolkit keeps nv/target there
        flags += ["-I", str(include / "cccl")]
    return flags


def build(out_dir: Path, *, code: str | None = None, expressions: list[str] | None = None,
          low_precision: bool = False) -> HostModule:
    """Compile CUDA source (default: every file in kernels/) with an entry point per instance
    (default: ``kernels.name_expressions`` of every file; with ``low_precision`` the float16 and
    bfloat16 ones, compiled with -DGPUNN_LOW_PRECISION and CUDA's headers); raises with the
    compiler's log on failure. Builds are cached in ``out_dir`` by the hash of what they
    compile."""
    if code is None:
        code = "".join(f'#include "{filename}"\n' for filename in kernels.source_files())
        source = "".join(kernels.read_source(filename) for filename in kernels.source_files())
        expressions = expressions or [
            name for filename in kernels.source_files()
            for name in kernels.name_expressions(filename, low_precision=low_precision)]
    else:
        source = code
    flags = low_precision_flags() if low_precision else []
    params = {expression: parameters(source, expression) for expression in expressions}
    lines = ['#include "shim.h"', code]
    for index, (expression, param_list) in enumerate(params.items()):
        arguments = ", ".join(f"*({param.c_type}*)a[{i}]" for i, param in enumerate(param_list))
        lines.append(f'extern "C" void gpunn_host_{index}(unsigned grid, unsigned block, '
                     f"int ftz, void** a) {{ gpunn_host_launch(grid, block, ftz != 0, [&] {{ "
                     f"{expression}({arguments}); }}); }}")
    text = "\n".join(lines) + "\n"
    digest = hashlib.sha256((text + source + (HERE / "shim.h").read_text()
                             + " ".join(flags)).encode())
    library = Path(out_dir) / f"gpunn_kernels_host_{digest.hexdigest()[:16]}.so"
    if not library.is_file():
        entry = library.with_suffix(f".{os.getpid()}.cpp")
        entry.write_text(text)
        partial = library.with_suffix(f".{os.getpid()}.so")
        command = [compiler(), "-std=c++14", "-O2", "-ffp-contract=off", "-Wall", "-Werror",
                   "-shared", "-fPIC", *flags, "-I", str(HERE), "-I",
                   str(kernels.kernel_dir()), str(entry), "-o", str(partial)]
        result = subprocess.run(command, capture_output=True, text=True)
        entry.unlink()
        if result.returncode != 0:
            raise RuntimeError(f"host compile failed: {' '.join(command)}\n{result.stderr}")
        os.replace(partial, library)  # processes building the same library never clash
    return HostModule(ctypes.CDLL(str(library)), params)


class HostKernels:
    """gpunn's kernels on NumPy arrays with a chosen grid and block size, compiled as CuPy
    compiles them: instances that compute in float32 flush subnormals to zero (-ftz=true).
    ``low_precision``: the float16 and bfloat16 instances (build(..., low_precision=True))."""

    def __init__(self, module: HostModule, low_precision: HostModule | None = None) -> None:
        self.module = module
        self.low_precision = low_precision

    def _call(self, kernel, dtype, grid, block, arrays, *scalars):
        """Launch the ``dtype`` instance of ``kernel`` (None: an untyped kernel); ``arrays``
        are the pointer arguments, then ``scalars``, each in the kernel's parameter order."""
        dtype_name = None if dtype is None else dtype.name
        name = kernels.name_expression(kernel, dtype_name)
        module = self.low_precision if kernels.is_low_precision(dtype_name) else self.module
        module.launch(name, grid, block, [a.ctypes.data for a in arrays] + list(scalars),
                      ftz=dtype in FLUSHED)

    @staticmethod
    def _geometry(n, grid, block):
        return (max(1, -(-n // block)) if grid is None else grid), block

    def relu(self, x, out=None, *, grid=None, block=256):
        x = np.ascontiguousarray(x)
        out = np.empty_like(x) if out is None else out
        self._call("relu", x.dtype, *self._geometry(x.size, grid, block), (x, out), x.size)
        return out

    def relu_backward(self, dvalues, inputs, *, grid=None, block=256):
        dvalues, inputs = np.ascontiguousarray(dvalues), np.ascontiguousarray(inputs)
        out = np.empty_like(dvalues)
        self._call("relu_backward", dvalues.dtype, *self._geometry(dvalues.size, grid, block),
                   (dvalues, inputs, out), dvalues.size)
        return out

    def _bias(self, kernel, x, biases, grid, block):
        x, biases = np.ascontiguousarray(x), np.ascontiguousarray(biases)
        out = np.empty_like(x)
        self._call(kernel, x.dtype, *self._geometry(x.size, grid, block), (x, biases, out),
                   x.size, x.shape[1])
        return out

    def bias_add(self, x, biases, *, grid=None, block=256):
        return self._bias("bias_add", x, biases, grid, block)

    def bias_relu(self, x, biases, *, grid=None, block=256):
        return self._bias("bias_relu", x, biases, grid, block)

    def softmax_ce(self, logits, labels, tally, *, scale_rows=None, grid=None, block=256):
        """(probs, dlogits); ``tally`` (float64, TALLY_SIZE) is updated in place."""
        logits = np.ascontiguousarray(logits)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        probs, dlogits = np.empty_like(logits), np.empty_like(logits)
        rows, cols = logits.shape
        self._call("softmax_ce", logits.dtype, *self._geometry(rows, grid, block),
                   (logits, labels, probs, dlogits, tally), rows, cols,
                   rows if scale_rows is None else scale_rows)
        return probs, dlogits

    def dropout(self, x, u, keep, *, grid=None, block=256):
        """(mask, y)."""
        x, u = np.ascontiguousarray(x), np.ascontiguousarray(u)
        mask, y = np.empty_like(x), np.empty_like(x)
        self._call("dropout", x.dtype, *self._geometry(x.size, grid, block), (x, u, mask, y),
                   x.size, keep)
        return mask, y

    def optimizer_step(self, rule, parameters, gradients, state, hyper, tally, *, grid=None,
                       block=256):
        """Update ``parameters`` and the ``state`` arrays in place, as
        CupyBackend.optimizer_step does."""
        state_names, hyper_names = kernels.OPTIMIZER_RULES[rule]
        n = parameters.size
        self._call(rule, parameters.dtype, *self._geometry(n, grid, block),
                   (parameters, gradients, *(state[name] for name in state_names)), n,
                   hyper["learning_rate"], hyper["decay"],
                   *(hyper[name] for name in hyper_names), tally.ctypes.data)

    def unscale(self, gradients, tally, *, grid=None, block=256):
        """Divide ``gradients`` by the loss scale in place, flagging an inf or NaN in ``tally``."""
        self._call("unscale", gradients.dtype, *self._geometry(gradients.size, grid, block),
                   (gradients,), gradients.size, tally.ctypes.data)

    def advance(self, tally, growth_factor=1.0, backoff_factor=1.0, growth_interval=0,
                min_scale=float("inf"), *, grid=1, block=1):
        """Count the step and update the loss scale in ``tally``; the defaults: no scaling."""
        self._call("advance", None, grid, block, (tally,), growth_factor, backoff_factor,
                   growth_interval, min_scale)
