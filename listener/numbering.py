"""Numbering: an event published without an id gets one through a copy that carries it.

An id-less delivery would get a new id each time it is delivered, so a listener
that died between storing an execution record and its ack would make a second
record on the redelivery. The copy, with the assigned id as ``message_id``, is
what runs: once the broker holds it the original is acked, and every later
delivery of the copy maps to the same executions.

Waiting for a publisher confirm per copy would block the connection's thread for
a broker round trip per event, about as long as a trivial function runs. So the
copies go out in batches on a transactional channel: the copies of every id-less
delivery the consumer holds are published, one ``tx.commit`` hands them all to
the broker (RabbitMQ makes a transaction's publishes visible and durable, and
sends its ``basic.return``\\ s, on commit: the same promise as a confirm), and only
then are the originals acked. A batch closes when the consumer has no further
delivery waiting or ``MAX_BATCH`` are held, so a lone event waits for no other.
A copy the broker could not route comes back as ``basic.return`` before the
commit's answer; its original then runs as it is, under the assigned id, as it
did before ids were assigned at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from listener.events import Event

LOGGER = logging.getLogger(__name__)

MAX_BATCH = 256


@dataclass(frozen=True)
class Unnumbered:
    """An id-less delivery held until its copy is committed."""

    tag: int
    event: Event  # under its assigned id
    properties: Any  # the original's
    body: bytes
    exchange: str  # where the copy goes: the way the original came
    routing_key: str
    copy_properties: Any  # the original's, persistent, with the id as message_id


class Numbering:
    """Publishes the copies of id-less deliveries in committed batches (see the module doc)."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._tx = connection.channel()
        self._tx.tx_select()
        self._tx.add_on_return_callback(self._on_return)
        self._held: list[Unnumbered] = []
        self._returned: set[str] = set()

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def full(self) -> bool:
        return len(self._held) >= MAX_BATCH

    def hold(self, delivery: Unnumbered) -> None:
        self._held.append(delivery)

    def commit(self, ack: Callable[[int], None], run_as_is: Callable[[Unnumbered], None]) -> int:
        """Publish and commit the held copies, then ack their originals; how many went.

        Must be called outside pika's dispatch (from the consume loop), so the
        returns of this commit are dispatched here. A channel or connection error
        propagates with the originals unacked: the broker delivers them again.
        """
        batch, self._held = self._held, []
        if not batch:
            return 0
        for delivery in batch:
            self._tx.basic_publish(
                exchange=delivery.exchange,
                routing_key=delivery.routing_key,
                body=delivery.body,
                properties=delivery.copy_properties,
                mandatory=True,
            )
        self._tx.tx_commit()
        self._connection.process_data_events(time_limit=0)  # this commit's returns
        committed = 0
        for delivery in batch:
            if delivery.event.id in self._returned:
                self._returned.discard(delivery.event.id)
                LOGGER.warning(
                    "event %s: its copy with the assigned id could not be routed; "
                    "running it as it is",
                    delivery.event.id,
                )
                run_as_is(delivery)
                continue
            ack(delivery.tag)
            committed += 1
        LOGGER.debug("numbered %d id-less events in one commit", committed)
        return committed

    def give_back(self, nack: Callable[[int], None]) -> None:
        """On stop: the held originals go back to the queue, no copy made."""
        batch, self._held = self._held, []
        for delivery in batch:
            nack(delivery.tag)

    def _on_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        if properties.message_id:
            self._returned.add(properties.message_id)
