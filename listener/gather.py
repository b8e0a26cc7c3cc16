"""Gather: take a batching function's events off its batch queue in groups, ack once run.

``Collector`` runs on a thread of its own with its own connection, beside the
listener's session. For each batching function (``Catalogue.batching_functions``,
read again every few seconds, and any function a worker asks for with ``ensure``)
it consumes the function's batch queue (``listener.batch``) with a prefetch of
twice ``batch_size``: one batch gathers while the one before it runs, and the
broker never hands it more than that unacked.
A group closes when it holds ``batch_size`` events or ``batch_window_s`` after
its first one came, whichever is first; it then runs on the listener's pool
(``BatchRunner``), and only when every batch it touched is final does this thread
answer each event's ``reply_to`` and ack its messages. A message that is not an
event is rejected to the queue's dead-letter exchange; a second copy of an event
in one group (a publisher or listener that sent it twice) is acked with the first.

If the connection dies, the unacked messages come back, to this listener or to
another one's collector (the queue has one active consumer at a time), and the
claims in the catalogue keep each event in the one batch it was first given.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, NamedTuple

import pika
import pika.exceptions

from lambda_os.errors import LambdaError, TransientError
from lambda_os.records import ExecutionRecord, FunctionRecord
from listener.batch import BatchRunner, Member, batch_queue, batch_queue_arguments
from listener.topology import Topology

LOGGER = logging.getLogger(__name__)

REFRESH_S = 3.0
TRANSIENT_PAUSE_S = 2.0
GROUPS_IN_HAND = 2
ENSURE_TIMEOUT_S = 5.0
_REPLY_JSON = json.JSONEncoder(default=str)


class _Delivery(NamedTuple):
    tag: int
    properties: Any
    member: Member


@dataclasses.dataclass
class _Group:
    """What one function's consumer holds and has not yet handed to a run."""

    function: FunctionRecord
    consumer_tag: str
    deliveries: list[_Delivery] = dataclasses.field(default_factory=list)
    opened_at: float = 0.0
    running: int = 0  # its batches running now
    retiring: bool = False  # its function stopped batching: the consumer is cancelled


