"""The embedded database: mongomock in this process, with lookups by ``_id`` in O(1).

mongomock answers every query by scanning the whole collection, so an embedded
platform got slower with every execution it recorded: claiming, leasing and
updating an execution all look it up by ``_id``. mongomock already keeps each
collection's documents in a dictionary keyed by ``_id``; the collections here
answer a query that names one ``_id`` from that dictionary and hand every other
query to mongomock unchanged. The catalogue code stays the same on MongoDB and
here; only the cost differs.

This leans on two mongomock internals (``Collection._iter_documents`` and the
store's mapping by ``_id``); tests/test_embedded.py checks that the answers are
those of a plain scan, so an upgrade that changes them fails there first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import mongomock
import mongomock.collection
import mongomock.gridfs
from mongomock.filtering import filter_applies


class IdIndexedCollection(mongomock.collection.Collection):
    """A mongomock collection whose single-``_id`` queries skip the scan."""

    def _iter_documents(self, filter: Any) -> Iterator[dict[str, Any]]:
        key = filter.get("_id") if isinstance(filter, dict) else None
        if isinstance(key, str):
            store = self._store
            if key not in store:
                return iter(())
            document = store[key]
            return iter((document,) if filter_applies(filter, document) else ())
        return super()._iter_documents(filter)


def embedded_database(name: str, indexed: Iterable[str]) -> Any:
    """A database of a fresh in-process client; ``indexed`` collections look up by ``_id`` fast."""
    mongomock.gridfs.enable_gridfs_integration()
    database = mongomock.MongoClient(tz_aware=True)[name]
    for collection in indexed:
        # get_collection hands back what it finds here, so the catalogue gets these.
        # With the database's own options, or get_collection would build a plain one.
        database._collection_accesses[collection] = IdIndexedCollection(
            database,
            name=collection,
            codec_options=database.codec_options,
            read_preference=database.read_preference,
            _db_store=database._store,
        )
    return database
