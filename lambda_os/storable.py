"""JSON values as the catalogue stores them, and back, exactly.

A function's result and an event's data are any JSON, but a MongoDB document
is not: a real server refuses keys that begin with ``$`` or contain ``.``, bson
refuses keys with a NUL byte and integers outside int64, MongoDB refuses
nesting past 100 levels and documents past 16 MiB, and FerretDB (our
MongoDB-wire server) refuses NaN, Infinity and an array directly inside an
array. mongomock accepts most of these, so a test passes where production
strands the record. Every free-form value therefore goes through ``to_stored``
on the way in and ``from_stored`` on the way out, on every backend alike:

- a key has ``%``, ``$``, ``.`` and NUL percent-encoded (``%25``, ``%24``,
  ``%2E``, ``%00``); every ``%`` of a stored key then begins one of those four
  escapes, so ``unescape_key`` undoes exactly what ``escape_key`` did, and a key
  that already looks escaped (``%24where``) comes back as it was sent;
- an integer outside int64 is stored as ``{"%int": "<decimal digits>"}``, and an
  array inside an array as ``{"%list": [...]}``; no escaped key can be ``%int``
  or ``%list`` (their ``%`` is not followed by an escape), so the tags cannot
  be confused with a value the function returned;
- NaN and Infinity are refused: they are not JSON, and the API could not
  answer them; so is text with a lone surrogate (``json.loads`` makes one of
  ``"\\ud800"``), which bson cannot encode as UTF-8.

``storable_outcome`` and ``stored_event_data`` decide, before anything is
written, whether an outcome or an event's data can be kept, so a refused value
ends as a record that says why instead of a write the server refuses.

Sizes and depths are measured on the stored form, as bson encodes it, since
that is what the server judges.
"""

from __future__ import annotations

import math
import re
from typing import Any

import bson
import bson.errors

MIB = 1024 * 1024
# MongoDB allows 100 levels of nesting in a document; the record holding the value
# is one more, and an update adds its own; this leaves room for both.
MAX_STORED_DEPTH = 90
# The server's limit is 16 MiB for the whole record; the rest (logs, error, event,
# attempts) is capped far below the mebibyte left.
MAX_STORED_RESULT_BYTES = 15 * MIB
MAX_STORED_EVENT_BYTES = 64 * 1024
# The listener cuts an error's message and traceback to 16 Ki characters each.
MAX_STORED_ERROR_BYTES = 256 * 1024
NOT_STORABLE = "result not storable"

INT_TAG = "%int"
LIST_TAG = "%list"
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_KEY_ESCAPES = str.maketrans({"%": "%25", "$": "%24", ".": "%2E", "\0": "%00"})
_KEY_ESCAPE = re.compile("%(25|24|2E|00)")
_CONTAINERS = frozenset({dict, list})


class NotStorable(bson.errors.InvalidDocument):
    """A value the catalogue cannot store, with the reason in words.

    An ``InvalidDocument``, so the catalogue's seam treats it as it treats any
    document bson refuses: a permanent error, not a crash.
    """


def escape_key(key: str) -> str:
    """``key`` with the characters MongoDB refuses in a field name percent-encoded."""
    if "%" in key or "$" in key or "." in key or "\0" in key:
        return key.translate(_KEY_ESCAPES)
    return key


def unescape_key(key: str) -> str:
    """The key ``escape_key`` was given for this stored key."""
    if "%" not in key:
        return key
    return _KEY_ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), key)


def to_stored(value: Any, max_depth: int = MAX_STORED_DEPTH) -> Any:
    """The form of a JSON value the catalogue stores; ``NotStorable`` if there is none.

    Returns ``value`` itself when nothing in it needs changing, so the common
    case costs one walk and no copy. Values that are not JSON (datetimes in an
    attempt's entry) pass through for bson to judge. ``max_depth`` counts the
    containers of the stored form (a scalar is 0, ``[1]`` is 1). The reason a
    ``NotStorable`` gives reads after "the value is not storable:".
    """
    try:
        return _encode(value, max_depth)
    except _TooDeep:
        raise NotStorable(f"it is nested more than {max_depth} levels deep as stored") from None


def from_stored(value: Any) -> Any:
    """The JSON value ``to_stored`` was given for this stored form.

    Like ``to_stored``, returns the stored value itself where nothing in it was
    escaped or tagged: reading a plain record copies nothing.
    """
    kind = type(value)
    if kind is dict:
        if len(value) == 1:
            ((key, item),) = value.items()
            if key == INT_TAG and type(item) is str:
                return int(item)
            if key == LIST_TAG and type(item) is list:
                return from_stored(item)
        decoded: dict[str, Any] = {}
        changed = False
        for key, item in value.items():
            plain_key = unescape_key(key) if "%" in key else key
            plain = from_stored(item) if type(item) in _CONTAINERS else item
            changed = changed or plain_key is not key or plain is not item
            decoded[plain_key] = plain
        return decoded if changed else value
    if kind is list:
        items: list[Any] = []
        changed = False
        for item in value:
            plain = from_stored(item) if type(item) in _CONTAINERS else item
            changed = changed or plain is not item
            items.append(plain)
        return items if changed else value
    return value


