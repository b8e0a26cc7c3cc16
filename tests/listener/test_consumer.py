"""The listener against the real RabbitMQ, with a provisioner double and a mongomock catalogue.

Each test has its own events and dead-letter queues (``broker_settings``), deleted after it.
"""

from __future__ import annotations

import json
import threading

import pika
import pytest
from broker_tools import close_connections_named
from listener_helpers import FakeProvisioner, add_function, running, unique, wait_for

from listener.consume import REASON_HEADER
from listener.events import encode_event
from listener.publish import Publisher
from listener.service import Backoff, Listener

pytestmark = pytest.mark.integration


def executions(catalogue, **filters):
    return catalogue.list_executions(filters, 1000).items


def finished(catalogue, count):
    def check():
        records = [r for r in executions(catalogue) if r.finished]
        return records if len(records) >= count else None

    return check


def make_listener(settings, catalogue, provisioner, **kwargs):
    kwargs.setdefault("backoff", Backoff(initial_s=0.1, cap_s=0.5))
    kwargs.setdefault("transient_delay_s", 0.1)
    return Listener(settings, catalogue, provisioner, **kwargs)


def test_matching_event_runs_its_function_leaves_one_record_and_is_acked(
    broker_settings, broker, catalogue
):
    function = add_function(catalogue, "echo")
    listener = make_listener(broker_settings, catalogue, FakeProvisioner())
    with running(listener):
        broker.publish(broker_settings.events_queue, encode_event("orders", "created", {"n": 1}))
        (record,) = wait_for(finished(catalogue, 1), what="the execution record")
    assert (record.function_id, record.status, record.result["echo"]) == (
        function.id,
        "succeeded",
        {"n": 1},
    )
    assert broker.ready(broker_settings.events_queue) == 0  # acked: nothing came back on close
    assert broker.ready(broker_settings.dead_letter_queue) == 0
    counters = listener.counters.snapshot()
    # An id-less event is received once: its copy with the assigned id waits parked, unread.
    assert (counters["received"], counters["ids_assigned"]) == (1, 1)
    assert (counters["matched"], counters["executions"]) == (1, 1)


def test_event_with_no_match_is_acked_and_counted_without_a_record(
    broker_settings, broker, catalogue
):
    add_function(catalogue, "echo", event_type="deleted")
    listener = make_listener(broker_settings, catalogue, FakeProvisioner())
    with running(listener):
        broker.publish(broker_settings.events_queue, encode_event("orders", "created"))
        wait_for(lambda: listener.counters.snapshot()["no_match"] == 1, what="the no-match count")
    assert executions(catalogue) == []
    assert broker.ready(broker_settings.events_queue) == 0
    assert broker.ready(broker_settings.dead_letter_queue) == 0


def test_event_with_two_matching_functions_runs_both_with_one_record_each(
    broker_settings, broker, catalogue
):
    a = add_function(catalogue, "a")
    b = add_function(catalogue, "b")
    listener = make_listener(broker_settings, catalogue, FakeProvisioner())
    with running(listener):
        broker.publish(broker_settings.events_queue, encode_event("orders", "created", id="e-2"))
        records = wait_for(finished(catalogue, 2), what="two records")
    assert sorted(r.function_id for r in records) == sorted([a.id, b.id])
    assert {r.event_id for r in records} == {"e-2"}


