"""Id-less events are numbered by copies parked in batches, on the real RabbitMQ.

``Numbering`` is driven directly here, on a connection of the test's own: what
matters is what the broker holds once it confirmed, which originals are acked and
run, and where the copies go: with their parking queue once every event has
finished, back the way the original came when one did not. The listener's use
of it (every id-less event runs once, under the id its copy carries) is in
test_consumer.py and test_retries.py, and through a listener's ``kill -9`` in
the fault table.
"""

from __future__ import annotations

import json
import time
import uuid

import pika
import pytest
from listener_helpers import queue_exists

from listener.events import Event
from listener.numbering import Numbering, Unnumbered

pytestmark = pytest.mark.integration


@pytest.fixture
def connection(amqp_url):
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    yield connection
    connection.close()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Driven:
    """A ``Numbering`` on the test's connection, with what its callbacks were given."""

    def __init__(self, connection, clock: Clock, ttl_ms: int = 30_000) -> None:
        self.connection = connection
        self.acked: list[int] = []
        self.parked: list[tuple[str, int]] = []
        self.as_is: list[Unnumbered] = []
        self.numbering = Numbering(
            connection,
            f"test.numbered.{uuid.uuid4().hex[:8]}",
            ack=self.acked.append,
            run_parked=lambda d, tag: self.parked.append((d.event.id, tag)),
            run_as_is=self.as_is.append,
            monotonic=clock,
            parked_ttl_ms=ttl_ms,
        )

    def publish(self, *deliveries: Unnumbered) -> int:
        """Hold and publish them, then wait for the broker's confirms."""
        for delivery in deliveries:
            self.numbering.hold(delivery)
        published = self.numbering.publish()
        deadline = time.monotonic() + 10
        while self.numbering.unconfirmed and time.monotonic() < deadline:
            self.connection.process_data_events(time_limit=0.05)
        assert self.numbering.unconfirmed == 0, "no confirm came"
        return published

    def confirmed(self) -> None:
        """Wait for the confirms of what the numbering sent on its own."""
        deadline = time.monotonic() + 10
        while self.numbering.unconfirmed and time.monotonic() < deadline:
            self.connection.process_data_events(time_limit=0.05)
        assert self.numbering.unconfirmed == 0, "no confirm came"

    @property
    def tags(self) -> list[int]:
        return [tag for _id, tag in self.parked]


def held(tag: int, queue: str) -> Unnumbered:
    """An id-less delivery whose way back is ``queue`` (the default exchange)."""
    event_id = uuid.uuid4().hex
    body = json.dumps({"event_source": "s", "event_type": "t", "data": tag}).encode()
    copy = pika.BasicProperties(message_id=event_id, delivery_mode=pika.DeliveryMode.Persistent)
    return Unnumbered(
        tag, Event(event_id, "s", "t", tag, id_origin="assigned"), None, body, "", queue, copy
    )


def parking_queues(numbering: Numbering) -> list[str]:
    return [parking.name for parking in numbering._open]


def test_copies_are_parked_then_once_confirmed_originals_acked_and_events_run(broker, connection):
    way_back = broker.temporary_queue()
    driven = Driven(connection, Clock())
    deliveries = [held(tag, way_back) for tag in (1, 2, 3)]
    for delivery in deliveries:
        driven.numbering.hold(delivery)
    assert driven.numbering.held == 3 and driven.acked == []  # nothing went out yet

    assert driven.publish() == 3

    assert (driven.acked, driven.numbering.held, driven.as_is) == ([1, 2, 3], 0, [])
    assert [event_id for event_id, _tag in driven.parked] == [d.event.id for d in deliveries]
    assert all(tag < 0 and driven.numbering.is_parked(tag) for tag in driven.tags)
    (parking,) = parking_queues(driven.numbering)
    copies = broker.get_all(parking)
    assert [p.message_id for p, _ in copies] == [d.event.id for d in deliveries]
    assert [b for _, b in copies] == [d.body for d in deliveries]
    assert all(p.delivery_mode == pika.DeliveryMode.Persistent.value for p, _ in copies)
    assert broker.ready(way_back) == 0  # the events queue never sees them


