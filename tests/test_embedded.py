"""The embedded database answers exactly what a plain mongomock scan answers."""

from __future__ import annotations

import mongomock
import pytest

from lambda_os.catalogue import connect
from lambda_os.embedded import IdIndexedCollection, embedded_database

DOCS = [
    {"_id": "a", "status": "running", "lease": 5, "n": 1},
    {"_id": "b", "status": "queued", "lease": 9, "n": 2},
    {"_id": "c", "status": "failed", "n": 3},
]
QUERIES = [
    {"_id": "a"},
    {"_id": "b", "status": "queued"},
    {"_id": "b", "status": "running"},
    {"_id": "a", "$or": [{"status": "queued"}, {"lease": {"$lt": 6}}]},
    {"_id": "missing"},
    {"_id": {"$gt": "a"}},
    {"_id": {"$in": ["a", "c"]}},
    {"status": "failed"},
    {},
]


@pytest.fixture
def collections():
    indexed = embedded_database("t", indexed=("things",))["things"]
    plain = mongomock.MongoClient()["t"]["things"]
    for collection in (indexed, plain):
        collection.insert_many([dict(doc) for doc in DOCS])
    return indexed, plain


def test_the_embedded_catalogues_collections_are_the_indexed_kind(collections):
    indexed, plain = collections
    assert isinstance(indexed, IdIndexedCollection)
    assert not isinstance(plain, IdIndexedCollection)
    database = connect(None, "embedded")._db
    for name in ("functions", "executions", "deadletters"):
        assert isinstance(database[name], IdIndexedCollection)


@pytest.mark.parametrize("query", QUERIES, ids=[str(q) for q in QUERIES])
def test_every_query_finds_what_a_scan_finds(collections, query):
    indexed, plain = collections
    assert list(indexed.find(query).sort("_id")) == list(plain.find(query).sort("_id"))


def test_updates_and_duplicate_ids_behave_as_in_a_scan(collections):
    indexed, plain = collections
    for collection in (indexed, plain):
        collection.find_one_and_update({"_id": "b", "status": "queued"}, {"$set": {"status": "x"}})
        with pytest.raises(mongomock.DuplicateKeyError):
            collection.insert_one({"_id": "a"})
    assert list(indexed.find().sort("_id")) == list(plain.find().sort("_id"))
    assert indexed.find_one({"_id": "b"})["status"] == "x"


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
