"""Poison messages: whatever a message holds, it ends on the dead-letter queue, never the listener.

Against the real RabbitMQ with a provisioner double and a mongomock catalogue
(which, like MongoDB, refuses a document key with a NUL byte).
"""

from __future__ import annotations

import threading
from typing import Any

import pika
import pytest
from listener_helpers import FakeProvisioner, add_function, running, wait_for

from lambda_os.errors import PermanentError
from lambda_os.records import DeadLetterRecord
from listener.consume import REASON_HEADER
from listener.deadletter import original_headers
from listener.events import encode_event
from listener.publish import connection_parameters
from listener.service import Backoff, Listener

pytestmark = pytest.mark.integration

BAD_HEADERS = {"bad\x00key": 1, "$where": "x", "a.b": {"c.d": 2}, "x-origin": "test"}


def make_listener(settings, catalogue, provisioner, **kwargs):
    kwargs.setdefault("backoff", Backoff(initial_s=0.1, cap_s=0.5))
    kwargs.setdefault("transient_delay_s", 0.1)
    return Listener(settings, catalogue, provisioner, **kwargs)


def finished(catalogue):
    return [r for r in catalogue.list_executions({}, 100).items if r.finished]


def test_malformed_message_with_a_nul_in_a_header_key_is_dead_lettered_and_the_listener_goes_on(
    broker_settings, broker, catalogue
):
    add_function(catalogue, "echo")
    listener = make_listener(broker_settings, catalogue, FakeProvisioner())
    with running(listener):
        broker.publish(broker_settings.events_queue, b"not json", headers=BAD_HEADERS)
        broker.publish(broker_settings.events_queue, encode_event("orders", "created", id="ok"))
        (record,) = wait_for(lambda: finished(catalogue), what="the valid event after the bad one")
        wait_for(lambda: broker.ready(broker_settings.dead_letter_queue) == 1, what="dead letter")
    assert record.event_id == "ok" and record.status == "succeeded"
    ((props, body),) = broker.get_all(broker_settings.dead_letter_queue)
    assert body == b"not json"
    assert "not JSON" in props.headers[REASON_HEADER]
    assert props.headers["bad\x00key"] == 1  # the message itself keeps its headers as sent
    (dead,) = catalogue.list_dead_letters({}, 10).items
    assert dead.headers["bad%00key"] == 1 and dead.headers["%24where"] == "x"
    assert dead.headers["a%2Eb"] == {"c%2Ed": 2} and dead.headers["x-origin"] == "test"
    assert original_headers(dead.headers) == BAD_HEADERS
    assert broker.ready(broker_settings.events_queue) == 0


UNSTORABLE = [
    b'{"event_source": "orders", "event_type": "created", "data": "\\ud800"}',
    b'{"event_source": "orders", "event_type": "created", "data": 1e999}',
]
# What MongoDB refuses as it is but the catalogue stores escaped: these run.
STORED_ESCAPED = {
    "big": 123456789012345678901234567890,
    "nul-key": {"a\u0000b": 1, "$where": {"c.d": 2}},
}


def test_event_data_the_catalogue_cannot_store_is_dead_lettered_with_the_reason_and_runs_nothing(
    broker_settings, broker, catalogue
):
    add_function(catalogue, "echo")
    provisioner = FakeProvisioner()
    listener = make_listener(broker_settings, catalogue, provisioner)
    with running(listener):
        for raw in UNSTORABLE:
            broker.publish(broker_settings.events_queue, raw)
        for event_id, data in STORED_ESCAPED.items():
            body = encode_event("orders", "created", data, id=event_id)
            broker.publish(broker_settings.events_queue, body)
        broker.publish(broker_settings.events_queue, encode_event("orders", "created", id="ok"))
        wait_for(
            lambda: len(finished(catalogue)) == len(STORED_ESCAPED) + 1,
            what="the valid events after the bad ones",
        )
        wait_for(
            lambda: broker.ready(broker_settings.dead_letter_queue) == len(UNSTORABLE),
            what="a dead letter for each bad event",
        )
    dead = broker.get_all(broker_settings.dead_letter_queue)
    assert sorted(body for _props, body in dead) == sorted(UNSTORABLE)
    for props, _body in dead:
        assert "a value the platform cannot store" in props.headers[REASON_HEADER]
    ran = {record.event_id: record for record in finished(catalogue)}
    assert sorted(ran) == sorted([*STORED_ESCAPED, "ok"])
    for event_id, data in STORED_ESCAPED.items():
        assert ran[event_id].event == data and ran[event_id].result["echo"] == data
    assert {d.kind for d in catalogue.list_dead_letters({}, 10).items} == {"malformed"}


def test_catalogue_refusing_a_document_is_a_permanent_error(catalogue):
    record = DeadLetterRecord(
        id="",
        kind="malformed",
        reason="r",
        body="x",
        body_encoding="utf-8",
        body_size=1,
        body_truncated=False,
        headers={"bad\x00key": 1},
        message_id=None,
        reply_to=None,
        correlation_id=None,
        event_id=None,
        function_id=None,
        execution_id=None,
        queue="q",
    )
    with pytest.raises(PermanentError) as raised:
        catalogue.add_dead_letter(record)
    assert raised.value.__cause__ is not None


class BrokenDeadLetters:
    """The catalogue, except that recording a dead letter fails with an unforeseen error."""

    def __init__(self, catalogue: Any) -> None:
        self._catalogue = catalogue

    def add_dead_letter(self, record: DeadLetterRecord) -> DeadLetterRecord:
        raise RuntimeError("unforeseen")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._catalogue, name)


def test_unexpected_error_recording_a_dead_letter_still_dead_letters_it_and_goes_on(
    broker_settings, broker, catalogue
):
    add_function(catalogue, "echo")
    listener = make_listener(broker_settings, BrokenDeadLetters(catalogue), FakeProvisioner())
    with running(listener):
        broker.publish(broker_settings.events_queue, b"not json", message_id="m-1")
        broker.publish(broker_settings.events_queue, encode_event("orders", "created", id="ok"))
        wait_for(lambda: finished(catalogue), what="the valid event after the bad one")
        wait_for(lambda: broker.ready(broker_settings.dead_letter_queue) == 1, what="dead letter")
    ((props, body),) = broker.get_all(broker_settings.dead_letter_queue)
    assert (body, props.message_id) == (b"not json", "m-1")
    # The catalogue copy failed; the dead letter still says why the message was refused.
    assert props.headers[REASON_HEADER].startswith("event is not JSON")
    assert broker.ready(broker_settings.events_queue) == 0


class FailsOnce:
    """A connection whose first channel fails with an unforeseen error; then the real one."""

    def __init__(self, connect: Any) -> None:
        self._connect = connect
        self.failed = threading.Event()

    def __call__(self) -> Any:
        connection = self._connect()
        if self.failed.is_set():
            return connection
        self.failed.set()

        class Broken:
            is_open = True

            def channel(self) -> Any:
                raise RuntimeError("unforeseen")

            def close(self) -> None:
                connection.close()

        return Broken()


def test_unexpected_error_in_a_session_reconnects_instead_of_ending_the_listener(
    broker_settings, broker, catalogue
):
    add_function(catalogue, "echo")
    params = connection_parameters(broker_settings.amqp_url, "test")
    connect = FailsOnce(lambda: pika.BlockingConnection(params))
    listener = make_listener(broker_settings, catalogue, FakeProvisioner(), connect=connect)
    with running(listener):
        broker.publish(broker_settings.events_queue, encode_event("orders", "created", id="ok"))
        wait_for(lambda: finished(catalogue), what="the event after the failed session")
    assert connect.failed.is_set()
