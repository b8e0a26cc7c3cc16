"""Invoking a function over HTTP: the body is the event data, the answer its execution.

Synchronous by default (200 with the finished execution, or 202 with the record as
it stands when no listener answered in time); ``?mode=async`` hands the event to
the broker and answers 202 with the queued execution's id. The
running itself is the injected ``Invoker``'s; without one, 503.
"""

from __future__ import annotations

import falcon

from catalog_api.auth.scope import scope_of
from catalog_api.executions import execution_url
from catalog_api.forms import MAX_EVENT_BODY, read_json
from catalog_api.invoker import Invoker
from catalog_api.quotas import QuotaGuard
from catalog_api.schemas import InvocationQuerySchema
from lambda_os.catalogue import Catalogue


class InvocationsResource:
    """``/v1/functions/{id}/invocations``."""

    def __init__(self, catalogue: Catalogue, invoker: Invoker | None, quotas: QuotaGuard) -> None:
        self._catalogue = catalogue
        self._invoker = invoker
        self._quotas = quotas

    def on_post(self, req: falcon.Request, resp: falcon.Response, function_id: str) -> None:
        function = scope_of(req, self._catalogue).function(function_id)
        mode = InvocationQuerySchema().load(req.params)["mode"]
        data = read_json(req, MAX_EVENT_BODY)
        if self._invoker is None:
            raise falcon.HTTPServiceUnavailable(
                title="Invocations unavailable",
                description="this API server was started without an invoker, so it cannot run "
                "functions; run the platform with `lambda-os standalone`, or publish an event "
                "to the events queue for a listener to run",
            )
        if mode != "async":  # an async event waits its turn on the queue
            self._quotas.before_run(function.owner, function.memory_mb)
        if mode == "async":
            record = self._invoker.submit(function, data)
            resp.status = falcon.HTTP_202
            resp.location = execution_url(record.id)
            resp.media = {"id": record.id, "status": record.status}
            return
        record = self._invoker.invoke(function, data)
        if not record.finished:
            # No listener answered in time; the execution goes on and its record will say.
            resp.status = falcon.HTTP_202
            resp.location = execution_url(record.id)
        resp.media = record.to_api()
