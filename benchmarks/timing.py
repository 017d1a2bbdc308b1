"""The timing loop the benchmarks share: wall-clock seconds of repeated calls after a warm-up call."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def call_seconds(step: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls of `step`, after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


def median_seconds(step: Callable[[], object], repeats: int) -> float:
    """Median seconds per call: for latencies, where one slow call should not move the figure."""
    return statistics.median(call_seconds(step, repeats))


def mean_seconds(step: Callable[[], object], repeats: int) -> float:
    """Mean seconds per call: for throughput, where every call's time counts."""
    return statistics.fmean(call_seconds(step, repeats))


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, nearest rank: p99 of 100 requests is the 99th slowest."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))]
