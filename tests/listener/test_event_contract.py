"""The event contract: what the listener accepts, what it refuses and why. No network."""

from __future__ import annotations

import json

import pytest

from lambda_os.errors import PermanentError
from listener.events import (
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    Event,
    InvalidEvent,
    encode_event,
    event_from_dict,
    parse_event,
)


def body(payload: object) -> bytes:
    return json.dumps(payload).encode()


def test_event_with_its_own_id_keeps_it_over_the_message_id():
    event = parse_event(
        body({"event_source": "orders", "event_type": "created", "data": {"n": 1}, "id": "e-1"}),
        message_id="m-1",
    )
    assert event == Event("e-1", "orders", "created", {"n": 1}, None, "event")


def test_event_without_id_takes_the_amqp_message_id():
    event = parse_event(body({"event_source": "s", "event_type": "t"}), message_id="m-1")
    assert (event.id, event.id_origin, event.data) == ("m-1", "message_id", None)


def test_event_without_any_id_is_assigned_one_on_receipt():
    event = parse_event(body({"event_source": "s", "event_type": "t"}), new_id=lambda: "new")
    assert (event.id, event.id_origin) == ("new", "assigned")


def test_function_id_addresses_one_function():
    event = parse_event(body({"event_source": "s", "event_type": "t", "function_id": "f1"}))
    assert event.function_id == "f1"


def test_unknown_keys_are_ignored_for_forward_compatibility():
    event = parse_event(body({"event_source": "s", "event_type": "t", "extra": [1, 2]}))
    assert event.event_source == "s"


def test_invalid_event_is_a_permanent_error():
    assert issubclass(InvalidEvent, PermanentError)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "must be a JSON object, not an array"),
        (b'"text"', "must be a JSON object, not a string"),
        (b"null", "must be a JSON object, not null"),
        (b'{"event_type": "t"}', "no event_source"),
        (b'{"event_source": "s"}', "no event_type"),
        (b'{"event_source": "", "event_type": "t"}', "event_source is empty"),
        (b'{"event_source": 5, "event_type": "t"}', "event_source must be a string, not a number"),
        (b'{"event_source": "s", "event_type": null}', "event_type must be a string, not null"),
        (b'{"event_source": "s", "event_type": "t", "id": 7}', "id must be a string"),
        (b'{"event_source": "s", "event_type": "t", "id": ""}', "id is empty"),
        (b'{"event_source": "s\\n", "event_type": "t"}', "control characters"),
        (b'{"event_source": "s", "event_type": "t", "data": NaN}', "not JSON"),
        (b'{"event_source": "s", "event_type": "t", "function_id": []}', "function_id must be"),
        (
            b'{"event_source": "s", "event_type": "t", "data": {"k": "\\ud800"}}',
            'cannot store: $.data.k: string "\\ud800" is not valid Unicode',
        ),
        (
            b'{"event_source": "s", "event_type": "t", "data": [1e999]}',
            "cannot store: $.data[0]: inf is not a finite number",
        ),
    ],
)
def test_malformed_message_is_refused_with_its_reason(raw, reason):
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    assert reason in caught.value.description


def test_too_long_name_is_refused():
    with pytest.raises(InvalidEvent, match="longer than 255"):
        parse_event(body({"event_source": "s" * 256, "event_type": "t"}))


def test_event_over_one_mebibyte_is_refused_before_parsing():
    raw = body({"event_source": "s", "event_type": "t", "data": "x" * MAX_EVENT_BYTES})
    with pytest.raises(InvalidEvent, match="over the limit"):
        parse_event(raw)


def test_deeply_nested_data_is_refused():
    data: object = 1
    for _ in range(MAX_DEPTH):
        data = [data]
    with pytest.raises(InvalidEvent, match="nested deeper"):
        parse_event(body({"event_source": "s", "event_type": "t", "data": data}))


def test_nesting_that_would_exhaust_the_parser_is_refused_cleanly():
    raw = b'{"event_source": "s", "event_type": "t", "data": ' + b"[" * 200_000
    with pytest.raises(InvalidEvent, match="nested deeper|not JSON"):
        parse_event(raw)


def test_nesting_at_the_limit_is_accepted():
    data: object = 1
    for _ in range(MAX_DEPTH - 1):  # the event object itself is one level
        data = [data]
    assert parse_event(body({"event_source": "s", "event_type": "t", "data": data})).data == data


def test_event_from_dict_applies_the_same_checks():
    with pytest.raises(InvalidEvent, match="no event_type"):
        event_from_dict({"event_source": "s"})


def test_encode_event_round_trips_through_parse():
    raw = encode_event("orders", "created", {"n": [1, 2]}, id="e-9", function_id="f-1")
    assert parse_event(raw) == Event("e-9", "orders", "created", {"n": [1, 2]}, "f-1", "event")


def test_encode_event_omits_absent_optional_keys():
    assert json.loads(encode_event("s", "t")) == {
        "event_source": "s",
        "event_type": "t",
        "data": None,
    }


def test_encode_event_refuses_what_the_listener_would_refuse():
    with pytest.raises(InvalidEvent):
        encode_event("", "t")
    with pytest.raises(InvalidEvent, match="not JSON"):
        encode_event("s", "t", {"when": object()})
    with pytest.raises(InvalidEvent, match="not JSON"):
        encode_event("s", "t", float("nan"))
