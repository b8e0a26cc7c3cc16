"""The embedded database answers exactly what plain mongomock answers, only faster.

Each test runs the same inputs through an indexed collection and a plain mongomock
one: what they return or raise, and what they hold afterwards, must be the same.
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import mongomock
import mongomock.collection
import pytest
from bson.regex import Regex
from pymongo import DeleteOne, IndexModel, InsertOne, ReturnDocument, UpdateMany
from pymongo.results import DeleteResult, InsertOneResult, UpdateResult

import lambda_os.embedded
from lambda_os.catalogue import connect
from lambda_os.embedded import IdIndexedCollection, embedded_database

# Not UTC, and finer than the millisecond MongoDB keeps.
NOW = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
NOW_TO_THE_MS = NOW.replace(microsecond=123000)
HOUR = dt.timedelta(hours=1)


def rich(_id: str) -> dict[str, Any]:
    """A fresh execution-like document: nested dicts and lists, aware datetimes, bytes."""
    return {
        "_id": _id,
        "status": "running",
        "lease": 5,
        "leased_by": "l1",
        "lease_until": NOW,
        "event": {"bucket": "b", "meta": {"when": NOW, "sizes": [1, 2]}},
        "attempts": [{"at": NOW, "error": None}],
        "naive": dt.datetime(2024, 1, 1, 0, 0, 0, 999999),
        "blob": b"\x00\x01",
        "ratio": 0.5,
        "ok": True,
        "tags": ["x", "y"],
        "nothing": None,
    }


DOCS = [
    {"_id": "a", "status": "running", "lease": 5, "n": 1},
    {"_id": "b", "status": "queued", "lease": 9, "n": 2},
    {"_id": "c", "status": "failed", "n": 3},
    rich("r"),
]
QUERIES = [
    {"_id": "a"},
    {"_id": "b", "status": "queued"},
    {"_id": "b", "status": "running"},
    {"_id": "a", "$or": [{"status": "queued"}, {"lease": {"$lt": 6}}]},
    {"_id": "r", "lease_until": {"$gte": NOW}},
    {"_id": "missing"},
    {"_id": "missing", "status": "queued"},
    {"_id": {"$gt": "a"}},
    {"_id": {"$in": ["a", "c"]}},
    {"_id": {"$in": ["r", "c", "missing", "a", "c"]}},
    {"_id": {"$in": ["b", "missing"]}, "status": "queued"},
    {"_id": {"$in": ["a", "b"]}, "n": {"$gt": 1}},
    {"_id": {"$in": []}},
    {"status": "failed"},
    {},
    # Text and null equalities, which the embedded collection decides itself where it can.
    {"_id": "r", "status": "running", "leased_by": "l1"},
    {"_id": "r", "status": "running", "leased_by": "l2"},
    {"_id": "r", "leased_by": None},
    {"_id": "r", "nothing": None},
    {"_id": "r", "nothing": "x"},
    {"_id": "a", "leased_by": None},
    {"_id": "a", "leased_by": "l1"},
    {"_id": "r", "tags": "x"},
    {"_id": "r", "tags": "z"},
    {"_id": "r", "ok": None},
    {"_id": "r", "lease": "5"},
    {"_id": "r", "event.bucket": "b"},
    {"_id": "r", "status": "queued", "$bogus": 1},
    {"_id": "r", "status": "queued", "lease": {"$bogus": 1}},
    {"_id": "r", "": None},
    {"_id": "r", 1: None},
    {"_id": "r", "status": "queued", 1: None},
    {"_id": "r", ("status",): "running"},
]


@pytest.fixture
def collections() -> tuple[mongomock.Collection, mongomock.Collection]:
    indexed = embedded_database("t", indexed=("things",))["things"]
    plain = mongomock.MongoClient(tz_aware=True)["t"]["things"]
    for collection in (indexed, plain):
        collection.insert_many([dict(doc) for doc in DOCS])
    return indexed, plain


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What a call returned, comparable across two clients, or what it raised."""
    try:
        result = call()
    except Exception as exc:  # noqa: BLE001 - whatever either side raises is compared
        return ("raised", type(exc), str(exc))
    if isinstance(result, (UpdateResult, DeleteResult)):
        raw = dict(result.raw_result)
        raw.pop("connectionId")  # each client numbers its own
        return ("returned", type(result), repr(raw))
    if isinstance(result, InsertOneResult):
        return ("returned", type(result), repr(result.inserted_id))
    # repr also tells types, key order and each datetime's tzinfo apart.
    return ("returned", repr(result))


