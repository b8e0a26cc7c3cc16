"""Invoking a function over HTTP: the body is the event data, the answer its execution.

Synchronous by default (200 with the finished execution, or 202 with the record as
it stands when no listener answered in time); ``?mode=async`` hands the event to
the broker and answers 202 with the queued execution's id. The
running itself is the injected ``Invoker``'s; without one, 503.

``?alias=live`` runs the version the function's alias ``live`` chooses (404 if it
has none). With a weighted alias the version is drawn once, here, from a key of
its own: the invocation's record is made with that version before anything can
deliver it twice, so unlike an event it needs no key that a redelivery repeats.
"""

from __future__ import annotations

import uuid

import falcon

from catalog_api.auth.scope import scope_of
from catalog_api.executions import execution_url
from catalog_api.forms import MAX_EVENT_BODY, read_json
from catalog_api.invoker import Invoker
from catalog_api.quotas import QuotaGuard
from catalog_api.schemas import InvocationQuerySchema
from lambda_os.catalogue import Catalogue
from lambda_os.records import FunctionRecord


class InvocationsResource:
    """``/v1/functions/{id}/invocations``."""

    def __init__(self, catalogue: Catalogue, invoker: Invoker | None, quotas: QuotaGuard) -> None:
        self._catalogue = catalogue
        self._invoker = invoker
        self._quotas = quotas

    def on_post(self, req: falcon.Request, resp: falcon.Response, function_id: str) -> None:
        function = scope_of(req, self._catalogue).function(function_id)
        query = InvocationQuerySchema().load(req.params)
        mode, alias = query["mode"], query.get("alias")
        data = read_json(req, MAX_EVENT_BODY)
        if alias is not None:
            function = self._at_alias(function, alias)
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
            record = self._invoker.submit(function, data, alias=alias)
            resp.status = falcon.HTTP_202
            resp.location = execution_url(record.id)
            resp.media = {"id": record.id, "status": record.status}
            return
        record = self._invoker.invoke(function, data, alias=alias)
        if not record.finished:
            # No listener answered in time; the execution goes on and its record will say.
            resp.status = falcon.HTTP_202
            resp.location = execution_url(record.id)
        resp.media = record.to_api()

    def _at_alias(self, function: FunctionRecord, alias: str) -> FunctionRecord:
        """The function at the version its alias chooses for this invocation; 404 without it."""
        chosen = self._catalogue.get_alias(function.id, alias).version_for(
            uuid.uuid4().hex, function.id
        )
        if chosen == function.version:
            return function
        return self._catalogue.get_function_version(function.id, chosen)
