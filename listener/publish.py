"""Publish events to RabbitMQ and know that the broker holds them.

The API's asynchronous invocation answers 202 only once the broker has the
event, so every publish here waits for the broker's confirm
(``confirm_delivery``), is persistent, and is ``mandatory`` so a message that no
queue takes raises instead of vanishing. Failures become ``TransientError``.

pika's ``BlockingConnection`` is not thread-safe and the API publishes from its
worker threads, so one lock serialises the connection. The connection is made on
first use and declares the same topology as the listener. Nobody services
heartbeats between publishes, so an idle connection may have been closed by the
broker: a publish that finds it closed reconnects and tries once more. That retry
may duplicate a message whose confirm was lost; the event id makes the duplicate
harmless (one execution record per event and function).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions

from lambda_os.errors import PermanentError, TransientError
from lambda_os.settings import Settings
from listener.topology import Topology, declare

LOGGER = logging.getLogger(__name__)

BLOCKED_CONNECTION_TIMEOUT_S = 10.0


def connection_parameters(amqp_url: str, name: str) -> pika.URLParameters:
    """Parameters from the URL, named for ``rabbitmqctl list_connections``, never hanging forever."""
    params = pika.URLParameters(amqp_url)
    params.client_properties = {"connection_name": name}
    if params.blocked_connection_timeout is None:
        # A broker under a memory or disk alarm blocks publishers; fail instead of hanging.
        params.blocked_connection_timeout = BLOCKED_CONNECTION_TIMEOUT_S
    return params


class Publisher:
    """Confirmed, persistent publishing to the events queue (or any queue), thread-safe."""

    def __init__(
        self,
        settings: Settings,
        connect: Callable[[], Any] | None = None,
        name: str = "lambda-os publisher",
    ) -> None:
        self._topology = Topology.from_settings(settings)
        params = connection_parameters(settings.amqp_url, name)
        self._connect = connect or (lambda: pika.BlockingConnection(params))
        self._lock = threading.Lock()
        self._connection: Any = None
        self._channel: Any = None

    @property
    def topology(self) -> Topology:
        return self._topology

    def publish(
        self,
        body: bytes,
        *,
        message_id: str | None = None,
        routing_key: str | None = None,
        headers: dict[str, Any] | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        exchange: str = "",
    ) -> None:
        """Publish and return once the broker confirmed it; ``TransientError`` otherwise.

        ``routing_key`` defaults to the events queue (through the default exchange,
        unless ``exchange`` names another, such as the projects exchange).
        """
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message_id,
            headers=headers,
            reply_to=reply_to,
            correlation_id=correlation_id,
        )
        key = routing_key or self._topology.events_queue
        with self._lock:
            for attempt in (1, 2):
                try:
                    channel = self._ensure_channel()
                    channel.basic_publish(
                        exchange=exchange,
                        routing_key=key,
                        body=body,
                        properties=properties,
                        mandatory=True,
                    )
                    return
                except pika.exceptions.UnroutableError as exc:
                    raise TransientError(f"no queue took the message for {key!r}") from exc
                except pika.exceptions.NackError as exc:
                    raise TransientError(f"the broker refused the message for {key!r}") from exc
                except pika.exceptions.AMQPError as exc:
                    self._drop_connection()
                    if attempt == 2:
                        raise TransientError(f"cannot publish to RabbitMQ: {exc!r}") from exc
                    LOGGER.info("message %s: connection lost (%r); reconnecting", message_id, exc)

    def request(
        self, body: bytes, *, message_id: str, correlation_id: str, timeout_s: float
    ) -> bytes | None:
        """Publish an event with ``reply_to`` and wait for its first reply; None after ``timeout_s``.

        The reply queue is exclusive to a short connection of its own, declared
        before the publish so the reply cannot arrive before anyone listens. Replies
        whose ``correlation_id`` differs are ignored.
        """
        try:
            connection = self._connect()
        except pika.exceptions.AMQPError as exc:
            raise TransientError(f"cannot connect to RabbitMQ: {exc!r}") from exc
        try:
            channel = connection.channel()
            queue = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
            replies: list[bytes] = []

            def on_reply(_channel: Any, _method: Any, properties: Any, reply: bytes) -> None:
                if properties.correlation_id == correlation_id:
                    replies.append(reply)

            channel.basic_consume(queue, on_reply, auto_ack=True)
            self.publish(body, message_id=message_id, reply_to=queue, correlation_id=correlation_id)
            deadline = time.monotonic() + timeout_s
            while not replies and (left := deadline - time.monotonic()) > 0:
                connection.process_data_events(time_limit=min(1.0, left))
            return replies[0] if replies else None
        except pika.exceptions.AMQPError as exc:
            raise TransientError(f"lost RabbitMQ while waiting for a reply: {exc!r}") from exc
        finally:
            if connection.is_open:
                connection.close()

    def close(self) -> None:
        with self._lock:
            self._drop_connection()

    def _ensure_channel(self) -> Any:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self._drop_connection()
        self._connection = self._connect()
        channel = self._connection.channel()
        try:
            declare(channel, self._topology)
        except pika.exceptions.ChannelClosedByBroker as exc:
            self._drop_connection()
            raise PermanentError(
                f"the broker refused the queue declarations ({exc.reply_code} {exc.reply_text}); "
                "a queue of that name exists with other arguments"
            ) from exc
        channel.confirm_delivery()
        self._channel = channel
        return channel

    def _drop_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except pika.exceptions.AMQPError:
                LOGGER.debug("closing a broken connection failed", exc_info=True)