def contents(collection: mongomock.Collection) -> str:
    """Every stored document as read back, in the store's own order."""
    return repr(list(collection.find()))


def same_on_both(collections, operation: Callable[[mongomock.Collection], Any]) -> tuple:
    """Run ``operation`` on each collection; both answer and both hold the same."""
    indexed, plain = collections
    got = outcome(lambda: operation(indexed))
    expected = outcome(lambda: operation(plain))
    assert got == expected
    assert contents(indexed) == contents(plain)
    return got


def test_the_embedded_catalogues_collections_are_the_indexed_kind(collections):
    indexed, plain = collections
    assert isinstance(indexed, IdIndexedCollection)
    assert not isinstance(plain, IdIndexedCollection)
    database = connect(None, "embedded")._db
    for name in ("functions", "executions", "deadletters"):
        assert isinstance(database[name], IdIndexedCollection)


@pytest.mark.parametrize("query", QUERIES, ids=[str(q) for q in QUERIES])
def test_every_query_finds_what_a_scan_finds_in_the_same_order(collections, query):
    same_on_both(collections, lambda c: list(c.find(query)))
    same_on_both(collections, lambda c: c.find_one(query))


def test_updates_and_duplicate_ids_behave_as_in_a_scan(collections):
    indexed, plain = collections
    for collection in (indexed, plain):
        collection.find_one_and_update({"_id": "b", "status": "queued"}, {"$set": {"status": "x"}})
        with pytest.raises(mongomock.DuplicateKeyError):
            collection.insert_one({"_id": "a"})
    assert contents(indexed) == contents(plain)
    assert indexed.find_one({"_id": "b"})["status"] == "x"


# -- insert_one ---------------------------------------------------------------

INSERTS = {
    "a new document with nested values and datetimes": rich("new"),
    "an id already taken": {"_id": "a", "x": 1},
    "a NUL byte in a top-level key": {"_id": "n", "a\0b": 1},
    "a NUL byte in a nested key": {"_id": "n", "x": {"a\0": 1}},
    "a NUL byte in a key inside a list": {"_id": "n", "x": [{"a\0": 1}]},
    "a top-level key starting with $": {"_id": "n", "$x": 1},
    "a nested key starting with $": {"_id": "n", "x": {"$y": 1}},
    "a value bson cannot encode": {"_id": "n", "x": {1, 2}},
    "an int too big for bson": {"_id": "n", "x": 2**64},
    "a text that is not UTF-8": {"_id": "n", "x": "\ud800"},
    "a key that is not a string": {"_id": "n", 1: "x"},
    "an id already taken and a value bson cannot encode": {"_id": "a", "x": {1}},
    "a tuple and an OrderedDict": {"_id": "n", "t": (1, NOW), "o": OrderedDict(b=1, a=NOW)},
    "an int id, left to mongomock": {"_id": 7, "x": 1},
}


@pytest.mark.parametrize("document", INSERTS.values(), ids=INSERTS.keys())
def test_insert_one_stores_and_refuses_as_mongomock_does(collections, document):
    def insert(collection):
        copied = {key: value for key, value in document.items()}
        return collection.insert_one(copied)

    same_on_both(collections, insert)


def test_an_inserted_document_is_not_changed_by_the_callers_later_changes(collections):
    def insert_then_change(collection):
        document = rich("n")
        collection.insert_one(document)
        document["status"] = "changed"
        document["event"]["bucket"] = "changed"
        document["event"]["meta"]["sizes"].append(3)
        document["attempts"][0]["error"] = "changed"
        return collection.find_one({"_id": "n"})

    same_on_both(collections, insert_then_change)
    indexed, _ = collections
    stored = indexed.find_one({"_id": "n"})
    assert stored["status"] == "running"
    assert stored["event"] == {"bucket": "b", "meta": {"when": NOW_TO_THE_MS, "sizes": [1, 2]}}
    assert stored["attempts"] == [{"at": NOW_TO_THE_MS, "error": None}]


def test_datetimes_are_stored_in_utc_to_the_millisecond_and_handed_out_aware(collections):
    indexed, _ = collections
    indexed.insert_one({"_id": "d", "at": NOW, "naive": dt.datetime(2024, 1, 1, 0, 0, 0, 999999)})
    found = indexed.find_one({"_id": "d"})
    assert found["at"] == NOW_TO_THE_MS
    assert found["at"].utcoffset() == dt.timedelta(0)
    assert found["naive"] == dt.datetime(2024, 1, 1, 0, 0, 0, 999000, tzinfo=dt.UTC)
    after = indexed.find_one_and_update(
        {"_id": "d"}, {"$set": {"later": NOW + HOUR}}, return_document=ReturnDocument.AFTER
    )
    assert after["later"] == (NOW + HOUR).replace(microsecond=123000)
    assert after["later"].utcoffset() == dt.timedelta(0)


