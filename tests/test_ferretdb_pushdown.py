"""The catalogue server's patch (deploy/ferretdb/patches): ``_id`` lookups use the ``_id_`` index.

FerretDB 1.24 on SQLite reads every document of a collection for any filter but
a lone ``_id``, and even that one in a form its own ``_id_`` index does not serve,
so each of the state machine's conditional writes (``{_id, status, attempt, …}``)
cost a scan of every execution ever stored. The patched server narrows any
filter with a top-level ``_id`` equality to that one row through the index and
still applies the whole filter, so results stay what MongoDB returns. Only for
the session's own FerretDB: a ``MONGO_URL`` server is not ours to inspect.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest

pytestmark = pytest.mark.mongo


@pytest.fixture
def collection(mongo_server) -> Iterator[Any]:
    if mongo_server is None:
        pytest.skip("MONGO_URL names a server other than the session's FerretDB")
    client: Any = pymongo.MongoClient(mongo_server.url, serverSelectionTimeoutMS=5000)
    database = client[f"pushdown_{uuid.uuid4().hex[:10]}"]
    database["docs"].insert_many(
        [{"_id": f"e{i}", "status": "queued", "attempt": 1} for i in range(20)]
    )
    yield database["docs"]
    client.drop_database(database.name)
    client.close()


def plan(collection: Any, query: dict[str, Any]) -> str:
    explained = collection.database.command("explain", {"find": collection.name, "filter": query})
    return " ".join(explained["queryPlanner"]["Plan"])


def test_a_lookup_by_id_searches_the_id_index_alone_or_beside_other_conditions(collection):
    assert "USING INDEX" in plan(collection, {"_id": "e3"})
    assert "USING INDEX" in plan(collection, {"_id": "e3", "status": "queued", "attempt": 1})
    assert "SCAN" in plan(collection, {"status": "queued"})  # no other field is pushed down


def test_a_filter_on_id_and_state_matches_only_a_document_in_that_state(collection):
    moved = collection.find_one_and_update(
        {"_id": "e3", "status": "queued"},
        {"$set": {"status": "running"}},
        return_document=pymongo.ReturnDocument.AFTER,
    )
    again = collection.find_one_and_update(
        {"_id": "e3", "status": "queued"}, {"$set": {"status": "running"}}
    )

    assert moved == {"_id": "e3", "status": "running", "attempt": 1}
    assert again is None
    assert collection.count_documents({"_id": "e3", "status": "running"}) == 1
    assert collection.count_documents({"_id": "e4", "status": "running"}) == 0
    assert collection.update_one({"_id": "e4", "attempt": 2}, {"$set": {"x": 1}}).matched_count == 0
    assert collection.delete_one({"_id": "e5", "status": "queued"}).deleted_count == 1
    assert collection.find_one({"_id": "e5"}) is None
    assert collection.count_documents({"status": "queued"}) == 18


def test_other_forms_of_an_id_condition_still_match_as_in_mongodb(collection):
    assert collection.count_documents({"_id": {"$in": ["e1", "e2"]}, "status": "queued"}) == 2
    assert collection.count_documents({"_id": {"$ne": "e1"}}) == 19
    assert collection.count_documents({"$or": [{"_id": "e1"}, {"_id": "e2"}]}) == 2
    assert collection.find_one({"_id": "missing", "status": "queued"}) is None
