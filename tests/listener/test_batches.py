"""Batching: a function with ``batch_size`` runs once on a list of its events.

Through the real RabbitMQ with a provisioner double (the real container runs in
the fault suite's batch row); the catalogue on mongomock. Each event is in
exactly one batch: the claims are checked directly on the runner, as a listener
that died between claiming and running would leave them.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from collections.abc import Iterator

import pika
import pytest
from listener_helpers import FakeProvisioner, add_function, queue_exists, running, wait_for
from test_retries import FailingAttempts, make_listener

from lambda_os.records import FunctionRecord
from lambda_os.settings import Settings
from listener.batch import BatchRunner, Member, batch_queue
from listener.events import encode_event
from listener.topology import Topology, declare, delete

pytestmark = pytest.mark.integration


class Made:
    """The test's topology and the batch queues its functions made, deleted after it."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.batch_queues: list[str] = []


@pytest.fixture
def made(broker_settings: Settings) -> Iterator[Made]:
    made = Made(
        dataclasses.replace(Topology.from_settings(broker_settings), retry_delays_ms=(200, 400))
    )
    connection = pika.BlockingConnection(pika.URLParameters(broker_settings.amqp_url))
    declare(connection.channel(), made.topology)
    connection.close()
    yield made
    connection = pika.BlockingConnection(pika.URLParameters(broker_settings.amqp_url))
    channel = connection.channel()
    for name in made.batch_queues:
        channel.queue_delete(name)
    delete(channel, made.topology)
    connection.close()


@pytest.fixture
def topology(made: Made) -> Topology:
    return made.topology


@pytest.fixture
def batching(catalogue, made: Made):
    """Add a function as ``add_function`` does; its batch queue is deleted after the test."""

    def add(name: str, **fields) -> FunctionRecord:
        function = add_function(catalogue, name, **fields)
        made.batch_queues.append(batch_queue(made.topology, function.id))
        return function

    return add


def publish(broker, settings: Settings, ids: list[str], **properties) -> None:
    for event_id in ids:
        body = encode_event("orders", "created", {"n": event_id}, id=event_id)
        broker.publish(settings.events_queue, body, **properties)


def batches_of(catalogue, function: FunctionRecord):
    return catalogue.list_executions({"function_id": function.id}, 1000).items


def test_a_full_batch_runs_once_on_the_list_of_its_events(
    broker, broker_settings, catalogue, topology, batching
):
    function = batching("sum", batch_size=5, batch_window_s=30)
    provisioner = FakeProvisioner()
    ids = [f"e{n}" for n in range(5)]
    with running(make_listener(broker_settings, catalogue, provisioner, topology)):
        publish(broker, broker_settings, ids)
        (record,) = wait_for(
            lambda: [r for r in batches_of(catalogue, function) if r.finished], what="the batch"
        )
    assert record.status == "succeeded"
    # In the order they reached the batch queue: the listener routes events in parallel.
    assert sorted(record.batch_events) == ids
    assert record.event == [{"n": event_id} for event_id in record.batch_events]
    assert [run.data for run in provisioner.runs] == [record.event]
    assert broker.ready(batch_queue(topology, function.id)) == 0


def test_the_window_closes_a_batch_that_did_not_fill(
    broker, broker_settings, catalogue, topology, batching
):
    function = batching("partial", batch_size=100, batch_window_s=0.3)
    with running(make_listener(broker_settings, catalogue, FakeProvisioner(), topology)):
        publish(broker, broker_settings, ["a", "b", "c"])
        (record,) = wait_for(
            lambda: [r for r in batches_of(catalogue, function) if r.finished], what="the batch"
        )
    assert sorted(record.batch_events) == ["a", "b", "c"]


