"""Broker fixtures for the listener suites: per-test queue names, cleaned up afterwards."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import falcon.testing.helpers
import pika
import pytest
from listener_helpers import unique

from lambda_os.settings import Settings
from listener.topology import Topology, declare, delete


class Broker:
    """A test's own connection to RabbitMQ: publish, get, count; deletes what it made."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self._queues: list[str] = []

    def publish(self, queue: str, body: bytes, **properties: Any) -> None:
        properties.setdefault("delivery_mode", pika.DeliveryMode.Persistent)
        self.channel.basic_publish(
            "", queue, body, pika.BasicProperties(**properties), mandatory=True
        )

    def get(self, queue: str) -> tuple[Any, bytes] | None:
        method, properties, body = self.channel.basic_get(queue, auto_ack=True)
        return None if method is None else (properties, body)

    def get_all(self, queue: str) -> list[tuple[Any, bytes]]:
        out = []
        while (message := self.get(queue)) is not None:
            out.append(message)
        return out

    def ready(self, queue: str) -> int:
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def temporary_queue(self) -> str:
        name = unique("test.reply")
        self.channel.queue_declare(name, durable=False, auto_delete=False)
        self._queues.append(name)
        return name

    def close(self) -> None:
        if self.connection.is_open:
            for name in self._queues:
                self.channel.queue_delete(name)
            self.connection.close()


@pytest.fixture
def broker_settings(amqp_url: str) -> Iterator[Settings]:
    """Settings with this test's own events and dead-letter queues, declared, deleted after it."""
    settings = Settings(
        amqp_url=amqp_url,
        events_queue=unique("test.events"),
        dead_letter_queue=unique("test.dead"),
        allowed_hosts=falcon.testing.helpers.DEFAULT_HOST,  # the Host TestClient sends
    )
    topology = Topology.from_settings(settings)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    declare(connection.channel(), topology)  # so a test may publish before its listener starts
    connection.close()
    yield settings
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    delete(connection.channel(), topology)
    connection.close()


@pytest.fixture
def broker(amqp_url: str) -> Iterator[Broker]:
    b = Broker(amqp_url)
    yield b
    b.close()


@pytest.fixture
def docker_settings(broker_settings: Settings, runtime_image: str) -> Iterator[Settings]:
    """The broker settings with a runtime image and 2 slots on the local Docker Engine."""
    # A short state directory: the agent's socket path must fit in 108 bytes.
    state_dir = tempfile.mkdtemp(prefix="los-", dir="/tmp")
    yield dataclasses.replace(
        broker_settings,
        state_dir=state_dir,
        runtime_image_prefix=runtime_image.rsplit(":", 1)[0],
        concurrency=2,
    )
    shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def docker_provisioner(docker_settings: Settings, docker_client: Any) -> Iterator[Any]:
    try:
        from provisioner.docker import DockerProvisioner
    except ImportError as exc:
        pytest.skip(f"provisioner.docker is not available: {exc}")
    backend = DockerProvisioner(docker_settings, client=docker_client)
    yield backend
    backend.close()
