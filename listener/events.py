"""The event contract: what a message on the events queue must hold, and how to make one.

An event is a JSON object, UTF-8 encoded::

    {"event_source": "orders", "event_type": "created", "data": {...}, "id": "optional",
     "alias": "optional"}

``data`` may be any JSON value and defaults to null. ``alias`` names an alias
(``live``): each matched function then runs the version its alias of that name
chooses, and one without such an alias does not run (``listener.match``).
``id`` names the event for exactly-once records (an execution is keyed by event id
and function id); when it is absent the AMQP ``message_id`` is used, else a new id
is assigned on receipt
(and the listener publishes a copy with that id as its ``message_id``,
``listener.numbering``, so a redelivery keeps it). ``function_id`` is the platform's own field for the
messages it publishes itself (invocations, retries); it is parsed here, and
``listener.match`` honours it only for an execution the platform has recorded.
Other keys are ignored so that publishers can add fields before the listener
knows them.

Parsing is pure (no broker, no catalogue) and strict: everything a hostile or
broken publisher can send ends in ``PermanentError`` with a reason that the
listener puts on the dead letter.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lambda_os.errors import InvalidEvent
from lambda_os.jsonlimits import (
    MAX_JSON_DEPTH,
    UnstorableJSON,
    check_storable,
    json_depth,
    refuse_constant,
)
from lambda_os.records import ALIAS_NAME, ALIAS_NAME_RULE

MAX_EVENT_BYTES = 1024 * 1024
MAX_DEPTH = MAX_JSON_DEPTH
MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class Event:
    """One parsed event. ``id_origin`` says where ``id`` came from: event, message_id, assigned.

    ``attempt`` is set on a retry message (the listener's ``x-lambda-attempt``
    header): it runs that attempt of the addressed function's execution, and only
    if the record still waits for it.

    ``project`` is set by the consumer from the delivery (``listener.project``),
    never from the body: the project whose functions alone the event may run, or
    None for the platform's own messages, which match every project.

    ``reply_to`` and ``correlation_id`` are the delivery's too: its records keep
    them, so an execution run again by the sweeper still answers its publisher.

    ``batch`` is set on a batch (``listener.batch``): ``id`` names the batch,
    ``data`` is the list of its events' data and ``batch`` their ids, in order.
    """

    id: str
    event_source: str
    event_type: str
    data: Any = None
    function_id: str | None = None
    id_origin: str = "event"
    attempt: int | None = None
    project: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    alias: str | None = None
    batch: tuple[str, ...] | None = None


def new_event_id() -> str:
    return uuid.uuid4().hex


def parse_event(
    body: bytes,
    message_id: str | None = None,
    new_id: Callable[[], str] = new_event_id,
) -> Event:
    """The event in a message body, or ``InvalidEvent`` saying why it is not one."""
    if len(body) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event is {len(body)} bytes, over the limit of {MAX_EVENT_BYTES}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"event is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        payload = json.loads(text, parse_constant=refuse_constant)
    except RecursionError as exc:
        raise InvalidEvent(f"event is nested deeper than {MAX_DEPTH} levels") from exc
    except ValueError as exc:  # json.JSONDecodeError and the constants refused below
        raise InvalidEvent(f"event is not JSON: {exc}") from exc
    return event_from_dict(payload, message_id, new_id)


def event_from_dict(
    payload: Any,
    message_id: str | None = None,
    new_id: Callable[[], str] = new_event_id,
) -> Event:
    """The event in an already decoded JSON value, checked as ``parse_event`` checks it."""
    if not isinstance(payload, dict):
        raise InvalidEvent(f"event must be a JSON object, not {_json_type(payload)}")
    if json_depth(payload) > MAX_DEPTH:
        raise InvalidEvent(f"event is nested deeper than {MAX_DEPTH} levels")
    try:
        check_storable(payload)
    except UnstorableJSON as exc:
        raise InvalidEvent(f"event holds a value the platform cannot store: {exc}") from exc
    source = _name(payload, "event_source", required=True)
    event_type = _name(payload, "event_type", required=True)
    function_id = _name(payload, "function_id", required=False)
    event_id = _name(payload, "id", required=False)
    alias = _name(payload, "alias", required=False)
    if alias is not None and not ALIAS_NAME.fullmatch(alias):
        raise InvalidEvent(f"alias {alias!r} cannot be an alias name: {ALIAS_NAME_RULE}")
    origin = "event"
    if event_id is None:
        if isinstance(message_id, str) and 0 < len(message_id) <= MAX_NAME_LENGTH:
            event_id, origin = message_id, "message_id"
        else:
            event_id, origin = new_id(), "assigned"
    assert source is not None and event_type is not None
    return Event(
        id=event_id,
        event_source=source,
        event_type=event_type,
        data=payload.get("data"),
        function_id=function_id,
        id_origin=origin,
        alias=alias,
    )


def encode_event(
    event_source: str,
    event_type: str,
    data: Any = None,
    id: str | None = None,  # the contract names it "id"
    function_id: str | None = None,
    alias: str | None = None,
) -> bytes:
    """The message body for an event; ``InvalidEvent`` if the listener would refuse it."""
    payload: dict[str, Any] = {"event_source": event_source, "event_type": event_type, "data": data}
    if id is not None:
        payload["id"] = id
    if function_id is not None:
        payload["function_id"] = function_id
    if alias is not None:
        payload["alias"] = alias
    try:
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"event data is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidEvent(f"event is nested deeper than {MAX_DEPTH} levels") from exc
    parse_event(body)  # the same checks the listener makes, so nothing sent is refused there
    return body


_CONTROL = re.compile(r"[\x00-\x1f]")


def _name(payload: dict[str, Any], key: str, required: bool) -> str | None:
    if key not in payload or (not required and payload[key] is None):
        if required:
            raise InvalidEvent(f"event has no {key}")
        return None
    value = payload[key]
    if not isinstance(value, str):
        raise InvalidEvent(f"{key} must be a string, not {_json_type(value)}")
    if not value.strip():
        raise InvalidEvent(f"{key} is empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidEvent(f"{key} is longer than {MAX_NAME_LENGTH} characters")
    if _CONTROL.search(value):
        raise InvalidEvent(f"{key} contains control characters")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
