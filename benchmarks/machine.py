"""Run: python -m benchmarks (this module describes the machine and pins the thread pools)

What the JSON records about the machine: CPU model and cores, the BLAS NumPy uses and its
threads, library versions, the environment variables that change BLAS speed, and the load
average (another busy process on the machine makes every number here noisy).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import re
from collections.abc import Iterator
from typing import Any

import numpy

import gpunn

# Variables that change which kernels and how many threads the BLAS libraries use.
ENVIRONMENT = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
               "MKL_NUM_THREADS", "MKL_ENABLE_INSTRUCTIONS", "GPUNN_DEVICE", "CUPY_TF32",
               "CUDA_VISIBLE_DEVICES")
# Those of them that change the speed measured, not just the thread count (which --threads
# pins): when set, they go into the results' name, as the committed
# cpu-amd-epyc-2c-openblas-coretype-haswell.* shows.
NAMED_ENVIRONMENT = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "MKL_ENABLE_INSTRUCTIONS",
                     "CUPY_TF32")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where the system has none."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def slug(text: str) -> str:
    """``text`` as a file-name part: lower case, words joined by dashes."""
    text = re.sub(r"\((r|tm|c)\)|\bcpu\b|@.*$", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def result_name(gpu: str | None = None) -> str:
    """The machine's part of the results' name: ``cpu-<cpu model>-<cores>c``, or
    ``cuda-<gpu>-...`` with a GPU."""
    machine = f"{slug(cpu_model())}-{cores()}c"
    return f"cuda-{slug(gpu)}-{machine}" if gpu else f"cpu-{machine}"


def environment_settings(environment: dict[str, str | None]) -> list[str]:
    """The variables of ``NAMED_ENVIRONMENT`` that are set, as name parts, such as
    ``openblas-coretype-haswell`` for OPENBLAS_CORETYPE=Haswell."""
    return [_part(f"{name} {environment[name]}") for name in NAMED_ENVIRONMENT
            if environment.get(name)]


def stamp(date: str) -> str:
    """An ISO date such as 2026-11-25T15:30:12+00:00 as a name part: 20261125T1530 (UTC)."""
    parsed = datetime.datetime.fromisoformat(date).astimezone(datetime.timezone.utc)
    return parsed.strftime("%Y%m%dT%H%M")


def _part(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def blas() -> dict[str, Any]:
    """NumPy's BLAS as built (name, version) and as loaded (threadpoolctl: threads, kernels)."""
    built: dict[str, Any] = {}
    with contextlib.suppress(Exception):  # show_config's dict form is NumPy >= 1.25
        built = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
    try:
        import threadpoolctl
    except ImportError:
        return {"numpy": built, "threadpools": None,
                "threadpoolctl": "not installed: pip install threadpoolctl"}
    numpy_folder = os.path.dirname(os.path.dirname(numpy.__file__))
    pools = threadpoolctl.threadpool_info()
    for pool in pools:
        pool["numpy"] = "numpy" in os.path.relpath(pool.get("filepath", ""), numpy_folder)
    return {"numpy": built, "threadpools": pools}


def numpy_blas_text(info: dict[str, Any]) -> str:
    """One line on NumPy's BLAS, as a reader of the table wants it."""
    pools = [pool for pool in info.get("threadpools") or [] if pool.get("numpy")
             and pool.get("user_api") == "blas"]
    if pools:
        pool = pools[0]
        return (f"{pool.get('internal_api')} {pool.get('version')} "
                f"({pool.get('architecture', '?')} kernels, {pool.get('num_threads')} threads)")
    built = info.get("numpy") or {}
    return f"{built.get('name', 'unknown')} {built.get('version', '')}".strip()


def describe(torch: Any) -> dict[str, Any]:
    """Everything about the machine and the libraries a result depends on."""
    versions = {"python": platform.python_version(), "numpy": numpy.__version__,
                "gpunn": gpunn.__version__,
                "torch": getattr(torch, "__version__", None) if torch else None}
    for name in ("threadpoolctl", "matplotlib", "cupy"):
        with contextlib.suppress(Exception):
            versions[name] = __import__(name).__version__
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cores": cores(),
        "platform": platform.platform(),
        "load_average_start": load_average(),
        "environment": {name: os.environ.get(name) for name in ENVIRONMENT},
        "versions": versions,
    }


@contextlib.contextmanager
def pinned_threads(threads: int, torch: Any) -> Iterator[None]:
    """NumPy's BLAS and PyTorch both limited to ``threads`` threads, restored afterwards."""
    previous = torch.get_num_threads() if torch else None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("note: threadpoolctl is not installed, so NumPy's BLAS threads are not pinned "
              "(pip install threadpoolctl, or install gpunn[bench]).")
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(limits=threads, user_api="blas")
    with limits:
        if torch:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch:
                torch.set_num_threads(previous)


class OtherProcesses:
    """The share of the machine's CPU time other processes used while the block ran: the sign
    of a disturbed measurement. Linux only (/proc); ``share`` stays None elsewhere.

    Example: ``with OtherProcesses() as others: ...; others.share`` is 0.0 on a quiet machine.
    """

    share: float | None = None

    def __enter__(self) -> OtherProcesses:
        self._start = _cpu_ticks()
        return self

    def __exit__(self, *exc: Any) -> None:
        end = _cpu_ticks()
        if self._start is None or end is None:
            return
        wall = end[0] - self._start[0]
        busy = end[1] - self._start[1]
        mine = end[2] - self._start[2]
        if wall > 0:
            self.share = max(0.0, min(1.0, (busy - mine) / (wall * cores())))


def _cpu_ticks() -> tuple[float, float, float] | None:
    """(wall seconds, seconds all CPUs were busy, seconds this process ran), from /proc."""
    import time

    try:
        with open("/proc/stat", encoding="ascii") as file:
            fields = [int(value) for value in file.readline().split()[1:]]
        with open("/proc/self/stat", encoding="ascii") as file:
            own = file.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return time.monotonic(), busy / tick, (int(own[11]) + int(own[12])) / tick