def stored_size(stored: Any) -> int:
    """Bytes of BSON the stored form takes as a field of a document (its name one letter).

    ``NotStorable`` where bson cannot encode it at all (a value ``to_stored`` did not make).
    """
    try:
        return len(bson.encode({"v": stored})) - 5  # the document's length and its end
    except (bson.errors.InvalidDocument, OverflowError, UnicodeEncodeError) as exc:
        raise NotStorable(f"bson cannot encode it: {exc}") from None


def mib(size: int) -> str:
    """A size in MiB to one decimal, as the reasons put it."""
    return f"{size / MIB:.1f} MiB"


def storable_outcome(changes: dict[str, Any]) -> dict[str, Any]:
    """An outcome's changes if the catalogue can store them, else a failed outcome saying why.

    The result must encode (``to_stored``) and take at most 15 MiB as stored; a
    6 MB JSON result of small objects can be four times that as BSON. A refused
    result is not stored at all: the record ends ``failed`` with reason
    ``result not storable`` and the rest of the outcome (logs, timings) kept,
    instead of a write the server refuses and a record stranded ``running``.
    An error that cannot be stored (our agent sends none, but the handler runs
    in its process and can write its own reply) is replaced the same way.
    """
    problem = _problem("result", changes.get("result"), MAX_STORED_RESULT_BYTES)
    if problem is not None:
        error = {"type": "ResultNotStorable", "message": problem, "reason": NOT_STORABLE}
        return {**changes, "status": "failed", "result": None, "error": error}
    problem = _problem("error", changes.get("error"), MAX_STORED_ERROR_BYTES)
    if problem is not None:
        error = {"type": "ErrorNotStorable", "message": problem, "reason": NOT_STORABLE}
        return {**changes, "error": error}
    return changes


def _problem(what: str, value: Any, limit: int) -> str | None:
    """Why ``value`` cannot be stored within ``limit`` bytes, or None if it can."""
    if value is None:
        return None
    try:
        size = stored_size(to_stored(value))
    except NotStorable as exc:
        return f"the {what} is not storable: {exc}"
    if size > limit:
        return f"{what} is {mib(size)} as stored, limit {_limit(limit)}"
    return None


def _limit(size: int) -> str:
    return f"{size // MIB} MiB" if size % MIB == 0 else f"{size // 1024} KiB"


def stored_event_data(data: Any, limit: int = MAX_STORED_EVENT_BYTES) -> Any:
    """The event data as a record keeps it: itself up to ``limit`` bytes as stored, else a marker.

    The marker (``truncated``, ``size_bytes``, ``limit_bytes``, and ``reason``
    when the data cannot be stored at all) takes the data's place; the function
    still ran on the whole event.
    """
    try:
        size = stored_size(to_stored(data))
    except NotStorable as exc:
        reason = f"the event data is not storable: {exc}"
        return {"truncated": True, "reason": reason, "limit_bytes": limit}
    if size <= limit:
        return data
    return {"truncated": True, "size_bytes": size, "limit_bytes": limit}


def _encode(value: Any, room: int) -> Any:
    """``to_stored`` with ``room`` levels of nesting left.

    Exact types are tested first and scalars inline: a result of a million
    small objects is a million calls here, so each one is kept short.
    """
    kind = type(value)
    if kind is dict or (kind is not list and isinstance(value, dict)):
        if room < 1:
            raise _TooDeep()
        stored: dict[str, Any] = {}
        changed = kind is not dict
        for key, item in value.items():
            if type(key) is not str:
                raise NotStorable(f"it has a key that is not text: {key!r}")
            stored_key = escape_key(key if key.isascii() else _text(key))
            stored_item = item if _plain(item) else _encode(item, room - 1)
            changed = changed or stored_key is not key or stored_item is not item
            stored[stored_key] = stored_item
        return stored if changed else value
    if kind is list or isinstance(value, (list, tuple)):
        if room < 1:
            raise _TooDeep()
        items: list[Any] = []
        changed = kind is not list
        for item in value:
            if _plain(item):
                stored_item: Any = item
            elif isinstance(item, (list, tuple)):
                if room < 3:  # the tag and the inner array: two levels more
                    raise _TooDeep()
                stored_item = {LIST_TAG: _encode(item, room - 2)}
            else:
                stored_item = _encode(item, room - 1)
            changed = changed or stored_item is not item
            items.append(stored_item)
        return items if changed else value
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
        if room < 1:
            raise _TooDeep()
        try:
            return {INT_TAG: str(int(value))}
        except ValueError:  # over sys.get_int_max_str_digits()
            raise NotStorable("it holds an integer too long to write in decimal") from None
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        name = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
        raise NotStorable(f"it holds {name}, which is not a JSON number")
    return value


def _plain(item: Any) -> bool:
    """Whether ``item`` is a scalar stored as it is: the common case, decided without ``_encode``."""
    kind = type(item)
    return (
        (kind is str and item.isascii())
        or item is None
        or kind is bool
        or (kind is int and _INT64_MIN <= item <= _INT64_MAX)
        or (kind is float and math.isfinite(item))
    )


def _text(text: str) -> str:
    """``text``, if it is Unicode that UTF-8 can encode: JSON lets ``"\\ud800"`` through."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise NotStorable("it holds text with a lone surrogate, which is not Unicode") from None
    return text


class _TooDeep(Exception):
    """Raised from deep inside ``_encode``; ``to_stored`` says what the limit was."""
