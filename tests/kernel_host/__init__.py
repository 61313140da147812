"""Compile kernels/*.cu as C++ with the host shim and call the kernels through ctypes."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

from gpunn.backend import kernels

HERE = Path(__file__).resolve().parent
CTYPES = {"float32": "float", "float64": "double"}


def compiler() -> str | None:
    """The host C++ compiler, or None."""
    return shutil.which("g++") or shutil.which("c++")


def build(out_dir: Path) -> ctypes.CDLL:
    """Compile the kernels and their host launchers into a shared library; raises with the
    compiler's log on failure."""
    library = out_dir / "gpunn_kernels_host.so"
    command = [compiler(), "-std=c++14", "-O2", "-ffp-contract=off", "-Wall", "-Werror",
               "-shared", "-fPIC", "-include", str(HERE / "shim.h"),
               "-I", str(kernels.kernel_dir()), str(HERE / "launch.cpp"), "-o", str(library)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"host compile failed: {' '.join(command)}\n{result.stderr}")
    return ctypes.CDLL(str(library))


class HostKernels:
    """Runs the kernels on the host with a chosen grid and block size."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self.library = library

    def _call(self, kernel, dtype, grid, block, arrays, *sizes):
        function = getattr(self.library, f"{kernel}_{CTYPES[dtype.name]}")
        pointers = [ctypes.c_void_p(a.ctypes.data) for a in arrays]
        function(ctypes.c_uint(grid), ctypes.c_uint(block), *pointers,
                 *[ctypes.c_longlong(s) for s in sizes])

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
