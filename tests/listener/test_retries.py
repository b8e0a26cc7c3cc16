"""Ids that survive redelivery, retries through the delay queues, dead letters and replay.

Against the real RabbitMQ with a provisioner double whose outcome depends on the
invocation's ``attempt``, so each test decides which attempts fail. Delay tiers
are short (or, where the test looks into the delay queue, long enough to see the
message there); nothing waits on a sleep for the backoff.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from broker_tools import close_connections_named
from listener_helpers import FakeProvisioner, add_function, running, unique, wait_for

from lambda_os.errors import TransientError
from lambda_os.records import utcnow
from lambda_os.settings import Settings
from listener.consume import ATTEMPT_HEADER, DEAD_LETTER_ID_HEADER, REASON_HEADER
from listener.events import encode_event
from listener.publish import Publisher
from listener.replay import Replayer
from listener.service import Backoff, Listener
from listener.topology import Topology, declare, delete
from provisioner.base import Invocation, Outcome

pytestmark = pytest.mark.integration


class FailingAttempts(FakeProvisioner):
    """Fails (``handler error``) on the attempts in ``failing``; succeeds on the others."""

    def __init__(self, failing: set[int] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failing = failing if failing is not None else {1}

    def run(self, invocation: Invocation) -> Outcome:
        outcome = super().run(invocation)
        if invocation.attempt not in self.failing:
            return outcome
        error = {"type": "ValueError", "message": f"attempt {invocation.attempt}"}
        error["reason"] = "handler error"
        return dataclasses.replace(outcome, status="failed", result=None, error=error)


@pytest.fixture
def topology(broker_settings: Settings) -> Iterator[Topology]:
    """The test's queues with delay tiers of its own (0.3 s, then 0.6 s), deleted after it."""
    made = dataclasses.replace(Topology.from_settings(broker_settings), retry_delays_ms=(300, 600))
    connection = pika.BlockingConnection(pika.URLParameters(broker_settings.amqp_url))
    declare(connection.channel(), made)
    connection.close()
    yield made
    connection = pika.BlockingConnection(pika.URLParameters(broker_settings.amqp_url))
    delete(connection.channel(), made)
    connection.close()


def make_listener(settings, catalogue, provisioner, topology, **kwargs):
    return Listener(
        settings,
        catalogue,
        provisioner,
        backoff=Backoff(initial_s=0.1, cap_s=0.5),
        transient_delay_s=0.1,
        topology=topology,
        **kwargs,
    )


def records(catalogue):
    return catalogue.list_executions({}, 1000).items


def final_record(catalogue):
    def check():
        items = records(catalogue)
        return items[0] if len(items) == 1 and items[0].finished else None

    return check


def test_id_less_event_redelivered_mid_run_leaves_one_record_and_one_run(
    broker_settings, broker, catalogue, topology
):
    add_function(catalogue, "slow")
    name = unique("test-listener")
    provisioner = FakeProvisioner(delay_s=4.0)  # longer than rabbitmqctl takes
    # The original was acked once its copy was parked; the copy comes back when it expires.
    parking = dataclasses.replace(topology, parked_ttl_ms=6000)  # past the 4 s run
    listener = make_listener(broker_settings, catalogue, provisioner, parking, name=name)
    body = json.dumps({"event_source": "orders", "event_type": "created"}).encode()
    with running(listener):
        broker.publish(broker_settings.events_queue, body)  # no id, no message_id
        wait_for(lambda: provisioner.runs, what="the execution to start")
        assert close_connections_named(name) == 1  # mid-run: the ack is lost, it comes back
        record = wait_for(final_record(catalogue), what="the record")
        wait_for(
            lambda: listener.counters.snapshot()["received"] == 2,
            timeout_s=45.0,  # a reconnect after backoff, on a loaded machine
            what="the parked copy, expired back to the events queue",
        )
        wait_for(lambda: broker.ready(broker_settings.events_queue) == 0)
    counters = listener.counters.snapshot()
    assert counters["ids_assigned"] == 1  # the redelivery carried the assigned id
    assert len(records(catalogue)) == 1 and len(provisioner.runs) == 1
    assert record.status == "succeeded" and provisioner.runs[0].event_id == record.event_id


