"""JSON values as the catalogue stores them: read back exactly, or refused with a reason.

The pure functions need nothing; the round trips through the catalogue run on
mongomock always and on the real server named by MONGO_URL (marked ``mongo``),
which refuses what mongomock lets through.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import bson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambda_os.catalogue import Catalogue, connect
from lambda_os.records import ExecutionRecord, Lease, execution_id_for
from lambda_os.storable import (
    MAX_STORED_DEPTH,
    MAX_STORED_RESULT_BYTES,
    NOT_STORABLE,
    NotStorable,
    escape_key,
    from_stored,
    storable_outcome,
    stored_event_data,
    stored_size,
    to_stored,
    unescape_key,
)

HOSTILE_KEYS = ["$where", "a.b", "x\0", "$", ".", "\0", "%", "%24where", "%2E", "100%", "%int"]
HOSTILE = {
    "$where": 1,
    "a.b": 2,
    "x\u0000": 3,
    "%24where": {"$gt": [1, {"c.d": None}]},
    "%int": "5",
    "%list": [1],
    "big": 2**70,
    "small": -(2**70),
    "matrix": [[1, 2], [3, [4, []]]],
}


def nested_lists(depth: int, leaf=1):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def nested_dicts(depth: int, leaf=1):
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def refused_keys(value, found=None) -> list[str]:
    """Keys a real MongoDB or bson refuses, anywhere in ``value``."""
    found = [] if found is None else found
    if isinstance(value, dict):
        for key, item in value.items():
            if key.startswith("$") or "." in key or "\0" in key:
                found.append(key)
            refused_keys(item, found)
    elif isinstance(value, list):
        for item in value:
            refused_keys(item, found)
    return found


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_key_is_stored_escaped_and_read_back_as_sent(key):
    stored = escape_key(key)

    assert not stored.startswith("$") and "." not in stored and "\0" not in stored
    assert unescape_key(stored) == key


def test_hostile_value_reads_back_exactly_and_encodes_as_bson():
    stored = to_stored(HOSTILE)

    assert from_stored(stored) == HOSTILE
    assert refused_keys(stored) == []
    bson.encode({"result": stored})  # no key bson refuses, no integer past int64


def test_tags_a_function_returns_itself_are_not_mistaken_for_ours():
    value = {"%int": "12", "%list": [1, 2], "%25int": "x"}

    assert from_stored(to_stored(value)) == value


@pytest.mark.parametrize("number", [2**63, -(2**63) - 1, 2**70, 10**300, -(10**4000)])
def test_integer_outside_int64_reads_back_as_the_same_int(number):
    back = from_stored(to_stored({"n": number, "in": [number]}))

    assert back == {"n": number, "in": [number]} and type(back["n"]) is int


@pytest.mark.parametrize("number", [2**63 - 1, -(2**63), 0, True])
def test_integer_within_int64_is_stored_as_itself(number):
    assert to_stored(number) is number


def test_integer_too_long_for_decimal_is_refused_not_raised():
    with pytest.raises(NotStorable, match="integer too long"):
        to_stored(10 ** (sys.get_int_max_str_digits() + 10))


def test_array_in_an_array_is_tagged_because_ferretdb_refuses_it():
    stored = to_stored([[1], [[]]])

    assert stored == [{"%list": [1]}, {"%list": [{"%list": []}]}]
    assert from_stored(stored) == [[1], [[]]]


def test_plain_value_is_stored_and_read_as_the_same_object():
    value = {"ok": True, "items": [1, "two", {"three": 3.0}], "none": None}

    assert to_stored(value) is value
    assert from_stored(value) is value


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_refused(number):
    with pytest.raises(NotStorable, match="not a JSON number"):
        to_stored({"x": [number]})


@pytest.mark.parametrize("depth", [MAX_STORED_DEPTH + 1, 5000, 200_000])
def test_nesting_past_the_limit_is_refused_without_a_recursion_error(depth):
    with pytest.raises(NotStorable, match=f"nested more than {MAX_STORED_DEPTH} levels"):
        to_stored(nested_dicts(depth))


def test_nesting_at_the_limit_is_stored():
    value = nested_dicts(MAX_STORED_DEPTH)

    assert from_stored(to_stored(value)) == value


def test_depth_counts_the_stored_form_with_its_tags():
    with pytest.raises(NotStorable):
        to_stored(nested_dicts(MAX_STORED_DEPTH, leaf=2**70))  # the int's tag is one level more
    # Each array inside an array takes two levels as stored: the tag and the array.
    to_stored(nested_lists((MAX_STORED_DEPTH + 1) // 2))
    with pytest.raises(NotStorable):
        to_stored(nested_lists((MAX_STORED_DEPTH + 1) // 2 + 1))


def test_size_is_measured_as_bson_of_the_stored_form():
    value = {"a": "x" * 10, "b": [1, 2]}

    assert stored_size(value) == len(bson.encode({"v": value})) - 5
    assert stored_size(to_stored({"$k": 1})) == stored_size({"%24k": 1})


def outcome(result, **fields):
    return {
        "status": "succeeded",
        "result": result,
        "error": None,
        "logs": "printed",
        "duration_ms": 12.0,
        **fields,
    }


def test_storable_outcome_is_the_same_changes():
    changes = outcome({"$where": 1})

    assert storable_outcome(changes) is changes


def test_result_over_the_limit_as_stored_fails_the_run_and_says_its_size():
    # 6 MB of JSON, 25.6 MiB as BSON: each element's index key and header outweigh "{},".
    result = [{}] * 2_000_000

    changes = storable_outcome(outcome(result))

    assert changes["status"] == "failed" and changes["result"] is None
    assert changes["error"]["reason"] == NOT_STORABLE
    assert changes["error"]["message"] == "result is 25.6 MiB as stored, limit 15 MiB"
    assert changes["logs"] == "printed" and changes["duration_ms"] == 12.0


def test_result_just_under_the_limit_is_kept():
    result = "x" * (MAX_STORED_RESULT_BYTES - 64)

    assert storable_outcome(outcome(result))["status"] == "succeeded"


@pytest.mark.parametrize(
    ("result", "words"),
    [
        (nested_lists(5000), "nested more than"),
        ({"x": float("nan")}, "NaN"),
    ],
)
def test_unstorable_result_fails_the_run_with_the_reason(result, words):
    changes = storable_outcome(outcome(result))

    assert changes["status"] == "failed" and changes["result"] is None
    assert changes["error"]["reason"] == NOT_STORABLE
    assert changes["error"]["message"].startswith("the result is not storable: ")
    assert words in changes["error"]["message"]


@pytest.mark.parametrize("value", ["\ud800", {"\udfff": 1}, ["ok", {"k": "a\ud800b"}]])
def test_text_with_a_lone_surrogate_is_refused_not_raised(value):
    # json.loads gives one for "\\ud800"; bson cannot encode it as UTF-8.
    with pytest.raises(NotStorable, match="lone surrogate"):
        to_stored(value)

    assert storable_outcome(outcome(value))["error"]["reason"] == NOT_STORABLE


def test_error_that_cannot_be_stored_is_replaced_by_one_saying_why():
    error = {"type": "ValueError", "message": "bad \ud800", "reason": "handler error"}

    changes = storable_outcome(outcome(None, status="failed", error=error))

    assert changes["status"] == "failed" and changes["error"]["reason"] == NOT_STORABLE
    assert changes["error"]["message"].startswith("the error is not storable: ")
    assert changes["logs"] == "printed"


def test_error_over_its_limit_as_stored_is_replaced_by_one_saying_its_size():
    error = {"type": "X", "message": "m", "extra": ["x" * 1024] * 300}

    changes = storable_outcome(outcome(None, status="failed", error=error))

    assert changes["error"]["message"] == "error is 0.3 MiB as stored, limit 256 KiB"


def test_event_data_within_the_limit_is_kept_as_it_is():
    data = {"$where": "x"}

    assert stored_event_data(data) is data


def test_event_data_over_the_limit_as_stored_becomes_a_marker():
    data = [{}] * 10_000  # 30 KB of JSON, 138 KiB as stored

    marker = stored_event_data(data)

    assert marker == {"truncated": True, "size_bytes": stored_size(data), "limit_bytes": 65536}


def test_unstorable_event_data_becomes_a_marker_with_the_reason():
    marker = stored_event_data(nested_dicts(500))

    assert marker["truncated"] is True and "nested more than" in marker["reason"]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet="ab%$.\0250E4"), children, max_size=4)
    ),
    max_leaves=30,
)


@given(JSON)
@settings(max_examples=300, deadline=None)
def test_any_json_reads_back_exactly(value):
    stored = to_stored(value)

    assert from_stored(stored) == value
    assert refused_keys(stored) == []


# -- through the catalogue, on every backend ----------------------------------


@pytest.fixture(params=["mongomock", pytest.param("mongodb", marks=pytest.mark.mongo)])
def store(request) -> Iterator[Catalogue]:
    if request.param == "mongomock":
        yield connect(None, f"lambda_os_test_{uuid.uuid4().hex[:12]}")
        return
    yield request.getfixturevalue("real_catalogue")


def running(event) -> ExecutionRecord:
    return ExecutionRecord(
        id=execution_id_for("ev1", "f1"),
        function_id="f1",
        function_version=1,
        event_id="ev1",
        event=event,
        status="running",
        leased_by="me",
        lease_until=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_record_with_hostile_values_reads_back_equal(store):
    record, _ = store.create_execution(running(HOSTILE))
    now = datetime(2026, 1, 2, tzinfo=UTC)
    changes = storable_outcome(
        outcome(HOSTILE, error={"type": "X", "message": "m", "a.b": {"$c": 2**70}})
    )

    assert store.finish_execution(Lease.of(record), {**changes, "finished_at": now})

    stored = store.get_execution(record.id)
    assert stored.event == HOSTILE and stored.result == HOSTILE
    assert stored.error == {"type": "X", "message": "m", "a.b": {"$c": 2**70}}
    assert stored.to_api()["result"] == HOSTILE
    assert store.list_executions({}, 10).items[0].result == HOSTILE


def test_attempt_entry_with_hostile_error_reads_back_equal(store):
    record, _ = store.create_execution(running(None))
    entry = {"attempt": 1, "status": "failed", "error": {"$where": [[1]], "n": -(2**64)}}

    store.retry_execution(Lease.of(record), {"error": entry["error"]}, entry)

    stored = store.get_execution(record.id)
    assert stored.attempts == [entry] and stored.error == entry["error"]


def test_result_at_the_depth_limit_is_stored_by_the_server(store):
    record, _ = store.create_execution(running(None))
    result = nested_dicts(MAX_STORED_DEPTH)

    assert store.finish_execution(Lease.of(record), storable_outcome(outcome(result)))

    assert store.get_execution(record.id).result == result
