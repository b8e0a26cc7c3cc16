"""The broker topology: the events queue, its dead letters and delay queues, declared one way.

RabbitMQ refuses (406 PRECONDITION_FAILED, which closes the channel) a queue
declared again with different arguments, so the publisher, the listener and the
tests all declare through ``declare`` here and nowhere else.

- ``<events_queue>``: durable, classic, with ``x-dead-letter-exchange`` set, so a
  ``basic_nack(requeue=False)`` (and, later, expired retry messages) lands on the
  dead-letter queue instead of vanishing.
- ``<events_queue>.dlx``: a durable direct exchange; dead letters are routed with
  the key ``<dead_letter_queue>`` (``x-dead-letter-routing-key``), not the
  original routing key, so one binding catches them all.
- ``<dead_letter_queue>``: durable, classic, no consumer of ours; an operator
  reads it, and ``POST /v1/deadletters/{id}/replay`` sends one back.
- ``<events_queue>.host.<host_id>``: a cluster host's own invocation queue,
  declared as the events queue is; the routers publish there what they placed on
  that host, and only that host's worker consumes it. Its retries and deferrals
  go back through the delay queues to ``<events_queue>``, to be placed again.
- ``<events_queue>.from-hosts``: a durable direct exchange, the only one a host's
  own broker user may publish to (besides the dead-letter exchange). Each delay
  queue and the events queue are bound to it under their own names, so a host's
  retries and deferrals reach them as before; its replies go with the key
  ``<events_queue>.results`` to that queue, where a router relays each to its
  ``reply_to`` (``listener.relay``). The default exchange would let a host write
  into any queue, another host's too.
- ``<events_queue>.projects``: a durable topic exchange bound to ``<events_queue>``
  with ``#``, the only door a project's own publisher user has. Its routing key
  starts with the project (``<project>.<anything>``), which RabbitMQ's topic
  permissions pin to the user's own project, so the listener takes an event's
  project from where the broker let it in (``listener.project``), never from the
  body. Only the platform's own users and the operator write to the default
  exchange; what comes that way is the platform's and matches every project.
- ``<events_queue>.retry.<ms>ms``: the delay queues for retries, one per backoff
  tier, each with its own ``x-message-ttl`` and the default exchange as
  dead-letter exchange routing back to ``<events_queue>``. No consumer reads
  them: a retry message waits there until its TTL and RabbitMQ moves it back.
  One TTL per queue (not a per-message ``expiration``) because RabbitMQ expires
  messages only at the head of a queue: a 1 s retry behind a 60 s one would
  wait the full minute. Within a tier every message has the same TTL, so the
  head always expires first.

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

import dataclasses
from dataclasses import dataclass
from typing import Any

from lambda_os.settings import Settings

RETRY_DELAYS_MS = (1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000)


@dataclass(frozen=True)
class Topology:
    """The names of the queues and exchange, and the arguments they are declared with."""

    events_queue: str
    dead_letter_queue: str
    retry_delays_ms: tuple[int, ...] = RETRY_DELAYS_MS
    consume_queue: str = ""  # a host's own queue, for a worker; empty: the events queue
    # How long an id-less event's parked copy waits (``listener.numbering``): its recovery time.
    parked_ttl_ms: int = 30_000

    @property
    def consumed_queue(self) -> str:
        """The queue this process consumes: its host's own, or the events queue."""
        return self.consume_queue or self.events_queue

    def host_queue(self, host_id: str) -> str:
        return f"{self.events_queue}.host.{host_id}"

    def for_host(self, host_id: str) -> Topology:
        """The same topology, consumed from ``host_id``'s own queue."""
        return dataclasses.replace(self, consume_queue=self.host_queue(host_id))

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.events_queue}.dlx"

    @property
    def from_hosts_exchange(self) -> str:
        """The one exchange a host's broker user may publish its retries and replies to."""
        return f"{self.events_queue}.from-hosts"

    @property
    def projects_exchange(self) -> str:
        """The topic exchange projects publish their events to, ``<project>.<anything>``."""
        return f"{self.events_queue}.projects"

    @property
    def results_queue(self) -> str:
        """Where hosts' replies wait for a router to relay them to their ``reply_to``."""
        return f"{self.events_queue}.results"

    def outlet(self, queue: str) -> tuple[str, str]:
        """The exchange and routing key this process publishes to ``queue`` with.

        A host goes through the host-output exchange, which its broker user may
        write; everyone else through the default exchange, routed by queue name.
        """
        return (self.from_hosts_exchange, queue) if self.consume_queue else ("", queue)

    def reply_outlet(self, reply_to: str) -> tuple[str, str]:
        """Where a reply for ``reply_to`` is published: a host's waits in the results queue."""
        if self.consume_queue:
            return self.from_hosts_exchange, self.results_queue
        return "", reply_to

    def is_own_queue(self, name: str) -> bool:
        """Whether ``name`` is one of the platform's queues (a reply must never go there)."""
        return name in (self.events_queue, self.dead_letter_queue) or name.startswith(
            (f"{self.events_queue}.", f"{self.dead_letter_queue}.")
        )

    def retry_queue_for(self, delay_ms: int) -> str:
        return f"{self.events_queue}.retry.{delay_ms}ms"

    def retry_delay_ms(self, attempt: int) -> int:
        """The backoff before ``attempt`` (2 and up): the first tier, doubling, capped at the last."""
        return self.retry_delays_ms[min(max(attempt - 2, 0), len(self.retry_delays_ms) - 1)]

    def retry_queue(self, attempt: int) -> str:
        """The delay queue a retry message for ``attempt`` waits in."""
        return self.retry_queue_for(self.retry_delay_ms(attempt))

    def retry_arguments(self, delay_ms: int) -> dict[str, Any]:
        return {
            "x-message-ttl": delay_ms,
            "x-dead-letter-exchange": "",  # the default exchange: routed by queue name
            "x-dead-letter-routing-key": self.events_queue,
        }

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
    """Declare the exchanges and queues (idempotent); a mismatch closes the channel.

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
    for delay_ms in topology.retry_delays_ms:
        channel.queue_declare(
            queue=topology.retry_queue_for(delay_ms),
            durable=True,
            arguments=topology.retry_arguments(delay_ms),
        )
    channel.queue_declare(queue=topology.results_queue, durable=True)
    channel.exchange_declare(
        exchange=topology.from_hosts_exchange, exchange_type="direct", durable=True
    )
    outputs = [topology.events_queue, topology.results_queue]
    outputs += [topology.retry_queue_for(delay_ms) for delay_ms in topology.retry_delays_ms]
    for queue in outputs:
        channel.queue_bind(queue=queue, exchange=topology.from_hosts_exchange, routing_key=queue)
    channel.exchange_declare(
        exchange=topology.projects_exchange, exchange_type="topic", durable=True
    )
    channel.queue_bind(
        queue=topology.events_queue, exchange=topology.projects_exchange, routing_key="#"
    )
    if topology.consume_queue:
        declare_host_queue(channel, topology, topology.consume_queue)


def declare_own(channel: Any, topology: Topology) -> None:
    """What a consuming process declares: everything, or for a host its own queue only.

    A host's broker user may configure nothing but its queue; the routers declare
    the rest before they place anything on it.
    """
    if topology.consume_queue:
        declare_host_queue(channel, topology, topology.consume_queue)
    else:
        declare(channel, topology)


def declare_host_queue(channel: Any, topology: Topology, queue: str) -> None:
    """A host's invocation queue, with the events queue's arguments (its dead letters)."""
    channel.queue_declare(queue=queue, durable=True, arguments=topology.events_arguments)


def delete(channel: Any, topology: Topology) -> None:
    """Remove what ``declare`` made (tests clean up their own queues with this)."""
    channel.queue_delete(queue=topology.events_queue)
    channel.queue_delete(queue=topology.dead_letter_queue)
    for delay_ms in topology.retry_delays_ms:
        channel.queue_delete(queue=topology.retry_queue_for(delay_ms))
    channel.queue_delete(queue=topology.results_queue)
    if topology.consume_queue:
        channel.queue_delete(queue=topology.consume_queue)
    channel.exchange_delete(exchange=topology.dead_letter_exchange)
    channel.exchange_delete(exchange=topology.from_hosts_exchange)
    channel.exchange_delete(exchange=topology.projects_exchange)
