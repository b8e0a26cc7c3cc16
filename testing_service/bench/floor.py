"""Case 1, the broker floor: a pika consumer that does no work, driven like the platform.

It consumes the same events with the listener's prefetch, publishes a fixed reply
to ``reply_to`` (what the platform's figures include too) and acks: the least any
consumer on this RabbitMQ can cost per event, so the platform's figures read as
a multiple of it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pika

REPLY = b'{"status": "succeeded", "result": null}'


class FloorConsumer:
    """Consumes ``queue`` on its own thread until ``stop``; replies and acks every message."""

    def __init__(self, amqp_url: str, queue: str, prefetch: int) -> None:
        self.amqp_url = amqp_url
        self.queue = queue
        self.prefetch = prefetch
        self.consumed = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-floor", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
            try:
                channel = connection.channel()
                channel.basic_qos(prefetch_count=self.prefetch)
                self._ready.set()
                for method, properties, _body in channel.consume(
                    self.queue, inactivity_timeout=0.2
                ):
                    if self._stop.is_set():
                        break
                    if method is None:
                        continue
                    if properties.reply_to:
                        channel.basic_publish(
                            "",
                            properties.reply_to,
                            REPLY,
                            pika.BasicProperties(correlation_id=properties.correlation_id),
                        )
                    channel.basic_ack(method.delivery_tag)
                    self.consumed += 1
                channel.cancel()
            finally:
                connection.close()
        except BaseException as exc:  # noqa: BLE001 -- reported by ``running``
            self.error = exc
            self._ready.set()

    @contextmanager
    def running(self) -> Iterator[FloorConsumer]:
        self._thread.start()
        self._ready.wait(30)
        try:
            if self.error is not None:
                raise RuntimeError(f"the floor consumer failed: {self.error!r}")
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=30)
