"""The API served as ``lambda-os api`` serves it (``gunicorn_options``), without a broker.

Run as a script by the live tests: settings come from the environment, the
catalogue is in memory, and invocations go to ``EchoInvoker``, which answers at
once with the event data as the result, so a test sees exactly what the
function would have been given (events posted to ``/v1/events`` are kept
by ``KeptEvents``); an event ``{"fail": true}`` ends failed and leaves
a dead letter, as a run whose retries are exhausted does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from catalog_api.app import create_app, served
from lambda_os.catalogue import Catalogue, connect
from lambda_os.records import (
    DeadLetterRecord,
    ExecutionRecord,
    FunctionRecord,
    execution_id_for,
    utcnow,
)
from lambda_os.serve import GunicornServer, gunicorn_options
from lambda_os.settings import Settings
from listener.topology import Topology


class EchoInvoker:
    """Stores a finished record whose result is the event data it was given."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue
        self._count = 0

    def invoke(
        self, function: FunctionRecord, data: Any, alias: str | None = None
    ) -> ExecutionRecord:
        self._count += 1
        event_id = f"live-{self._count}"
        record = ExecutionRecord(
            id=execution_id_for(event_id, function.id),
            function_id=function.id,
            function_version=function.version,
            event_id=event_id,
            event=data,
            status="succeeded",
            alias=alias,
        )
        if isinstance(data, dict) and data.get("fail") is True:
            error = {"type": "Failed", "message": "asked to fail", "reason": "handler error"}
            record = dataclasses.replace(record, status="failed", error=error)
        else:
            record = dataclasses.replace(record, result={"event": data})
        record = dataclasses.replace(record, finished_at=utcnow())
        stored = self._catalogue.create_execution(record)[0]
        if stored.status == "failed":
            letter = DeadLetterRecord(
                "",
                "retries exhausted",
                "asked to fail",
                event_id=event_id,
                function_id=function.id,
                execution_id=stored.id,
            )
            self._catalogue.add_dead_letter(letter)
        return stored

    def submit(
        self, function: FunctionRecord, data: Any, alias: str | None = None
    ) -> ExecutionRecord:
        return self.invoke(function, data, alias)


class KeptEvents:
    """Takes the events ``POST /v1/events`` publishes and keeps them, as a broker would hold them."""

    def __init__(self, settings: Settings) -> None:
        self.topology = Topology.from_settings(settings)
        self.published: list[tuple[str, str, bytes]] = []

    def publish(
        self,
        body: bytes,
        *,
        message_id: str | None = None,
        routing_key: str | None = None,
        exchange: str = "",
    ) -> None:
        self.published.append((exchange, routing_key or "", body))


def build(settings: Settings) -> Any:
    """The app as ``lambda-os api`` serves it, behind what its auth mode needs."""
    catalogue = connect(None, "live")
    app = create_app(
        catalogue, settings, invoker=EchoInvoker(catalogue), events=KeptEvents(settings)
    )
    return served(app, settings)


if __name__ == "__main__":
    settings = Settings.from_env()
    GunicornServer(lambda: build(settings), gunicorn_options(settings, workers=1)).run()
