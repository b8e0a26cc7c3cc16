"""Relay: a router passes the hosts' replies on to the clients waiting for them.

A host's broker user may not publish through the default exchange (it would reach
every queue, other hosts' too), so a worker publishes each reply to the results
queue (``<events_queue>.results``, through ``<events_queue>.from-hosts``) with the
client's queue in ``reply_to``. Every router runs one ``Relay``, which consumes
that queue and publishes each reply to its ``reply_to`` through the default
exchange, with the worker's content type, correlation id, message id and headers.

A ``reply_to`` that names one of the platform's own queues (the events queue, a
host's queue, a delay queue, the dead-letter or results queue) is dropped with a
warning: a compromised host could otherwise use the relay to write into the
queues its own user is kept out of. Replies are not confirmed end to end, as a
local listener's are not: the execution record is stored before any reply is
sent, and a client that missed its reply reads the record.

The relay's publishes are confirmed, so a publish the broker refuses closes only
the publishing channel, is noticed at once, and costs that one reply rather than
looping on its redelivery; it is acked after its publish, so a connection lost
in between redelivers it (a client may see a reply twice; the correlation id
tells them apart).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions

from listener.service import Backoff
from listener.topology import Topology, declare

LOGGER = logging.getLogger(__name__)

PREFETCH = 64


class Relay:
    """Consumes the results queue and relays each reply to its ``reply_to`` (see the module doc)."""

    def __init__(
        self,
        topology: Topology,
        connect: Callable[[], Any],
        backoff: Backoff | None = None,
    ) -> None:
        self._topology = topology
        self._connect = connect
        self._backoff = backoff or Backoff()
        self.relayed = 0
        self.refused = 0

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop``; reconnects with backoff when the broker goes away."""
        while not stop.is_set():
            try:
                connection = self._connect()
            except pika.exceptions.AMQPConnectionError as exc:
                self._wait(stop, exc)
                continue
            try:
                self._session(connection, stop)
            except pika.exceptions.AMQPError as exc:
                self._wait(stop, exc)
            finally:
                _close_quietly(connection)

    def _session(self, connection: Any, stop: threading.Event) -> None:
        channel = connection.channel()
        declare(channel, self._topology)  # the results queue may not exist yet
        channel.basic_qos(prefetch_count=PREFETCH)
        out = _publishing_channel(connection)
        for method, properties, body in channel.consume(
            self._topology.results_queue, inactivity_timeout=1
        ):
            if stop.is_set():
                break
            if method is None:
                continue
            self._backoff.reset()
            out = self._relay(connection, out, properties, body)
            channel.basic_ack(method.delivery_tag)
        if stop.is_set():
            channel.cancel()

    def _relay(self, connection: Any, out: Any, properties: Any, body: bytes) -> Any:
        """Publish one reply to its client; the channel to publish the next one on."""
        target = properties.reply_to or ""
        event_id = (properties.headers or {}).get("x-lambda-event-id", "(unknown)")
        if not target or self._topology.is_own_queue(target):
            self.refused += 1
            LOGGER.warning(
                "event %s: a reply addressed to %r is not relayed: not a client's queue",
                event_id,
                target,
            )
            return out
        reply = pika.BasicProperties(
            content_type=properties.content_type,
            correlation_id=properties.correlation_id,
            message_id=properties.message_id,
            headers=properties.headers,
        )
        try:
            # Not mandatory: a client that has gone away is not an error.
            out.basic_publish(exchange="", routing_key=target, body=body, properties=reply)
        except pika.exceptions.ChannelClosedByBroker as exc:
            self.refused += 1
            LOGGER.warning(
                "event %s: the broker refused the reply to %r: %s %s",
                event_id,
                target,
                exc.reply_code,
                exc.reply_text,
            )
            return _publishing_channel(connection)
        self.relayed += 1
        LOGGER.debug("event %s: reply relayed to %s", event_id, target)
        return out

    def _wait(self, stop: threading.Event, exc: BaseException) -> None:
        delay = self._backoff.next()
        LOGGER.warning("relay: lost the broker (%r); reconnecting in %.1f s", exc, delay)
        stop.wait(delay)


def _publishing_channel(connection: Any) -> Any:
    channel = connection.channel()
    channel.confirm_delivery()
    return channel


def _close_quietly(connection: Any) -> None:
    try:
        if connection.is_open:
            connection.close()
    except pika.exceptions.AMQPError:
        LOGGER.debug("closing a broken connection failed", exc_info=True)
