"""Run first in a GPU call, before the check's stages (benchmarks/README.md, "On a GPU machine
without network", gives the whole command):

    export PYTHONPATH="$PWD"; timeout 30 python3 -m benchmarks.gpu_probe --out "$OUT"

About 20 seconds that say, in a file of their own ($OUT/gpu-probe.json, written before the
stages start), whether the wheels brought in wheels/ give gpunn what it needs there: the
versions of the packages nvmath-python's import depends on, as the machine has them and as
Python finds them with the wheels first on the path (as gpu_check puts them), and whether
``import nvmath`` and ``from nvmath.bindings import cublas`` succeed there, with the error if
not, and whether libcublas loads. A failing import is known in seconds, not at the end of a
stage. The exit status is 1 when the import fails with the wheels.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import gpu_wheels

SECONDS = 20  # the whole probe; each of its two child processes gets a share
PACKAGES = ("nvmath-python", "cuda-core", "cuda-pathfinder", "cuda-bindings", "ml-dtypes",
            "nvidia-cublas", "nvidia-cuda-runtime", "nvidia-cuda-nvrtc", "cupy-cuda13x", "numpy")
# What each child runs: versions and where they come from, then the imports, timed.
_CHILD = r"""
import importlib.metadata as metadata, json, sys, time
found = {}
for name in sys.argv[1:]:
    try:
        distribution = metadata.distribution(name)
        found[name] = {"version": distribution.version,
                       "from": str(distribution.locate_file(""))}
    except metadata.PackageNotFoundError:
        found[name] = {"version": None}
result = {"packages": found}
started = time.monotonic()
try:
    import nvmath
    from nvmath.bindings import cublas
    result["import_nvmath"] = "ok"
    result["nvmath_from"] = nvmath.__file__
except Exception as error:
    result["import_nvmath"] = f"{type(error).__name__}: {error}"
result["import_seconds"] = round(time.monotonic() - started, 2)
if result["import_nvmath"] == "ok":
    try:
        result["libcublas"] = f"loads (cuBLAS major version {cublas.get_property(0)})"
    except Exception as error:
        result["libcublas"] = f"{type(error).__name__}: {error}"
print(json.dumps(result))
"""


def child(paths: list[str], seconds: float) -> dict[str, Any]:
    """The versions and imports as a Python with ``paths`` first on PYTHONPATH sees them."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [*paths, *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD, *PACKAGES], env=env,
                              capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {seconds:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"exit status {done.returncode}: {done.stderr[-2000:]}"}
    return json.loads(lines[-1])


def probe(wheels: Path, scratch: Path) -> dict[str, Any]:
    started = time.monotonic()
    installed = gpu_wheels.install(wheels, scratch / "site")
    left = SECONDS - (time.monotonic() - started)
    result: dict[str, Any] = {"wheels": installed,
                              "machine": child([], left / 2)}
    paths = [str(scratch / "site")] if installed["installed"] else []
    result["with_wheels"] = child(paths, SECONDS - (time.monotonic() - started))
    result["seconds"] = round(time.monotonic() - started, 1)
    result["ok"] = result["with_wheels"].get("import_nvmath") == "ok"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_probe",
                                     description=__doc__.split("\n\n")[1])
    parser.add_argument("--out", type=Path, required=True, help="the folder for gpu-probe.json")
    parser.add_argument("--wheels", type=Path, default=gpu_wheels.FOLDER,
                        help=f"the wheels gpu_check installs (default {gpu_wheels.FOLDER})")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu-probe.json"
    path.write_text(json.dumps({"started": time.time(), "state": "running"}) + "\n")
    with tempfile.TemporaryDirectory(prefix="gpu-probe-") as folder:
        result = probe(args.wheels, Path(folder))
    text = json.dumps(result, indent=1) + "\n"
    path.write_text(text)
    print(text, end="")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