# -- update_one and find_one_and_update with $set ------------------------------

FILTERS = [
    {"_id": "r"},
    {"_id": "r", "leased_by": "l1"},
    {"_id": "r", "leased_by": "l2"},
    {"_id": "r", "lease_until": {"$gte": NOW - HOUR}},
    # Stored to the millisecond, so not earlier than NOW with its microseconds.
    {"_id": "r", "lease_until": {"$lt": NOW}},
    {"_id": "r", "$or": [{"status": "queued"}, {"lease": {"$lt": 6}}]},
    {"_id": "r", "status": {"$bogus": 1}},
    {"_id": "missing"},
    {"_id": "missing", "status": "running"},
    {"_id": "r", "status": "running", "leased_by": "l1"},
    {"_id": "r", "status": "running", "leased_by": None},
    {"_id": "b", "leased_by": None},
]
UPDATES = {
    "one changed field": {"$set": {"status": "succeeded"}},
    "a field set to what it holds": {"$set": {"status": "running"}},
    "nested values, datetimes and a new field": {
        "$set": {
            "result": {"ok": True, "at": NOW, "items": [1, {"a": NOW}]},
            "finished_at": NOW + HOUR,
            "new_field": None,
        }
    },
    "the lease released": {"$set": {"lease_until": None, "leased_by": None}},
    "a tuple and a list": {"$set": {"t": (1, NOW), "l": [NOW, [1]]}},
    "an OrderedDict of fields": {"$set": OrderedDict([("z", 1), ("status", "o")])},
    "a value bson cannot encode after a good one": {"$set": {"status": "x", "bad": {1, 2}}},
    "a NUL byte in a nested key": {"$set": {"status": "x", "nested": {"a\0": 1}}},
    "an int too big for bson": {"$set": {"big": 2**64}},
    "a NUL byte in a field name": {"$set": {"a\0": 1}},
    "a dotted field": {"$set": {"event.bucket": "c"}},
    "a positional field": {"$set": {"attempts.$.error": "e"}},
    "the id": {"$set": {"_id": "other"}},
    "no fields": {"$set": {}},
    "another operator too": {"$set": {"status": "x"}, "$inc": {"lease": 1}},
    "another operator alone": {"$push": {"attempts": {"at": NOW}}},
    "no operator": {"status": "x"},
}
SETTERS = {
    "update_one": lambda c, f, u: c.update_one(f, u),
    "find_one_and_update returning before": lambda c, f, u: c.find_one_and_update(f, u),
    "find_one_and_update returning after": lambda c, f, u: c.find_one_and_update(
        f, u, return_document=ReturnDocument.AFTER
    ),
}


@pytest.mark.parametrize("setter", SETTERS.values(), ids=SETTERS.keys())
@pytest.mark.parametrize("update", UPDATES.values(), ids=UPDATES.keys())
@pytest.mark.parametrize("filter", FILTERS, ids=[str(f) for f in FILTERS])
def test_a_set_by_id_answers_and_stores_as_mongomock_does(collections, filter, update, setter):
    same_on_both(collections, lambda c: setter(c, filter, update))


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.update_one({"_id": "new"}, {"$set": {"x": 1}}, upsert=True),
        lambda c: c.update_one({"_id": "r"}, {"$set": {"x": 1}}, upsert=True),
        lambda c: c.find_one_and_update({"_id": "r"}, {"$set": {"x": 1}}, projection={"x": 1}),
        lambda c: c.find_one_and_update({"_id": "r"}, {"$set": {"x": 1}}, sort=[("x", 1)]),
        lambda c: c.find_one_and_update({"_id": "r"}, {"$set": {"x": 1}}, new=True),
        lambda c: c.find_one_and_update({"_id": "r"}, {"$set": {"x": 1}}, session=None),
        lambda c: c.update_one({"_id": "r"}, {"$set": {"x": 1}}, bypass_document_validation=True),
        lambda c: c.update_one({"_id": 1}, {"$set": {"x": 1}}),
        lambda c: c.update_one([("_id", "r")], {"$set": {"x": 1}}),
    ],
    ids=[
        "upsert of a new id",
        "upsert of an existing id",
        "a projection",
        "a sort",
        "new=True",
        "session=None",
        "bypass_document_validation",
        "an int id",
        "a filter that is not a mapping",
    ],
)
def test_a_set_with_other_options_answers_as_mongomock_does(collections, call):
    same_on_both(collections, call)


