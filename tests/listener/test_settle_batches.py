"""Results that finish together come back to the connection's thread together, and each is settled.

Against the real RabbitMQ, with a provisioner double that holds its runs until a
whole round of them is running, so they finish at the same moment, and a
connection that counts how often the workers wake the connection's thread.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pika
import pytest
from listener_helpers import FakeProvisioner, add_function, running, wait_for

from listener.consume import REASON_HEADER
from listener.events import encode_event
from listener.publish import connection_parameters
from listener.service import Backoff, Listener
from provisioner.base import Invocation, Outcome

pytestmark = pytest.mark.integration

WORKERS = 8
ROUNDS = 8


class TogetherProvisioner(FakeProvisioner):
    """Lets its runs finish only ``capacity`` at a time, all at once.

    An event whose data has ``"bug": true`` fails as a backend bug would.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity=capacity)
        self._round = threading.Barrier(capacity)

    def run(self, invocation: Invocation) -> Outcome:
        self._round.wait(timeout=10)
        if isinstance(invocation.data, dict) and invocation.data.get("bug"):
            with self._lock:
                self.runs.append(invocation)
            raise RuntimeError("bug in a backend (test double)")
        return super().run(invocation)


class CountingConnection:
    """A real ``BlockingConnection`` that counts the wake-ups requested from other threads."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self.wakeups = 0

    def add_callback_threadsafe(self, callback: Any) -> None:
        with self._lock:
            self.wakeups += 1
        self._connection.add_callback_threadsafe(callback)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def listener_with_counting_connection(settings, catalogue, provisioner):
    connections: list[CountingConnection] = []

    def connect() -> CountingConnection:
        params = connection_parameters(settings.amqp_url, "test-settle-batches")
        connections.append(CountingConnection(pika.BlockingConnection(params)))
        return connections[-1]

    listener = Listener(
        settings,
        catalogue,
        provisioner,
        connect=connect,
        backoff=Backoff(initial_s=0.1, cap_s=0.5),
        transient_delay_s=0.1,
    )
    return listener, connections


def publish_all(broker, settings, reply_queue, count, data=lambda n: {"n": n}):
    for n in range(count):
        broker.publish(
            settings.events_queue,
            encode_event("orders", "created", data(n), id=f"e-{n}"),
            reply_to=reply_queue,
            correlation_id=f"c-{n}",
        )


def test_results_finishing_together_are_each_acked_once_and_each_replied_to(
    broker_settings, broker, catalogue
):
    add_function(catalogue, "echo")
    events = WORKERS * ROUNDS
    reply_queue = broker.temporary_queue()
    provisioner = TogetherProvisioner(capacity=WORKERS)
    listener, connections = listener_with_counting_connection(
        broker_settings, catalogue, provisioner
    )
    with running(listener):
        publish_all(broker, broker_settings, reply_queue, events)
        wait_for(lambda: broker.ready(reply_queue) == events, what=f"{events} replies")
        wait_for(lambda: broker.ready(broker_settings.events_queue) == 0, what="the queue drained")
    replies = broker.get_all(reply_queue)
    assert sorted(props.correlation_id for props, _b in replies) == sorted(
        f"c-{n}" for n in range(events)
    )
    assert {json.loads(body)["status"] for _p, body in replies} == {"succeeded"}
    # Acked, each once: an ack lost would bring the message back when the listener
    # stopped, and a second ack of one delivery would close the channel, so the
    # listener would reconnect and receive the unacked ones again.
    assert broker.ready(broker_settings.events_queue) == 0
    assert len(connections) == 1
    assert listener.counters.snapshot()["received"] == events
    assert broker.ready(broker_settings.dead_letter_queue) == 0
    assert len(provisioner.runs) == events
    # Results that finished together woke the connection's thread together
    # (about one wake-up per five events here; one per event before batching).
    assert connections[0].wakeups <= events // 2


def test_a_batch_of_mixed_outcomes_settles_each_as_its_own(broker_settings, broker, catalogue):
    add_function(catalogue, "echo")
    events = WORKERS * 2
    bugs = {n for n in range(events) if n % 3 == 0}
    reply_queue = broker.temporary_queue()
    provisioner = TogetherProvisioner(capacity=WORKERS)
    listener, connections = listener_with_counting_connection(
        broker_settings, catalogue, provisioner
    )
    with running(listener):
        publish_all(
            broker, broker_settings, reply_queue, events, data=lambda n: {"n": n, "bug": n in bugs}
        )
        wait_for(
            lambda: broker.ready(broker_settings.dead_letter_queue) == len(bugs),
            what=f"{len(bugs)} dead letters",
        )
        wait_for(lambda: broker.ready(reply_queue) == events, what="a reply for every event")
    reason = "internal error: InternalError: the platform failed to run it (RuntimeError)"
    dead = broker.get_all(broker_settings.dead_letter_queue)
    assert sorted(json.loads(body)["id"] for _p, body in dead) == sorted(f"e-{n}" for n in bugs)
    assert {props.headers[REASON_HEADER] for props, _b in dead} == {reason}
    replies = {
        props.correlation_id: json.loads(body) for props, body in broker.get_all(reply_queue)
    }
    assert sorted(replies) == sorted(f"c-{n}" for n in range(events))
    for n in range(events):
        reply = replies[f"c-{n}"]
        if n in bugs:
            assert (reply["status"], reply["error"]["reason"]) == ("failed", "internal error")
        else:
            assert reply["status"] == "succeeded"
    assert broker.ready(broker_settings.events_queue) == 0
    assert len(connections) == 1
    assert listener.counters.snapshot()["received"] == events
