"""Relocate: move the messages of a lost host's queue back to the events queue.

Each message is published again (persistent, ``mandatory``, with publisher
confirms) to the events queue with its body and properties as they were, and
only then acked on the lost host's queue: a crash in between leaves a copy in
both, which the execution records make harmless. A router then places each one
again. A queue that does not exist (never declared, or deleted by an operator)
holds nothing to move.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions

from lambda_os.errors import TransientError
from lambda_os.settings import Settings
from listener.publish import connection_parameters
from listener.topology import Topology

LOGGER = logging.getLogger(__name__)

NOT_FOUND = 404


class BrokerQueueMover:
    """``QueueMover`` on RabbitMQ, on a connection of its own; one thread at a time."""

    def __init__(
        self,
        settings: Settings,
        connect: Callable[[], Any] | None = None,
        name: str = "lambda-os relocate",
    ) -> None:
        self._topology = Topology.from_settings(settings)
        params = connection_parameters(settings.amqp_url, name)
        self._connect = connect or (lambda: pika.BlockingConnection(params))
        self._connection: Any = None

    def move_to_events(self, queue: str) -> int:
        """Move every message now in ``queue``; how many. ``TransientError`` if the broker fails."""
        try:
            return self._move(queue)
        except pika.exceptions.AMQPError as exc:
            self.close()
            raise TransientError(f"moving the messages of {queue} failed: {exc!r}") from exc

    def _move(self, queue: str) -> int:
        if self._connection is None or not self._connection.is_open:
            self._connection = self._connect()
        channel = self._connection.channel()
        try:
            channel.queue_declare(queue=queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == NOT_FOUND:
                return 0
            raise
        channel.confirm_delivery()
        moved = 0
        try:
            while True:
                method, properties, body = channel.basic_get(queue)
                if method is None:
                    return moved
                channel.basic_publish(
                    exchange="",
                    routing_key=self._topology.events_queue,
                    body=body,
                    properties=properties,
                    mandatory=True,
                )
                channel.basic_ack(method.delivery_tag)
                moved += 1
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            LOGGER.error("the events queue refused a message moved from %s: %r", queue, exc)
            return moved
        finally:
            if channel.is_open:
                channel.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except pika.exceptions.AMQPError:
                LOGGER.debug("closing a broken connection failed", exc_info=True)