def test_more_events_than_the_size_make_several_batches_each_event_in_one(
    broker, broker_settings, catalogue, topology, batching
):
    function = batching("split", batch_size=3, batch_window_s=0.5)
    ids = [f"e{n:02d}" for n in range(10)]
    with running(make_listener(broker_settings, catalogue, FakeProvisioner(), topology)):
        publish(broker, broker_settings, ids)

        def all_in_batches():
            records = [r for r in batches_of(catalogue, function) if r.finished]
            return records if sum(len(r.batch_events) for r in records) >= len(ids) else None

        records = wait_for(all_in_batches, what="every event in a batch")
    counts = collections.Counter(e for r in records for e in r.batch_events)
    assert sorted(counts) == ids and set(counts.values()) == {1}
    assert max(len(r.batch_events) for r in records) == 3


def test_a_function_without_a_batch_size_beside_it_still_runs_each_event(
    broker, broker_settings, catalogue, topology, batching
):
    batched = batching("batched", batch_size=2, batch_window_s=30)
    single = add_function(catalogue, "single")
    with running(make_listener(broker_settings, catalogue, FakeProvisioner(), topology)):
        publish(broker, broker_settings, ["x", "y"])
        wait_for(
            lambda: [r for r in batches_of(catalogue, batched) if r.finished], what="the batch"
        )
        wait_for(
            lambda: len([r for r in batches_of(catalogue, single) if r.finished]) == 2,
            what="both single runs",
        )
    assert sorted(r.event_id for r in batches_of(catalogue, single)) == ["x", "y"]
    assert all(r.batch_events is None for r in batches_of(catalogue, single))


def test_a_failed_batch_is_retried_as_the_same_batch(
    broker, broker_settings, catalogue, topology, batching
):
    function = batching("flaky", batch_size=2, batch_window_s=30)
    provisioner = FailingAttempts(failing={1})
    with running(make_listener(broker_settings, catalogue, provisioner, topology)):
        publish(broker, broker_settings, ["p", "q"])
        (record,) = wait_for(
            lambda: [r for r in batches_of(catalogue, function) if r.finished], what="the batch"
        )
    assert (record.status, record.attempt, len(record.attempts)) == ("succeeded", 2, 1)
    assert [run.data for run in provisioner.runs] == [record.event] * 2
    assert sorted(record.batch_events) == ["p", "q"]


def test_each_member_of_a_batch_gets_the_batch_record_as_its_reply(
    broker, broker_settings, catalogue, topology, batching
):
    function = batching("answered", batch_size=2, batch_window_s=30)
    reply_to = broker.temporary_queue()
    with running(make_listener(broker_settings, catalogue, FakeProvisioner(), topology)):
        publish(broker, broker_settings, ["r1", "r2"], reply_to=reply_to, correlation_id="c")
        replies = wait_for(lambda: (got := broker.get_all(reply_to)) and got, what="the replies")
        while len(replies) < 2:
            replies += wait_for(lambda: broker.get_all(reply_to), what="the second reply")
    bodies = [json.loads(body) for _properties, body in replies]
    assert {b["function_id"] for b in bodies} == {function.id}
    assert [sorted(b["batch_events"]) for b in bodies] == [["r1", "r2"]] * 2
    assert sorted(p.headers["x-lambda-event-id"] for p, _body in replies) == ["r1", "r2"]


def test_an_event_an_earlier_batch_claimed_runs_with_that_batch_and_never_again(catalogue):
    # A listener claimed e1 and e2 for batch-old and died before its record was written;
    # their messages came back grouped with e3.
    function = add_function(catalogue, "claimed", batch_size=10)
    catalogue.claim_batch(function.id, "batch-old", [("e1", {"n": 1}), ("e2", {"n": 2})])
    provisioner = FakeProvisioner()
    runner = BatchRunner(catalogue, provisioner, wait=lambda _s: False, new_id=lambda: "batch-new")
    records = runner.run(function.id, [Member("e2", {"n": 2}), Member("e3", {"n": 3})])
    assert records is not None
    assert records["e2"].batch_events == ["e1", "e2"]
    assert records["e3"].batch_events == ["e3"]
    # The earlier batch first, then the group's own of what was new.
    assert [run.data for run in provisioner.runs] == [[{"n": 1}, {"n": 2}], [{"n": 3}]]
    # The same group delivered once more runs nothing: both batches are final.
    again = BatchRunner(catalogue, provisioner, wait=lambda _s: False, new_id=lambda: "batch-3rd")
    assert again.run(function.id, [Member("e1", {"n": 1}), Member("e3", {"n": 3})]) is not None
    assert len(provisioner.runs) == 2


