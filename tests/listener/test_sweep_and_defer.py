"""Work nothing would run any more is swept back; a run leased elsewhere waits in a delay queue.

Against the real RabbitMQ, with a provisioner double and a mongomock catalogue.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

from listener_helpers import FakeProvisioner, add_function, force_fields, running, wait_for

from lambda_os.records import ExecutionRecord, execution_id_for, utcnow
from listener.events import encode_event
from listener.service import Backoff, Listener


def make_listener(settings, catalogue, provisioner, **settings_changes):
    settings = dataclasses.replace(settings, **settings_changes)
    return Listener(
        settings,
        catalogue,
        provisioner,
        backoff=Backoff(initial_s=0.1, cap_s=0.5),
        transient_delay_s=0.1,
    )


def stranded(catalogue, function, event_id: str, **fields) -> ExecutionRecord:
    """A record as a lost message leaves it: stored, with nothing on any queue for it."""
    record = ExecutionRecord(
        id=execution_id_for(event_id, function.id),
        function_id=function.id,
        function_version=function.version,
        event_id=event_id,
        event_source=function.event_source,
        event_type=function.event_type,
        event={"n": event_id},
    )
    created, _ = catalogue.create_execution(record)
    force_fields(catalogue, created.id, **fields)
    return catalogue.get_execution(created.id)


def test_the_sweeper_reruns_a_lapsed_run_and_a_queued_record_whose_messages_were_lost(
    broker_settings, broker, catalogue
):
    function = add_function(catalogue, "echo")
    long_ago = utcnow() - timedelta(hours=1)
    lapsed = stranded(
        catalogue,
        function,
        "lapsed",
        status="running",
        leased_by="a listener that dead-lettered and acked it",
        lease_until=long_ago,
        started_at=long_ago,
    )
    waiting = stranded(
        catalogue, function, "waiting", status="queued", attempt=2, retry_at=long_ago
    )
    provisioner = FakeProvisioner()
    listener = make_listener(
        broker_settings,
        catalogue,
        provisioner,
        sweep_interval_s=0.2,
        sweep_queued_after_s=1.0,
    )

    with running(listener):
        wait_for(
            lambda: all(catalogue.get_execution(r.id).finished for r in (lapsed, waiting)),
            what="both stranded executions to finish",
        )

    taken_over = catalogue.get_execution(lapsed.id)
    assert (taken_over.status, taken_over.attempt) == ("succeeded", 2)
    assert taken_over.attempts[0]["status"] == "interrupted"
    resumed = catalogue.get_execution(waiting.id)
    assert (resumed.status, resumed.attempt, resumed.result["echo"]) == (
        "succeeded",
        2,
        {"n": "waiting"},
    )
    assert len(provisioner.runs) == 2
    assert broker.ready(broker_settings.events_queue) == 0


def test_a_swept_run_answers_the_publisher_of_its_event_where_it_first_asked(
    broker_settings, broker, catalogue
):
    function = add_function(catalogue, "echo")
    replies = broker.temporary_queue()
    long_ago = utcnow() - timedelta(hours=1)
    record = stranded(
        catalogue,
        function,
        "asked",
        status="running",
        leased_by="a worker that was killed",
        lease_until=long_ago,
        reply_to=replies,
        correlation_id="the publisher's own id",
    )
    listener = make_listener(
        broker_settings,
        catalogue,
        FakeProvisioner(),
        sweep_interval_s=0.2,
        sweep_queued_after_s=1.0,
    )

    with running(listener):
        reply = wait_for(lambda: broker.get(replies), what="the reply of the swept run")

    properties, body = reply
    assert properties.correlation_id == "the publisher's own id"
    answer = json.loads(body)
    assert (answer["id"], answer["status"]) == (record.id, "succeeded")
    assert "reply_to" not in answer  # where answers go stays out of the API


def test_a_stranded_record_whose_event_was_too_large_to_keep_ends_failed_saying_so(
    broker_settings, catalogue
):
    function = add_function(catalogue, "echo")
    long_ago = utcnow() - timedelta(hours=1)
    record = stranded(
        catalogue,
        function,
        "big",
        status="running",
        leased_by="gone",
        lease_until=long_ago,
        event={"truncated": True, "size_bytes": 10**6, "limit_bytes": 65536},
    )
    listener = make_listener(
        broker_settings,
        catalogue,
        FakeProvisioner(),
        sweep_interval_s=0.2,
        sweep_queued_after_s=1.0,
    )

    with running(listener):
        wait_for(lambda: catalogue.get_execution(record.id).finished, what="the record to end")

    ended = catalogue.get_execution(record.id)
    assert (ended.status, ended.error["reason"]) == ("failed", "event lost")


def test_a_redelivery_whose_run_is_leased_elsewhere_waits_in_a_delay_queue_not_on_a_worker(
    broker_settings, broker, catalogue
):
    function = add_function(catalogue, "echo")
    now = utcnow()
    held = stranded(
        catalogue,
        function,
        "held",
        status="running",
        leased_by="another listener, alive",
        lease_until=now + timedelta(seconds=2),
        started_at=now,
    )
    provisioner = FakeProvisioner()
    listener = make_listener(broker_settings, catalogue, provisioner, sweep_interval_s=0)

    with running(listener):
        broker.publish(
            broker_settings.events_queue,
            encode_event("orders", "created", {"n": "held"}, id="held"),
        )
        wait_for(lambda: listener.counters.snapshot()["deferred"] >= 1, what="a deferral")
        assert provisioner.runs == []
        wait_for(
            lambda: catalogue.get_execution(held.id).finished,
            timeout_s=30,
            what="the run once the other lease lapsed",
        )

    done = catalogue.get_execution(held.id)
    assert (done.status, done.attempt) == ("succeeded", 2)
    counters = listener.counters.snapshot()
    assert counters["requeued"] == 0  # never nacked back to spin on a worker
    assert len(provisioner.runs) == 1


class PublishesNothing:
    def publish(self, body, **properties):
        raise AssertionError("this sweep has nothing to publish")


def test_a_stranded_record_of_a_deleted_function_ends_failed_and_is_not_sent_again(catalogue):
    from listener.sweep import Sweeper

    function = add_function(catalogue, "echo")
    long_ago = utcnow() - timedelta(hours=1)
    record = stranded(catalogue, function, "orphan", status="queued", attempt=2, retry_at=long_ago)
    catalogue._functions.delete_one({"_id": function.id})  # deleted while it waited
    catalogue._functions_changed()

    assert Sweeper(catalogue, PublishesNothing(), queued_after_s=60).sweep_once() == 1

    ended = catalogue.get_execution(record.id)
    assert (ended.status, ended.error["reason"]) == ("failed", "function deleted")


def test_a_large_event_is_given_up_only_when_still_stranded_a_whole_wait_later(catalogue):
    from listener.sweep import Sweeper

    function = add_function(catalogue, "echo")
    now = utcnow()
    record = stranded(
        catalogue,
        function,
        "big",
        status="running",
        leased_by="gone",
        lease_until=now - timedelta(seconds=1),
        event={"truncated": True, "size_bytes": 10**6, "limit_bytes": 65536},
    )
    clock = [now]
    sweeper = Sweeper(catalogue, PublishesNothing(), queued_after_s=60, clock=lambda: clock[0])

    sweeper.sweep_once()  # its own message may still come: only noted
    assert catalogue.get_execution(record.id).status == "running"
    clock[0] = now + timedelta(seconds=30)
    sweeper.sweep_once()
    assert catalogue.get_execution(record.id).status == "running"
    clock[0] = now + timedelta(seconds=61)
    sweeper.sweep_once()

    ended = catalogue.get_execution(record.id)
    assert (ended.status, ended.error["reason"]) == ("failed", "event lost")
