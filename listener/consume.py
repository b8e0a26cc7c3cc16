"""Consume: take events off the queue, run them on a thread pool, ack what is stored.

One ``Session`` is one connection's life. It follows pika's threaded-consumer
example: ``channel.consume(queue, inactivity_timeout=1)`` on the connection's
thread, so the stop flag is seen every second and heartbeats flow; the work runs
on a thread pool; each result comes back to the connection's thread with
``connection.add_callback_threadsafe`` (pika's connection is not thread-safe), and
the ack is sent there only after every execution record of the event is stored.

What happens to a message:

- not an event (``InvalidEvent``): a copy is published, with confirm, straight
  to the dead-letter queue with the reason in the ``x-lambda-reason`` header and
  the original headers kept, and only then is the original acked. The broker's
  own dead-lettering (``basic_nack(requeue=False)``) adds ``x-death`` but cannot
  carry our reason, so it is only the fallback when that publish is refused:
  then the message still lands on the dead-letter queue through the queue's DLX,
  and the reason is in the log. Either way nothing is lost and the consumer goes on.
- no function matches: acked and counted.
- run: acked after the records are stored; replies go to ``reply_to`` first.
- ``TransientError`` (engine or catalogue down): after a short pause on the
  worker (not the connection thread) it is nacked with requeue, the one case where
  requeueing cannot loop on a message that will always fail.
- any other error (a bug): dead-lettered as above with the reason
  ``internal error: ...``, never requeued.

If the connection dies while work is in flight, the work still finishes and
stores its records; its ack cannot be sent, so the broker redelivers the message
on the next connection and ``run_execution`` finds the records finished.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from typing import Any

import pika
import pika.exceptions

from lambda_os.errors import LambdaError, TransientError
from lambda_os.records import ExecutionRecord, iso, utcnow
from listener.events import Event, InvalidEvent, parse_event
from listener.topology import Topology, declare

LOGGER = logging.getLogger(__name__)

REASON_HEADER = "x-lambda-reason"
COUNTER_NAMES = (
    "received",
    "matched",
    "no_match",
    "dead_lettered",
    "executions",
    "requeued",
    "replies",
)


class TopologyError(LambdaError):
    """The broker refused our declarations: the configuration is wrong, retrying cannot help."""

    title = "Broker configuration"


class Counters:
    """What the listener has done since it started; safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(COUNTER_NAMES, 0)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class EventGuard:
    """One event id at a time in this process.

    A message published twice (a publisher retry) or redelivered after a
    reconnect while its first delivery still runs would otherwise run the same
    (event, function) twice at once; the second waits here and then finds the
    records finished.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, list[Any]] = {}

    @contextmanager
    def hold(self, event_id: str) -> Iterator[None]:
        with self._lock:
            entry = self._held.setdefault(event_id, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._held[event_id]


class Session:
    """Consume on one connection until ``stop`` is set or the connection fails.

    ``handle`` runs an event on a worker thread and returns its stored records.
    """

    def __init__(
        self,
        connection: Any,
        topology: Topology,
        prefetch: int,
        pool: Executor,
        handle: Callable[[Event], list[ExecutionRecord]],
        counters: Counters,
        guard: EventGuard,
        stop: threading.Event,
        halt: threading.Event,
        transient_delay_s: float = 2.0,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._prefetch = max(1, prefetch)
        self._pool = pool
        self._handle = handle
        self._counters = counters
        self._guard = guard
        self._stop = stop
        self._halt = halt
        self._transient_delay_s = transient_delay_s
        self._pending = 0
        self._channel: Any = None
        self._out: Any = None

    def run(self, on_consuming: Callable[[], None] = lambda: None) -> None:
        """Declare, consume, and on stop finish what is in flight; connection errors propagate."""
        channel = self._connection.channel()
        try:
            declare(channel, self._topology)
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise TopologyError(
                f"declaring the queues failed: {exc.reply_code} {exc.reply_text}"
            ) from exc
        channel.basic_qos(prefetch_count=self._prefetch)
        out = self._connection.channel()
        out.confirm_delivery()
        self._channel, self._out = channel, out
        queue = self._topology.events_queue
        LOGGER.info("consuming %s with prefetch %d", queue, self._prefetch)
        consuming = False
        for method, properties, body in channel.consume(queue, inactivity_timeout=1):
            if not consuming:
                consuming = True
                on_consuming()
            if self._stop.is_set():
                if method is not None:  # not started: straight back to the queue
                    channel.basic_nack(method.delivery_tag, requeue=True)
                break
            if method is not None:
                self._on_message(method, properties, body)
        if not self._stop.is_set():
            # The generator ends without a stop when the broker cancels the consumer
            # (the queue was deleted): reconnect, with backoff, and declare it again.
            raise pika.exceptions.ConsumerCancelled("the broker cancelled the consumer")
        channel.cancel()  # prefetched messages not yet handed to us go back to the queue
        if self._pending:
            LOGGER.info("stopping: waiting for %d events in flight", self._pending)
        while self._pending and not self._halt.is_set():
            self._connection.process_data_events(time_limit=0.2)
        self._connection.process_data_events(time_limit=0)  # flush the last acks

    # -- on the connection's thread -------------------------------------------

    def _on_message(self, method: Any, properties: Any, body: bytes) -> None:
        self._counters.add("received")
        tag = method.delivery_tag
        try:
            event = parse_event(body, message_id=properties.message_id)
        except InvalidEvent as exc:
            label = properties.message_id or f"(none; delivery {tag})"
            self._dead_letter(tag, properties, body, exc.description, label)
            return
        LOGGER.debug(
            "event %s: received %s/%s (id from %s, delivery %d)",
            event.id,
            event.event_source,
            event.event_type,
            event.id_origin,
            tag,
        )
        self._pending += 1
        future = self._pool.submit(self._work, event)
        future.add_done_callback(functools.partial(self._done, tag, properties, body, event))

    def _settle(self, tag: int, properties: Any, body: bytes, event: Event, future: Future) -> None:
        self._pending -= 1
        if not self._channel.is_open:
            LOGGER.info("event %s: channel closed before the ack; it will be redelivered", event.id)
            return
        if future.cancelled():  # a halt cancelled it before it started
            self._channel.basic_nack(tag, requeue=True)
            return
        error = future.exception()
        if error is None:
            records = future.result()
            if properties.reply_to:
                self._reply(properties, event, records)
            self._channel.basic_ack(tag)
            LOGGER.debug("event %s: acked after %d executions", event.id, len(records))
        elif isinstance(error, TransientError):
            self._counters.add("requeued")
            LOGGER.warning("event %s: requeued: %s", event.id, error.description)
            self._channel.basic_nack(tag, requeue=True)
        else:
            LOGGER.error("event %s: failed in the listener", event.id, exc_info=error)
            reason = f"internal error: {type(error).__name__}: {error}"
            self._dead_letter(tag, properties, body, reason, event.id)

    def _dead_letter(
        self, tag: int, properties: Any, body: bytes, reason: str, event_id: str
    ) -> None:
        self._counters.add("dead_lettered")
        LOGGER.warning("event %s: dead-lettered: %s", event_id, reason)
        headers = dict(properties.headers or {})
        headers[REASON_HEADER] = reason
        headers["x-lambda-queue"] = self._topology.events_queue
        headers["x-lambda-dead-lettered-at"] = iso(utcnow())
        if properties.expiration is not None:
            # A TTL copied onto the dead letter would let it expire from the dead-letter queue.
            headers["x-lambda-expiration"] = properties.expiration
        copy = pika.BasicProperties(
            content_type=properties.content_type,
            content_encoding=properties.content_encoding,
            headers=headers,
            delivery_mode=pika.DeliveryMode.Persistent,
            priority=properties.priority,
            correlation_id=properties.correlation_id,
            reply_to=properties.reply_to,
            message_id=properties.message_id,
            timestamp=properties.timestamp,
            type=properties.type,
            app_id=properties.app_id,
        )  # user_id is left out: the broker checks it against our own user
        try:
            self._out.basic_publish(
                exchange=self._topology.dead_letter_exchange,
                routing_key=self._topology.dead_letter_queue,
                body=body,
                properties=copy,
                mandatory=True,
            )
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            LOGGER.error(
                "event %s: the dead-letter queue refused the copy (%r); rejecting the message "
                "to the queue's dead-letter exchange, without the reason header",
                event_id,
                exc,
            )
            self._channel.basic_nack(tag, requeue=False)
            return
        if properties.reply_to:
            error = {"type": "InvalidEvent", "message": reason, "reason": "dead-lettered"}
            self._publish_reply(properties, event_id, {"event_id": event_id, "error": error})
        self._channel.basic_ack(tag)

    def _reply(self, properties: Any, event: Event, records: list[ExecutionRecord]) -> None:
        for index, record in enumerate(records):
            headers = {"x-lambda-execution-index": index, "x-lambda-executions": len(records)}
            self._publish_reply(properties, event.id, record.to_api(), headers, record.id)

    def _publish_reply(
        self,
        properties: Any,
        event_id: str,
        payload: dict[str, Any],
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> None:
        # Not mandatory: a client that has gone away (its reply queue deleted) is not an error.
        reply_properties = pika.BasicProperties(
            content_type="application/json",
            correlation_id=properties.correlation_id,
            message_id=message_id,
            headers={"x-lambda-event-id": event_id, **(headers or {})},
        )
        body = json.dumps(payload, default=str).encode("utf-8")
        try:
            self._out.basic_publish(
                exchange="", routing_key=properties.reply_to, body=body, properties=reply_properties
            )
            self._counters.add("replies")
        except pika.exceptions.NackError as exc:
            LOGGER.warning("event %s: reply to %s refused: %r", event_id, properties.reply_to, exc)

    # -- on worker threads ------------------------------------------------------

    def _work(self, event: Event) -> list[ExecutionRecord]:
        with self._guard.hold(event.id):
            try:
                records = self._handle(event)
            except TransientError:
                # Pause before the requeue so an engine outage does not spin the event
                # round the broker; this holds a worker, not the connection's thread.
                self._halt.wait(self._transient_delay_s)
                raise
        if records:
            self._counters.add("matched")
            self._counters.add("executions", len(records))
        else:
            self._counters.add("no_match")
            LOGGER.info(
                "event %s: no function for %s/%s", event.id, event.event_source, event.event_type
            )
        return records

    def _done(self, tag: int, properties: Any, body: bytes, event: Event, future: Future) -> None:
        settle = functools.partial(self._settle, tag, properties, body, event, future)
        try:
            self._connection.add_callback_threadsafe(settle)
        except pika.exceptions.AMQPError:
            LOGGER.info(
                "event %s: connection gone before the ack; the broker will redeliver it "
                "and its stored records make that harmless",
                event.id,
            )
