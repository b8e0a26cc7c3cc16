"""Id-less events are numbered by copies committed in batches, on the real RabbitMQ.

``Numbering`` is driven directly here, on a connection of the test's own: what
matters is what the broker holds after a commit, and which originals are acked
or run as they are. The listener's use of it (every id-less event runs once,
under the id its copy carries) is in test_consumer.py and test_retries.py, and
through a listener's ``kill -9`` in the fault table.
"""

from __future__ import annotations

import json
import uuid

import pika
import pytest

from listener.events import Event
from listener.numbering import Numbering, Unnumbered

pytestmark = pytest.mark.integration


@pytest.fixture
def connection(amqp_url):
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    yield connection
    connection.close()


def held(tag: int, queue: str) -> Unnumbered:
    event_id = uuid.uuid4().hex
    body = json.dumps({"event_source": "s", "event_type": "t", "data": tag}).encode()
    copy = pika.BasicProperties(message_id=event_id, delivery_mode=pika.DeliveryMode.Persistent)
    return Unnumbered(
        tag, Event(event_id, "s", "t", tag, id_origin="assigned"), None, body, "", queue, copy
    )


def test_held_copies_reach_the_broker_only_with_the_commit_and_then_their_originals_are_acked(
    broker, connection
):
    queue = broker.temporary_queue()
    numbering = Numbering(connection)
    deliveries = [held(tag, queue) for tag in (1, 2, 3)]
    for delivery in deliveries:
        numbering.hold(delivery)
    assert (numbering.held, broker.ready(queue)) == (3, 0)  # nothing published yet

    acked: list[int] = []
    committed = numbering.commit(ack=acked.append, run_as_is=lambda d: pytest.fail(str(d)))

    assert (committed, acked, numbering.held) == (3, [1, 2, 3], 0)
    copies = broker.get_all(queue)
    assert [p.message_id for p, _ in copies] == [d.event.id for d in deliveries]
    assert [b for _, b in copies] == [d.body for d in deliveries]
    assert all(p.delivery_mode == pika.DeliveryMode.Persistent.value for p, _ in copies)


def test_a_copy_the_broker_cannot_route_leaves_its_original_to_run_as_it_is(broker, connection):
    queue = broker.temporary_queue()
    numbering = Numbering(connection)
    routed = held(1, queue)
    lost = held(2, f"test.no-such-queue.{uuid.uuid4().hex[:8]}")
    numbering.hold(routed)
    numbering.hold(lost)

    acked: list[int] = []
    run: list[Unnumbered] = []
    committed = numbering.commit(ack=acked.append, run_as_is=run.append)

    assert (committed, acked, run) == (1, [1], [lost])
    assert [p.message_id for p, _ in broker.get_all(queue)] == [routed.event.id]


def test_on_stop_the_held_originals_go_back_without_a_copy(broker, connection):
    queue = broker.temporary_queue()
    numbering = Numbering(connection)
    numbering.hold(held(7, queue))
    numbering.hold(held(8, queue))

    given_back: list[int] = []
    numbering.give_back(given_back.append)

    assert (given_back, numbering.held) == ([7, 8], 0)
    assert numbering.commit(ack=pytest.fail, run_as_is=pytest.fail) == 0
    assert broker.ready(queue) == 0