def test_set_values_are_not_changed_by_the_callers_later_changes(collections):
    def set_then_change(collection):
        result = {"items": [{"a": 1}], "meta": {"k": "v"}}
        pattern = Regex("^a")
        listed = [{"b": 2}, pattern]  # mongomock deep-copies a list, so its Regex too
        collection.update_one({"_id": "r"}, {"$set": {"result": result, "listed": listed}})
        result["items"][0]["a"] = "changed"
        result["meta"]["k"] = "changed"
        listed[0]["b"] = "changed"
        pattern.pattern = "changed"
        return collection.find_one({"_id": "r"})

    same_on_both(collections, set_then_change)
    indexed, _ = collections
    stored = indexed.find_one({"_id": "r"})
    assert stored["result"] == {"items": [{"a": 1}], "meta": {"k": "v"}}
    assert stored["listed"][0] == {"b": 2}
    assert stored["listed"][1].pattern == "^a"


@pytest.mark.parametrize("return_document", [ReturnDocument.BEFORE, ReturnDocument.AFTER])
def test_changing_a_returned_document_does_not_change_the_store(collections, return_document):
    def update_then_change_the_answer(collection):
        answer = collection.find_one_and_update(
            {"_id": "r"}, {"$set": {"status": "x"}}, return_document=return_document
        )
        answer["status"] = "changed"
        answer["event"]["meta"]["sizes"].append(3)
        answer["attempts"][0]["error"] = "changed"
        return collection.find_one({"_id": "r"})

    same_on_both(collections, update_then_change_the_answer)
    indexed, _ = collections
    stored = indexed.find_one({"_id": "r"})
    assert stored["event"] == {"bucket": "b", "meta": {"when": NOW_TO_THE_MS, "sizes": [1, 2]}}
    assert stored["attempts"] == [{"at": NOW_TO_THE_MS, "error": None}]


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.insert_one({"_id": "u", "name": "taken"}),
        lambda c: c.insert_one({"_id": "u", "name": "free"}),
        lambda c: c.update_one({"_id": "a"}, {"$set": {"name": "taken", "n": 9}}),
        lambda c: c.find_one_and_update({"_id": "a"}, {"$set": {"name": "free"}}),
        lambda c: c.update_one({"_id": "b"}, {"$set": {"name": "taken"}}),  # its own name
    ],
    ids=["insert taken", "insert free", "set taken", "set free", "set unchanged"],
)
def test_unique_indexes_refuse_and_undo_as_in_mongomock(collections, call):
    for collection in collections:
        collection.create_index("name", unique=True, sparse=True)
        collection.update_one({"_id": "b"}, {"$set": {"name": "taken"}})
    same_on_both(collections, call)


# -- delete_one and $in ---------------------------------------------------------

DELETES = [
    {"_id": "a"},
    {"_id": "a", "status": "running"},
    {"_id": "a", "status": "queued"},
    {"_id": "r", "lease_until": {"$lt": NOW + HOUR}},
    {"_id": "r", "status": {"$bogus": 1}},
    {"_id": "missing"},
    {"_id": {"$in": ["c", "a", "missing"]}},
    {"status": "queued"},
]


@pytest.mark.parametrize("filter", DELETES, ids=[str(f) for f in DELETES])
def test_delete_one_and_delete_many_remove_what_mongomock_removes(collections, filter):
    same_on_both(collections, lambda c: c.delete_one(filter))
    same_on_both(collections, lambda c: c.delete_many(filter))


# -- which path, and one writer at a time ----------------------------------------


def test_the_plain_writes_by_id_do_not_go_through_mongomock(collections, monkeypatch):
    indexed, _ = collections
    for internal in ("_insert", "_update", "_delete", "_find_and_modify"):
        monkeypatch.setattr(mongomock.collection.Collection, internal, None)
    indexed.insert_one(rich("n"))
    indexed.find_one_and_update({"_id": "n", "leased_by": "l1"}, {"$set": {"status": "x"}})
    indexed.update_one({"_id": "n", "lease_until": {"$gte": NOW}}, {"$set": {"leased_by": None}})
    indexed.delete_one({"_id": "n"})
    assert indexed.find_one({"_id": "n"}) is None


