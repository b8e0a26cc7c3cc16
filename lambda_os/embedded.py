"""The embedded database: mongomock in this process, with work by ``_id`` in O(1).

mongomock answers every query by scanning the whole collection, so an embedded
platform got slower with every execution it recorded: claiming, leasing and
updating an execution all look it up by ``_id``. mongomock already keeps each
collection's documents in a dictionary keyed by ``_id``; the collections here
answer a query that names one string ``_id`` (or a ``$in`` list of them) from that
dictionary and hand every other query to mongomock unchanged.

Writes were the next cost: mongomock deep-copies the whole document around every
write and re-reads it to answer. The writes an event makes (``insert_one``, a plain
top-level ``$set`` through ``update_one`` or ``find_one_and_update``, ``delete_one``,
each naming one string ``_id``) are done here with one copy of what is written and
one of what is handed back. Whatever our cheap checks do not vouch for, a document
MongoDB could not store, an id already taken, any other operator or option, goes
to mongomock itself, so its answers and its errors stay the ones callers get. The
catalogue code stays the same on MongoDB and here; only the cost differs.

A fast write replaces the stored document with an updated copy rather than
changing it in place, so a reader never sees one half-written. Every write of a
collection, fast or mongomock's, holds that collection's lock: a conditional
``find_one_and_update`` (the catalogue's lease) is one check-and-set, as on MongoDB.
Writes through another ``Collection`` object for the same name (``with_options``)
do not take it.

This leans on these mongomock internals; tests/test_embedded.py checks every
answer against plain mongomock, so an upgrade that changes them fails there first:
- ``Collection._iter_documents``, where every read finds its candidates;
- ``Collection._store``, the mapping by ``_id`` (``in``, ``[]``, ``[]=``, ``del``,
  ``.documents`` in mongomock's order);
- ``Collection._ensure_uniques``, the unique-index check run after a write;
- ``MongoClient._id``, the ``connectionId`` in a write's raw result;
- ``Database._collection_accesses`` and ``Database._store``, where
  ``embedded_database`` puts these collections.
It copies two of mongomock's ways rather than calling them on every value: how it
stores a value (``patch_datetime_awareness_in_document``: datetimes in UTC to the
millisecond, containers copied; walked here for plain dicts, lists and scalars,
the helper does the rest) and how its cursor copies a document it hands out (each
dict and list anew, other values with ``copy.copy``, datetimes made aware when
the client is ``tz_aware``). ``filter_applies`` judges every other condition of a
filter.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import bson
import bson.errors
import mongomock
import mongomock.collection
import mongomock.gridfs
from mongomock import DuplicateKeyError
from mongomock.filtering import filter_applies
from mongomock.helpers import (
    make_datetime_timezone_aware_in_document,
    patch_datetime_awareness_in_document,
)
from mongomock.results import DeleteResult, InsertOneResult, UpdateResult
from pymongo import ReturnDocument

Document = dict[str, Any]
_T = TypeVar("_T")
_Collection = mongomock.collection.Collection

# What our own checks raise for a document MongoDB cannot store (bson's errors, an
# int or a date out of range, text that is not UTF-8, a key that is not a string,
# a cycle). mongomock then does the write itself, so it raises as it always has.
_UNSTORABLE = (bson.errors.BSONError, ArithmeticError, ValueError, TypeError, RecursionError)
# Values every copy here keeps as they are (so do copy.copy and mongomock's
# datetime patch); testing for them first keeps a copy cheap.
_IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes})
# The tzinfo mongomock gives the datetimes it hands out from a tz_aware client.
_UTC = make_datetime_timezone_aware_in_document(datetime(1970, 1, 1)).tzinfo


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


def _plain_set(update: Any) -> dict[str, Any] | None:
    """The fields of an update that is one ``$set`` of top-level fields other than ``_id``."""
    if not isinstance(update, dict) or len(update) != 1:
        return None
    fields = update.get("$set")
    if not isinstance(fields, dict) or not fields:
        return None
    for name in fields:
        if not isinstance(name, str) or name == "_id":
            return None
        if "." in name or "$" in name or "\0" in name:
            return None
    return fields


def _storable(document: dict[str, Any]) -> Document | None:
    """The document as mongomock would store it, or None where mongomock would refuse it."""
    try:
        bson.encode(document)  # also refuses a key that is not a string
        for name in document:
            if name[:1] == "$":
                return None
        return _patched(document)
    except _UNSTORABLE:
        return None


_MISSING = object()
# ``type(x) is int`` leaves bool out: MongoDB does not match true against 1.
_TEXT_OR_NULL = (str, int, type(None))


def _plain_equality(filter: Mapping[str, Any], document: Document) -> bool | None:
    """Whether ``document`` meets ``filter``, when that is only text, integer or null equalities.

    The lease's conditions (``status`` and ``leased_by`` equal to a string, or to
    null; ``attempt`` equal to an integer) are all the event path asks besides the
    id, and ``filter_applies`` spends more on them than the rest of a write. Here a
    condition ``{field: text, int or None}`` on a stored top-level value that is
    itself one of those or missing is decided as MongoDB does (null also matches a
    missing field). None for anything else (a
    name that is not plain text, an operator, a dotted path, a stored list, which
    MongoDB matches element-wise, any other type): ``filter_applies`` judges those.
    """
    met = True
    for name, wanted in filter.items():
        if name == "_id":
            continue  # the store's key: already the document's own
        if (
            type(name) is not str
            or not name
            or "." in name
            or name[0] == "$"
            or type(wanted) not in _TEXT_OR_NULL
        ):
            return None
        stored = document.get(name, _MISSING)
        if stored is _MISSING:
            stored = None
        elif type(stored) not in _TEXT_OR_NULL:
            return None
        if stored != wanted:
            met = False  # keep looking: a later condition mongomock refuses must still reach it
    return met


def _stored_values(fields: dict[str, Any]) -> dict[str, Any]:
    """The values ``$set`` stores, as mongomock stores them; raises what bson would.

    mongomock deep-copies a list value once more, which also copies what is in it."""
    values = _patched(fields)
    bson.encode(values)
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = copy.deepcopy(value)
    return values


def _patched(value: Any) -> Any:
    """``patch_datetime_awareness_in_document``, quicker where nothing needs patching.

    That is how mongomock stores a value: datetimes become naive UTC in whole
    milliseconds, and dicts, lists and tuples (as lists) are copied, so the caller's
    later changes do not reach the store. Plain dicts, lists and scalars are walked
    here; everything else goes to the helper."""
    kind = type(value)
    if kind is dict:
        return {
            key: item if type(item) in _IMMUTABLE else _patched(item) for key, item in value.items()
        }
    if kind is list or kind is tuple:
        return [item if type(item) in _IMMUTABLE else _patched(item) for item in value]
    if kind in _IMMUTABLE:
        return value
    if kind is datetime:
        # As the helper does: MongoDB keeps milliseconds, and UTC without a zone.
        whole_ms = value.microsecond // 1000 * 1000
        if value.tzinfo:
            return (value - value.utcoffset()).replace(tzinfo=None, microsecond=whole_ms)
        return value.replace(microsecond=whole_ms)
    return patch_datetime_awareness_in_document(value)


def _handed_out(value: Any, aware: bool) -> Any:
    """A copy of a stored value as mongomock's cursor hands it out."""
    kind = type(value)
    if kind is dict or isinstance(value, dict):
        return {
            key: item if type(item) in _IMMUTABLE else _handed_out(item, aware)
            for key, item in value.items()
        }
    if kind is list or isinstance(value, list) or (aware and isinstance(value, tuple)):
        return [item if type(item) in _IMMUTABLE else _handed_out(item, aware) for item in value]
    if kind in _IMMUTABLE:
        return value
    if aware and isinstance(value, datetime):
        return value.replace(tzinfo=_UTC)
    return copy.copy(value)


