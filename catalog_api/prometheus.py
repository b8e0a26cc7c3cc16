"""``/metrics`` on the API: request counts and times by route, and, in ``standalone``,
the executions of the listener in the same process (``lambda_os.prometheus``).

Labelled by route template (``/v1/functions/{function_id}``), never by path, so ids do
not leak into the figures and their number stays bounded. Needs no token: it holds
no project's data.
"""

from __future__ import annotations

import time
from typing import Any

import falcon

from lambda_os import prometheus


class RequestMetrics:
    """Falcon middleware: count and time every answered request."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started_at = time.perf_counter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        started = getattr(req.context, "started_at", None)
        route = req.uri_template or "unrouted"
        status = str(resp.status).split(" ", 1)[0] if resp.status else "200"
        prometheus.HTTP_REQUESTS.labels(req.method, route, status).inc()
        if started is not None:
            elapsed = time.perf_counter() - started
            prometheus.HTTP_SECONDS.labels(req.method, route).observe(elapsed)


class MetricsResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        body, content_type = prometheus.exposition()
        resp.content_type = content_type
        resp.data = body
