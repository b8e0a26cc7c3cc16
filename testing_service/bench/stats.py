"""Summaries of measured samples: percentiles and rates, as plain dicts ready for JSON."""

from __future__ import annotations

import math
import statistics
from typing import Any


def percentile(samples: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ``samples`` (None when there are none)."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def latency(samples_ms: list[float]) -> dict[str, Any]:
    """p50, p99, mean and count of latencies in milliseconds."""
    return {
        "n": len(samples_ms),
        "p50_ms": _round(percentile(samples_ms, 0.50)),
        "p99_ms": _round(percentile(samples_ms, 0.99)),
        "mean_ms": _round(statistics.fmean(samples_ms) if samples_ms else None),
    }


def rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 and count else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