@dataclass(frozen=True)
class _SetOutcome:
    """What a fast ``$set`` found and left: ``before`` is None when nothing matched."""

    before: Document | None = None
    after: Document | None = None
    modified: bool = False


class IdIndexedCollection(_Collection):
    """A mongomock collection whose work on one string ``_id`` skips the scan and the copies."""

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
        plain = _plain_equality(filter, document)
        if plain is not None:
            return document if plain else None
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

    def _hand_out(self, document: Document) -> Document:
        return _handed_out(document, self.codec_options.tz_aware)

    # -- writes --------------------------------------------------------------

    def insert_one(
        self, document: Any, bypass_document_validation: bool = False, session: Any = None
    ) -> InsertOneResult:
        with self._write_lock:
            key = _named_id(document)
            if key is not None and session is None and key not in self._store:
                stored = _storable(document)
                if stored is not None:
                    self._publish(key, stored, previous=None, check_unique=True)
                    return InsertOneResult(key, acknowledged=True)
            return super().insert_one(
                document, bypass_document_validation=bypass_document_validation, session=session
            )

    def update_one(
        self,
        filter: Any,
        update: Any,
        upsert: bool = False,
        bypass_document_validation: bool = False,
        collation: Any = None,
        array_filters: Any = None,
        hint: Any = None,
        session: Any = None,
        let: Any = None,
    ) -> UpdateResult:
        with self._write_lock:
            if not (upsert or collation or array_filters or hint or session or let):
                outcome = self._set_by_id(filter, update)
                if outcome is not None:
                    matched = outcome.before is not None
                    raw = {
                        "connectionId": self.database.client._id,
                        "err": None,
                        "n": int(matched),
                        "nModified": int(outcome.modified),
                        "ok": 1,
                        "upserted": None,
                        "updatedExisting": matched,
                    }
                    return UpdateResult(raw, acknowledged=True)
            return super().update_one(
                filter,
                update,
                upsert=upsert,
                bypass_document_validation=bypass_document_validation,
                collation=collation,
                array_filters=array_filters,
                hint=hint,
                session=session,
                let=let,
            )

    def find_one_and_update(
        self,
        filter: Any,
        update: Any,
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
        **kwargs: Any,
    ) -> Document | None:
        with self._write_lock:
            # mongomock reads no other keyword but ``new`` (or ``remove``), and only when set.
            if projection is None and sort is None and not upsert and not any(kwargs.values()):
                outcome = self._set_by_id(filter, update)
                if outcome is not None:
                    if outcome.before is None:
                        return None
                    after = return_document is ReturnDocument.AFTER
                    return self._hand_out(outcome.after if after else outcome.before)
            return super().find_one_and_update(
                filter,
                update,
                projection=projection,
                sort=sort,
                upsert=upsert,
                return_document=return_document,
                **kwargs,
            )

    def delete_one(
        self, filter: Any, collation: Any = None, hint: Any = None, session: Any = None
    ) -> DeleteResult:
        with self._write_lock:
            key = _named_id(filter)
            if key is not None and not (collation or hint or session):
                try:
                    spec = _patched(filter) if len(filter) > 1 else filter
                except _UNSTORABLE:
                    spec = None
                if spec is not None:
                    document = self._matching(key, spec)
                    if document is not None:
                        del self._store[key]
                    raw = {
                        "connectionId": self.database.client._id,
                        "n": int(document is not None),
                        "ok": 1.0,
                        "err": None,
                    }
                    return DeleteResult(raw, True)
            return super().delete_one(filter, collation=collation, hint=hint, session=session)

    # The writes mongomock does itself, one at a time like those above.
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

    def _set_by_id(self, filter: Any, update: Any) -> _SetOutcome | None:
        """Apply a plain ``$set`` to the document ``filter`` names by id, holding the lock.

        None when it is not that, or when our checks object to a value: then
        mongomock must do it (it also writes the fields before the bad one)."""
        key = _named_id(filter)
        fields = _plain_set(update)
        if key is None or fields is None:
            return None
        try:
            spec = _patched(filter) if len(filter) > 1 else filter
            values = _stored_values(fields)
        except _UNSTORABLE:
            return None
        current = self._matching(key, spec)
        if current is None:
            return _SetOutcome()
        updated = current.copy()
        updated.update(values)
        modified = any(
            name not in current or not (current[name] is value or current[name] == value)
            for name, value in values.items()
        )
        self._publish(key, updated, previous=current, check_unique=modified)
        return _SetOutcome(before=current, after=updated, modified=modified)

    def _publish(
        self, key: str, document: Document, previous: Document | None, check_unique: bool
    ) -> None:
        """Store ``document`` under ``key``; put ``previous`` back if a unique index refuses it."""
        store = self._store
        store[key] = document
        if not check_unique:
            return
        try:
            self._ensure_uniques(document)
        except DuplicateKeyError:
            if previous is None:
                del store[key]
            else:
                store[key] = previous
            raise


def embedded_database(name: str, indexed: Iterable[str]) -> Any:
    """A database of a fresh in-process client; ``indexed`` collections work by ``_id`` fast."""
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
