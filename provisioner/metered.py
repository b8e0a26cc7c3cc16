"""A provisioner that counts what it runs into the process's Prometheus metrics.

Wrapped around any backend in ``lambda_os.serve``: the outcome a backend returns is
what ran, so counting here needs no hook in the listener or the catalogue.
"""

from __future__ import annotations

from typing import Any

from lambda_os import prometheus
from provisioner.base import Invocation, Outcome


class MeteredProvisioner:
    def __init__(self, provisioner: Any) -> None:
        self._provisioner = provisioner

    def run(self, invocation: Invocation) -> Outcome:
        prometheus.RUNNING.inc()
        try:
            outcome = self._provisioner.run(invocation)
        finally:
            prometheus.RUNNING.dec()
        function = invocation.function_id
        prometheus.EXECUTIONS.labels(function, outcome.status).inc()
        prometheus.EXECUTION_SECONDS.labels(function).observe(outcome.duration_ms / 1000)
        if outcome.cpu_ms is not None:
            prometheus.EXECUTION_CPU_SECONDS.labels(function).inc(outcome.cpu_ms / 1000)
        if outcome.peak_memory_mb is not None:
            prometheus.EXECUTION_PEAK_MEMORY.labels(function).observe(
                outcome.peak_memory_mb * 2**20
            )
        if outcome.cold_start:
            prometheus.COLD_STARTS.labels(function).inc()
        if outcome.error is not None:
            reason = outcome.error.get("reason") or outcome.error.get("type") or "unknown"
            prometheus.EXECUTION_ERRORS.labels(function, str(reason)).inc()
        return outcome

    def __getattr__(self, name: str) -> Any:
        # capacity, usage, close and whatever else the backend offers pass through.
        return getattr(self._provisioner, name)
