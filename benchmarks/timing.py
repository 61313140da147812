"""Run: python -m benchmarks (this module holds the clock and the statistics every part uses)

Times are wall-clock seconds from ``time.perf_counter`` around work that ends with a device
synchronisation; summaries give the median and the spread (min, max, quartiles) over repeats.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

SETTLE_SECONDS = 0.25


def settle() -> None:
    """Wait for idle thread pools to go to sleep before timing another library: OpenBLAS's
    workers spin for about 0.1 s after each call and take a core from whatever runs next
    (measured: PyTorch's matmul right after NumPy's is 20% slower than a second later)."""
    time.sleep(SETTLE_SECONDS)


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call of ``work``, which must synchronise its device itself."""
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def per_call(work: Callable[[], Any], synchronize: Callable[[], None], *, min_seconds: float,
             repeats: int) -> list[float]:
    """Seconds per call of ``work``, ``repeats`` times, each timing enough calls in a row to
    last ``min_seconds`` (short calls are too fast for the clock one at a time)."""
    work()
    synchronize()
    calls = 1
    while True:
        seconds = _run(work, synchronize, calls)
        if seconds >= min_seconds or calls >= 1 << 20:
            break
        calls *= 2 if seconds <= 0 else max(2, min(16, int(min_seconds / seconds) + 1))
    return [seconds / calls] + [_run(work, synchronize, calls) / calls
                                for _ in range(repeats - 1)]


def _run(work: Callable[[], Any], synchronize: Callable[[], None], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        work()
    synchronize()
    return time.perf_counter() - start


def summary(values: list[float]) -> dict[str, Any]:
    """Median, min, max and quartiles of ``values``, with the values themselves."""
    values = [float(value) for value in values]
    ordered = sorted(values)
    if len(ordered) > 1:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1],
            "q1": q1, "q3": q3, "n": len(ordered), "values": values}


def rates(amount: float, seconds: list[float]) -> dict[str, Any]:
    """``summary`` of the rates ``amount / seconds`` (samples/s, steps/s), one per repeat."""
    return summary([amount / value for value in seconds])