def test_malformed_messages_are_dead_lettered_with_the_reason_and_the_listener_goes_on(
    broker_settings, broker, catalogue
):
    add_function(catalogue, "echo")
    listener = make_listener(broker_settings, catalogue, FakeProvisioner())
    with running(listener):
        broker.publish(
            broker_settings.events_queue,
            b"not json",
            message_id="bad-1",
            headers={"x-origin": "test"},
            expiration="60000",
        )
        broker.publish(broker_settings.events_queue, b'{"event_source": "orders"}')
        broker.publish(broker_settings.events_queue, b"\xff\xfe")
        broker.publish(broker_settings.events_queue, encode_event("orders", "created"))
        wait_for(finished(catalogue, 1), what="the valid event after the bad ones")
        wait_for(lambda: listener.counters.snapshot()["dead_lettered"] == 3, what="3 dead letters")
    # Their catalogue copies are written on the worker threads, so they may land in any order.
    dead = {body: props for props, body in broker.get_all(broker_settings.dead_letter_queue)}
    assert sorted(dead) == sorted([b"not json", b'{"event_source": "orders"}', b"\xff\xfe"])
    assert "not JSON" in dead[b"not json"].headers[REASON_HEADER]
    assert "no event_type" in dead[b'{"event_source": "orders"}'].headers[REASON_HEADER]
    assert "not UTF-8" in dead[b"\xff\xfe"].headers[REASON_HEADER]
    first = dead[b"not json"]
    assert first.headers["x-origin"] == "test"  # the original headers are kept
    assert first.message_id == "bad-1"
    assert first.expiration is None and first.headers["x-lambda-expiration"] == "60000"
    assert first.delivery_mode == pika.DeliveryMode.Persistent.value
    assert broker.ready(broker_settings.events_queue) == 0


def test_redelivered_event_id_still_leaves_exactly_one_record_per_function(
    broker_settings, broker, catalogue
):
    add_function(catalogue, "a")
    add_function(catalogue, "b")
    provisioner = FakeProvisioner(delay_s=0.05)
    listener = make_listener(broker_settings, catalogue, provisioner)
    body = encode_event("orders", "created", {"n": 1}, id="same-event")
    with running(listener):
        for _ in range(4):  # a publisher retrying, at once and later
            broker.publish(broker_settings.events_queue, body)
        wait_for(lambda: listener.counters.snapshot()["received"] == 4, what="4 deliveries")
        wait_for(lambda: broker.ready(broker_settings.events_queue) == 0, what="all acked")
        wait_for(finished(catalogue, 2))
    assert len(executions(catalogue)) == 2
    assert len(provisioner.runs) == 2


def test_message_id_names_an_event_without_its_own_id(broker_settings, broker, catalogue):
    add_function(catalogue, "a")
    provisioner = FakeProvisioner()
    listener = make_listener(broker_settings, catalogue, provisioner)
    with running(listener):
        for _ in range(2):
            broker.publish(
                broker_settings.events_queue,
                b'{"event_source":"orders","event_type":"created"}',
                message_id="m-7",
            )
        wait_for(lambda: listener.counters.snapshot()["executions"] == 2, what="2 handled")
    (record,) = executions(catalogue)
    assert record.event_id == "m-7"
    assert len(provisioner.runs) == 1


def test_reply_to_client_gets_each_outcome_on_its_queue_with_its_correlation_id(
    broker_settings, broker, catalogue
):
    add_function(catalogue, "a")
    add_function(catalogue, "b")
    reply_queue = broker.temporary_queue()
    listener = make_listener(broker_settings, catalogue, FakeProvisioner())
    with running(listener):
        broker.publish(
            broker_settings.events_queue,
            encode_event("orders", "created", {"q": 1}, id="ask-1"),
            reply_to=reply_queue,
            correlation_id="corr-1",
        )
        wait_for(lambda: broker.ready(reply_queue) == 2, what="two replies")
    replies = broker.get_all(reply_queue)
    assert {props.correlation_id for props, _b in replies} == {"corr-1"}
    bodies = [json.loads(body) for _p, body in replies]
    assert sorted(b["result"]["function"] for b in bodies) == ["a", "b"]
    assert {b["status"] for b in bodies} == {"succeeded"}
    assert {b["event_id"] for b in bodies} == {"ask-1"}
    stored = {r.id for r in executions(catalogue)}
    assert {b["id"] for b in bodies} == stored
    assert [p.headers["x-lambda-executions"] for p, _b in replies] == [2, 2]


