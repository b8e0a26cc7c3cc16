"""The broker topology: the events queue and its dead letters, declared one way everywhere.

RabbitMQ refuses (406 PRECONDITION_FAILED, which closes the channel) a queue
declared again with different arguments, so the publisher, the listener and the
tests all declare through ``declare`` here and nowhere else.

- ``<events_queue>``: durable, classic, with ``x-dead-letter-exchange`` set, so a
  ``basic_nack(requeue=False)`` (and, later, expired retry messages) lands on the
  dead-letter queue instead of vanishing.
- ``<events_queue>.dlx``: a durable direct exchange; dead letters are routed with
  the key ``<dead_letter_queue>`` (``x-dead-letter-routing-key``), not the
  original routing key, so one binding catches them all.
- ``<dead_letter_queue>``: durable, classic, no consumer of ours; an operator (or
  issue #5's replay) reads it.

Why classic and not quorum: this is one broker node, where a quorum queue buys
no replication; what it would add is a delivery count (``x-delivery-limit``) to
stop a message that kills the consumer process from looping. Our consumer never
runs function code in its own process, bounds what it parses (size, depth), and
keys executions by (event id, function id), so a redelivery costs a lookup, not a
run. A quorum delivery limit would also count the requeues we make on purpose
while the Docker Engine is down and dead-letter valid events. Changing the type
later means a new queue name (the declaration must match), which the settings allow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lambda_os.settings import Settings


@dataclass(frozen=True)
class Topology:
    """The names of the queues and exchange, and the arguments they are declared with."""

    events_queue: str
    dead_letter_queue: str

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.events_queue}.dlx"

    @property
    def events_arguments(self) -> dict[str, Any]:
        return {
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-dead-letter-routing-key": self.dead_letter_queue,
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        return cls(settings.events_queue, settings.dead_letter_queue)


def declare(channel: Any, topology: Topology) -> None:
    """Declare the exchange and both queues (idempotent); a mismatch closes the channel.

    ``channel`` is a pika ``BlockingChannel``; a declaration that contradicts what
    the broker holds raises ``pika.exceptions.ChannelClosedByBroker``.
    """
    channel.exchange_declare(
        exchange=topology.dead_letter_exchange, exchange_type="direct", durable=True
    )
    channel.queue_declare(queue=topology.dead_letter_queue, durable=True)
    channel.queue_bind(
        queue=topology.dead_letter_queue,
        exchange=topology.dead_letter_exchange,
        routing_key=topology.dead_letter_queue,
    )
    channel.queue_declare(
        queue=topology.events_queue, durable=True, arguments=topology.events_arguments
    )


def delete(channel: Any, topology: Topology) -> None:
    """Remove what ``declare`` made (tests clean up their own queues with this)."""
    channel.queue_delete(queue=topology.events_queue)
    channel.queue_delete(queue=topology.dead_letter_queue)
    channel.exchange_delete(exchange=topology.dead_letter_exchange)
