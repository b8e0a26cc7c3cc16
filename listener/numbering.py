"""Numbering: an event published without an id gets one, kept by a parked copy.

An id-less delivery would get a new id each time it is delivered, so a listener
that died between storing an execution record and its ack would make a second
record on the redelivery. So before it runs, the event's copy, with the
assigned id as ``message_id``, is handed to the broker and the original acked:
from then on only the copy carries the event, under that id, through any crash.

The copy does not go back to the events queue (the listener would then take
every id-less event twice). It waits in a parking queue of this listener's own,
with a message TTL and the way the original came (the events queue, or the
projects exchange with its routing key, so a project's event keeps its project)
as the queue's dead-letter route, while the event runs from the original's
delivery, under its assigned id (``Parked``). Once every event whose copy
waits in a parking queue has its records stored, the queue is deleted with all
its copies at once: one broker operation for a few seconds' worth of events.
Should the listener die, its parking queues are left alone: their copies expire
after ``PARKED_TTL_MS`` into the events queue and run as any event with an id
does, finding the records already stored. An event that goes back to the broker
(a transient failure) has its copy sent back the way the original came at once,
confirmed, and one rejected has it sent to the dead letters; a copy whose event
still runs when its queue is half a TTL old is parked anew, so that queue can go.
The parking queues are rotated every few seconds, and one nobody uses expires by
itself (``x-expires``) after its copies have.

Waiting for a publisher confirm per copy would block the connection's thread for
a broker round trip per event, about as long as a trivial function runs, and a
transaction per batch blocks it for one per batch. So the copies go out on a
channel in confirm mode without waiting: the copies of every id-less delivery
the consumer holds are published at once (a batch closes when the consumer has
no further delivery waiting or ``MAX_BATCH`` are held, so a lone event waits for
no other), and the broker's confirms, which come back as it has written them,
ack each original and start its event as they arrive. A copy the broker could
not route comes back as ``basic.return`` before its confirm (a refused one as a
``basic.nack``); its original then runs as it is, under the assigned id, acked
only once its records are stored.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from listener.events import Event

LOGGER = logging.getLogger(__name__)

MAX_BATCH = 256
# How long a parked copy waits before it goes back to run, unless the topology says
# (``Topology.parked_ttl_ms``): what an id-less event's recovery takes after its listener died.
PARKED_TTL_MS = 30_000
# A parking queue nobody uses (its listener died) goes once its copies have expired.
PARKING_EXPIRES_MS = 4 * PARKED_TTL_MS
# A parking queue takes copies this long (or this many), then the next one does.
ROTATE_S = 2.0
ROTATE_COPIES = 5_000


@dataclass(frozen=True)
class Unnumbered:
    """An id-less delivery held until its copy is committed."""

    tag: int
    event: Event  # under its assigned id
    properties: Any  # the original's
    body: bytes
    exchange: str  # where the copy goes back to: the way the original came
    routing_key: str
    copy_properties: Any  # the original's, persistent, with the id as message_id


@dataclass
class _Parking:
    """One parking queue: how many of its copies' events have not finished yet."""

    name: str
    opened_at: float
    copies: int = 0
    unconfirmed: int = 0
    running: int = 0
    kept: bool = False  # some event went back to the broker: its copy must stay


@dataclass
class Parked:
    """An event running from its acked original while its copy is parked.

    ``tag`` stands in for the acked delivery's: negative, so it is never a real one.
    """

    tag: int
    parking: _Parking = field(repr=False)
    delivery: Unnumbered = field(repr=False)
    moving: bool = False  # its copy is being parked anew


