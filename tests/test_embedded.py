"""The embedded database answers exactly what plain mongomock answers.

Each test runs the same inputs through an indexed collection and a plain mongomock
one: what they return or raise, and what they hold afterwards, must be the same.
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
from collections.abc import Callable
from typing import Any

import mongomock
import pytest
from pymongo import DeleteOne, IndexModel, InsertOne, ReturnDocument, UpdateMany
from pymongo.results import DeleteResult, InsertOneResult, UpdateResult

from lambda_os.catalogue import connect
from lambda_os.embedded import IdIndexedCollection, embedded_database

# Not UTC, and finer than the millisecond MongoDB keeps.
NOW = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
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
    from lambda_os.records import ExecutionRecord, execution_id_for

    catalogue = connect(None, "kept", keep_finished=3)

    def claim(event_id: str) -> str:
        record = ExecutionRecord(
            id=execution_id_for(event_id, "f"),
            function_id="f",
            function_version=1,
            event_id=event_id,
        )
        return catalogue.claim_execution(record)[0].id

    running = claim("still-running")
    catalogue.update_execution(running, {"status": "running"})
    finished = [claim(f"ev{i}") for i in range(5)]
    for execution_id in finished:
        catalogue.update_execution(execution_id, {"status": "succeeded"})
        catalogue.update_execution(execution_id, {"logs": "a later note"})  # not a new finish

    for dropped in finished[:2]:
        with pytest.raises(NotFound):
            catalogue.get_execution(dropped)
    assert [catalogue.get_execution(kept).status for kept in finished[2:]] == ["succeeded"] * 3
    assert catalogue.get_execution(running).status == "running"  # never dropped unfinished