def test_failed_attempt_waits_in_the_delay_queue_then_the_retry_succeeds_with_one_reply(
    broker_settings, broker, catalogue
):
    slow = Topology(broker_settings.events_queue, broker_settings.dead_letter_queue, (3000,))
    connection = pika.BlockingConnection(pika.URLParameters(broker_settings.amqp_url))
    declare(connection.channel(), slow)
    try:
        function = add_function(catalogue, "flaky")
        provisioner = FailingAttempts({1})
        listener = make_listener(broker_settings, catalogue, provisioner, slow)
        replies = broker.temporary_queue()
        with running(listener):
            broker.publish(
                broker_settings.events_queue,
                encode_event("orders", "created", {"n": 1}, id="e-retry"),
                reply_to=replies,
                correlation_id="c-1",
            )
            delay_queue = slow.retry_queue(2)
            # The retry is in the delay queue, and the record waits for it, with no reply yet.
            wait_for(lambda: broker.ready(delay_queue) == 1, what="the retry in the delay queue")
            (waiting,) = records(catalogue)
            assert (waiting.status, waiting.attempt) == ("queued", 2)
            assert waiting.retry_at is not None and waiting.retry_at > waiting.created_at
            assert broker.ready(replies) == 0
            record = wait_for(final_record(catalogue), what="the retried record")
            wait_for(lambda: broker.ready(replies) == 1, what="the final reply")
        assert (record.function_id, record.status, record.attempt) == (function.id, "succeeded", 2)
        (earlier,) = record.attempts
        assert (earlier["attempt"], earlier["status"]) == (1, "failed")
        assert earlier["error"]["message"] == "attempt 1"
        assert [run.attempt for run in provisioner.runs] == [1, 2]
        assert broker.ready(delay_queue) == 0 and broker.ready(broker_settings.events_queue) == 0
        ((props, reply),) = broker.get_all(replies)
        assert props.correlation_id == "c-1"
        assert json.loads(reply)["status"] == "succeeded"
        assert broker.ready(broker_settings.dead_letter_queue) == 0
    finally:
        delete(connection.channel(), slow)
        connection.close()


def test_retries_exhausted_dead_letters_the_event_for_that_function_and_replay_reruns_it(
    broker_settings, broker, catalogue, topology
):
    failing = add_function(catalogue, "failing", max_retries=1)
    fine = add_function(catalogue, "fine")
    provisioner = FailingAttempts({1, 2})
    provisioner_for = {failing.id: provisioner}

    class PerFunction(FakeProvisioner):
        def run(self, invocation):
            backend = provisioner_for.get(invocation.function_id)
            return backend.run(invocation) if backend else super().run(invocation)

    listener = make_listener(broker_settings, catalogue, PerFunction(), topology)
    with running(listener):
        broker.publish(
            broker_settings.events_queue, encode_event("orders", "created", {"n": 2}, id="e-x")
        )
        wait_for(
            lambda: broker.ready(broker_settings.dead_letter_queue) == 1, what="the dead letter"
        )
        ((props, body),) = broker.get_all(broker_settings.dead_letter_queue)
        failed = catalogue.list_executions({"function_id": failing.id}, 10).items[0]
        other = catalogue.list_executions({"function_id": fine.id}, 10).items[0]
        assert (failed.status, failed.attempt, len(failed.attempts)) == ("failed", 2, 1)
        assert other.status == "succeeded" and other.attempt == 1
        reason = props.headers[REASON_HEADER]
        assert reason.startswith("retries exhausted: 2 attempts of function " + failing.id)
        assert "handler error" in reason and "attempt 2" in reason
        event = json.loads(body)
        assert (event["id"], event["function_id"], event["data"]) == ("e-x", failing.id, {"n": 2})
        assert ATTEMPT_HEADER not in props.headers
        (dead,) = catalogue.list_dead_letters({}, 10).items
        assert props.headers[DEAD_LETTER_ID_HEADER] == dead.id == failed.dead_letter_id
        assert (dead.kind, dead.reason, dead.event_id, dead.function_id) == (
            "retries exhausted",
            reason,
            "e-x",
            failing.id,
        )

        provisioner.failing = set()  # the function is fixed; the replay runs it again
        publisher = Publisher(broker_settings)
        try:
            replayed = Replayer(catalogue, publisher).replay(dead)
        finally:
            publisher.close()
        assert replayed.replayed_at is not None

        def rerun():
            record = catalogue.get_execution(failed.id)
            return record if record.status == "succeeded" else None

        record = wait_for(rerun, what="the replayed execution")
    assert (record.attempt, record.first_attempt, len(record.attempts)) == (3, 3, 2)
    assert len(records(catalogue)) == 2  # still one record per (event, function)
    assert catalogue.get_execution(other.id).attempt == 1  # the other function did not rerun


