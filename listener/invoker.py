"""The API's way to run a function: now (synchronous) or through the queue (asynchronous).

``Invoker`` is for a process that has a provisioner (``standalone``): a
synchronous invocation runs the function in the API's own thread with
``run_execution``, exactly as the listener would. ``BrokerInvoker`` is for the
API alone (``lambda-os api``), which has no provisioner: a synchronous
invocation is published with ``reply_to`` and answered by a listener.

An asynchronous invocation claims a ``queued`` record first, so the 202 can name
the execution, then publishes the event addressed to that one function with
publisher confirms; the record is returned only once the broker holds the event.
If the publish fails the record is marked failed (the client got an error and no
event will run it) and ``TransientError`` is raised.

An invocation through an alias is handed the function at the version the alias
chose (``catalog_api.invocations``) and the alias's name, which its record keeps;
the published event needs neither, since its record names the version already.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from lambda_os.errors import TransientError
from lambda_os.records import ExecutionRecord, FunctionRecord
from lambda_os.settings import Settings
from listener.events import Event, encode_event, new_event_id
from listener.execute import claim, execute_claimed
from listener.match import API_EVENT_SOURCE, API_EVENT_TYPE
from provisioner.base import Provisioner

LOGGER = logging.getLogger(__name__)

REPLY_GRACE_S = 30.0


class EventPublisher(Protocol):
    """What the invoker needs from ``listener.publish.Publisher``."""

    def publish(
        self,
        body: bytes,
        *,
        message_id: str | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
    ) -> None: ...


class RequestPublisher(EventPublisher, Protocol):
    """A publisher that can also wait for the reply (``listener.publish.Publisher``)."""

    def request(
        self, body: bytes, *, message_id: str, correlation_id: str, timeout_s: float
    ) -> bytes | None: ...


class _Submitter:
    def __init__(
        self,
        catalogue: Any,
        publisher: EventPublisher,
        event_ids: Callable[[], str] = new_event_id,
    ) -> None:
        self._catalogue = catalogue
        self._publisher = publisher
        self._event_ids = event_ids

    def _event(self, function: FunctionRecord, data: Any, alias: str | None) -> Event:
        return Event(
            id=self._event_ids(),
            event_source=API_EVENT_SOURCE,
            event_type=API_EVENT_TYPE,
            data=data,
            function_id=function.id,
            id_origin="assigned",
            alias=alias,
        )

    def _mark_not_queued(self, record: ExecutionRecord, event: Event, exc: TransientError) -> None:
        """The event never reached the broker: the queued record ends failed, not waiting."""
        LOGGER.warning("event %s: not queued: %s", event.id, exc.description)
        self._catalogue.fail_queued_execution(
            record.id,
            record.attempt,
            {
                "type": "TransientError",
                "message": f"the event could not be queued: {exc.description}",
                "reason": "not queued",
            },
        )

    def submit(
        self, function: FunctionRecord, data: Any, alias: str | None = None
    ) -> ExecutionRecord:
        """Queue one execution through RabbitMQ; the queued record once the broker holds it."""
        record, _event = self._publish(function, data, alias)
        return record

    def _publish(
        self,
        function: FunctionRecord,
        data: Any,
        alias: str | None = None,
        reply_to: str | None = None,
    ) -> tuple[ExecutionRecord, Event]:
        event = self._event(function, data, alias)
        body = encode_event(
            event.event_source, event.event_type, data, id=event.id, function_id=function.id
        )
        record, _created = claim(self._catalogue, function, event)
        try:
            self._publisher.publish(
                body, message_id=event.id, reply_to=reply_to, correlation_id=record.id
            )
        except TransientError as exc:
            self._mark_not_queued(record, event, exc)
            raise
        LOGGER.info(
            "event %s: queued execution %s of function %s", event.id, record.id, function.id
        )
        return record, event


class Invoker(_Submitter):
    """Synchronous invocations run here on the provisioner; asynchronous ones go to the queue."""

    def __init__(
        self,
        catalogue: Any,
        provisioner: Provisioner,
        publisher: EventPublisher,
        event_ids: Callable[[], str] = new_event_id,
    ) -> None:
        super().__init__(catalogue, publisher, event_ids)
        self._provisioner = provisioner

    def invoke(
        self, function: FunctionRecord, data: Any, alias: str | None = None
    ) -> ExecutionRecord:
        """Run the function now and return its final record.

        A ``TransientError`` (engine down) marks the record failed before it
        propagates: no queue will retry a synchronous invocation.
        """
        event = self._event(function, data, alias)
        record, _created = claim(self._catalogue, function, event)
        try:
            return execute_claimed(self._catalogue, self._provisioner, function, event, record)
        except TransientError as exc:
            # The run gave its lease back (queued): no queue holds it, so it ends here.
            self._catalogue.fail_queued_execution(
                record.id,
                record.attempt,
                {"type": "TransientError", "message": exc.description, "reason": "unavailable"},
            )
            raise


class BrokerInvoker(_Submitter):
    """For the API without a provisioner: synchronous invocations are answered by a listener.

    ``invoke`` publishes the event with ``reply_to`` (``Publisher.request``) and
    waits for the listener's reply up to the function's timeout plus a grace
    period, then returns the stored record: still ``queued`` or ``running`` if no
    reply came in time (the API can answer with that state; the execution goes on).
    """

    def __init__(
        self,
        settings: Settings,
        catalogue: Any,
        publisher: RequestPublisher | None = None,
    ) -> None:
        if publisher is None:
            from listener.publish import Publisher

            publisher = Publisher(settings, name="lambda-os api")
        super().__init__(catalogue, publisher)
        self._requests = publisher

    def invoke(
        self, function: FunctionRecord, data: Any, alias: str | None = None
    ) -> ExecutionRecord:
        event = self._event(function, data, alias)
        body = encode_event(
            event.event_source, event.event_type, data, id=event.id, function_id=function.id
        )
        record, _created = claim(self._catalogue, function, event)
        try:
            reply = self._requests.request(
                body,
                message_id=event.id,
                correlation_id=record.id,
                timeout_s=function.timeout_s + REPLY_GRACE_S,
            )
        except TransientError as exc:
            self._mark_not_queued(record, event, exc)
            raise
        if reply is None:
            LOGGER.warning("event %s: no reply for execution %s in time", event.id, record.id)
        return self._catalogue.get_execution(record.id)
