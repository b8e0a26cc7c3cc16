"""A host that misses its heartbeats: a router marks it lost and hands its work on (real broker)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pika
import pytest

from lambda_os.packages import inspect_package
from lambda_os.records import HostRecord, utcnow
from lambda_os.settings import Settings
from listener.events import Event
from listener.execute import new_record
from listener.relocate import BrokerQueueMover
from listener.route import RegistryKeeper, Router
from listener.topology import Topology, declare, declare_host_queue, delete

pytestmark = [pytest.mark.integration]

HANDLER = b"def handler(event, context):\n    return event\n"


@pytest.fixture
def topology(amqp_url) -> Iterator[Topology]:
    suffix = uuid.uuid4().hex[:10]
    made = Topology(f"test.lost.{suffix}", f"test.lost.dead.{suffix}").for_host("gone")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    declare(connection.channel(), made)
    connection.close()
    yield made
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    delete(connection.channel(), made)
    connection.close()


def test_a_silent_host_is_marked_lost_its_queue_moved_back_and_its_leases_ended(
    amqp_url, catalogue, topology
):
    settings = Settings(
        amqp_url=amqp_url,
        events_queue=topology.events_queue,
        dead_letter_queue=topology.dead_letter_queue,
    )
    gone = HostRecord(id="gone", queue=topology.consumed_queue, slots_total=2, lease_owner="gone:1")
    catalogue.register_host(gone)
    fields = {"name": "f", "runtime": "python3.11", "event_source": "s", "event_type": "t"}
    fn = catalogue.create_function(
        {**fields, "owner": "tests"}, HANDLER, inspect_package(HANDLER, "main.py", "main.handler")
    )
    now = utcnow()
    running, _ = catalogue.start_execution(
        new_record(fn, Event(id="e", event_source="s", event_type="t")),
        "gone:1",
        now,
        now + timedelta(minutes=5),
    )
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.confirm_delivery()
    for n in range(3):
        body = json.dumps({"event_source": "cluster", "event_type": "f", "id": f"e{n}"})
        channel.basic_publish("", topology.consumed_queue, body.encode(), mandatory=True)
    mover = BrokerQueueMover(settings)
    later = now + timedelta(minutes=1)  # the router's clock: "gone" beat a minute ago
    router = Router(catalogue, "r1")
    keeper = RegistryKeeper(catalogue, router, mover, 1.0, 3, clock=lambda: later)

    try:
        lost = keeper.keep_once()
        again = keeper.keep_once()
        moved = [channel.basic_get(topology.events_queue, auto_ack=True)[2] for _ in range(3)]
        left = channel.queue_declare(topology.consumed_queue, passive=True).method.message_count
    finally:
        mover.close()
        connection.close()

    assert [h.id for h in lost] == ["gone"] and again == []
    assert catalogue.get_host("gone").state == "lost"
    assert sorted(json.loads(body)["id"] for body in moved) == ["e0", "e1", "e2"]
    assert left == 0
    assert catalogue.get_execution(running.id).lease_until <= later
    assert router.hosts == ()  # nothing more is placed on it


def test_declaring_a_host_queue_twice_is_harmless(amqp_url, topology):
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    declare_host_queue(connection.channel(), topology, topology.consumed_queue)
    declare_host_queue(connection.channel(), topology, topology.consumed_queue)
    connection.close()
