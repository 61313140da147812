"""Run, on a machine with network:  python -m benchmarks.gpu_wheels wheels/

Downloads the wheels that the project's GPU machine lacks and gpunn needs there, for CPython
3.12 on manylinux x86-64, into a folder of the checkout that git ignores (``wheels/``), and
prints their total size. ``python -m benchmarks.gpu_check`` (no network, nothing installed)
installs whatever it finds there with ``pip install --no-index --no-deps --target`` into a
temporary folder of its own.

The GPU machine (benchmarks/README.md, "On a GPU machine without network") has Python 3.12 and
the packages of ``MACHINE`` below. Against pyproject.toml's ``cuda13`` extra
(``cupy-cuda13x[ctk]``, ``nvidia-nccl-cu13``, ``nvmath-python``) it lacks nvmath-python, whose
cuBLAS bindings let a CUDA graph capture the training step and carry every CUDA product
(gpunn/backend/blas.py). Its dependencies cuda-bindings, cuda-core and cuda-pathfinder are
there, in versions nobody has read (the image's package list names them without versions), and
nvmath-python 1.0.1 imports only with cuda-core >= 0.5 (with 0.4.2: "cannot import name
'Stream'") and cuda-pathfinder >= 1.5.1: so pinned versions of both that it imports with come
too, and gpu_check puts them before the machine's own. ``python -m benchmarks.gpu_probe`` says
in seconds whether that worked. The tests need nothing more: pytest, pytest-timeout and
hypothesis are there too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "wheels"
PYTHON_VERSION = "3.12"
PLATFORM = "manylinux_2_28_x86_64"
# What the GPU machine lacks, pinned to the version the nvmath-python double's API list was
# generated from (tests/nvmath_double/nvmath_api.json); its cp312 wheel is manylinux_2_28. Then
# what nvmath-python 1.0.1 needs (its Requires-Dist: cuda-core>=0.5.0,<2,
# cuda-pathfinder>=1.5.1,<2.0), pinned to the versions the dev extra's nvmath-python imports with
# (cuda-core 1.2.2 wants cuda-pathfinder>=1.4.2 and, for CUDA 13, the machine's cuda-bindings 13).
WHEELS = ("nvmath-python==1.0.1", "cuda-core==1.2.2", "cuda-pathfinder==1.9.1")
# What the GPU machine has (Python 3.12.3; numpy 2.5.2, cupy-cuda13x 14.2.0 and torch
# 2.11.0+cu130 among them). The rehearsal (tests/test_gpu_check.py) builds an environment from
# those PyPI has for CPython 3.12, less CuPy (replaced by the CuPy double), torch (PyPI's cp312
# torch is the CUDA build, 3 GB with its libraries, and the CPU index is out of reach) and the
# CUDA libraries only a GPU calls (cuBLAS, NCCL).
MACHINE = ("numpy==2.5.2", "cuda-bindings", "cuda-core", "cuda-pathfinder", "nvidia-cuda-nvrtc",
           "mpi4py", "onnx", "onnxruntime==1.30.*", "pytest", "pytest-timeout", "hypothesis",
           "tqdm", "matplotlib", "threadpoolctl", "ml-dtypes", "scikit-learn")
# Beside those, the rehearsal's environment takes the CUDA headers the CuPy double needs to
# build gpunn's float16/bfloat16 kernels on the host (tests/kernel_host): cuda_fp16.h and
# cuda_bf16.h from nvidia-cuda-runtime (which CuPy's ctk extra brings on a GPU machine, and NVRTC
# compiles those kernels with) and what their host paths include from nvidia-cuda-crt and
# nvidia-cuda-cccl (a GPU never needs these two).
DOUBLE_ONLY = ("nvidia-cuda-runtime>=13,<14", "nvidia-cuda-crt>=13,<14",
               "nvidia-cuda-cccl>=13,<14")
MACHINE_ONLY = {"cupy-cuda13x": "replaced by the CuPy double (tests/cupy_double)",
                "torch": "PyPI's cp312 torch is the CUDA build (3 GB with its libraries)",
                "nvidia-cublas": "only a GPU calls it", "nvidia-nccl-cu13": "only GPUs call it"}


def download(folder: Path) -> list[Path]:
    """The wheels of ``WHEELS`` in ``folder`` (downloaded unless there already)."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--python-version", PYTHON_VERSION, "--platform", PLATFORM, "--dest",
               str(folder), *WHEELS]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return found(folder)


def found(folder: Path) -> list[Path]:
    """The wheels in ``folder``, by name."""
    return sorted(folder.glob("*.whl")) if folder.is_dir() else []


def install(folder: Path, target: Path) -> dict[str, Any]:
    """``pip install --no-index --no-deps --target`` of the wheels in ``folder`` (what
    benchmarks/gpu_check.py does on the GPU machine); what was installed, or why not."""
    wheels = found(folder)
    result: dict[str, Any] = {"folder": str(folder), "wheels": [w.name for w in wheels],
                              "installed": False}
    if not wheels:
        result["skipped"] = (f"no wheels in {folder}: python -m benchmarks.gpu_wheels "
                             f"{folder} on a machine with network brings them")
        return result
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps",
                           "--disable-pip-version-check", "--target", str(target),
                           *map(str, wheels)], capture_output=True, text=True)
    result["installed"] = done.returncode == 0
    if done.returncode != 0:
        result["error"] = (done.stdout + done.stderr)[-3000:]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_wheels",
                                     description=__doc__.split("\n\n")[1])
    parser.add_argument("folder", type=Path, nargs="?", default=FOLDER,
                        help=f"where the wheels go (default {FOLDER}; git ignores it)")
    folder = parser.parse_args(argv).folder
    wheels = download(folder)
    total = sum(wheel.stat().st_size for wheel in wheels)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:8.1f} MiB  {wheel.name}")
    print(f"{total / 2**20:8.1f} MiB in {len(wheels)} wheel(s) in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