def test_a_parking_queue_is_deleted_past_its_turn_once_all_its_events_finished(broker, connection):
    way_back = broker.temporary_queue()
    clock = Clock()
    driven = Driven(connection, clock)
    driven.publish(held(1, way_back), held(2, way_back))
    (parking,) = parking_queues(driven.numbering)

    driven.numbering.done(driven.tags[0])
    clock.now = 10.0  # past its turn
    driven.numbering.tidy()
    assert queue_exists(connection, parking)  # one event still runs

    driven.numbering.done(driven.tags[1])
    driven.numbering.tidy()
    assert not queue_exists(connection, parking)
    assert broker.ready(way_back) == 0


def test_copies_rotate_to_a_new_parking_queue_after_their_turn(broker, connection):
    way_back = broker.temporary_queue()
    clock = Clock()
    driven = Driven(connection, clock)
    driven.publish(held(1, way_back))
    clock.now = 10.0
    driven.numbering.tidy()
    driven.publish(held(2, way_back))
    first, second = parking_queues(driven.numbering)
    assert first != second
    for name in (first, second):
        connection.channel().queue_delete(name)


def test_a_kept_copy_goes_back_the_way_its_original_came_and_its_queue_still_goes(
    broker, connection
):
    way_back = broker.temporary_queue()
    clock = Clock()
    driven = Driven(connection, clock)
    kept, finished = held(1, way_back), held(2, way_back)
    driven.publish(kept, finished)
    (parking,) = parking_queues(driven.numbering)

    driven.numbering.kept(driven.tags[0])  # e.g. the catalogue was down: it went back
    driven.numbering.done(driven.tags[1])
    driven.confirmed()
    clock.now = 10.0
    driven.numbering.tidy()

    (back,) = broker.get_all(way_back)
    assert back[0].message_id == kept.event.id and back[1] == kept.body
    assert not queue_exists(connection, parking)  # the finished one's copy went with it


def test_a_copy_whose_event_still_runs_is_parked_anew_before_its_queue_would_expire(
    broker, connection
):
    way_back = broker.temporary_queue()
    clock = Clock()
    driven = Driven(connection, clock, ttl_ms=30_000)
    slow, quick = held(1, way_back), held(2, way_back)
    driven.publish(slow, quick)
    (first,) = parking_queues(driven.numbering)
    driven.numbering.done(driven.tags[1])

    clock.now = 16.0  # past half the copies' TTL, the slow one still running
    driven.numbering.tidy()
    driven.confirmed()
    driven.numbering.tidy()

    assert not queue_exists(connection, first)
    (second,) = parking_queues(driven.numbering)
    assert [p.message_id for p, _ in broker.get_all(second)] == [slow.event.id]
    assert driven.numbering.is_parked(driven.tags[0])
    driven.numbering.done(driven.tags[0])
    clock.now = 40.0
    driven.numbering.tidy()
    assert not queue_exists(connection, second) and broker.ready(way_back) == 0


def test_a_copy_the_broker_cannot_park_leaves_its_original_to_run_as_it_is(broker, connection):
    way_back = broker.temporary_queue()
    driven = Driven(connection, Clock())
    driven.publish(held(1, way_back))
    (parking,) = parking_queues(driven.numbering)
    connection.channel().queue_delete(parking)  # gone under it (an operator, a policy)

    lost = held(2, way_back)
    driven.publish(lost)

    assert (driven.acked, driven.as_is, len(driven.parked)) == ([1], [lost], 1)


def test_on_stop_the_held_originals_go_back_without_a_copy(broker, connection):
    queue = broker.temporary_queue()
    driven = Driven(connection, Clock())
    driven.numbering.hold(held(7, queue))
    driven.numbering.hold(held(8, queue))

    given_back: list[int] = []
    driven.numbering.give_back(given_back.append)

    assert (given_back, driven.numbering.held) == ([7, 8], 0)
    assert driven.publish() == 0 and driven.acked == []
    assert parking_queues(driven.numbering) == []


def test_a_rejected_copy_goes_where_it_is_sent_and_its_queue_still_goes(broker, connection):
    way_back, dead = broker.temporary_queue(), broker.temporary_queue()
    clock = Clock()
    driven = Driven(connection, clock)
    rejected = held(1, way_back)
    driven.publish(rejected)
    (parking,) = parking_queues(driven.numbering)

    driven.numbering.reject(driven.tags[0], "", dead)
    driven.confirmed()
    clock.now = 10.0
    driven.numbering.tidy()

    assert [p.message_id for p, _ in broker.get_all(dead)] == [rejected.event.id]
    assert broker.ready(way_back) == 0 and not queue_exists(connection, parking)
