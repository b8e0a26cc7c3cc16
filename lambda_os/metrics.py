"""A function's figures over a window, computed from its execution records.

The records are the one source of truth for what ran, so the figures need no second
bookkeeping that could disagree: counts by status, errors by reason, duration
percentiles of finished runs, cold starts, and executions per day (UTC). At most
``MAX_RECORDS`` of the newest records in the window are read; ``truncated`` says
when there were more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

MAX_RECORDS = 100_000
PERCENTILES = (50, 90, 99)


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None for none."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil without floats
    return sorted_values[int(rank) - 1]


def error_reason(error: dict[str, Any] | None) -> str:
    """The platform's reason (``timeout``, ``internal error``...) or the exception's type."""
    if not error:
        return "unknown"
    return str(error.get("reason") or error.get("type") or "unknown")


def function_metrics(
    docs: Iterable[dict[str, Any]], since: datetime, truncated: bool = False
) -> dict[str, Any]:
    """The figures of these execution documents (status, error, duration_ms, cold_start,
    created_at, cpu_ms, peak_memory_mb), all made at or after ``since``."""
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    per_day: Counter[str] = Counter()
    durations: list[float] = []
    cpu: list[float] = []
    peaks: list[float] = []
    cold = warm = 0
    for doc in docs:
        status = doc.get("status", "")
        statuses[status] += 1
        if status in ("failed", "timed_out"):
            errors[error_reason(doc.get("error"))] += 1
        if doc.get("duration_ms") is not None:
            durations.append(float(doc["duration_ms"]))
        if doc.get("cpu_ms") is not None:
            cpu.append(float(doc["cpu_ms"]))
        if doc.get("peak_memory_mb") is not None:
            peaks.append(float(doc["peak_memory_mb"]))
        if doc.get("cold_start") is True:
            cold += 1
        elif doc.get("cold_start") is False:
            warm += 1
        created = doc.get("created_at")
        if isinstance(created, datetime):
            per_day[created.date().isoformat()] += 1
    durations.sort()
    cpu.sort()
    peaks.sort()
    return {
        "since": since.isoformat(),
        "executions": sum(statuses.values()),
        "by_status": dict(sorted(statuses.items())),
        "errors": dict(errors.most_common()),
        "duration_ms": {
            **{f"p{p}": percentile(durations, p) for p in PERCENTILES},
            "max": durations[-1] if durations else None,
        },
        "cpu_ms": {
            **{f"p{p}": percentile(cpu, p) for p in PERCENTILES},
            "max": cpu[-1] if cpu else None,
            "total": round(sum(cpu), 3),
        },
        "peak_memory_mb": {
            **{f"p{p}": percentile(peaks, p) for p in PERCENTILES},
            "max": peaks[-1] if peaks else None,
        },
        "cold_starts": cold,
        "cold_start_rate": cold / (cold + warm) if cold + warm else None,
        "per_day": [{"day": day, "executions": n} for day, n in sorted(per_day.items())],
        "truncated": truncated,
    }