def test_reply_to_client_of_a_malformed_message_gets_the_reason(broker_settings, broker, catalogue):
    reply_queue = broker.temporary_queue()
    listener = make_listener(broker_settings, catalogue, FakeProvisioner())
    with running(listener):
        broker.publish(
            broker_settings.events_queue, b"{}", reply_to=reply_queue, correlation_id="c"
        )
        wait_for(lambda: broker.ready(reply_queue) == 1, what="the error reply")
    ((props, body),) = broker.get_all(reply_queue)
    assert props.correlation_id == "c"
    assert "no event_source" in json.loads(body)["error"]["message"]


def test_listener_stopped_mid_stream_and_restarted_loses_no_message(
    broker_settings, broker, catalogue
):
    add_function(catalogue, "slow")
    events = [f"e-{n}" for n in range(12)]
    first = FakeProvisioner(capacity=2, delay_s=0.3)
    listener = make_listener(broker_settings, catalogue, first)
    with running(listener):
        for event_id in events:
            broker.publish(
                broker_settings.events_queue, encode_event("orders", "created", id=event_id)
            )
        wait_for(finished(catalogue, 2), what="the first executions")
    # Stopped: what was in flight finished and was acked; the rest is back in the queue.
    done_first = {r.event_id for r in executions(catalogue)}
    assert all(r.finished for r in executions(catalogue))
    assert 2 <= len(done_first) < len(events)
    assert broker.ready(broker_settings.events_queue) == len(events) - len(done_first)

    second = FakeProvisioner(capacity=2)
    with running(make_listener(broker_settings, catalogue, second)):
        wait_for(finished(catalogue, len(events)), what="every event after the restart")
    assert sorted(r.event_id for r in executions(catalogue)) == sorted(events)
    assert len(first.runs) + len(second.runs) == len(events)  # nothing ran twice
    assert broker.ready(broker_settings.events_queue) == 0


def test_event_is_requeued_while_the_engine_is_down_and_runs_when_it_is_back(
    broker_settings, broker, catalogue
):
    add_function(catalogue, "a")
    provisioner = FakeProvisioner(transient_failures=2)
    listener = make_listener(broker_settings, catalogue, provisioner)
    with running(listener):
        broker.publish(broker_settings.events_queue, encode_event("orders", "created", id="e"))
        (record,) = wait_for(finished(catalogue, 1))
    assert record.status == "succeeded"
    assert listener.counters.snapshot()["requeued"] == 2
    assert broker.ready(broker_settings.dead_letter_queue) == 0


def test_unexpected_error_ends_the_execution_failed_and_dead_letters_it_instead_of_looping(
    broker_settings, broker, catalogue
):
    add_function(catalogue, "a")
    provisioner = FakeProvisioner(raises=RuntimeError("bug in a backend"))
    listener = make_listener(broker_settings, catalogue, provisioner)
    with running(listener):
        broker.publish(broker_settings.events_queue, encode_event("orders", "created", id="e"))
        wait_for(lambda: broker.ready(broker_settings.dead_letter_queue) == 1)
    ((props, _body),) = broker.get_all(broker_settings.dead_letter_queue)
    assert props.headers[REASON_HEADER] == (
        "internal error: InternalError: the platform failed to run it (RuntimeError)"
    )
    (record,) = executions(catalogue)
    assert (record.status, record.error["reason"], record.leased_by) == (
        "failed",
        "internal error",
        None,
    )
    assert record.dead_letter_id is not None
    assert len(provisioner.runs) == 1


def test_connection_closed_by_the_broker_is_reopened_and_the_event_still_runs(
    broker_settings, broker, catalogue
):
    add_function(catalogue, "slow")
    name = unique("test-listener")
    provisioner = FakeProvisioner(delay_s=4.0)  # longer than rabbitmqctl takes
    listener = make_listener(broker_settings, catalogue, provisioner, name=name)
    with running(listener):
        broker.publish(broker_settings.events_queue, encode_event("orders", "created", id="e"))
        wait_for(lambda: provisioner.runs, what="the execution to start")
        assert close_connections_named(name) == 1  # mid-execution: its ack is lost
        (record,) = wait_for(finished(catalogue, 1))
        wait_for(lambda: listener.counters.snapshot()["received"] == 2, what="the redelivery")
        wait_for(lambda: broker.ready(broker_settings.events_queue) == 0)
    assert record.status == "succeeded"
    assert len(provisioner.runs) == 1  # the redelivery found the record finished
    assert len(executions(catalogue)) == 1


