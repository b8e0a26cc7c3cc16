"""Consume: take events off the queue, run them on a thread pool, ack what is stored.

One ``Session`` is one connection's life. It follows pika's threaded-consumer
example: ``channel.consume(queue, inactivity_timeout=1)`` on the connection's
thread, so the stop flag is seen every second and heartbeats flow; the work runs
on a thread pool; each result comes back to the connection's thread with
``connection.add_callback_threadsafe`` (pika's connection is not thread-safe), and
the ack is sent there only after every execution record of the event is stored.

Results come back in batches, to spare the connection's thread a wake-up and a
socket write per event: a finished worker queues its result and wakes that thread
only if the queue was empty; the one callback settles everything queued by then,
writing its replies and acks into pika's output buffer and flushing it once at the
end. Frames leave in the order written, so each reply still goes out before its
event's ack.

Each event's project comes from its delivery (``listener.project``): through the
projects exchange it runs only that project's functions; an id-less one is put
back the same way so its copy keeps the project.

What happens to a message:

- not an event (``InvalidEvent``): a worker records the dead letter in the
  catalogue (never this thread: a catalogue outage must not stall the heartbeat);
  then a copy is published, with confirm, straight to the dead-letter queue with
  the reason in the ``x-lambda-reason`` header and the original headers kept,
  and only then is the original acked. The broker's
  own dead-lettering (``basic_nack(requeue=False)``) adds ``x-death`` but cannot
  carry our reason, so it is only the fallback when that publish is refused:
  then the message still lands on the dead-letter queue through the queue's DLX,
  and the reason is in the log. Either way nothing is lost and the consumer goes on.
- no function matches: acked and counted.
- no id: held until a copy carrying its assigned id is committed to a parking
  queue (``listener.numbering``, in batches), then acked and run under that id;
  the copy goes with its parking queue once the records are stored, or brings
  the event back if they never are.
- run: acked after the records are stored; replies go to ``reply_to`` first
  (a host's through the results queue, relayed by a router: ``listener.relay``).
  A retry (``Step.retry``) or a deferral (``Step.defer``: another listener holds
  the run, or, for a router, no host has room) is published to a delay queue
  first, and a router's invocation (``Step.route``) to its host's queue, each
  confirmed by the broker before the ack. An execution whose last attempt
  failed is dead-lettered: the worker names and records the dead letter in the
  catalogue, this thread only publishes it.
- ``TransientError`` (engine or catalogue down): after a short pause on the
  worker (not the connection thread) it is nacked with requeue, the one case where
  requeueing cannot loop on a message that will always fail.
- any other error (a bug): dead-lettered as above with the reason
  ``internal error: ...``, never requeued. This holds for an error anywhere in
  handling one message, on the connection's thread too (``_safety_net``): if even
  the dead-letter publish fails, the message is rejected to the queue's DLX. One
  message never ends the listener.

If the connection dies while work is in flight, the work still finishes and
stores its records; its ack cannot be sent, so the broker redelivers the message
on the next connection and ``run_execution`` finds the records finished.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from typing import Any, NamedTuple, Protocol

import pika
import pika.exceptions

from lambda_os.errors import LambdaError, TransientError
from lambda_os.records import DeadLetterRecord, ExecutionRecord, iso, utcnow
from listener.deadletter import dead_letter_record, own_headers
from listener.events import Event, InvalidEvent, parse_event
from listener.execute import Step
from listener.numbering import Numbering, Unnumbered
from listener.project import project_of
from listener.topology import Topology, declare_own

LOGGER = logging.getLogger(__name__)

REASON_HEADER = "x-lambda-reason"
EVENT_ID_HEADER = "x-lambda-event-id"
ATTEMPT_HEADER = "x-lambda-attempt"
DEAD_LETTER_ID_HEADER = "x-lambda-dead-letter-id"
DEFERRALS_HEADER = "x-lambda-deferrals"
# A deferral for want of room waits at most in this many tiers' queue (4 s).
ROOM_WAIT_TIERS = 3
# Replies carry the records as the API returns them; ``str`` covers any value JSON lacks.
_REPLY_JSON = json.JSONEncoder(default=str)
COUNTER_NAMES = (
    "received",
    "ids_assigned",
    "matched",
    "no_match",
    "dead_lettered",
    "executions",
    "retries",
    "deferred",
    "placed",
    "requeued",
    "replies",
)


class DeadLetterStore(Protocol):
    """Where dead letters are recorded (the catalogue); called on worker threads only."""

    def add_dead_letter(self, record: DeadLetterRecord) -> DeadLetterRecord: ...

    def dead_letter_execution(
        self, execution_id: str, record: DeadLetterRecord
    ) -> DeadLetterRecord | None: ...


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


class _Finished(NamedTuple):
    """A worker's finished (or cancelled) future, waiting for the connection's thread.

    ``event`` is None for a malformed message, whose future holds the id of its
    dead letter in the catalogue (or None).
    """

    tag: int
    properties: Any
    body: bytes
    event: Event | None
    future: Future
    reason: str = ""


class Exhausted(NamedTuple):
    """A step whose last attempt failed, with the dead letter a worker recorded for it."""

    step: Step
    body: bytes
    properties: Any
    dead_letter_id: str | None


class Session:
    """Consume on one connection until ``stop`` is set or the connection fails.

    ``handle`` runs an event on a worker thread and returns what it did to each
    execution (``execute.Step``); ``dead_letters`` records every dead letter.
    """

    def __init__(
        self,
        connection: Any,
        topology: Topology,
        prefetch: int,
        pool: Executor,
        handle: Callable[[Event], list[Step]],
        counters: Counters,
        guard: EventGuard,
        stop: threading.Event,
        halt: threading.Event,
        transient_delay_s: float = 2.0,
        dead_letters: DeadLetterStore | None = None,
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
        self._dead_letters = dead_letters
        self._pending = 0
        # Results from the workers; whoever makes it non-empty schedules ``_settle``.
        self._finished: collections.deque[_Finished] = collections.deque()
        self._finished_lock = threading.Lock()
        self._channel: Any = None
        self._out: Any = None
        self._replies: Any = None
        self._numbering: Any = None

    def run(self, on_consuming: Callable[[], None] = lambda: None) -> None:
        """Declare, consume, and on stop finish what is in flight; connection errors propagate."""
        channel = self._connection.channel()
        try:
            declare_own(channel, self._topology)
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise TopologyError(
                f"declaring the queues failed: {exc.reply_code} {exc.reply_text}"
            ) from exc
        channel.basic_qos(prefetch_count=self._prefetch)
        out = self._connection.channel()
        out.confirm_delivery()
        # Replies need no confirm: the record is stored before any reply goes out, so a
        # confirm would only make every reply wait a broker round trip on this thread.
        self._replies = self._connection.channel()
        self._channel = channel
        self._numbering = Numbering(
            self._connection,
            f"{self._topology.consumed_queue}.numbered",
            ack=lambda tag: _unflushed(self._channel).basic_ack(tag),
            run_parked=self._run_parked,
            run_as_is=lambda held: self._submit(held.tag, held.properties, held.body, held.event),
            parked_ttl_ms=self._topology.parked_ttl_ms,
        )
        self._channel, self._out = channel, out
        queue = self._topology.consumed_queue
        LOGGER.info("consuming %s with prefetch %d", queue, self._prefetch)
        consuming = False
        for method, properties, body in channel.consume(queue, inactivity_timeout=1):
            if not consuming:
                consuming = True
                on_consuming()
            if self._stop.is_set():
                if method is not None:  # not started: straight back to the queue
                    channel.basic_nack(method.delivery_tag, requeue=True)
                self._numbering.give_back(lambda tag: channel.basic_nack(tag, requeue=True))
                break
            if method is not None:
                self._wait_for_a_slot()
                self._on_message(method, properties, body)
            if self._numbering.held and (
                method is None or self._numbering.full or channel.get_waiting_message_count() == 0
            ):
                self._counters.add("ids_assigned", self._numbering.publish())
            self._numbering.tidy()
        if not self._stop.is_set():
            # The generator ends without a stop when the broker cancels the consumer
            # (the queue was deleted): reconnect, with backoff, and declare it again.
            raise pika.exceptions.ConsumerCancelled("the broker cancelled the consumer")
        channel.cancel()  # prefetched messages not yet handed to us go back to the queue
        if self._pending:
            LOGGER.info("stopping: waiting for %d events in flight", self._pending)
        while (self._pending or self._numbering.unconfirmed) and not self._halt.is_set():
            self._connection.process_data_events(time_limit=0.2)
        self._numbering.tidy(closing=True)
        self._connection.process_data_events(time_limit=0)  # flush the last acks

    # -- on the connection's thread -------------------------------------------

    def _wait_for_a_slot(self) -> None:
        """Take no new delivery while as many events run as the prefetch allows.

        The broker's prefetch holds the rest back, except after an id-less event's
        original was acked (its copy parked, ``listener.numbering``): without this,
        a burst of them would pile up in the pool without bound.
        """
        while self._pending >= self._prefetch and not self._halt.is_set():
            self._connection.process_data_events(time_limit=0.05)

    def _on_message(self, method: Any, properties: Any, body: bytes) -> None:
        self._counters.add("received")
        tag = method.delivery_tag
        label = properties.message_id or f"(none; delivery {tag})"
        with self._safety_net(tag, properties, body, label):
            self._take(method, properties, body, label)

    def _take(self, method: Any, properties: Any, body: bytes, label: str) -> None:
        tag = method.delivery_tag
        try:
            event = parse_event(body, message_id=properties.message_id)
            # Whose event it is comes from the delivery, which the broker vouches for.
            project = project_of(method.exchange, method.routing_key, self._topology)
        except InvalidEvent as exc:
            # The catalogue copy is written on a worker: never catalogue I/O on this thread.
            self._pending += 1
            future = self._pool.submit(
                self._record_dead_letter, "malformed", exc.description, body, properties, None
            )
            future.add_done_callback(
                functools.partial(self._done_malformed, tag, properties, body, exc.description)
            )
            return
        if project is not None:
            event = dataclasses.replace(event, project=project)
        if properties.reply_to:
            event = dataclasses.replace(
                event, reply_to=properties.reply_to, correlation_id=properties.correlation_id
            )
        attempt = (properties.headers or {}).get(ATTEMPT_HEADER)
        if isinstance(attempt, int) and attempt >= 1 and event.function_id is not None:
            event = dataclasses.replace(event, attempt=attempt)
        if event.id_origin == "assigned":
            self._hold_unnumbered(method, properties, event, body)
            return
        self._submit(tag, properties, body, event)

    def _submit(self, tag: int, properties: Any, body: bytes, event: Event) -> None:
        LOGGER.debug(
            "event %s: received %s/%s (id from %s, delivery %d)",
            event.id,
            event.event_source,
            event.event_type,
            event.id_origin,
            tag,
        )
        self._pending += 1
        future = self._pool.submit(self._work, event, properties)
        future.add_done_callback(functools.partial(self._done, tag, properties, body, event))

    def _settle(self) -> None:
        """Settle every result the workers have queued, then flush what that wrote.

        Taking the whole queue under the lock leaves it empty, so the next result
        schedules a new call: none can be left behind, whatever happens here.
        """
        with self._finished_lock:
            batch = list(self._finished)
            self._finished.clear()
        for tag, properties, body, event, future, reason in batch:
            self._pending -= 1
            label = event.id if event is not None else properties.message_id or f"(delivery {tag})"
            if not self._channel.is_open:
                LOGGER.info(
                    "event %s: channel closed before the ack; it will be redelivered", label
                )
                continue
            with self._safety_net(tag, properties, body, label):
                if event is None:
                    self._dead_letter(
                        tag, properties, body, reason, label, "malformed", _stored_id(future)
                    )
                else:
                    self._conclude(tag, properties, body, event, future)
        if batch:
            # Nested in pika's dispatch this only flushes: the output buffer, then one poll.
            self._connection.process_data_events(time_limit=0)

    def _conclude(
        self, tag: int, properties: Any, body: bytes, event: Event, future: Future
    ) -> None:
        if future.cancelled():  # a halt cancelled it before it started
            self._nack(tag, requeue=True)
            return
        error = future.exception()
        if error is None:
            steps, exhausted = future.result()
            if not self._publish_retries(properties, event, steps):
                self._counters.add("requeued")
                self._nack(tag, requeue=True)
                return
            for item in exhausted:
                self._dead_letter_exhausted(event, item)
            if properties.reply_to:
                self._reply(properties, event, [step.record for step in steps if step.reply])
            self._ack(tag)  # after the replies; ``_settle`` flushes
            LOGGER.debug("event %s: acked after %d executions", event.id, len(steps))
        elif isinstance(error, TransientError):
            self._counters.add("requeued")
            LOGGER.warning("event %s: requeued: %s", event.id, error.description)
            self._nack(tag, requeue=True)
        else:
            LOGGER.error("event %s: failed in the listener", event.id, exc_info=error)
            reason = f"internal error: {type(error).__name__}: {error}"
            self._dead_letter(tag, properties, body, reason, event.id, kind="internal error")

    def _hold_unnumbered(self, method: Any, properties: Any, event: Event, body: bytes) -> None:
        """Hold an id-less event until its copy with the assigned id is committed
        (``listener.numbering``). A project's event goes back the way it came (the
        projects exchange, its routing key), so the copy keeps its project."""
        copy = _copy_properties(properties, dict(properties.headers or {}), message_id=event.id)
        if event.project is not None:
            exchange, key = method.exchange, method.routing_key
        else:
            exchange, key = self._topology.outlet(self._topology.events_queue)
        self._numbering.hold(
            Unnumbered(method.delivery_tag, event, properties, body, exchange, key, copy)
        )

    def _run_parked(self, held: Unnumbered, tag: int) -> None:
        """Run an id-less event whose copy the broker holds; ``tag`` stands in for its ack."""
        with self._safety_net(tag, held.properties, held.body, held.event.id):
            self._submit(tag, held.properties, held.body, held.event)

    def _publish_retries(self, properties: Any, event: Event, steps: list[Step]) -> bool:
        """Publish the delayed messages the steps ask for; False on refusal.

        A step that queued another attempt gets the event addressed to that one
        function, with the attempt in ``x-lambda-attempt``, in the delay queue for
        that attempt. A deferred step (another listener holds the run's lease) gets
        the same without an attempt, in a delay queue that doubles with each
        deferral (``x-lambda-deferrals``): it looks again once the holder should
        have finished or its lease lapsed, holding no worker meanwhile. Each comes
        back to the events queue when its TTL ends; one waiting for room
        (``wait_for_room``) never waits more than 4 s at a time. A routed step
        gets the event addressed to its function, a retry's attempt kept, in its
        host's queue. On refusal the caller requeues the original: its redelivery
        runs (or places) the queued records at once.
        """
        for step in steps:
            if not (step.retry or step.defer or step.route):
                continue
            record = step.record
            headers = own_headers(properties.headers)
            if step.route:
                # The invocation for one host: a retry's attempt travels with it.
                headers.pop(DEFERRALS_HEADER, None)
                if event.attempt is not None:
                    headers[ATTEMPT_HEADER] = event.attempt
                queue = step.route
            elif step.retry:
                headers[ATTEMPT_HEADER] = record.attempt
                headers.pop(DEFERRALS_HEADER, None)
                queue = self._topology.retry_queue(record.attempt)
            else:
                # A retry message keeps its attempt: it stays the message of that attempt.
                deferrals = _count(headers.get(DEFERRALS_HEADER)) + 1
                headers[DEFERRALS_HEADER] = deferrals
                # Waiting for room looks again soon (1, 2, then 4 s): slots free by the second.
                tier = min(deferrals, ROOM_WAIT_TIERS) if step.wait_for_room else deferrals
                queue = self._topology.retry_queue(tier + 1)
            copy = _copy_properties(properties, headers, message_id=event.id)
            exchange, key = self._topology.outlet(queue)
            try:
                self._out.basic_publish(
                    exchange=exchange,
                    routing_key=key,
                    body=_addressed_body(event, record.function_id),
                    properties=copy,
                    mandatory=True,
                )
            except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                LOGGER.error(
                    "event %s: delay queue %s refused the message for execution %s (%r); "
                    "requeueing",
                    event.id,
                    queue,
                    record.id,
                    exc,
                )
                return False
            if step.route:
                self._counters.add("placed")
                LOGGER.debug("event %s: execution %s placed in %s", event.id, record.id, queue)
                continue
            self._counters.add("retries" if step.retry else "deferred")
            LOGGER.info(
                "event %s: %s of execution %s waits in %s",
                event.id,
                f"attempt {record.attempt}" if step.retry else "the next look",
                record.id,
                queue,
            )
        return True

    def _dead_letter_exhausted(self, event: Event, item: Exhausted) -> None:
        """Publish the dead letter a worker recorded for the function whose last attempt failed."""
        reason = item.step.dead_letter or "retries exhausted"
        self._counters.add("dead_lettered")
        LOGGER.warning(
            "event %s: dead-lettered for function %s: %s",
            event.id,
            item.step.record.function_id,
            reason,
        )
        if not self._publish_dead_letter(
            item.properties, item.body, reason, event.id, item.dead_letter_id
        ):
            LOGGER.error(
                "event %s: the dead-letter queue refused the dead letter; the catalogue keeps it",
                event.id,
            )

    # -- on worker threads ------------------------------------------------------

    def _record_dead_letter(
        self,
        kind: str,
        reason: str,
        body: bytes,
        properties: Any,
        event_id: str | None,
    ) -> str | None:
        """Keep a dead letter in the catalogue; its id, or None if that failed."""
        if self._dead_letters is None:
            return None
        record = dead_letter_record(
            kind, reason, body, properties, self._topology.events_queue, event_id
        )
        try:
            return self._dead_letters.add_dead_letter(record).id
        except LambdaError as exc:
            # The message still reaches the dead-letter queue; only the catalogue copy is lost.
            LOGGER.error("event %s: cannot record the dead letter: %s", event_id, exc.description)
            return None

    def _record_exhausted(self, properties: Any, event: Event, step: Step) -> Exhausted | None:
        """Record the dead letter of a step whose last attempt failed; None if one exists.

        The catalogue names it on the execution first, so of two listeners that
        both find the last attempt failed (a redelivery), only one dead-letters it.
        """
        record = step.record
        body = _addressed_body(event, record.function_id)
        headers = own_headers(properties.headers)
        headers.pop(ATTEMPT_HEADER, None)
        headers.pop(DEFERRALS_HEADER, None)
        copy = _copy_properties(properties, headers, message_id=event.id)
        if self._dead_letters is None:
            return Exhausted(step, body, copy, None)
        letter = dead_letter_record(
            "retries exhausted",
            step.dead_letter or "retries exhausted",
            body,
            copy,
            self._topology.events_queue,
            event.id,
            record.function_id,
            record.id,
        )
        try:
            stored = self._dead_letters.dead_letter_execution(record.id, letter)
        except TransientError:
            raise  # the event comes back, and its dead letter is recorded then
        except LambdaError as exc:
            LOGGER.error("event %s: cannot record the dead letter: %s", event.id, exc.description)
            return Exhausted(step, body, copy, None)
        if stored is None:
            LOGGER.info("event %s: execution %s is dead-lettered already", event.id, record.id)
            return None
        return Exhausted(step, body, copy, stored.id)

    def _publish_dead_letter(
        self,
        properties: Any,
        body: bytes,
        reason: str,
        event_id: str,
        dead_letter_id: str | None,
    ) -> bool:
        headers = dict(properties.headers or {})
        headers[REASON_HEADER] = reason
        headers["x-lambda-queue"] = self._topology.events_queue
        headers["x-lambda-dead-lettered-at"] = iso(utcnow())
        if dead_letter_id is not None:
            headers[DEAD_LETTER_ID_HEADER] = dead_letter_id
        if properties.expiration is not None:
            # A TTL copied onto the dead letter would let it expire from the dead-letter queue.
            headers["x-lambda-expiration"] = properties.expiration
        copy = _copy_properties(properties, headers, message_id=properties.message_id)
        try:
            self._out.basic_publish(
                exchange=self._topology.dead_letter_exchange,
                routing_key=self._topology.dead_letter_queue,
                body=body,
                properties=copy,
                mandatory=True,
            )
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            LOGGER.error("event %s: dead-letter publish refused: %r", event_id, exc)
            return False
        return True

    @contextmanager
    def _safety_net(self, tag: int, properties: Any, body: bytes, event_id: str) -> Iterator[None]:
        """Whatever goes wrong handling one message ends with that message, not the listener.

        An unexpected error (a bug, a message nobody foresaw) dead-letters the
        message with the reason ``internal error: ...``, without the catalogue copy
        in case the catalogue is what failed; if even that fails, the message is
        rejected to the queue's dead-letter exchange. Connection and channel errors
        still propagate: the listener reconnects and the broker redelivers.
        """
        try:
            yield
        except pika.exceptions.AMQPError:
            raise
        except Exception as error:
            LOGGER.error("event %s: handling the message failed", event_id, exc_info=error)
            reason = f"internal error: {type(error).__name__}: {error}"
            try:
                self._dead_letter(tag, properties, body, reason, event_id, kind="internal error")
            except pika.exceptions.AMQPError:
                raise
            except Exception as again:
                LOGGER.error(
                    "event %s: dead-lettering it failed too (%r); rejecting it to the queue's "
                    "dead-letter exchange, without the reason header",
                    event_id,
                    again,
                    exc_info=again,
                )
                self._nack(tag, requeue=False)

    def _dead_letter(
        self,
        tag: int,
        properties: Any,
        body: bytes,
        reason: str,
        event_id: str,
        kind: str,
        stored: str | None = None,
    ) -> None:
        """Publish a dead letter (``stored``: its id in the catalogue, if a worker kept it), ack."""
        self._counters.add("dead_lettered")
        LOGGER.warning("event %s: dead-lettered: %s", event_id, reason)
        if not self._publish_dead_letter(properties, body, reason, event_id, stored):
            LOGGER.error(
                "event %s: rejecting the message to the queue's dead-letter exchange, "
                "without the reason header",
                event_id,
            )
            self._nack(tag, requeue=False)
            return
        if properties.reply_to:
            error = {"type": "InvalidEvent", "message": reason, "reason": "dead-lettered"}
            payload = {"event_id": event_id, "error": error}
            self._publish_reply(properties, payload, {EVENT_ID_HEADER: event_id})
            self._counters.add("replies")
        self._ack(tag, flush=True)  # flushes the reply too

    def _ack(self, tag: int, flush: bool = False) -> None:
        """Ack a delivery (unless ``flush``, into the output buffer: the caller flushes);
        for an event run from a parked copy (``listener.numbering``), let its copy go."""
        if self._numbering.is_parked(tag):
            self._numbering.done(tag)
        elif flush:
            self._channel.basic_ack(tag)
        else:
            _unflushed(self._channel).basic_ack(tag)

    def _nack(self, tag: int, requeue: bool) -> None:
        """Give a delivery back, or reject it to the dead-letter exchange; for an event
        run from a parked copy, send the copy back the way it came, or to the dead letters."""
        if not self._numbering.is_parked(tag):
            self._channel.basic_nack(tag, requeue=requeue)
        elif requeue:
            self._numbering.kept(tag)
        else:  # as the queue's dead-letter exchange would take the original
            self._numbering.reject(
                tag, self._topology.dead_letter_exchange, self._topology.dead_letter_queue
            )

    def _reply(self, properties: Any, event: Event, records: list[ExecutionRecord]) -> None:
        count = len(records)
        for index, record in enumerate(records):
            headers = {
                EVENT_ID_HEADER: event.id,
                "x-lambda-execution-index": index,
                "x-lambda-executions": count,
            }
            self._publish_reply(properties, record.to_api(), headers, record.id)
        self._counters.add("replies", count)

    def _publish_reply(
        self,
        properties: Any,
        payload: dict[str, Any],
        headers: dict[str, Any],
        message_id: str | None = None,
    ) -> None:
        """Write a reply into the output buffer; the ack that follows it flushes it.

        A host's reply goes to the results queue, ``reply_to`` kept, for a router
        to relay: its broker user cannot write to the client's queue.
        """
        exchange, key = self._topology.reply_outlet(properties.reply_to)
        reply_properties = pika.BasicProperties(
            content_type="application/json",
            correlation_id=properties.correlation_id,
            message_id=message_id,
            headers=headers,
            reply_to=properties.reply_to if exchange else None,
        )
        # Not mandatory: a client that has gone away (its reply queue deleted) is not an error.
        _unflushed(self._replies).basic_publish(
            exchange=exchange,
            routing_key=key,
            body=_REPLY_JSON.encode(payload).encode("utf-8"),
            properties=reply_properties,
        )

    def _work(self, event: Event, properties: Any) -> tuple[list[Step], list[Exhausted]]:
        with self._guard.hold(event.id):
            try:
                steps = self._handle(event)
                exhausted = [
                    item
                    for item in (
                        self._record_exhausted(properties, event, step)
                        for step in steps
                        if step.dead_letter is not None
                    )
                    if item is not None
                ]
            except TransientError:
                # Pause before the requeue so an engine outage does not spin the event
                # round the broker; this holds a worker, not the connection's thread.
                self._halt.wait(self._transient_delay_s)
                raise
        if steps:
            self._counters.add("matched")
            self._counters.add("executions", len(steps))
        else:
            self._counters.add("no_match")
            LOGGER.info(
                "event %s: no function for %s/%s", event.id, event.event_source, event.event_type
            )
        return steps, exhausted

    def _done_malformed(
        self, tag: int, properties: Any, body: bytes, reason: str, future: Future
    ) -> None:
        self._queue_finished(_Finished(tag, properties, body, None, future, reason))

    def _done(self, tag: int, properties: Any, body: bytes, event: Event, future: Future) -> None:
        self._queue_finished(_Finished(tag, properties, body, event, future))

    def _queue_finished(self, finished: _Finished) -> None:
        with self._finished_lock:
            first = not self._finished
            self._finished.append(finished)
        if not first:
            return  # the call scheduled for the first one in the queue settles this one too
        try:
            self._connection.add_callback_threadsafe(self._settle)
        except pika.exceptions.AMQPError:
            with self._finished_lock:
                lost = list(self._finished)
                self._finished.clear()
            for item in lost:
                LOGGER.info(
                    "event %s: connection gone before the ack; the broker will redeliver it "
                    "and its stored records make that harmless",
                    item.event.id if item.event is not None else item.properties.message_id,
                )


def _stored_id(future: Future) -> str | None:
    """The dead letter's id a worker stored, or None if that failed (it was logged)."""
    if future.cancelled():
        return None
    error = future.exception()
    if error is not None:
        LOGGER.error("recording a dead letter failed", exc_info=error)
        return None
    return future.result()


def _count(value: Any) -> int:
    """A counter header as we wrote it, or 0 for anything else."""
    return value if type(value) is int and value >= 0 else 0


def _unflushed(channel: Any) -> Any:
    """The pika channel under a ``BlockingChannel``: its methods write frames without flushing.

    ``BlockingChannel.basic_publish`` and ``basic_ack`` flush the socket before
    they return, a poll and a send each time: under load that was about a third
    of the connection thread's time per event. The asynchronous channel beneath
    (``_impl``, stable through pika 1.x, which setup.cfg pins) only appends the
    frames to the connection's one output buffer, in order; the caller makes
    sure a flush follows (a blocking call on any channel, or ``_settle``'s).
    """
    return channel._impl


def _copy_properties(properties: Any, headers: dict[str, Any], message_id: str | None) -> Any:
    """The message's properties for a copy we publish: persistent, with these headers."""
    return pika.BasicProperties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers=headers,
        delivery_mode=pika.DeliveryMode.Persistent,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        message_id=message_id,
        timestamp=properties.timestamp,
        type=properties.type,
        app_id=properties.app_id,
    )  # user_id is left out: the broker checks it against our own user; expiration too


def _addressed_body(event: Event, function_id: str) -> bytes:
    """The event addressed to one function, under its id: what a retry or its dead letter holds.

    Not through ``encode_event``: its size check could refuse an event that was
    accepted a few bytes under the limit; the listener then dead-letters the copy
    when it comes back, rather than failing here on the connection's thread.
    """
    payload = {
        "event_source": event.event_source,
        "event_type": event.event_type,
        "data": event.data,
        "id": event.id,
        "function_id": function_id,
    }
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")
