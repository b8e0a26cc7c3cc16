"""Dead letters as the catalogue keeps them: the message made into a ``DeadLetterRecord``.

Pure (no broker, no catalogue): ``consume`` builds the record here, stores it
through the catalogue and publishes the message to the dead-letter queue. The
body is kept as sent, up to ``MAX_DEAD_LETTER_BODY_BYTES`` (an event's own
limit, so every valid event can be replayed whole), as UTF-8 text or, when it is
not text, as base64. AMQP header values become JSON (bytes as text, timestamps as
ISO strings), since the API returns them.

Header keys are whatever the publisher sent, and AMQP allows keys MongoDB cannot
store (a NUL byte) or treats specially (a leading ``$``, a ``.``). They are kept
percent-escaped (``%`` → ``%25``, NUL → ``%00``, ``.`` → ``%2E``, a leading ``$`` →
``%24``), so every key a sensible publisher uses reads as sent in the API, and
``original_headers`` gives back the keys exactly for a replay.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import urllib.parse
from typing import Any

from lambda_os.records import DeadLetterRecord, iso
from listener.events import MAX_EVENT_BYTES

MAX_DEAD_LETTER_BODY_BYTES = MAX_EVENT_BYTES
# Headers RabbitMQ adds when it dead-letters a message; a copy we publish again drops them.
BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-")


def body_fields(body: bytes) -> dict[str, Any]:
    """``body``, ``body_encoding``, ``body_size`` and ``body_truncated`` for a record."""
    kept = body[:MAX_DEAD_LETTER_BODY_BYTES]
    try:
        text, encoding = kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
    return {
        "body": text,
        "body_encoding": encoding,
        "body_size": len(body),
        "body_truncated": len(kept) < len(body),
    }


def record_body(record: DeadLetterRecord) -> bytes:
    """The bytes a record keeps, as they were sent (the first part, if truncated)."""
    if record.body_encoding == "base64":
        return base64.b64decode(record.body)
    return record.body.encode("utf-8")


def stored_key(key: Any) -> str:
    """A header key as a catalogue document may hold it (see the module doc)."""
    text = str(key).replace("%", "%25").replace("\x00", "%00").replace(".", "%2E")
    return "%24" + text[1:] if text.startswith("$") else text


def original_key(key: str) -> str:
    """The header key as it was sent, from ``stored_key``'s form."""
    return urllib.parse.unquote(key)


def original_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    """A dead letter's headers with their keys as sent (nested tables too)."""
    if not isinstance(headers, dict):
        return {}
    return {original_key(key): _original_value(value) for key, value in headers.items()}


def _original_value(value: Any) -> Any:
    if isinstance(value, dict):
        return original_headers(value)
    if isinstance(value, list):
        return [_original_value(item) for item in value]
    return value


def plain(value: Any) -> Any:
    """An AMQP header value as JSON: bytes as text, timestamps as ISO strings, keys escaped."""
    if isinstance(value, dict):
        return {stored_key(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, datetime.datetime):
        return iso(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def own_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    """The headers without those the broker added when it dead-lettered the message."""
    return {
        key: value for key, value in (headers or {}).items() if not key.startswith(BROKER_HEADERS)
    }


def dead_letter_record(
    kind: str,
    reason: str,
    body: bytes,
    properties: Any,
    queue: str,
    event_id: str | None = None,
    function_id: str | None = None,
    execution_id: str | None = None,
) -> DeadLetterRecord:
    """The record of one dead letter; ``properties`` is the message's pika ``BasicProperties``."""
    return DeadLetterRecord(
        id="",
        kind=kind,
        reason=reason,
        **body_fields(body),
        headers=plain(dict(properties.headers or {})),
        message_id=properties.message_id,
        reply_to=properties.reply_to,
        correlation_id=properties.correlation_id,
        event_id=event_id,
        function_id=function_id,
        execution_id=execution_id,
        queue=queue,
    )
