"""The relay: a router passes each host's reply from the results queue to its client,
and never into one of the platform's own queues."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pika
import pytest

from listener.relay import Relay
from listener.topology import Topology, declare, delete

pytestmark = pytest.mark.integration


@pytest.fixture
def relayed(amqp_url) -> Iterator[tuple[Topology, Relay, pika.adapters.BlockingConnection]]:
    suffix = uuid.uuid4().hex[:10]
    topology = Topology(f"test.relay.{suffix}", f"test.relay.dead.{suffix}")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    declare(connection.channel(), topology)
    relay = Relay(topology, lambda: pika.BlockingConnection(pika.URLParameters(amqp_url)))
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    yield topology, relay, connection
    stop.set()
    thread.join(timeout=10)
    channel = connection.channel()
    delete(channel, topology)
    connection.close()


def from_host(connection, topology: Topology, reply_to: str, body: bytes) -> None:
    """What a host's worker publishes for a reply (``Topology.reply_outlet``)."""
    exchange, key = topology.for_host("h").reply_outlet(reply_to)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish(
        exchange,
        key,
        body,
        pika.BasicProperties(
            reply_to=reply_to,
            correlation_id="c-1",
            content_type="application/json",
            headers={"x-lambda-event-id": "e-1"},
        ),
        mandatory=True,
    )
    channel.close()


def wait_for(check, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    return check()


def test_a_hosts_reply_reaches_the_clients_queue_with_its_correlation_id(relayed):
    topology, relay, connection = relayed
    channel = connection.channel()
    client = channel.queue_declare("", exclusive=True).method.queue
    from_host(connection, topology, client, b'{"ok": true}')

    got = wait_for(lambda: channel.basic_get(client, auto_ack=True)[0] is not None or None)
    assert got, "the reply did not arrive"
    assert relay.relayed == 1


def test_a_reply_addressed_to_a_platform_queue_is_dropped(relayed):
    topology, relay, connection = relayed
    channel = connection.channel()
    host_queue = topology.host_queue("victim")
    channel.queue_declare(host_queue, durable=True, arguments=topology.events_arguments)
    try:
        targets = [
            topology.events_queue,
            host_queue,
            topology.retry_queue_for(topology.retry_delays_ms[0]),
            topology.dead_letter_queue,
            topology.results_queue,
        ]
        for target in targets:
            from_host(connection, topology, target, b'{"forged": true}')
        assert wait_for(lambda: relay.refused == len(targets)), relay.refused
        for target in targets:
            assert channel.queue_declare(target, passive=True).method.message_count == 0, target
        assert relay.relayed == 0
    finally:
        channel.queue_delete(host_queue)