def test_listener_keeps_trying_while_the_broker_is_unreachable_and_stops_on_request(
    broker_settings, catalogue
):
    attempts = []

    def refuse():
        attempts.append(1)
        raise pika.exceptions.AMQPConnectionError("refused (test)")

    listener = make_listener(broker_settings, catalogue, FakeProvisioner(), connect=refuse)
    with running(listener):
        wait_for(lambda: len(attempts) >= 3, what="three connection attempts")


def test_queue_declared_with_other_arguments_makes_the_listener_exit_non_zero(
    broker_settings, broker, catalogue
):
    broker.channel.queue_delete(broker_settings.events_queue)
    broker.channel.queue_declare(broker_settings.events_queue, durable=True)  # no dead-lettering
    listener = make_listener(broker_settings, catalogue, FakeProvisioner())
    result = {}
    thread = threading.Thread(target=lambda: result.update(code=listener.run()))
    thread.start()
    thread.join(timeout=20)
    assert result == {"code": 2}


def test_publisher_returns_once_the_broker_holds_the_event_persistently(broker_settings, broker):
    publisher = Publisher(broker_settings)
    try:
        publisher.publish(encode_event("s", "t", id="p-1"), message_id="p-1")
        ((props, body),) = broker.get_all(broker_settings.events_queue)
    finally:
        publisher.close()
    assert json.loads(body)["id"] == "p-1"
    assert (props.message_id, props.delivery_mode) == ("p-1", 2)


def test_publisher_reconnects_once_when_its_connection_was_closed(broker_settings, broker):
    name = unique("test-publisher")
    publisher = Publisher(broker_settings, name=name)
    try:
        publisher.publish(b"{}")
        assert close_connections_named(name) == 1
        publisher.publish(b"{}")
    finally:
        publisher.close()
    assert broker.ready(broker_settings.events_queue) == 2


def test_publisher_refuses_a_message_no_queue_takes(broker_settings):
    from lambda_os.errors import TransientError

    publisher = Publisher(broker_settings)
    try:
        with pytest.raises(TransientError, match="no queue took"):
            publisher.publish(b"{}", routing_key=unique("test.nowhere"))
    finally:
        publisher.close()


def test_async_invocation_is_confirmed_queued_then_run_by_the_listener_as_that_record(
    broker_settings, broker, catalogue
):
    from listener.invoker import Invoker

    function = add_function(catalogue, "a", event_source="elsewhere")
    provisioner = FakeProvisioner()
    publisher = Publisher(broker_settings)
    try:
        queued = Invoker(catalogue, provisioner, publisher).submit(function, {"x": 1})
        assert queued.status == "queued"
        assert broker.ready(broker_settings.events_queue) == 1  # held by the broker already
        with running(make_listener(broker_settings, catalogue, provisioner)):
            (record,) = wait_for(finished(catalogue, 1))
    finally:
        publisher.close()
    assert (record.id, record.status, record.result["echo"]) == (queued.id, "succeeded", {"x": 1})


def test_sync_invocation_through_the_broker_returns_the_finished_record(broker_settings, catalogue):
    from listener.invoker import BrokerInvoker

    function = add_function(catalogue, "a")
    publisher = Publisher(broker_settings)
    try:
        with running(make_listener(broker_settings, catalogue, FakeProvisioner())):
            record = BrokerInvoker(broker_settings, catalogue, publisher).invoke(function, [7])
    finally:
        publisher.close()
    assert (record.status, record.result["echo"]) == ("succeeded", [7])