def test_an_event_a_batch_ran_without_is_claimed_again_and_run_in_a_new_batch(catalogue):
    # Batch x's claims were still being written when another group read them: x ran with
    # e1 only, and e2's claim, written after, names a batch that is already final.
    function = add_function(catalogue, "partial", batch_size=10)
    catalogue.claim_batch(function.id, "batch-x", [("e1", {"n": 1})])
    provisioner = FakeProvisioner()
    first = BatchRunner(catalogue, provisioner, wait=lambda _s: False, new_id=lambda: "batch-a")
    assert first.run(function.id, [Member("e1", {"n": 1})])["e1"].batch_events == ["e1"]
    catalogue.claim_batch(function.id, "batch-x", [("e2", {"n": 2})])

    ids = iter(["batch-b", "batch-c"])
    runner = BatchRunner(catalogue, provisioner, wait=lambda _s: False, new_id=lambda: next(ids))
    records = runner.run(function.id, [Member("e2", {"n": 2})])

    assert records is not None and records["e2"].batch_events == ["e2"]
    assert records["e2"].event_id == "batch-c"
    assert [run.data for run in provisioner.runs] == [[{"n": 1}], [{"n": 2}]]


def test_the_events_of_a_function_deleted_meanwhile_are_done_with_and_run_nothing(catalogue):
    function = add_function(catalogue, "gone", batch_size=10)
    catalogue.delete_function(function.id)
    provisioner = FakeProvisioner()
    runner = BatchRunner(catalogue, provisioner, wait=lambda _s: False)
    assert runner.run(function.id, [Member("e1", None)]) == {"e1": None}
    assert provisioner.runs == []


def test_a_stop_while_a_batch_gathers_gives_its_events_back_for_the_next_listener(
    broker, broker_settings, catalogue, topology, batching
):
    function = batching("stopped", batch_size=100, batch_window_s=60)
    queue = batch_queue(topology, function.id)
    with running(make_listener(broker_settings, catalogue, FakeProvisioner(), topology)):
        publish(broker, broker_settings, ["s1", "s2", "s3"])
        wait_for(lambda: broker.ready(broker_settings.events_queue) == 0, what="routing")
        time.sleep(0.5)  # gathered: held unacked by the collector
        assert broker.ready(queue) == 0
    assert broker.ready(queue) == 3  # back in the queue, none run
    assert batches_of(catalogue, function) == []

    catalogue.update_function(function.id, {"batch_window_s": 0.3})
    with running(make_listener(broker_settings, catalogue, FakeProvisioner(), topology)):
        (record,) = wait_for(
            lambda: [r for r in batches_of(catalogue, function) if r.finished], what="the batch"
        )
    assert sorted(record.batch_events) == ["s1", "s2", "s3"]


def test_a_function_that_stops_batching_has_its_batch_queue_drained_and_deleted(
    broker, broker_settings, catalogue, topology, batching
):
    function = batching("retired", batch_size=5, batch_window_s=0.2)
    queue = batch_queue(topology, function.id)
    with running(make_listener(broker_settings, catalogue, FakeProvisioner(), topology)):
        publish(broker, broker_settings, ["t1"])
        wait_for(lambda: batches_of(catalogue, function), what="the batch")
        catalogue.update_function(function.id, {"batch_size": None})
        publish(broker, broker_settings, ["t2"])

        wait_for(
            lambda: not queue_exists(broker.connection, queue),
            timeout_s=30,
            what="the batch queue deleted",
        )
        single = wait_for(
            lambda: [r for r in batches_of(catalogue, function) if r.event_id == "t2"],
            what="t2 run on its own",
        )
    assert single[0].batch_events is None