def test_the_leases_conditions_are_decided_without_mongomocks_filter(collections, monkeypatch):
    indexed, _ = collections
    indexed.insert_one(rich("n"))
    monkeypatch.setattr(lambda_os.embedded, "filter_applies", None)

    missed = indexed.update_one(
        {"_id": "n", "status": "running", "leased_by": "l2"}, {"$set": {"status": "x"}}
    )
    won = indexed.update_one(
        {"_id": "n", "status": "running", "leased_by": "l1"}, {"$set": {"status": "x"}}
    )

    assert (missed.matched_count, won.matched_count) == (0, 1)
    assert indexed.find_one({"_id": "n", "leased_by": None}) is None


WRITES = {
    "insert_one": lambda c: c.insert_one({"_id": "w"}),
    "insert_many": lambda c: c.insert_many([{"_id": "w"}]),
    "update_one": lambda c: c.update_one({"_id": "a"}, {"$set": {"x": 1}}),
    "update_many": lambda c: c.update_many({}, {"$set": {"x": 1}}),
    "replace_one": lambda c: c.replace_one({"_id": "a"}, {"x": 1}),
    "find_one_and_update": lambda c: c.find_one_and_update({"_id": "a"}, {"$set": {"x": 1}}),
    "find_one_and_replace": lambda c: c.find_one_and_replace({"_id": "a"}, {"x": 1}),
    "find_one_and_delete": lambda c: c.find_one_and_delete({"_id": "a"}),
    "delete_one": lambda c: c.delete_one({"_id": "a"}),
    "delete_many": lambda c: c.delete_many({}),
    "bulk_write": lambda c: c.bulk_write([InsertOne({"_id": "w"}), DeleteOne({"_id": "a"})]),
    # (mongomock cannot take pymongo 4.20's UpdateOne or ReplaceOne in a bulk_write)
    "bulk_write of updates": lambda c: c.bulk_write([UpdateMany({}, {"$set": {"x": 1}})]),
    "create_index": lambda c: c.create_index("x"),
    "create_indexes": lambda c: c.create_indexes([IndexModel("x")]),
    "drop_index": lambda c: (c.create_index("y", name="y"), c.drop_index("y")),
    "drop_indexes": lambda c: c.drop_indexes(),
    "drop": lambda c: c.drop(),
    "rename": lambda c: c.rename("renamed"),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_every_write_waits_for_the_collections_lock(collections, write):
    indexed, _ = collections
    done = threading.Event()

    def run() -> None:
        write(indexed)
        done.set()

    with indexed._write_lock:
        worker = threading.Thread(target=run)
        worker.start()
        assert not done.wait(0.05)
    assert done.wait(5)
    worker.join()


@pytest.mark.parametrize("round", range(20))
def test_racing_conditional_updates_let_exactly_one_thread_win(round):
    collection = embedded_database("race", indexed=("executions",))["executions"]
    collection.insert_one({"_id": "e", "leased_by": None, "claims": 0})
    threads = 16
    start = threading.Barrier(threads)
    winners: list[str] = []

    def claim(name: str) -> None:
        start.wait()
        for _ in range(20):
            won = collection.find_one_and_update(
                {"_id": "e", "leased_by": None},
                {"$set": {"leased_by": name}},
                return_document=ReturnDocument.AFTER,
            )
            if won is not None:
                winners.append(name)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter will
    try:
        workers = [threading.Thread(target=claim, args=(f"l{i}",)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(interval)
    assert len(winners) == 1
    assert collection.find_one({"_id": "e"})["leased_by"] == winners[0]


def test_the_in_memory_catalogue_keeps_only_the_newest_finished_executions():
    from lambda_os.errors import NotFound
    from lambda_os.records import ExecutionRecord, Lease, execution_id_for

    catalogue = connect(None, "kept", keep_finished=3)

    def claim(event_id: str) -> str:
        record = ExecutionRecord(
            id=execution_id_for(event_id, "f"),
            function_id="f",
            function_version=1,
            event_id=event_id,
        )
        return catalogue.create_execution(record)[0].id

    now = dt.datetime.now(dt.UTC)
    running = claim("still-running")
    catalogue.acquire_execution(running, "a", now, now + dt.timedelta(hours=1))
    finished = [claim(f"ev{i}") for i in range(5)]
    for execution_id in finished:
        leased = catalogue.acquire_execution(execution_id, "a", now, now + dt.timedelta(hours=1))
        catalogue.finish_execution(Lease.of(leased), {"status": "succeeded"})
        catalogue.mark_dead_lettered(execution_id, "a later note")  # not a new finish

    for dropped in finished[:2]:
        with pytest.raises(NotFound):
            catalogue.get_execution(dropped)
    assert [catalogue.get_execution(kept).status for kept in finished[2:]] == ["succeeded"] * 3
    assert catalogue.get_execution(running).status == "running"  # never dropped unfinished