class Collector:
    """Consumes every batch queue and runs each closed group (see the module doc)."""

    def __init__(
        self,
        catalogue: Any,
        topology: Topology,
        connect: Callable[[], Any],
        runner: BatchRunner,
        pool: Executor,
        stop: threading.Event,
        refresh_s: float = REFRESH_S,
        monotonic: Callable[[], float] = time.monotonic,
        max_running: int = 2,
    ) -> None:
        self._catalogue = catalogue
        self._topology = topology
        self._connect = connect
        self._runner = runner
        self._pool = pool
        self._stop = stop
        self._refresh_s = refresh_s
        self._monotonic = monotonic
        # Batches at once at most: the pool is the listener's, and single events need it too.
        self._max_running = max(1, max_running)
        self._lock = threading.Lock()
        self._connection: Any = None
        self._channel: Any = None
        self._groups: dict[str, _Group] = {}
        # Functions a worker or the refresh wants consumed, and the waiters of ``ensure``.
        self._wanted: dict[str, FunctionRecord] = {}
        self._ready: dict[str, threading.Event] = {}
        self._running = 0
        self._wake = threading.Event()

    # -- any thread ------------------------------------------------------------

    def ensure(self, function: FunctionRecord) -> str:
        """The function's batch queue, declared and consumed here; ``TransientError``
        when this collector cannot do that now (the event goes back to its queue)."""
        queue = batch_queue(self._topology, function.id)
        with self._lock:
            if function.id in self._groups:
                return queue
            ready = self._ready.setdefault(function.id, threading.Event())
            self._wanted[function.id] = function
            connection = self._connection
        if connection is None:
            self._wake.set()  # its thread connects now
        else:
            try:
                connection.add_callback_threadsafe(self._take_wanted)
            except pika.exceptions.AMQPError as exc:
                raise TransientError(f"the batch collector lost its connection: {exc!r}") from exc
        if not ready.wait(ENSURE_TIMEOUT_S):
            raise TransientError(f"the batch queue {queue} is not consumed yet")
        return queue

    def run(self) -> None:
        """Consume until the stop flag is set, reconnecting after a failure.

        No connection is opened while no function batches: most listeners never need one.
        """
        failures = 0
        while not self._stop.is_set():
            if not self._anything_wanted():
                continue
            try:
                connection = self._connect()
            except pika.exceptions.AMQPConnectionError as exc:
                failures += 1
                self._pause(exc, failures)
                continue
            try:
                failures = 0
                self._session(connection)
            except (pika.exceptions.AMQPError, LambdaError) as exc:
                failures += 1
                self._pause(exc, failures)
            finally:
                with self._lock:
                    self._connection = self._channel = None
                    # Consumed again, and their waiters answered, on the next connection.
                    for group in self._groups.values():
                        self._wanted.setdefault(group.function.id, group.function)
                    self._groups.clear()
                try:
                    if connection.is_open:
                        connection.close()
                except pika.exceptions.AMQPError:
                    pass

    def _anything_wanted(self) -> bool:
        """Whether some function batches now; else wait a refresh (or a worker's wake-up)."""
        self._refresh()
        with self._lock:
            if self._wanted:
                return True
        self._wake.wait(self._refresh_s)
        self._wake.clear()
        return False

    def _pause(self, exc: BaseException, failures: int) -> None:
        delay = min(30.0, 0.5 * 2 ** min(failures, 6))
        LOGGER.warning("batch collector: %r; reconnecting in %.1f s", exc, delay)
        self._stop.wait(delay)

    # -- the connection's thread ---------------------------------------------------

    def _session(self, connection: Any) -> None:
        channel = connection.channel()
        # Runs of an earlier connection settle there (or nowhere): their messages come back.
        self._running = 0
        with self._lock:
            self._connection, self._channel = connection, channel
        refreshed_at = -self._refresh_s
        while not self._stop.is_set():
            now = self._monotonic()
            if now - refreshed_at >= self._refresh_s:
                refreshed_at = now
                self._refresh()
            self._take_wanted()
            self._close_due(self._monotonic())
            connection.process_data_events(time_limit=0.1)
        # Stopping: no group closes any more; what is gathered goes back, what runs finishes.
        for group in list(self._groups.values()):
            channel.basic_cancel(group.consumer_tag)
            for delivery in group.deliveries:
                channel.basic_nack(delivery.tag, requeue=True)
            group.deliveries = []
        while self._running:
            connection.process_data_events(time_limit=0.1)

    def _refresh(self) -> None:
        """Consume the queues of the functions that batch now (a catalogue outage skips it)."""
        try:
            functions = self._catalogue.batching_functions()
        except LambdaError as exc:
            LOGGER.warning("batch collector: cannot list batching functions: %s", exc.description)
            return
        batching = {function.id for function in functions}
        with self._lock:
            for function in functions:
                held = self._groups.get(function.id)
                if held is None or held.retiring or held.function.batch_size != function.batch_size:
                    self._wanted[function.id] = function
                else:
                    held.function = function
        if self._channel is not None:
            for group in list(self._groups.values()):
                if group.function.id not in batching:
                    self._retire(group)

    def _retire(self, group: _Group) -> None:
        """Stop consuming the queue of a function that no longer batches, once it is drained.

        First the consumer is cancelled (what it holds is nacked back as it comes);
        at the next refresh the queue is deleted if nothing waits in it, or consumed
        again to run what does, as batches of the size it had.
        """
        if group.deliveries or group.running:
            return
        if not group.retiring:
            group.retiring = True
            self._channel.basic_cancel(group.consumer_tag)
            return
        queue = batch_queue(self._topology, group.function.id)
        probe = self._connection.channel()
        try:
            waiting = probe.queue_declare(queue, passive=True).method.message_count
            if waiting == 0:
                probe.queue_delete(queue, if_empty=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            LOGGER.info("batch collector: queue %s not deleted: %s", queue, exc.reply_text)
            waiting = -1
        else:
            probe.close()
        with self._lock:
            if waiting == 0:
                del self._groups[group.function.id]
                LOGGER.info("batch collector: %s drained and deleted", queue)
            else:
                self._wanted[group.function.id] = group.function

    def _take_wanted(self) -> None:
        with self._lock:
            wanted, self._wanted = self._wanted, {}
        for function in wanted.values():
            held = self._groups.get(function.id)
            if held is not None and not held.retiring:
                if held.deliveries or held.function.batch_size == function.batch_size:
                    held.function = function
                    self._signal_ready(function.id)
                    continue
                # The prefetch follows the batch size: a new consumer takes the new size.
                self._channel.basic_cancel(held.consumer_tag)
            self._consume(function)

    def _consume(self, function: FunctionRecord) -> None:
        queue = batch_queue(self._topology, function.id)
        self._channel.queue_declare(
            queue=queue, durable=True, arguments=batch_queue_arguments(self._topology)
        )
        # Per consumer (not global): one batch gathering while the one before it runs.
        self._channel.basic_qos(prefetch_count=GROUPS_IN_HAND * (function.batch_size or 1))
        tag = self._channel.basic_consume(queue, functools.partial(self._on_message, function.id))
        with self._lock:
            self._groups[function.id] = _Group(function, tag)
        self._signal_ready(function.id)
        LOGGER.info(
            "batch collector: consuming %s (batches of %s, window %.2f s)",
            queue,
            function.batch_size,
            function.batch_window_s,
        )

    def _signal_ready(self, function_id: str) -> None:
        with self._lock:
            ready = self._ready.pop(function_id, None)
        if ready is not None:
            ready.set()

    def _on_message(
        self, function_id: str, channel: Any, method: Any, properties: Any, body: bytes
    ) -> None:
        group = self._groups.get(function_id)
        if self._stop.is_set() or group is None or group.retiring:
            # In flight when its consumer was cancelled: back to the queue, for whoever is next.
            channel.basic_nack(method.delivery_tag, requeue=True)
            return
        member = _member(body)
        if member is None:
            LOGGER.error("batch queue of %s: not an event addressed to it; rejected", function_id)
            channel.basic_nack(method.delivery_tag, requeue=False)
            return
        if not group.deliveries:
            group.opened_at = self._monotonic()
        group.deliveries.append(_Delivery(method.delivery_tag, properties, member))
        if self._due(group, self._monotonic()):
            self._close(group)

    def _close_due(self, now: float) -> None:
        for group in list(self._groups.values()):
            if self._due(group, now):
                self._close(group)

    def _due(self, group: _Group, now: float) -> bool:
        """Whether the group closes now: full or its window over, and a run may start."""
        if not group.deliveries or self._running >= self._max_running:
            return False
        full = len(group.deliveries) >= (group.function.batch_size or 1)
        return full or now - group.opened_at >= group.function.batch_window_s

    def _close(self, group: _Group) -> None:
        # A group that filled while no run could start holds more: the rest is the next one.
        size = group.function.batch_size or 1
        deliveries, group.deliveries = group.deliveries[:size], group.deliveries[size:]
        if group.deliveries:
            group.opened_at = self._monotonic()
        members = list({d.member.event_id: d.member for d in deliveries}.values())
        try:
            future = self._pool.submit(self._run, group.function.id, members)
        except RuntimeError:  # the pool shut down: the listener is going
            for delivery in deliveries:
                self._channel.basic_nack(delivery.tag, requeue=True)
            return
        self._running += 1
        group.running += 1
        connection = self._connection
        future.add_done_callback(
            lambda done: connection.add_callback_threadsafe(
                functools.partial(self._settle, group, deliveries, done)
            )
        )

    def _settle(self, group: _Group, deliveries: list[_Delivery], future: Future) -> None:
        """Reply and ack when every batch is final; put the messages back otherwise."""
        self._running -= 1
        group.running -= 1
        channel = self._channel
        if channel is None or not channel.is_open:
            return  # they come back with the next connection
        error = None if future.cancelled() else future.exception()
        if error is not None and not isinstance(error, TransientError):
            # Not something waiting mends: to the queue's dead-letter exchange, not round again.
            LOGGER.error(
                "batch collector: a batch failed; dead-lettering its events", exc_info=error
            )
            for delivery in deliveries:
                channel.basic_nack(delivery.tag, requeue=False)
            return
        records = None if future.cancelled() or error is not None else future.result()
        for delivery in deliveries:
            if records is None or delivery.member.event_id not in records:
                channel.basic_nack(delivery.tag, requeue=True)
                continue
            record = records[delivery.member.event_id]
            if record is not None and delivery.properties.reply_to:
                self._reply(channel, delivery, record)
            channel.basic_ack(delivery.tag)

    def _run(self, function_id: str, members: list[Member]) -> Any:
        """``BatchRunner.run`` on a worker; after a transient failure (catalogue or engine
        down) a pause there, so the messages do not spin round the broker."""
        try:
            return self._runner.run(function_id, members)
        except TransientError as exc:
            LOGGER.warning("batch collector: %s; the batch's events go back", exc.description)
            self._stop.wait(TRANSIENT_PAUSE_S)
            raise

    def _reply(self, channel: Any, delivery: _Delivery, record: ExecutionRecord) -> None:
        properties = delivery.properties
        if self._topology.is_own_queue(properties.reply_to):
            return
        channel.basic_publish(
            exchange="",
            routing_key=properties.reply_to,
            body=_REPLY_JSON.encode(record.to_api()).encode("utf-8"),
            properties=pika.BasicProperties(
                content_type="application/json",
                correlation_id=properties.correlation_id,
                message_id=record.id,
                headers={
                    "x-lambda-event-id": delivery.member.event_id,
                    "x-lambda-execution-index": 0,
                    "x-lambda-executions": 1,
                },
            ),
        )


def _member(body: bytes) -> Member | None:
    """The event in a batch queue's message: the listener put it there addressed, with its id."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
        return None
    return Member(payload["id"], payload.get("data"))