def test_malformed_message_is_recorded_in_the_catalogue_dead_letters(
    broker_settings, broker, catalogue, topology
):
    listener = make_listener(broker_settings, catalogue, FakeProvisioner(), topology)
    with running(listener):
        broker.publish(broker_settings.events_queue, b"{not json", message_id="m-1")
        wait_for(lambda: catalogue.list_dead_letters({}, 10).items, what="the dead letter record")
    (dead,) = catalogue.list_dead_letters({}, 10).items
    assert (dead.kind, dead.body, dead.message_id, dead.queue) == (
        "malformed",
        "{not json",
        "m-1",
        broker_settings.events_queue,
    )
    assert dead.reason.startswith("event is not JSON")
    assert dead.created_at <= utcnow()
    ((props, _body),) = broker.get_all(broker_settings.dead_letter_queue)
    assert props.headers[DEAD_LETTER_ID_HEADER] == dead.id


def test_stale_retry_message_runs_nothing(broker_settings, broker, catalogue, topology):
    function = add_function(catalogue, "once")
    provisioner = FakeProvisioner()
    listener = make_listener(broker_settings, catalogue, provisioner, topology)
    with running(listener):
        broker.publish(broker_settings.events_queue, encode_event("orders", "created", id="e-s"))
        wait_for(final_record(catalogue), what="the record")
        # A retry message for an attempt the record no longer waits for (a duplicate).
        broker.publish(
            broker_settings.events_queue,
            encode_event("orders", "created", id="e-s", function_id=function.id),
            headers={ATTEMPT_HEADER: 2},
        )
        wait_for(lambda: listener.counters.snapshot()["received"] == 2, what="the stale retry")
        wait_for(lambda: broker.ready(broker_settings.events_queue) == 0)
    assert len(provisioner.runs) == 1
    assert records(catalogue)[0].attempt == 1


class RefusingPublisher:
    """A confirmed publisher whose broker is down."""

    def publish(self, body: bytes, **_kwargs: Any) -> None:
        raise TransientError("broker unreachable (test double)")


def test_replay_whose_publish_fails_puts_the_execution_back_and_can_be_tried_again(
    broker_settings, broker, catalogue, topology
):
    function = add_function(catalogue, "failing", max_retries=0)
    provisioner = FailingAttempts({1})
    listener = make_listener(broker_settings, catalogue, provisioner, topology)
    with running(listener):
        broker.publish(broker_settings.events_queue, encode_event("orders", "created", id="e-r"))
        wait_for(
            lambda: broker.ready(broker_settings.dead_letter_queue) == 1, what="the dead letter"
        )
        (dead,) = catalogue.list_dead_letters({}, 10).items
        failed = catalogue.list_executions({"function_id": function.id}, 10).items[0]
        assert (failed.status, failed.dead_letter_id) == ("failed", dead.id)

        with pytest.raises(TransientError):
            Replayer(catalogue, RefusingPublisher()).replay(dead)
        assert catalogue.get_execution(failed.id) == failed  # as it was, not queued forever
        assert catalogue.get_dead_letter(dead.id).replayed_at is None

        provisioner.failing = set()
        publisher = Publisher(broker_settings)
        try:
            Replayer(catalogue, publisher).replay(dead)
        finally:
            publisher.close()

        def rerun():
            record = catalogue.get_execution(failed.id)
            return record if record.status == "succeeded" else None

        record = wait_for(rerun, what="the replayed execution")
    assert (record.attempt, len(record.attempts)) == (2, 1)


class HugeErrors(FakeProvisioner):
    """Every run fails with a 5 MB message and a 1 MB traceback (a function can raise anything)."""

    def run(self, invocation: Invocation) -> Outcome:
        outcome = super().run(invocation)
        error = {
            "type": "ValueError",
            "message": "m" * 5_000_000,
            "traceback": "Traceback (most recent call last):\n" + "x" * 1_000_000 + "\nthe end",
            "reason": "handler error",
        }
        return dataclasses.replace(outcome, status="failed", result=None, error=error)


def test_huge_error_is_stored_cut_on_every_attempt(broker_settings, broker, catalogue, topology):
    add_function(catalogue, "huge", max_retries=1)
    listener = make_listener(broker_settings, catalogue, HugeErrors(), topology)
    with running(listener):
        broker.publish(broker_settings.events_queue, encode_event("orders", "created", id="e-h"))
        record = wait_for(final_record(catalogue), what="the final record")
        wait_for(lambda: broker.ready(broker_settings.dead_letter_queue) == 1, what="dead letter")
    assert (record.status, record.attempt, len(record.attempts)) == ("failed", 2, 1)
    for error in (record.error, record.attempts[0]["error"]):
        assert len(error["message"]) <= 16 * 1024 and len(error["traceback"]) <= 16 * 1024
        assert error["message"].startswith("mmm") and "cut: 5000000 characters" in error["message"]
        assert error["traceback"].endswith("x\nthe end") and error["traceback"].startswith("[cut:")
        assert (error["type"], error["reason"]) == ("ValueError", "handler error")
