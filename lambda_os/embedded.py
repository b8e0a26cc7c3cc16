"""The embedded database: mongomock in this process, with lookups by ``_id`` in O(1).

mongomock answers every query by scanning the whole collection, so an embedded
platform got slower with every execution it recorded: claiming, leasing and
updating an execution all look it up by ``_id``. mongomock already keeps each
collection's documents in a dictionary keyed by ``_id``; the collections here
answer a query that names one string ``_id`` (or a ``$in`` list of them) from that
dictionary and hand every other query to mongomock unchanged. The catalogue code
stays the same on MongoDB and here; only the cost differs.

Every write of a collection holds that collection's lock: a conditional
``find_one_and_update`` (the catalogue's lease) is one check-and-set, as on MongoDB.
Writes through another ``Collection`` object for the same name (``with_options``)
do not take it.

This leans on these mongomock internals; tests/test_embedded.py checks every
answer against plain mongomock, so an upgrade that changes them fails there first:
- ``Collection._iter_documents``, where every read finds its candidates;
- ``Collection._store``, the mapping by ``_id`` (``[]`` and ``.documents`` in
  mongomock's order);
- ``Database._collection_accesses`` and ``Database._store``, where
  ``embedded_database`` puts these collections.
``filter_applies`` judges every other condition of a filter.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import mongomock
import mongomock.collection
import mongomock.gridfs
from mongomock.filtering import filter_applies

Document = dict[str, Any]
_T = TypeVar("_T")
_Collection = mongomock.collection.Collection


def _serialised(method: Callable[..., _T]) -> Callable[..., _T]:
    """``method`` run while holding the collection's write lock."""

    @functools.wraps(method)
    def locked(self: IdIndexedCollection, *args: Any, **kwargs: Any) -> _T:
        with self._write_lock:
            return method(self, *args, **kwargs)

    return locked


def _named_id(filter: Any) -> str | None:
    """The string ``_id`` a filter names, or None."""
    key = filter.get("_id") if isinstance(filter, dict) else None
    return key if isinstance(key, str) else None


def _named_ids(filter: Any) -> list[str] | None:
    """The string ids of a filter's ``{"_id": {"$in": [...]}}``, or None."""
    condition = filter.get("_id") if isinstance(filter, dict) else None
    if not isinstance(condition, dict) or len(condition) != 1:
        return None
    keys = condition.get("$in")
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        return None
    return keys


class IdIndexedCollection(_Collection):
    """A mongomock collection whose queries on string ``_id`` values skip the scan."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Reentrant: mongomock's compound writes call its simple ones.
        self._write_lock = threading.RLock()

    # -- reads ---------------------------------------------------------------

    def _iter_documents(self, filter: Any) -> Iterator[Document]:
        key = _named_id(filter)
        if key is not None:
            document = self._matching(key, filter)
            return iter(() if document is None else (document,))
        keys = _named_ids(filter)
        if keys is not None:
            return iter(self._matching_any(keys, filter))
        return super()._iter_documents(filter)

    def _matching(self, key: str, filter: Mapping[str, Any]) -> Document | None:
        """The stored document under ``key`` if it meets ``filter`` (already datetime-patched)."""
        try:
            document = self._store[key]
        except KeyError:
            document = None
        if len(filter) == 1:  # only the id, which is the store's key
            return document
        if document is None:
            # mongomock with nothing to scan still checks the filter is valid.
            filter_applies(filter, {})
            return None
        return document if filter_applies(filter, document) else None

    def _matching_any(self, keys: list[str], filter: Mapping[str, Any]) -> list[Document]:
        """The stored documents under ``keys`` that meet ``filter``, in the store's order."""
        store = self._store
        found = []
        for key in dict.fromkeys(keys):
            try:
                found.append(store[key])
            except KeyError:
                pass
        if len(found) > 1:
            # A find without a sort returns the store's order; one pass over the ids,
            # with no filter to evaluate, keeps it.
            wanted = set(keys)
            found = [
                document
                for document in store.documents
                if isinstance(stored_id := document.get("_id"), str) and stored_id in wanted
            ]
        if not found:
            filter_applies(filter, {})
        return [document for document in found if filter_applies(filter, document)]

    # mongomock's writes, one at a time.
    insert_one = _serialised(_Collection.insert_one)
    update_one = _serialised(_Collection.update_one)
    find_one_and_update = _serialised(_Collection.find_one_and_update)
    delete_one = _serialised(_Collection.delete_one)
    insert_many = _serialised(_Collection.insert_many)
    update_many = _serialised(_Collection.update_many)
    replace_one = _serialised(_Collection.replace_one)
    find_one_and_replace = _serialised(_Collection.find_one_and_replace)
    find_one_and_delete = _serialised(_Collection.find_one_and_delete)
    delete_many = _serialised(_Collection.delete_many)
    bulk_write = _serialised(_Collection.bulk_write)
    create_index = _serialised(_Collection.create_index)
    create_indexes = _serialised(_Collection.create_indexes)
    drop_index = _serialised(_Collection.drop_index)
    drop_indexes = _serialised(_Collection.drop_indexes)
    drop = _serialised(_Collection.drop)
    rename = _serialised(_Collection.rename)


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
