"""The process's Prometheus metrics: one registry, the metrics declared once.

Executions are counted where they run (``provisioner.metered``), requests where they
are answered (``catalog_api.prometheus``). Each process has its own figures: a
gunicorn API with several workers shows the worker that answered the scrape, so
scrape a listener or worker for its runs, and run the API with one worker (as
``standalone`` does) for exact request counts. ``serve`` exposes the registry on a
port of its own for processes without the API (``LAMBDA_OS_METRICS_PORT``).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

REGISTRY = CollectorRegistry()
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

EXECUTIONS = Counter(
    "lambda_os_executions",
    "Executions run by this process, by function and how they ended",
    ["function_id", "status"],
    registry=REGISTRY,
)
EXECUTION_ERRORS = Counter(
    "lambda_os_execution_errors",
    "Failed or timed-out executions, by function and reason",
    ["function_id", "reason"],
    registry=REGISTRY,
)
EXECUTION_SECONDS = Histogram(
    "lambda_os_execution_duration_seconds",
    "How long each execution ran, by function",
    ["function_id"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
EXECUTION_CPU_SECONDS = Counter(
    "lambda_os_execution_cpu_seconds",
    "CPU time the executions' containers used while running them, by function",
    ["function_id"],
    registry=REGISTRY,
)
EXECUTION_PEAK_MEMORY = Histogram(
    "lambda_os_execution_peak_memory_bytes",
    "Each execution's peak memory in its container, by function",
    ["function_id"],
    buckets=tuple(float(mb * 2**20) for mb in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)),
    registry=REGISTRY,
)
COLD_STARTS = Counter(
    "lambda_os_cold_starts",
    "Executions that needed a new container, by function",
    ["function_id"],
    registry=REGISTRY,
)
RUNNING = Gauge(
    "lambda_os_executions_running", "Executions running in this process now", registry=REGISTRY
)
HTTP_REQUESTS = Counter(
    "lambda_os_http_requests",
    "API requests answered by this process, by method, route and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "lambda_os_http_request_duration_seconds",
    "How long the API took to answer, by method and route",
    ["method", "route"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)


def exposition() -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve(host: str, port: int) -> None:
    """Expose the registry at ``http://host:port/metrics`` from a daemon thread."""
    start_http_server(port, addr=host, registry=REGISTRY)