class Numbering:
    """Parks the copies of id-less deliveries and runs them once confirmed (see the module doc).

    ``prefix`` names this listener's parking queues (under its events queue, so
    the platform's own replies never go there). Once the broker confirms a copy,
    ``ack`` acks its original and ``run_parked(delivery, tag)`` runs the event
    with a stand-in ``tag`` that ``done`` or ``kept`` later settles; a copy the
    broker returned or refused leaves its original to ``run_as_is``. All three
    are called on the connection's thread, inside pika's dispatch.
    ``parked_ttl_ms`` and ``rotate_s`` are for tests that cannot wait.
    """

    def __init__(
        self,
        connection: Any,
        prefix: str,
        ack: Callable[[int], None],
        run_parked: Callable[[Unnumbered, int], None],
        run_as_is: Callable[[Unnumbered], None],
        monotonic: Callable[[], float] = time.monotonic,
        parked_ttl_ms: int = PARKED_TTL_MS,
        rotate_s: float = ROTATE_S,
    ) -> None:
        self._connection = connection
        self._ack = ack
        self._run_parked = run_parked
        self._run_as_is = run_as_is
        self._parked_ttl_ms = parked_ttl_ms
        self._rotate_s = rotate_s
        self._prefix = f"{prefix}.{uuid.uuid4().hex[:8]}"
        self._monotonic = monotonic
        self._channel = connection.channel()
        # The channel beneath pika's blocking one: its publishes wait for nothing, and
        # the broker's confirms come to ``_on_confirm`` as they arrive.
        self._impl = self._channel._impl
        selected: list[Any] = []
        self._impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=selected.append)
        self._impl.add_on_return_callback(self._on_return)
        while not selected:
            connection.process_data_events(time_limit=0.1)
        self._held: list[Unnumbered] = []
        self._returned: set[str] = set()
        # Published copies waiting for their confirm, by publish sequence number; a copy
        # sent again names its parked event and where it went (None: back).
        self._unconfirmed: dict[
            int, tuple[Unnumbered, _Parking, tuple[Parked, _Parking | None] | None]
        ] = {}
        self._sequence = itertools.count(1)
        self._serial = itertools.count(1)
        self._tags = itertools.count(-1, -1)
        # The parking queue copies go to now, per way back; and every one not deleted yet.
        self._current: dict[tuple[str, str], _Parking] = {}
        self._open: list[_Parking] = []
        self._parked: dict[int, Parked] = {}

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def unconfirmed(self) -> int:
        return len(self._unconfirmed)

    @property
    def full(self) -> bool:
        return len(self._held) >= MAX_BATCH

    def hold(self, delivery: Unnumbered) -> None:
        self._held.append(delivery)

    def publish(self) -> int:
        """Park the held copies (their confirms come later); how many went out.

        Must be called outside pika's dispatch (from the consume loop): a new
        parking queue is declared there, with a round trip.
        """
        batch, self._held = self._held, []
        for delivery in batch:
            parking = self._parking_for(delivery.exchange, delivery.routing_key)
            self._impl.basic_publish(
                exchange="",
                routing_key=parking.name,
                body=delivery.body,
                properties=delivery.copy_properties,
                mandatory=True,
            )
            parking.copies += 1
            parking.unconfirmed += 1
            self._unconfirmed[next(self._sequence)] = (delivery, parking, None)
        return len(batch)

    def is_parked(self, tag: int) -> bool:
        return tag in self._parked

    def done(self, tag: int) -> None:
        """The parked event's records are stored: its copy may go with its queue."""
        self._parked.pop(tag).parking.running -= 1

    def kept(self, tag: int) -> None:
        """The parked event went back to the broker: its copy must run it later.

        The copy is sent back the way the original came, confirmed, so its parking
        queue, and the copies of the events that finished, may still go; should
        the broker refuse it, the queue is kept and the copy expires back instead.
        """
        parked = self._parked[tag]
        self._send(parked, parked.delivery.exchange, parked.delivery.routing_key, None)

    def reject(self, tag: int, exchange: str, routing_key: str) -> None:
        """The parked event is to be dead-lettered as it is: its copy goes there, confirmed."""
        self._send(self._parked[tag], exchange, routing_key, None)

    def _send(self, parked: Parked, exchange: str, routing_key: str, to: _Parking | None) -> None:
        """Publish a parked event's copy again: to the parking queue ``to``, or back."""
        delivery = parked.delivery
        self._impl.basic_publish(
            exchange=exchange,
            routing_key=routing_key,
            body=delivery.body,
            properties=delivery.copy_properties,
            mandatory=True,
        )
        target = parked.parking if to is None else to
        target.unconfirmed += 1
        self._unconfirmed[next(self._sequence)] = (delivery, target, (parked, to))

    def tidy(self, closing: bool = False) -> None:
        """Delete the parking queues past their turn whose events have all finished.

        A queue with a kept copy is left to expire (its copies go back to run);
        ``closing``: every queue is past its turn (the session ends).
        """
        if not self._open:
            return
        now = self._monotonic()
        for way, parking in list(self._current.items()):
            stale = now - parking.opened_at >= self._rotate_s or parking.copies >= ROTATE_COPIES
            if closing or stale:
                del self._current[way]
        current = set(map(id, self._current.values()))
        for parking in list(self._open):
            if id(parking) in current:
                continue
            if parking.running and now - parking.opened_at >= self._parked_ttl_ms / 2000:
                self._move_running(parking)
            if parking.running or parking.unconfirmed:
                continue
            self._open.remove(parking)
            if not parking.kept:
                self._channel.queue_delete(parking.name)

    def _move_running(self, parking: _Parking) -> None:
        """Park the copies of the events still running from ``parking`` anew, before it
        expires: they would come back while those run, and the rest with them."""
        for parked in list(self._parked.values()):
            if parked.parking is parking and not parked.moving:
                parked.moving = True
                way = (parked.delivery.exchange, parked.delivery.routing_key)
                to = self._parking_for(*way)
                self._send(parked, "", to.name, to)

    def give_back(self, nack: Callable[[int], None]) -> None:
        """On stop: the held originals go back to the queue, no copy made."""
        batch, self._held = self._held, []
        for delivery in batch:
            nack(delivery.tag)

    def _parking_for(self, exchange: str, routing_key: str) -> _Parking:
        parking = self._current.get((exchange, routing_key))
        if parking is not None:
            return parking
        name = f"{self._prefix}.{next(self._serial)}"
        self._channel.queue_declare(
            queue=name,
            durable=True,
            arguments={
                "x-message-ttl": self._parked_ttl_ms,
                "x-expires": max(PARKING_EXPIRES_MS, 4 * self._parked_ttl_ms),
                "x-dead-letter-exchange": exchange,
                "x-dead-letter-routing-key": routing_key,
            },
        )
        parking = _Parking(name, self._monotonic())
        self._current[(exchange, routing_key)] = parking
        self._open.append(parking)
        return parking

    def _on_confirm(self, frame: Any) -> None:
        """The broker holds (``Basic.Ack``) or refused (``Basic.Nack``) copies up to a number."""
        method = frame.method
        if method.multiple:
            numbers = [n for n in self._unconfirmed if n <= method.delivery_tag]
        else:
            numbers = [method.delivery_tag] if method.delivery_tag in self._unconfirmed else []
        refused = method.NAME == "Basic.Nack"
        for number in sorted(numbers):
            delivery, parking, sent_again = self._unconfirmed.pop(number)
            parking.unconfirmed -= 1
            returned = refused or delivery.event.id in self._returned
            if sent_again is not None:
                self._returned.discard(delivery.event.id)
                self._sent_again(*sent_again, returned)
                continue
            if returned:
                self._returned.discard(delivery.event.id)
                LOGGER.warning(
                    "event %s: its copy with the assigned id could not be parked; "
                    "running it as it is",
                    delivery.event.id,
                )
                self._run_as_is(delivery)
                continue
            self._ack(delivery.tag)
            tag = next(self._tags)
            parking.running += 1
            self._parked[tag] = Parked(tag, parking, delivery)
            self._run_parked(delivery, tag)

    def _sent_again(self, parked: Parked, to: _Parking | None, returned: bool) -> None:
        """A parked copy sent again is confirmed: moved to ``to``, or back the way it came."""
        parked.moving = False
        if returned:
            LOGGER.warning("event %s: its copy could not be sent again", parked.delivery.event.id)
            if to is None:  # not back: it expires back from its parking queue
                self._parked.pop(parked.tag, None)
                parked.parking.running -= 1
                parked.parking.kept = True
            return
        if to is None:  # back where it came from, or dead-lettered: nothing of it stays parked
            self._parked.pop(parked.tag, None)
            parked.parking.running -= 1
            return
        if parked.tag in self._parked:
            parked.parking.running -= 1
            to.running += 1
            parked.parking = to

    def _on_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        # A Basic.Return comes before the confirm of the same message.
        if properties.message_id:
            self._returned.add(properties.message_id)
