"""The catalogue: function records, their code packages and execution records in MongoDB.

This is the one module that talks to MongoDB. It is written against the subset of
pymongo that mongomock also implements (plain CRUD, compound indexes, legacy
``gridfs.GridFS``), so the same code runs on a real server behind ``MONGO_URL``
and in memory for tests and the all-in-one standalone mode.

Layout:
- ``functions``: one document per function, ``_id`` = function id; unique index on
  (owner, name); index on (event_source, event_type) so matching is one lookup.
- ``function_versions``: one document per kept revision of a function (``_id`` =
  ``<function id>:v<version>``): its record and package id. A replaced revision
  is kept while executions may still run it (``retired_at``;
  ``prune_retired_versions``); a published one (``published_at``) until its
  version is deleted. The function's own document says ``frozen`` while its
  current revision is published: a configuration change then makes the next
  revision (as new code does) rather than change a published version.
- ``aliases``: a function's aliases, ``_id`` = ``<function id>:<name>``, each
  pointing to one published version or splitting between two.
- ``packages`` (GridFS): the uploaded bytes, exactly as sent, ``_id`` = package id.
- ``executions``: one document per (event_id, function_id): the ``_id`` is derived
  from the pair. Records change only through the state machine below
  (``TRANSITIONS``): each transition is one conditional write, and every write by a
  run is fenced by its ``Lease``, so two listeners never run one at once, and a
  listener that lost its lease (it stalled; another took the run over) changes
  nothing.
- ``deadletters``: one document per message the listener gave up on; ids begin
  with the time, so listings come oldest first.
- ``hosts``: the cluster's hosts (``lambda-os worker``), one document each, ``_id``
  = host id, changed only through ``HOST_TRANSITIONS``; ``routers``: the live
  routers (cluster-mode listeners), which split every host's slots among them.
- ``slots``: one document per host slot a router took for an execution it placed
  or is placing (its own ``_id``, the execution, its function, host, router, and
  when, by the server's clock). Derived from ``executions``, and kept so that
  a router counts what is placed by reading the few executions in flight rather
  than every execution stored (a catalogue server that cannot use the indexes,
  FerretDB on SQLite, scans the whole collection for such a query). A slot is
  held before its execution is placed and released after it ends, so every
  placed unfinished execution has one; one left over (a crash in between, an
  execution ended by the sweeper) only keeps a slot busy until ``prune_slots``.
- ``scaling_events``: the scaling controller's decisions with their reasons; ids
  begin with the time, so listings come newest first by ``_id``.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import bson.errors
import gridfs
import pymongo
from pymongo.errors import DuplicateKeyError, PyMongoError

from lambda_os.errors import Conflict, NotFound, PermanentError, TransientError
from lambda_os.packages import PackageInfo
from lambda_os.records import (
    FINAL_STATUSES,
    AliasRecord,
    DeadLetterRecord,
    ExecutionRecord,
    FunctionRecord,
    HostBeat,
    HostRecord,
    Lease,
    PublishedVersion,
    RouterRecord,
    ScalingEvent,
    ScheduleRecord,
    alias_id,
    execution_id_for,
    utcnow,
    with_changes,
)

ASCENDING = pymongo.ASCENDING
DESCENDING = pymongo.DESCENDING
# The catalogue's own collections (GridFS keeps packages in two more).
COLLECTIONS = (
    "functions",
    "function_versions",
    "executions",
    "deadletters",
    "hosts",
    "routers",
    "scaling_events",
    "slots",
    "schedules",
    "aliases",
    "batch_members",
)
_SEQUENCE = itertools.count()


_NO_LEASE = {"lease_until": None, "leased_by": None}
_NOT_PLACED = {"placed_on": None, "placed_by": None, "placed_at": None}
_UNFINISHED = {"$in": ["queued", "running"]}
# What an earlier run leaves in ``attempts`` when a replay reopens the record.
_ATTEMPT_FIELDS = ("attempt", "status", "error", "started_at", "finished_at", "duration_ms")
# What ``reopen_execution`` changes, so ``undo_reopen`` can put them back.
_REOPENED_FIELDS = (
    "status",
    "attempt",
    "first_attempt",
    "attempts",
    "dead_letter_id",
    "retry_at",
    "result",
    "finished_at",
    "requeued_at",
)

# Every change an execution record can go through, and the method that makes it.
# No other code writes execution records.
TRANSITIONS: tuple[tuple[str, str, str, str], ...] = (
    # (from, to, method, condition)
    ("(new)", "queued", "create_execution", "no record for (event, function)"),
    ("(new)", "queued, placed on a host", "create_execution", "no record for (event, function)"),
    ("(new)", "running", "start_execution", "no record for (event, function)"),
    ("queued", "running", "acquire_execution", "queued"),
    ("running", "running", "acquire_execution", "lease lapsed: attempt + 1, old holder fenced"),
    ("running", "running", "renew_lease", "lease holder and attempt"),
    ("running", "succeeded/failed/timed_out", "finish_execution", "lease holder and attempt"),
    ("running", "queued", "retry_execution", "lease holder and attempt: attempt + 1"),
    ("running", "queued", "release_execution", "lease holder and attempt: same attempt"),
    ("queued", "failed", "fail_queued_execution", "queued at that attempt"),
    ("queued", "failed", "fail_queued_executions_of", "queued, function deleted"),
    ("final", "final", "mark_dead_lettered", "final, no dead letter named yet"),
    ("final", "queued", "reopen_execution", "final at that attempt: a replay"),
    ("queued", "final", "undo_reopen", "queued at the reopened attempt"),
    ("queued/running", "same", "mark_swept", "the state the sweeper read"),
    ("queued/running", "failed", "fail_stranded", "the state the sweeper read"),
    ("queued/running", "same, placed on a host", "place_execution", "the state the router read"),
    ("queued/running", "same, not placed", "unplace_execution", "the placement it made"),
    ("running", "running, lease lapsed now", "lapse_leases_of", "leased by a lost host's runs"),
    (
        "running",
        "running, lease lapsed now",
        "register_host",
        "leased by the host's earlier worker",
    ),
)

# Every change a host record can go through; no other code writes host records.
HOST_TRANSITIONS: tuple[tuple[str, str, str, str], ...] = (
    ("(new)/any", "active", "register_host", "none: a host (re)registers itself"),
    ("active/draining", "same", "heartbeat_host", "not lost"),
    ("active", "draining", "drain_host", "active"),
    ("active/draining", "lost", "mark_lost_hosts", "the heartbeat read is older than the cutoff"),
    (
        "draining/lost",
        "retired",
        "retire_host",
        "draining or lost: the controller deleted its server",
    ),
)


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Package:
    """A stored code package: the bytes as uploaded and how to unpack them."""

    data: bytes
    kind: str
    filename: str
    sha256: str
    content_type: str


@dataclass(frozen=True)
class Placement:
    """A slot held on a host: by which execution, of what function, placed by whom, when."""

    id: str
    execution_id: str
    function_id: str
    host_id: str
    router_id: str | None
    placed_at: datetime | None = None


def _placement(doc: dict[str, Any]) -> Placement:
    return Placement(
        doc["_id"],
        doc.get("execution_id", ""),
        doc.get("function_id", ""),
        doc.get("host_id", ""),
        doc.get("router_id"),
        doc.get("placed_at"),
    )


@dataclass(frozen=True)
class Page:
    """One page of a listing; ``marker`` is the id to continue after, None on the last page."""

    items: list[Any]
    marker: str | None


class Catalogue:
    """Functions, packages and executions on one MongoDB database (real or mongomock)."""

    def __init__(
        self,
        database: Any,
        clock: Callable[[], datetime] = utcnow,
        ids: Callable[[], str] = new_id,
        cache_matches: bool = False,
        keep_finished: int | None = None,
        kind: str = "mongodb",
    ) -> None:
        """``cache_matches`` only where every write goes through this object (in process):
        the cache is cleared on each function change made here, and no other.
        ``keep_finished`` drops the oldest finished executions past that many (the
        in-memory catalogue's bound on memory); None keeps every one. ``kind`` says
        what holds it (``mongodb``: a server; ``memory``: this process) for health."""
        self.kind = kind
        self._db = database
        self._functions = database["functions"]
        self._versions = database["function_versions"]
        self._executions = database["executions"]
        self._deadletters = database["deadletters"]
        self._hosts = database["hosts"]
        self._routers = database["routers"]
        self._scaling_events = database["scaling_events"]
        self._slots = database["slots"]
        self._schedules = database["schedules"]
        self._aliases = database["aliases"]
        self._batch_members = database["batch_members"]
        # A cluster host's worker sets this: its runs end by releasing their slots.
        self.releases_slots = False
        self._quotas = database["quotas"]
        self._api_users = database["api_users"]
        self._api_tokens = database["api_tokens"]
        self._packages = gridfs.GridFS(database, collection="packages")
        self._clock = clock
        self._ids = ids
        self._matches: dict[tuple[str, str], tuple[FunctionRecord, ...]] | None = (
            {} if cache_matches else None
        )
        self._matches_lock = threading.Lock()
        self._functions_generation = 0
        self._keep_finished = keep_finished
        self._finished_order: collections.deque[str] = collections.deque()
        self._finished_lock = threading.Lock()

    # -- set-up and health -------------------------------------------------

    def ensure_indexes(self) -> None:
        """Create the indexes the catalogue relies on; idempotent."""
        with _converted():
            self._functions.create_index(
                [("owner", ASCENDING), ("name", ASCENDING)],
                unique=True,
                name="owner_name",
            )
            self._functions.create_index(
                [("event_source", ASCENDING), ("event_type", ASCENDING)], name="event"
            )
            # No unique index needed: an execution's _id is derived from this pair.
            self._executions.create_index(
                [("event_id", ASCENDING), ("function_id", ASCENDING)],
                name="event_function_lookup",
            )
            self._executions.create_index(
                [("function_id", ASCENDING), ("status", ASCENDING)],
                name="function_status",
            )
            self._executions.create_index(
                [("status", ASCENDING), ("lease_until", ASCENDING)], name="status_lease"
            )
            self._executions.create_index(
                [("function_id", ASCENDING), ("created_at", ASCENDING)], name="function_created"
            )
            self._executions.create_index(
                [("placed_on", ASCENDING), ("status", ASCENDING)], name="placed_status"
            )
            self._versions.create_index([("function_id", ASCENDING)], name="function")
            self._hosts.create_index([("state", ASCENDING)], name="state")
            self._slots.create_index([("function_id", ASCENDING)], name="function")
            self._slots.create_index([("execution_id", ASCENDING)], name="execution")
            self._deadletters.create_index(
                [("event_id", ASCENDING), ("function_id", ASCENDING)], name="event_function"
            )
            self._schedules.create_index([("function_id", ASCENDING)], name="function")
            self._schedules.create_index([("next_fire_at", ASCENDING)], name="next_fire")
            self._aliases.create_index([("function_id", ASCENDING)], name="function")
            self._batch_members.create_index(
                [("batch_id", ASCENDING), ("position", ASCENDING)], name="batch"
            )
            self._batch_members.create_index([("created_at", ASCENDING)], name="created")

    def health(self) -> dict[str, Any]:
        """Whether the database answers, with the function count and the kind of catalogue."""
        kept = {"catalogue": self.kind}
        try:
            self._db.command("ping")
            return {"status": "ok", "functions": self._functions.count_documents({}), **kept}
        except PyMongoError as exc:
            return {"status": "unavailable", "error": str(exc), **kept}

    # -- quotas per project (lambda_os.quotas) -----------------------------

    def get_quota(self, project_id: str) -> dict[str, int]:
        """The limits stored for the project (those changed from the defaults)."""
        with _converted():
            doc = self._quotas.find_one({"_id": project_id}) or {}
        return {k: v for k, v in doc.items() if k != "_id"}

    def set_quota(self, project_id: str, limits: dict[str, int]) -> dict[str, int]:
        """Store these limits for the project (others keep theirs); all it has now."""
        with _converted():
            self._quotas.update_one({"_id": project_id}, {"$set": dict(limits)}, upsert=True)
        return self.get_quota(project_id)

    def usage_of(self, project_id: str) -> dict[str, int]:
        """What the project uses: functions, their packages' bytes, and what runs now."""
        with _converted():
            functions = {
                doc["_id"]: doc
                for doc in self._functions.find(
                    {"owner": project_id}, {"code_size": 1, "memory_mb": 1}
                )
            }
            running = list(
                self._executions.find(
                    {"function_id": {"$in": list(functions)}, "status": "running"},
                    {"function_id": 1},
                )
            )
        return {
            "functions": len(functions),
            "package_bytes": sum(int(f.get("code_size", 0)) for f in functions.values()),
            "executions": len(running),
            "memory_mb": sum(
                int(functions[r["function_id"]].get("memory_mb", 0))
                for r in running
                if r["function_id"] in functions
            ),
        }

    # -- API users and tokens (catalog_api.auth.tokens) --------------------
    #
    # Stored as given: the auth module hashes passwords and tokens before they come here.

    def add_api_user(self, user: dict[str, Any]) -> None:
        """Store a new user (``_id`` is its name); ``Conflict`` if the name is taken."""
        try:
            with _converted():
                self._api_users.insert_one(dict(user))
        except DuplicateKeyError as exc:
            raise Conflict(f"a user named {user['_id']!r} exists already") from exc

    def get_api_user(self, name: str) -> dict[str, Any] | None:
        with _converted():
            return self._api_users.find_one({"_id": name})

    def list_api_users(self) -> list[dict[str, Any]]:
        with _converted():
            return list(self._api_users.find({}).sort("_id", ASCENDING))

    def delete_api_user(self, name: str) -> bool:
        """Remove the user and every token it holds; whether it existed."""
        with _converted():
            self._api_tokens.delete_many({"user": name})
            return self._api_users.delete_one({"_id": name}).deleted_count == 1

    def add_api_token(self, token: dict[str, Any]) -> None:
        """Store a token record (``_id`` is the token's hash)."""
        with _converted():
            self._api_tokens.insert_one(dict(token))

    def get_api_token(self, token_hash: str) -> dict[str, Any] | None:
        with _converted():
            return self._api_tokens.find_one({"_id": token_hash})

    def delete_api_token(self, token_hash: str) -> bool:
        with _converted():
            return self._api_tokens.delete_one({"_id": token_hash}).deleted_count == 1

    # -- functions ---------------------------------------------------------

    def create_function(
        self, fields: dict[str, Any], package: bytes, info: PackageInfo
    ) -> FunctionRecord:
        """Store a new function and its package; ``Conflict`` if the owner has that name."""
        now = self._clock()
        function_id = self._ids()
        package_id = self._put_package(function_id, 1, package, info)
        record = FunctionRecord(
            id=function_id,
            version=1,
            created_at=now,
            updated_at=now,
            package_id=package_id,
            **_code_fields(info),
            **fields,
        )
        try:
            with _converted():
                self._functions.insert_one(record.to_document())
        except DuplicateKeyError as exc:
            self._packages.delete(package_id)
            raise Conflict(
                f"a function named {record.name!r} already exists for owner {record.owner!r}"
            ) from exc
        except BaseException:
            self._packages.delete(package_id)
            raise
        self._functions_changed()
        return record

    def get_function(self, function_id: str) -> FunctionRecord:
        with _converted():
            doc = self._functions.find_one({"_id": function_id})
        if doc is None:
            raise NotFound(f"function {function_id!r} does not exist")
        return FunctionRecord.from_document(doc)

    def list_functions(
        self, filters: dict[str, str], limit: int, marker: str | None = None
    ) -> Page:
        """Functions matching equality ``filters``, ordered by id, ``limit`` at a time."""
        return self._page(self._functions, dict(filters), limit, marker, FunctionRecord)

    def function_ids_of(self, owner: str) -> list[str]:
        """The ids of every function ``owner`` has (its project's, under authentication)."""
        with _converted():
            return [doc["_id"] for doc in self._functions.find({"owner": owner}, {"_id": 1})]

    def function_memory_of(self, owner: str) -> dict[str, int]:
        """Each of ``owner``'s functions by id, with its memory: what a router counts quotas by."""
        with _converted():
            docs = self._functions.find({"owner": owner}, {"memory_mb": 1})
            return {doc["_id"]: int(doc.get("memory_mb", 0)) for doc in docs}

    def find_matching(self, event_source: str, event_type: str) -> list[FunctionRecord]:
        """Every function registered for this event: one query on the (source, type) index.

        With ``cache_matches``, answered from memory after the first query, until a
        function changes: the cost per event then does not grow with the catalogue.
        """
        key = (event_source, event_type)
        if self._matches is not None:
            cached = self._matches.get(key)
            if cached is not None:
                return list(cached)
            generation = self._functions_generation
        with _converted():
            docs = self._functions.find({"event_source": event_source, "event_type": event_type})
            found = [FunctionRecord.from_document(doc) for doc in docs]
        if self._matches is not None:
            with self._matches_lock:
                if generation == self._functions_generation:  # no change while we read
                    self._matches[key] = tuple(found)
        return found

    def _functions_changed(self) -> None:
        """Every function write calls this, after the write, so no match is served stale."""
        if self._matches is not None:
            with self._matches_lock:
                self._functions_generation += 1
                self._matches.clear()

    def update_function(self, function_id: str, changes: dict[str, Any]) -> FunctionRecord:
        """Change configuration fields (not code); ``Conflict`` on a name clash.

        The current revision changes in place and keeps its ``version``, unless it is
        a published version (the document is ``frozen``): a published version never
        changes, so the change then makes the next revision, as new code does, and
        the published one stays as it was (``_retire``). A change that changes
        nothing of a published revision makes none.
        """
        if not changes:
            return self.get_function(function_id)
        changes = {**changes, "updated_at": self._clock()}
        for _attempt in range(3):
            doc = self._change_function(
                {"_id": function_id, "frozen": {"$ne": True}}, {"$set": changes}, changes
            )
            if doc is not None:
                return FunctionRecord.from_document(doc)
            current = self.get_function(function_id)  # frozen, or NotFound
            if all(getattr(current, k, None) == v for k, v in changes.items() if k != "updated_at"):
                return current
            doc = self._change_function(
                {"_id": function_id, "version": current.version, "frozen": True},
                {"$set": {**changes, "frozen": False}, "$inc": {"version": 1}},
                changes,
            )
            if doc is not None:
                self._retire(current)
                return FunctionRecord.from_document(doc)
            # Changed between the two writes (new code, another change): look again.
        raise Conflict(f"function {function_id!r} changed during the update; try again")

    def _change_function(
        self, query: dict[str, Any], update: dict[str, Any], changes: dict[str, Any]
    ) -> dict[str, Any] | None:
        """One conditional write of a function document; its new form, or None if none matched."""
        try:
            with _converted():
                doc = self._functions.find_one_and_update(
                    query, update, return_document=pymongo.ReturnDocument.AFTER
                )
        except DuplicateKeyError as exc:
            raise Conflict(f"a function named {changes.get('name')!r} already exists") from exc
        self._functions_changed()
        return doc

    def replace_code(
        self,
        function_id: str,
        package: bytes,
        info: PackageInfo,
        handler: str | None = None,
    ) -> FunctionRecord:
        """Store a new package as the next version; the old package is removed after."""
        current = self.get_function(function_id)
        version = current.version + 1
        package_id = self._put_package(function_id, version, package, info)
        changes: dict[str, Any] = {
            **_code_fields(info),
            "package_id": package_id,
            "version": version,
            "updated_at": self._clock(),
            "frozen": False,  # a new revision is no published version
        }
        if handler is not None:
            changes["handler"] = handler
        with _converted():
            # The document as it was, not ``current``: a configuration change in between
            # (same version) is part of the revision kept, and of a version published of it.
            before = self._functions.find_one_and_update(
                {"_id": function_id, "version": current.version},
                {"$set": changes},
                return_document=pymongo.ReturnDocument.BEFORE,
            )
        self._functions_changed()
        if before is None:
            self._packages.delete(package_id)
            raise Conflict(f"function {function_id!r} changed during the update; try again")
        self._retire(FunctionRecord.from_document(before))
        return FunctionRecord.from_document({**before, **changes})

    def _retire(self, old: FunctionRecord) -> None:
        """Keep a replaced version (its record and package) while executions may still run it.

        An event matched just before a deploy runs the version it matched;
        ``prune_retired_versions`` removes the version once nothing references it.
        A ``$set``, not a replacement: a published version's publication stays.
        """
        with _converted():
            self._versions.update_one(
                {"_id": _version_id(old.id, old.version)},
                {
                    "$set": {
                        "function_id": old.id,
                        "version": old.version,
                        "package_id": old.package_id,
                        "retired_at": self._clock(),
                        "function": old.to_document(),
                    }
                },
                upsert=True,
            )

    def get_function_version(self, function_id: str, version: int) -> FunctionRecord:
        """The function as it was at ``version``: the current record, a published version,
        or a retired one kept."""
        current = self.get_function(function_id)
        if current.version == version:
            return current
        with _converted():
            doc = self._versions.find_one({"_id": _version_id(function_id, version)})
        if doc is None:
            raise NotFound(f"version {version} of function {function_id!r} is no longer kept")
        return FunctionRecord.from_document(doc["function"])

    def prune_retired_versions(self, retired_before: datetime) -> int:
        """Remove retired versions no queued or running execution references; how many.

        Published versions stay until they are deleted. A package goes with its
        version only if no other revision of the function has it: a configuration
        change of a published revision makes a revision with the same package.
        """
        pruned = 0
        with _converted():
            retired = list(
                self._versions.find({"retired_at": {"$lt": retired_before}, "published_at": None})
            )
        for doc in retired:
            with _converted():
                in_use = self._executions.find_one(
                    {
                        "function_id": doc["function_id"],
                        "function_version": doc["version"],
                        "status": {"$in": ["queued", "running"]},
                    }
                )
                if in_use is not None:
                    continue
                # Only while unpublished: the function's current revision may be published again.
                deleted = self._versions.delete_one({"_id": doc["_id"], "published_at": None})
            if not deleted.deleted_count:
                continue
            package_id = doc.get("package_id", "")
            if not self._package_in_use(doc["function_id"], package_id):
                self._delete_package(package_id)
            pruned += 1
        return pruned

    def _package_in_use(self, function_id: str, package_id: str) -> bool:
        """Whether the function's record or a kept revision of it still has this package.

        Read after the caller removed its own revision: of two pruners removing the
        two revisions that share a package, the later reader sees both gone.
        """
        with _converted():
            if self._functions.find_one({"_id": function_id, "package_id": package_id}, {"_id": 1}):
                return True
            kept = self._versions.find_one(
                {"function_id": function_id, "package_id": package_id}, {"_id": 1}
            )
        return kept is not None

    def get_package(self, function: FunctionRecord) -> Package:
        """The package of this function record, byte for byte as uploaded."""
        with _converted():
            try:
                stored = self._packages.get(function.package_id)
            except gridfs.errors.NoFile as exc:
                raise NotFound(f"the package of function {function.id!r} is gone") from exc
            data = stored.read()
        kind = "zip" if function.code_filename == "" else "py"
        content_type = "application/zip" if kind == "zip" else "text/x-python"
        return Package(data, kind, function.code_filename, function.code_sha256, content_type)

    def delete_function(self, function_id: str) -> None:
        """Remove the function, every version's package, and the work still queued for it.

        Executions queued for it end ``failed`` (reason ``function deleted``): none
        starts after the DELETE answered. Runs already started finish.
        """
        with _converted():
            doc = self._functions.find_one_and_delete({"_id": function_id})
        self._functions_changed()
        if doc is None:
            raise NotFound(f"function {function_id!r} does not exist")
        self.fail_queued_executions_of(
            function_id,
            {
                "type": "NotFound",
                "message": f"function {function_id!r} was deleted before this execution started",
                "reason": "function deleted",
            },
        )
        with _converted():
            retired = list(self._versions.find({"function_id": function_id}))
            self._versions.delete_many({"function_id": function_id})
        # Revisions may share a package (see ``prune_retired_versions``): each deleted once.
        packages = {old.get("package_id", "") for old in retired} | {doc.get("package_id", "")}
        for package_id in sorted(packages):
            self._delete_package(package_id)
        with _converted():
            self._schedules.delete_many({"function_id": function_id})
            self._aliases.delete_many({"function_id": function_id})
            self._batch_members.delete_many({"function_id": function_id})

    # -- published versions and aliases (catalog_api.versions) ------------------

    def publish_version(
        self, function_id: str, description: str = ""
    ) -> tuple[PublishedVersion, bool]:
        """Publish the function's current revision as an immutable version: (it, made now).

        The function's document is marked ``frozen`` by the same write that reads the
        revision, so from then on a configuration change makes the next revision
        (``update_function``), and new code always does: what is stored here is the
        revision as it stays. A revision published already comes back as it was
        (False), its description unchanged. ``NotFound`` for an unknown function.
        """
        with _converted():
            doc = self._functions.find_one_and_update(
                {"_id": function_id},
                {"$set": {"frozen": True}},
                return_document=pymongo.ReturnDocument.AFTER,
            )
        # ``frozen`` is not a field of the record: matches cached from it are still true.
        if doc is None:
            raise NotFound(f"function {function_id!r} does not exist")
        current = FunctionRecord.from_document(doc)
        version_id = _version_id(function_id, current.version)
        with _converted():
            existing = self._versions.find_one({"_id": version_id})
        if existing is not None and existing.get("published_at") is not None:
            return _published(existing), False
        fields = {
            "function_id": function_id,
            "version": current.version,
            "package_id": current.package_id,
            "function": current.to_document(),
            "published_at": self._clock(),
            "description": description,
        }
        try:
            with _converted():
                stored = self._versions.find_one_and_update(
                    {"_id": version_id, "published_at": None},
                    {"$set": fields},
                    upsert=True,
                    return_document=pymongo.ReturnDocument.AFTER,
                )
        except DuplicateKeyError:
            # Another request published it between the read and this write.
            return self.get_published_version(function_id, current.version), False
        return _published(stored), True

    def get_published_version(self, function_id: str, version: int) -> PublishedVersion:
        with _converted():
            doc = self._versions.find_one(
                {"_id": _version_id(function_id, version), "published_at": {"$ne": None}}
            )
        if doc is None:
            raise NotFound(f"version {version} of function {function_id!r} is not published")
        return _published(doc)

    def list_published_versions(self, function_id: str) -> list[PublishedVersion]:
        """A function's published versions, oldest first."""
        with _converted():
            docs = list(
                self._versions.find(
                    {"function_id": function_id, "published_at": {"$ne": None}}
                ).sort("version", ASCENDING)
            )
        return [_published(doc) for doc in docs]

    def delete_published_version(self, function_id: str, version: int) -> None:
        """Unpublish a version: ``NotFound`` if it is not published, ``Conflict`` while an
        alias points to it.

        Unpublished first and the aliases read after, where ``put_alias`` writes the
        alias first and reads the versions after: of a delete and an alias change
        racing, at least one sees the other and backs off, so no alias is left
        pointing to a version that is gone. The version is then kept like one just
        retired (``retired_at`` now) until ``prune_retired_versions`` finds no
        execution in flight that runs it.
        """
        version_id = _version_id(function_id, version)
        with _converted():
            before = self._versions.find_one_and_update(
                {"_id": version_id, "published_at": {"$ne": None}},
                # Retired now even if it is the current revision: pruning it then
                # removes only the document, as the function's record has its package.
                {"$set": {"published_at": None, "description": "", "retired_at": self._clock()}},
                return_document=pymongo.ReturnDocument.BEFORE,
            )
        if before is None:
            raise NotFound(f"version {version} of function {function_id!r} is not published")
        pointing = self._aliases_pointing_at(function_id, version)
        if not pointing:
            return
        restored = {key: before.get(key) for key in ("published_at", "description", "retired_at")}
        with _converted():
            self._versions.update_one({"_id": version_id, "published_at": None}, {"$set": restored})
        names = ", ".join(repr(name) for name in pointing)
        if len(pointing) == 1:
            said = f"alias {names} of function {function_id!r} points"
        else:
            said = f"aliases {names} of function {function_id!r} point"
        raise Conflict(
            f"{said} to version {version}; point them to another version or delete them first"
        )

    def _aliases_pointing_at(self, function_id: str, version: int) -> list[str]:
        query = {
            "function_id": function_id,
            "$or": [{"version": version}, {"additional_version": version}],
        }
        with _converted():
            return sorted(doc["name"] for doc in self._aliases.find(query, {"name": 1}))

    def put_alias(self, record: AliasRecord) -> tuple[AliasRecord, bool]:
        """Create or replace an alias: (the alias as stored, created now).

        ``Conflict`` if a version it names is not published: checked before the
        write, and again after it, since a version deleted in between
        (``delete_published_version``) would otherwise leave the alias pointing to
        nothing; then the write is undone (the alias as it was comes back).
        """
        for version in record.versions:
            self._require_published(record.function_id, version)
        now = self._clock()
        record = with_changes(
            record, id=alias_id(record.function_id, record.name), updated_at=now, created_at=now
        )
        fields = {
            key: value
            for key, value in record.to_document().items()
            if key not in ("_id", "created_at")
        }
        with _converted():
            before = self._aliases.find_one_and_update(
                {"_id": record.id},
                {"$set": fields, "$setOnInsert": {"created_at": now}},
                upsert=True,
                return_document=pymongo.ReturnDocument.BEFORE,
            )
        try:
            for version in record.versions:
                self._require_published(record.function_id, version)
        except Conflict:
            ours = {"_id": record.id, "updated_at": now, "version": record.version}
            with _converted():
                if before is None:
                    self._aliases.delete_one(ours)
                else:
                    self._aliases.replace_one(ours, before)
            raise
        if before is None:
            return record, True
        return with_changes(record, created_at=before.get("created_at")), False

    def _require_published(self, function_id: str, version: int) -> None:
        with _converted():
            doc = self._versions.find_one(
                {"_id": _version_id(function_id, version), "published_at": {"$ne": None}},
                {"_id": 1},
            )
        if doc is None:
            raise Conflict(
                f"version {version} of function {function_id!r} is not published; publish it "
                "first (POST /v1/functions/{id}/versions)"
            )

    def get_alias(self, function_id: str, name: str) -> AliasRecord:
        with _converted():
            doc = self._aliases.find_one({"_id": alias_id(function_id, name)})
        if doc is None:
            raise NotFound(f"function {function_id!r} has no alias {name!r}")
        return AliasRecord.from_document(doc)

    def list_aliases(self, function_id: str) -> list[AliasRecord]:
        """A function's aliases, by name."""
        with _converted():
            docs = list(self._aliases.find({"function_id": function_id}).sort("name", ASCENDING))
        return [AliasRecord.from_document(doc) for doc in docs]

    def delete_alias(self, function_id: str, name: str) -> None:
        with _converted():
            result = self._aliases.delete_one({"_id": alias_id(function_id, name)})
        if not result.deleted_count:
            raise NotFound(f"function {function_id!r} has no alias {name!r}")

    def _put_package(self, function_id: str, version: int, data: bytes, info: PackageInfo) -> str:
        package_id = f"{function_id}-v{version}-{self._ids()[:8]}"
        with _converted():
            self._packages.put(
                data,
                _id=package_id,
                filename=info.filename or "package.zip",
                kind=info.kind,
            )
        return package_id

    def _delete_package(self, package_id: str) -> None:
        if package_id:
            with _converted():
                self._packages.delete(package_id)

    # -- executions: the state machine ------------------------------------
    #
    # The only writes of execution records. Each is one conditional write keyed on
    # the record's state, and every write by a run is fenced by its ``Lease``
    # (holder and attempt): an owner that lost its lease, stalled while another took
    # the run over, matches nothing and changes nothing. ``TRANSITIONS`` lists them.

    def create_execution(self, record: ExecutionRecord) -> tuple[ExecutionRecord, bool]:
        """(new) → queued: insert, or return the record already stored for (event, function).

        Returns the stored record and whether it was created now, so a redelivered
        event finds the execution it already has instead of running twice.
        """
        if record.id != execution_id_for(record.event_id, record.function_id):
            raise ValueError("an execution's id is execution_id_for(event_id, function_id)")
        if record.created_at is None:
            record = with_changes(record, created_at=self._clock())
        try:
            with _converted():
                self._executions.insert_one(record.to_document())
            return record, True
        except DuplicateKeyError:
            with _converted():
                doc = self._executions.find_one({"_id": record.id})
            if doc is None:  # dropped in between (the in-memory bound); try once more
                return self.create_execution(record)
            return ExecutionRecord.from_document(doc), False

    def start_execution(
        self, record: ExecutionRecord, owner: str, now: datetime, lease_until: datetime
    ) -> tuple[ExecutionRecord, bool]:
        """(new) → running: inserted already under ``owner``'s lease, for a pair seen first now.

        The event path's common case thus costs one write instead of two. When the
        pair has a record already, that record comes back unchanged (False), and
        the caller takes its lease the long way (``acquire_execution``).
        """
        leased = with_changes(
            record,
            status="running",
            started_at=now,
            created_at=record.created_at or now,
            leased_by=owner,
            lease_until=lease_until,
            retry_at=None,
        )
        return self.create_execution(leased)

    def acquire_execution(
        self, execution_id: str, owner: str, now: datetime, lease_until: datetime
    ) -> ExecutionRecord | None:
        """queued → running, or running (lease lapsed) → running: take the lease, or None.

        Free means ``queued``, or ``running`` under a lease that lapsed before
        ``now`` (its listener died or stalled): that run counts as cut off, so
        ``attempt`` goes up, which fences the old holder out, and the cut-off
        attempt is kept in ``attempts``. Each case is one conditional
        ``find_one_and_update``.
        """
        lease = {"status": "running", "leased_by": owner, "lease_until": lease_until}
        with _converted():
            doc = self._executions.find_one_and_update(
                {"_id": execution_id, "status": "queued"},
                {"$set": {**lease, "started_at": now, "retry_at": None}},
                return_document=pymongo.ReturnDocument.AFTER,
            )
            if doc is not None:
                return ExecutionRecord.from_document(doc)
            stale = self._executions.find_one(
                {
                    "_id": execution_id,
                    "status": "running",
                    "$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}],
                }
            )
            if stale is None:
                return None
            cut_off = {
                "attempt": stale.get("attempt", 1),
                "status": "interrupted",
                "error": {
                    "type": "Interrupted",
                    "message": f"the run under {stale.get('leased_by')!r} was cut off",
                    "reason": "interrupted",
                },
                "started_at": stale.get("started_at"),
                "finished_at": None,
            }
            doc = self._executions.find_one_and_update(
                # The lease we read: a second listener taking over at once finds none.
                {
                    "_id": execution_id,
                    "status": "running",
                    "attempt": stale.get("attempt", 1),
                    "leased_by": stale.get("leased_by"),
                    "lease_until": stale.get("lease_until"),
                },
                {
                    "$set": {**lease, "started_at": now, "retry_at": None},
                    "$inc": {"attempt": 1},
                    "$push": {"attempts": cut_off},
                },
                return_document=pymongo.ReturnDocument.AFTER,
            )
        return None if doc is None else ExecutionRecord.from_document(doc)

    def renew_lease(self, lease: Lease, lease_until: datetime) -> Lease | None:
        """running → running: extend the lease; None if its holder lost it (stop the run)."""
        if not self._fenced_update(lease, {"$set": {"lease_until": lease_until}}):
            return None
        return dataclasses.replace(lease, until=lease_until)

    def finish_execution(self, lease: Lease, changes: dict[str, Any]) -> bool:
        """running → succeeded / failed / timed_out, only while ``lease`` holds; False if not.

        No read back: the caller knows the record it ran and these changes.
        """
        if changes.get("status") not in FINAL_STATUSES:
            raise ValueError(f"not a final status: {changes.get('status')!r}")
        with _converted():
            stored = ExecutionRecord.stored_changes(changes)
        if not self._fenced_update(lease, {"$set": {**stored, **_NO_LEASE}}):
            return False
        if self.releases_slots:
            self.release_slots_of(lease.execution_id)
        if self._keep_finished is not None:
            self._forget_oldest_finished(lease.execution_id)
        return True

    def retry_execution(
        self, lease: Lease, changes: dict[str, Any], previous: dict[str, Any]
    ) -> ExecutionRecord | None:
        """running → queued, ``attempt`` + 1 and the failed run kept in ``attempts``; fenced."""
        with _converted():
            stored = ExecutionRecord.stored_changes(changes)
            entry = ExecutionRecord.stored_changes({"attempts": previous})
        update = {
            "$set": {**stored, "status": "queued", **_NO_LEASE, **_NOT_PLACED},
            "$inc": {"attempt": 1},
            "$push": entry,
        }
        queued = self._fenced_update(lease, update, read_back=True)
        if queued is not None and self.releases_slots:
            self.release_slots_of(lease.execution_id)  # no longer placed: placed again later
        return queued

    def release_execution(self, lease: Lease) -> bool:
        """running → queued, the same attempt: the run could not start (no attempt spent)."""
        # Its message goes back to the queue now: the sweeper waits from here.
        update = {
            "$set": {
                "status": "queued",
                "started_at": None,
                "requeued_at": self._clock(),
                **_NO_LEASE,
            }
        }
        return bool(self._fenced_update(lease, update))

    def fail_queued_execution(
        self, execution_id: str, attempt: int, error: dict[str, Any]
    ) -> ExecutionRecord | None:
        """queued → failed: nothing will run it (never queued, function deleted, event lost).

        Only the attempt that was queued: a record another listener has leased, or
        queued again since, is left alone (None).
        """
        now = self._clock()
        with _converted():
            stored = ExecutionRecord.stored_changes({"error": error})
            doc = self._executions.find_one_and_update(
                {"_id": execution_id, "status": "queued", "attempt": attempt},
                {"$set": {"status": "failed", **stored, "finished_at": now, **_NO_LEASE}},
                return_document=pymongo.ReturnDocument.AFTER,
            )
        if doc is None:
            return None
        if self._keep_finished is not None:
            self._forget_oldest_finished(execution_id)
        return ExecutionRecord.from_document(doc)

    def fail_queued_executions_of(self, function_id: str, error: dict[str, Any]) -> int:
        """queued → failed for every queued execution of a deleted function; how many."""
        with _converted():
            stored = ExecutionRecord.stored_changes({"error": error})
            queued = [
                doc["_id"]
                for doc in self._executions.find(
                    {"function_id": function_id, "status": "queued"}, {"_id": 1}
                )
            ]
            result = self._executions.update_many(
                {"_id": {"$in": queued}, "status": "queued"},
                {"$set": {"status": "failed", **stored, "finished_at": self._clock()}},
            )
        if self._keep_finished is not None:
            for execution_id in queued:
                self._forget_oldest_finished(execution_id)
        return result.modified_count

    def mark_dead_lettered(self, execution_id: str, dead_letter_id: str) -> bool:
        """final → final with its dead letter named, once; False if named already or not final."""
        with _converted():
            result = self._executions.update_one(
                {
                    "_id": execution_id,
                    "status": {"$in": list(FINAL_STATUSES)},
                    "dead_letter_id": None,
                },
                {"$set": {"dead_letter_id": dead_letter_id}},
            )
        return bool(result.matched_count)

    def reopen_execution(self, event_id: str, function_id: str) -> ExecutionRecord | None:
        """final → queued with a fresh retry budget (a dead letter's replay).

        The finished run goes into ``attempts``; None when there is no finished
        record for (event, function), which the listener then creates or finds.
        """
        with _converted():
            doc = self._executions.find_one({"event_id": event_id, "function_id": function_id})
            if doc is None or doc.get("status") not in FINAL_STATUSES:
                return None
            previous = {key: doc.get(key) for key in _ATTEMPT_FIELDS}
            attempt = doc.get("attempt", 1) + 1
            doc = self._executions.find_one_and_update(
                {"_id": doc["_id"], "status": doc["status"], "attempt": doc.get("attempt", 1)},
                {
                    "$set": {
                        "status": "queued",
                        "attempt": attempt,
                        "first_attempt": attempt,
                        "dead_letter_id": None,
                        "retry_at": None,
                        "result": None,
                        "finished_at": None,
                        "requeued_at": self._clock(),  # the replay publishes its event now
                    },
                    "$push": {"attempts": previous},
                },
                return_document=pymongo.ReturnDocument.AFTER,
            )
        return None if doc is None else ExecutionRecord.from_document(doc)

    def undo_reopen(self, before: ExecutionRecord) -> bool:
        """queued → final again: a replay reopened ``before`` but its publish failed.

        Only while nothing has touched the reopened record since (still queued, at
        the attempt the reopening gave it).
        """
        with _converted():
            restored = ExecutionRecord.stored_changes(
                {key: getattr(before, key) for key in _REOPENED_FIELDS}
            )
            result = self._executions.update_one(
                {"_id": before.id, "status": "queued", "attempt": before.attempt + 1},
                {"$set": restored},
            )
        return bool(result.matched_count)

    def stranded_executions(
        self, now: datetime, queued_before: datetime, limit: int = 100
    ) -> list[ExecutionRecord]:
        """Records that may have nothing behind them: leases lapsed, or queued too long.

        ``running`` past its lease (its listener died, or dead-lettered the message
        and acked it), and ``queued`` since before ``queued_before`` (its retry
        message lost, or its event dropped) and not swept since. The sweeper puts
        each one's work back on the queue (``mark_swept`` first, so only one does).
        """
        not_requeued_since = {
            "$or": [{"requeued_at": None}, {"requeued_at": {"$lt": queued_before}}]
        }
        query = {
            "$or": [
                {"status": "running", "lease_until": {"$lt": now}, **not_requeued_since},
                {
                    "status": "queued",
                    "$and": [
                        {
                            "$or": [
                                {"retry_at": {"$lt": queued_before}},
                                {"retry_at": None, "created_at": {"$lt": queued_before}},
                            ]
                        },
                        not_requeued_since,
                    ],
                },
            ]
        }
        with _converted():
            docs = list(self._executions.find(query).sort("_id", ASCENDING).limit(limit))
        return [ExecutionRecord.from_document(doc) for doc in docs]

    def mark_swept(self, record: ExecutionRecord, now: datetime) -> bool:
        """Note that the sweeper puts this record's work back on the queue; False if another did.

        Keyed on the state the sweeper read (status, attempt, lease, when it was
        last requeued), so two sweepers never both publish, and a record that
        moved on is left alone. It sets ``requeued_at``, so the record is not
        sent again before ``queued_before`` passes it. A lapsed ``running`` record
        stays running: the listener that gets the work takes it over
        (``acquire_execution``).
        """
        condition = {**_as_read(record), "requeued_at": record.requeued_at}
        changes: dict[str, Any] = {"requeued_at": now}
        with _converted():
            result = self._executions.update_one(condition, {"$set": changes})
        return bool(result.matched_count)

    def fail_stranded(self, record: ExecutionRecord, error: dict[str, Any]) -> bool:
        """queued or running (lapsed) → failed: its work cannot be put back (event not kept).

        Keyed on the state the sweeper read, as ``mark_swept`` is.
        """
        condition = _as_read(record)
        with _converted():
            stored = ExecutionRecord.stored_changes({"error": error})
            changes = {"status": "failed", **stored, "finished_at": self._clock(), **_NO_LEASE}
            result = self._executions.update_one(condition, {"$set": changes})
        if result.matched_count and self._keep_finished is not None:
            self._forget_oldest_finished(record.id)
        return bool(result.matched_count)

    def _fenced_update(self, lease: Lease, update: dict[str, Any], read_back: bool = False) -> Any:
        """Apply ``update`` only while ``lease`` holds: running, this holder, this attempt."""
        fence = {
            "_id": lease.execution_id,
            "status": "running",
            "leased_by": lease.owner,
            "attempt": lease.attempt,
        }
        with _converted():
            if read_back:
                doc = self._executions.find_one_and_update(
                    fence, update, return_document=pymongo.ReturnDocument.AFTER
                )
                return None if doc is None else ExecutionRecord.from_document(doc)
            return self._executions.update_one(fence, update).matched_count > 0

    def _forget_oldest_finished(self, execution_id: str) -> None:
        """Note a finished execution; drop the oldest finished ones past ``keep_finished``."""
        assert self._keep_finished is not None
        with self._finished_lock:
            self._finished_order.append(execution_id)
            doomed = []
            while len(self._finished_order) > self._keep_finished:
                doomed.append(self._finished_order.popleft())
        for old in doomed:
            with _converted():
                # Only while still finished: a replay may have reopened it since.
                self._executions.delete_one({"_id": old, "status": {"$in": list(FINAL_STATUSES)}})

    def get_execution(self, execution_id: str) -> ExecutionRecord:
        with _converted():
            doc = self._executions.find_one({"_id": execution_id})
        if doc is None:
            raise NotFound(f"execution {execution_id!r} does not exist")
        return ExecutionRecord.from_document(doc)

    def list_executions(
        self, filters: dict[str, str], limit: int, marker: str | None = None
    ) -> Page:
        return self._page(self._executions, dict(filters), limit, marker, ExecutionRecord)

    # -- executions: placement on the cluster's hosts ---------------------

    def executions_since(
        self, function_id: str, since: datetime, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """The newest ``limit`` executions of the function made since then (the fields the
        metrics need), and whether there were more."""
        fields = {
            "status": 1,
            "error": 1,
            "duration_ms": 1,
            "cold_start": 1,
            "created_at": 1,
            "cpu_ms": 1,
            "peak_memory_mb": 1,
        }
        with _converted():
            docs = list(
                self._executions.find(
                    {"function_id": function_id, "created_at": {"$gte": since}}, fields
                )
                .sort("created_at", DESCENDING)
                .limit(limit + 1)
            )
        return docs[:limit], len(docs) > limit

    def place_execution(
        self, record: ExecutionRecord, host_id: str, router_id: str
    ) -> ExecutionRecord | None:
        """queued/running → the same, placed on ``host_id`` by ``router_id``; None if it moved.

        Keyed on the state the router read (status, attempt, lease), so a record
        that moved on meanwhile is left alone. ``placed_at`` is the catalogue
        server's clock (``$currentDate``). The router holds the host's slot for it
        first (``hold_slot``).
        """
        condition = _as_read(record)
        with _converted():
            doc = self._executions.find_one_and_update(
                condition,
                {
                    "$set": {"placed_on": host_id, "placed_by": router_id},
                    "$currentDate": {"placed_at": True},
                },
                return_document=pymongo.ReturnDocument.AFTER,
            )
        return None if doc is None else ExecutionRecord.from_document(doc)

    def unplace_execution(self, record: ExecutionRecord) -> bool:
        """Take back a placement ``place_execution`` made, while it is the one recorded."""
        condition = {
            "_id": record.id,
            "status": record.status,
            "attempt": record.attempt,
            "placed_on": record.placed_on,
            "placed_at": record.placed_at,
        }
        with _converted():
            result = self._executions.update_one(condition, {"$set": dict(_NOT_PLACED)})
        return bool(result.matched_count)

    def placements(self) -> list[Placement]:
        """Every slot held on a host: what a router needs to place one more, in one query.

        The slots in use on each host (and this router's share of them) and a
        function's placed count come from the same small collection (``slots``),
        so the cost does not grow with the executions stored.
        """
        with _converted():
            docs = list(self._slots.find({}))
        return [_placement(doc) for doc in docs]

    def hold_slot(
        self, execution_id: str, function_id: str, host_id: str, router_id: str
    ) -> Placement:
        """Take a slot of ``host_id`` for an execution, before it is placed there.

        Each hold is a document of its own, never another's overwritten, so a router
        that loses a race for a record (another placed it first) releases only what
        it took. ``placed_at`` is the server's clock, so every router ranks the slots
        of a function in the order the server applied them (``slots_held_before``).
        """
        with _converted():
            doc = self._slots.find_one_and_update(
                {"_id": new_id()},  # not self._ids: tests may fix those
                {
                    "$set": {
                        "execution_id": execution_id,
                        "function_id": function_id,
                        "host_id": host_id,
                        "router_id": router_id,
                    },
                    "$currentDate": {"placed_at": True},
                },
                upsert=True,
                return_document=pymongo.ReturnDocument.AFTER,
            )
        return _placement(doc)

    def release_slot(self, slot: Placement) -> None:
        """Give back a slot this router took: its placement was not made or taken back."""
        with _converted():
            self._slots.delete_one({"_id": slot.id})

    def release_slots_of(self, execution_id: str) -> None:
        """The execution holds no slot any more: its run ended or it waits for a retry."""
        with _converted():
            self._slots.delete_many({"execution_id": execution_id})

    def slots_held_before(self, slot: Placement) -> int:
        """How many slots of the function's other executions were taken no later than ``slot``."""
        query = {
            "function_id": slot.function_id,
            "placed_at": {"$lte": slot.placed_at},
            "execution_id": {"$ne": slot.execution_id},
        }
        with _converted():
            return self._slots.count_documents(query)

    def prune_slots(self, held_before: datetime) -> int:
        """Release the slots no placed unfinished execution holds any more; how many.

        A slot is left over when its execution ended by another way than its run's
        finish (the sweeper, a deleted function), or a process died between two
        writes. One taken since ``held_before`` is left alone: its placement may
        still be on the way. Each check is a read by ``_id``.
        """
        pruned = 0
        with _converted():
            for slot in list(self._slots.find({"placed_at": {"$lt": held_before}})):
                doc = self._executions.find_one(
                    {"_id": slot.get("execution_id")}, {"status": 1, "placed_on": 1}
                )
                if (
                    doc is not None
                    and doc.get("status") in ("queued", "running")
                    and doc.get("placed_on") == slot.get("host_id")
                ):
                    continue
                result = self._slots.delete_one(
                    {"_id": slot["_id"], "placed_at": slot["placed_at"]}
                )
                pruned += result.deleted_count
        return pruned

    def placements_on(self, host_ids: Iterable[str]) -> list[tuple[str, str | None]]:
        """(host, router) of every unfinished execution placed on these hosts."""
        query = {"status": _UNFINISHED, "placed_on": {"$in": list(host_ids)}}
        with _converted():
            docs = self._executions.find(query, {"placed_on": 1, "placed_by": 1})
            return [(doc["placed_on"], doc.get("placed_by")) for doc in docs]

    def lapse_leases_of(self, lease_owner: str, now: datetime) -> int:
        """running → running with the lease ending ``now``: its host was marked lost.

        The sweeper then finds them at its next pass and publishes their events
        again; the host that gets one takes it over as the next attempt (an
        ``interrupted`` one, which spends no retry). How many.
        """
        if not lease_owner:
            return 0
        with _converted():
            result = self._executions.update_many(
                {"status": "running", "leased_by": lease_owner, "lease_until": {"$gt": now}},
                {"$set": {"lease_until": now}},
            )
        return result.modified_count

    # -- hosts and routers: the cluster's registry ---------------------------

    def register_host(self, record: HostRecord) -> HostRecord:
        """(new) or any → active: a host says it is here, with what it has; the stored record.

        A host runs one worker, so a registration under a new ``lease_owner`` (the
        worker restarted: killed, crashed, rebooted) ends the leases its earlier
        worker's runs still hold (``lapse_leases_of``): the sweeper puts them back at
        its next pass instead of after the whole lease.
        """
        now = self._clock()
        record = dataclasses.replace(
            record,
            state="active",
            registered_at=now,
            heartbeat_at=now,
            lost_at=None,
            retired_at=None,
        )
        with _converted():
            before = self._hosts.find_one_and_replace(
                {"_id": record.id},
                record.to_document(),
                upsert=True,
                return_document=pymongo.ReturnDocument.BEFORE,
            )
        earlier = (before or {}).get("lease_owner")
        if earlier and earlier != record.lease_owner:
            self.lapse_leases_of(earlier, now)
        return record

    def heartbeat_host(self, host_id: str, beat: HostBeat) -> bool:
        """active/draining → the same, with this heartbeat's figures; False if it is lost.

        A lost host does not come back by heartbeating: its queue was emptied and
        its runs handed over, so it must ``register_host`` again, knowingly.
        """
        changes = {
            "free_memory_mb": beat.free_memory_mb,
            "idle_memory_mb": beat.idle_memory_mb,
            "free_slots": beat.free_slots,
            "running": beat.running,
            "warm": list(beat.warm),
            "heartbeat_at": self._clock(),
        }
        with _converted():
            result = self._hosts.update_one(
                {"_id": host_id, "state": {"$in": ["active", "draining"]}}, {"$set": changes}
            )
        return bool(result.matched_count)

    def drain_host(self, host_id: str) -> bool:
        """active → draining: routers place nothing more on it; False if it was not active."""
        with _converted():
            result = self._hosts.update_one(
                {"_id": host_id, "state": "active"}, {"$set": {"state": "draining"}}
            )
        return bool(result.matched_count)

    def retire_host(self, host_id: str) -> bool:
        """draining/lost → retired: the controller deleted the host's server; False if the
        host was in neither state.

        Only from those two: a draining host placed nothing more and ran nothing when
        its server went, and a lost one had its work handed over; an active host whose
        server is deleted must first be found lost, so its runs are handed over. A
        retired host stays listed as history, is never placed on, marked lost or
        counted by the controller, and comes back only by registering again.
        """
        with _converted():
            result = self._hosts.update_one(
                {"_id": host_id, "state": {"$in": ["draining", "lost"]}},
                {"$set": {"state": "retired", "retired_at": self._clock()}},
            )
        return bool(result.matched_count)

    def mark_lost_hosts(self, heartbeat_before: datetime) -> list[HostRecord]:
        """active/draining → lost for every host silent since before ``heartbeat_before``.

        Each is one write keyed on the heartbeat read, so of two routers only one
        marks a host lost (and recovers its work), and a host whose heartbeat came
        in between is left alone. The hosts this call marked.
        """
        query = {
            "state": {"$in": ["active", "draining"]},
            "heartbeat_at": {"$lt": heartbeat_before},
        }
        marked = []
        with _converted():
            for doc in list(self._hosts.find(query)):
                now = self._clock()
                result = self._hosts.update_one(
                    {"_id": doc["_id"], "state": doc["state"], "heartbeat_at": doc["heartbeat_at"]},
                    {"$set": {"state": "lost", "lost_at": now}},
                )
                if result.matched_count:
                    marked.append(
                        HostRecord.from_document({**doc, "state": "lost", "lost_at": now})
                    )
        return marked

    def get_host(self, host_id: str) -> HostRecord:
        with _converted():
            doc = self._hosts.find_one({"_id": host_id})
        if doc is None:
            raise NotFound(f"host {host_id!r} is not registered")
        return HostRecord.from_document(doc)

    def list_hosts(self, state: str | None = None) -> list[HostRecord]:
        """Every registered host (or those in ``state``), by id."""
        query = {} if state is None else {"state": state}
        with _converted():
            docs = list(self._hosts.find(query).sort("_id", ASCENDING))
        return [HostRecord.from_document(doc) for doc in docs]

    def heartbeat_router(self, router_id: str) -> None:
        """A router says it is live; the first call registers it."""
        with _converted():
            self._routers.replace_one(
                {"_id": router_id},
                RouterRecord(router_id, heartbeat_at=self._clock()).to_document(),
                upsert=True,
            )

    def live_routers(self, heartbeat_since: datetime) -> list[str]:
        """Ids of the routers heard from since ``heartbeat_since``, sorted."""
        with _converted():
            docs = self._routers.find({"heartbeat_at": {"$gte": heartbeat_since}}, {"_id": 1})
            return sorted(doc["_id"] for doc in docs)

    def remove_router(self, router_id: str) -> None:
        """A router stopping cleanly: the others take its share at once."""
        with _converted():
            self._routers.delete_one({"_id": router_id})

    def oldest_queued_at(self, now: datetime) -> datetime | None:
        """When the oldest execution still waiting to run was created; None if none waits.

        Executions queued for a retry later than ``now`` are not waiting yet.
        """
        query = {
            "status": "queued",
            "$or": [{"retry_at": None}, {"retry_at": {"$lte": now}}],
        }
        with _converted():
            docs = list(
                self._executions.find(query, {"created_at": 1}).sort("created_at", 1).limit(1)
            )
        return docs[0].get("created_at") if docs else None

    # -- scaling events: the controller's decisions ---------------------------

    def add_scaling_event(self, record: ScalingEvent) -> ScalingEvent:
        """Store one of the controller's decisions; ``id`` and ``at`` are given if empty."""
        now = record.at or self._clock()
        record = dataclasses.replace(record, id=record.id or self._dead_letter_id(now), at=now)
        with _converted():
            self._scaling_events.insert_one(record.to_document())
        return record

    def list_scaling_events(self, limit: int = 100) -> list[ScalingEvent]:
        """The controller's latest decisions, newest first."""
        with _converted():
            docs = list(self._scaling_events.find({}).sort("_id", pymongo.DESCENDING).limit(limit))
        return [ScalingEvent.from_document(doc) for doc in docs]

    def last_scaled_at(self, actions: Iterable[str]) -> datetime | None:
        """When the controller last applied one of ``actions`` without an error (the cooldown)."""
        query = {"action": {"$in": list(actions)}, "error": None}
        with _converted():
            docs = list(self._scaling_events.find(query).sort("_id", pymongo.DESCENDING).limit(1))
        return docs[0]["at"] if docs else None

    # -- schedules (listener.schedule) --------------------------------------

    def add_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        """Store a new schedule; ``id`` and ``created_at`` are given if empty."""
        now = self._clock()
        record = dataclasses.replace(
            record, id=record.id or self._ids(), created_at=record.created_at or now
        )
        with _converted():
            self._schedules.insert_one(record.to_document())
        return record

    def list_schedules(self, function_id: str) -> list[ScheduleRecord]:
        """A function's schedules, oldest first."""
        with _converted():
            docs = list(self._schedules.find({"function_id": function_id}).sort("created_at", 1))
        return [ScheduleRecord.from_document(doc) for doc in docs]

    def delete_schedule(self, function_id: str, schedule_id: str) -> None:
        """Remove one of the function's schedules; ``NotFound`` if it has no such one."""
        with _converted():
            result = self._schedules.delete_one({"_id": schedule_id, "function_id": function_id})
        if not result.deleted_count:
            raise NotFound(f"schedule {schedule_id!r} does not exist")

    def due_schedules(self, now: datetime, limit: int = 100) -> list[ScheduleRecord]:
        """The schedules whose next tick is at or before ``now``, the most overdue first."""
        query = {"next_fire_at": {"$lte": now}}
        with _converted():
            docs = list(self._schedules.find(query).sort("next_fire_at", 1).limit(limit))
        return [ScheduleRecord.from_document(doc) for doc in docs]

    def advance_schedule(
        self,
        record: ScheduleRecord,
        next_fire_at: datetime | None,
        fired_at: datetime | None,
        missed: int = 0,
        missed_at: datetime | None = None,
    ) -> bool:
        """Move the schedule on from the tick ``record`` waited for; False if another did.

        ``fired_at`` is the tick fired now (None when none was), ``missed`` how many
        passed unfired, the latest at ``missed_at``.
        """
        changes: dict[str, Any] = {"next_fire_at": next_fire_at}
        if fired_at is not None:
            changes["last_fired_at"] = fired_at
        if missed:
            changes["last_missed_at"] = missed_at
        update: dict[str, Any] = {"$set": changes}
        if missed:
            update["$inc"] = {"missed": missed}
        with _converted():
            result = self._schedules.update_one(
                {"_id": record.id, "next_fire_at": record.next_fire_at}, update
            )
        return bool(result.matched_count)

    # -- dead letters ------------------------------------------------------

    def add_dead_letter(self, record: DeadLetterRecord) -> DeadLetterRecord:
        """Store a dead letter; ``id`` and ``created_at`` are given if empty."""
        now = record.created_at or self._clock()
        record = dataclasses.replace(
            record, id=record.id or self._dead_letter_id(now), created_at=now
        )
        with _converted():
            self._deadletters.insert_one(record.to_document())
        return record

    def dead_letter_execution(
        self, execution_id: str, record: DeadLetterRecord
    ) -> DeadLetterRecord | None:
        """Store a dead letter and name it on its finished execution; None if one was named.

        Stored first, so an execution never names a dead letter that is not
        there; then named once (``mark_dead_lettered``), so of two listeners that
        both find its last attempt failed only one dead-letters it (the other's
        copy is removed again).
        """
        stored = self.add_dead_letter(record)
        if self.mark_dead_lettered(execution_id, stored.id):
            return stored
        with _converted():
            self._deadletters.delete_one({"_id": stored.id})  # another listener's is the one
        return None

    def _dead_letter_id(self, now: datetime) -> str:
        # Time first and a counter for the same millisecond: ids sort oldest first.
        return f"{now:%Y%m%dT%H%M%S%f}-{next(_SEQUENCE):08d}-{self._ids()[:8]}"

    def get_dead_letter(self, dead_letter_id: str) -> DeadLetterRecord:
        with _converted():
            doc = self._deadletters.find_one({"_id": dead_letter_id})
        if doc is None:
            raise NotFound(f"dead letter {dead_letter_id!r} does not exist")
        return DeadLetterRecord.from_document(doc)

    def list_dead_letters(
        self, filters: dict[str, Any], limit: int, marker: str | None = None
    ) -> Page:
        return self._page(self._deadletters, dict(filters), limit, marker, DeadLetterRecord)

    def mark_dead_letter_replayed(self, dead_letter_id: str) -> DeadLetterRecord:
        """Set ``replayed_at`` once; ``Conflict`` if it was replayed already."""
        with _converted():
            doc = self._deadletters.find_one_and_update(
                {"_id": dead_letter_id, "replayed_at": None},
                {"$set": {"replayed_at": self._clock()}},
                return_document=pymongo.ReturnDocument.AFTER,
            )
        if doc is None:
            current = self.get_dead_letter(dead_letter_id)  # NotFound if it does not exist
            raise Conflict(f"dead letter {dead_letter_id!r} was replayed at {current.replayed_at}")
        return DeadLetterRecord.from_document(doc)

    # -- helpers -----------------------------------------------------------

    # -- batches (listener.batch) ------------------------------------------

    def batching_functions(self) -> list[FunctionRecord]:
        """The functions whose events run in batches (``batch_size`` set)."""
        with _converted():
            docs = list(self._functions.find({"batch_size": {"$gte": 1}}))
        return [FunctionRecord.from_document(doc) for doc in docs]

    def claim_batch(
        self, function_id: str, batch_id: str, members: list[tuple[str, Any]]
    ) -> dict[str, str]:
        """Make each (event id, data) of ``members`` a member of batch ``batch_id``,
        unless an earlier batch of the function has it; the batch each event is in.

        The member's ``_id`` is (function, event), so an event is in one batch
        only, whoever claims it and however often its message is delivered. The
        members keep their data, so whoever finds a batch without its record (its
        listener died between the claim and the record) can still run it.
        """
        now = self._clock()
        docs = [
            {
                "_id": _member_id(function_id, event_id),
                "function_id": function_id,
                "batch_id": batch_id,
                "position": position,
                "event_id": event_id,
                "data": data,
                "created_at": now,
            }
            for position, (event_id, data) in enumerate(members)
        ]
        with _converted():
            try:
                self._batch_members.insert_many(docs, ordered=False)
                return {event_id: batch_id for event_id, _data in members}
            except pymongo.errors.BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if any(error.get("code") != _DUPLICATE_KEY for error in errors):
                    raise
            # Some were claimed before: who holds each is read below.
            held = {
                doc["event_id"]: doc["batch_id"]
                for doc in self._batch_members.find(
                    {"_id": {"$in": [doc["_id"] for doc in docs]}},
                    {"event_id": 1, "batch_id": 1},
                )
            }
        missing = [event_id for event_id, _data in members if event_id not in held]
        if missing:
            raise PermanentError(f"the catalogue refused the batch members {missing[:5]}")
        return held

    def reclaim_batch(
        self, function_id: str, batch_id: str, moves: list[tuple[str, str]]
    ) -> dict[str, str]:
        """Move each (event id, from batch) to batch ``batch_id`` if it is still in that
        one; the batch each event is in after.

        For an event whose batch finished without it: a reader that found that
        batch while its claims were still being written ran it with part of them.
        The move is conditional, so of two that try it, one moves the event.
        """
        with _converted():
            for position, (event_id, old) in enumerate(moves):
                self._batch_members.update_one(
                    {"_id": _member_id(function_id, event_id), "batch_id": old},
                    {"$set": {"batch_id": batch_id, "position": position}},
                )
            return {
                doc["event_id"]: doc["batch_id"]
                for doc in self._batch_members.find(
                    {"_id": {"$in": [_member_id(function_id, e) for e, _old in moves]}},
                    {"event_id": 1, "batch_id": 1},
                )
            }

    def batch_members(self, batch_id: str) -> list[tuple[str, Any]]:
        """The (event id, data) of a batch's members, in the order they were claimed."""
        with _converted():
            docs = list(self._batch_members.find({"batch_id": batch_id}).sort("position", 1))
        return [(doc["event_id"], doc.get("data")) for doc in docs]

    def prune_batch_members(self, created_before: datetime) -> int:
        """Forget members claimed before then: their messages were acked long ago."""
        with _converted():
            return self._batch_members.delete_many(
                {"created_at": {"$lt": created_before}}
            ).deleted_count

    @staticmethod
    def _page(
        collection: Any,
        query: dict[str, Any],
        limit: int,
        marker: str | None,
        record_type: Any,
    ) -> Page:
        if marker:
            query["_id"] = {"$gt": marker}
        with _converted():
            docs = list(collection.find(query).sort("_id", ASCENDING).limit(limit + 1))
        items = [record_type.from_document(doc) for doc in docs[:limit]]
        next_marker = items[-1].id if len(docs) > limit else None
        return Page(items, next_marker)


def _as_read(record: ExecutionRecord) -> dict[str, Any]:
    """The condition that a stored execution is still in the state ``record`` was read in."""
    return {
        "_id": record.id,
        "status": record.status,
        "attempt": record.attempt,
        "leased_by": record.leased_by,
        "lease_until": record.lease_until,
    }


def _member_id(function_id: str, event_id: str) -> str:
    return f"{function_id}:{event_id}"


def _version_id(function_id: str, version: int) -> str:
    return f"{function_id}:v{version}"


def _published(doc: dict[str, Any]) -> PublishedVersion:
    return PublishedVersion(
        FunctionRecord.from_document(doc["function"]),
        description=doc.get("description") or "",
        published_at=doc.get("published_at"),
    )


def _code_fields(info: PackageInfo) -> dict[str, Any]:
    return {
        "code_sha256": info.sha256,
        "code_size": info.size,
        "code_filename": info.filename,
    }


# FerretDB on SQLite reports a unique index violated by an update as InternalError
# (code 1) with SQLite's own text, where MongoDB says DuplicateKey (11000).
_UNIQUE_VIOLATION = "UNIQUE constraint failed"
_DUPLICATE_KEY = 11000
# A server going down fails the operations in flight: MongoDB with these codes
# (InterruptedAtShutdown, ShutdownInProgress, InterruptedDueToReplStateChange), FerretDB
# with InternalError "context canceled". Either is gone once the server is back.
_SHUTTING_DOWN = frozenset({91, 11600, 11602})
_FERRETDB_CANCELLED = "context canceled"


class _converted:
    """Turn pymongo's and bson's failures into our own errors at the seam.

    Connection, server-selection and timeout failures, and writes the server labels
    retryable, may go away: ``TransientError``. Any
    other pymongo or bson error (a document MongoDB cannot store, such as a key with
    a NUL byte; an operation the server refuses) happens again on every retry:
    ``PermanentError``, so the listener dead-letters rather than dies or loops.
    ``DuplicateKeyError`` passes through (FerretDB's form of it too): callers
    turn it into ``Conflict``.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> bool:
        if exc is None or isinstance(exc, DuplicateKeyError):
            return False
        if isinstance(exc, pymongo.errors.OperationFailure) and _UNIQUE_VIOLATION in str(exc):
            raise DuplicateKeyError(str(exc), 11000, exc.details) from exc
        if isinstance(exc, pymongo.errors.OperationFailure) and (
            exc.code in _SHUTTING_DOWN or _FERRETDB_CANCELLED in str(exc)
        ):
            raise TransientError(f"catalogue unavailable: {exc}") from exc
        if isinstance(
            exc,
            (
                pymongo.errors.ConnectionFailure,
                pymongo.errors.ServerSelectionTimeoutError,
            ),
        ) or (
            isinstance(exc, PyMongoError)
            and (exc.timeout or exc.has_error_label("RetryableWriteError"))
        ):
            raise TransientError(f"catalogue unavailable: {exc}") from exc
        if isinstance(exc, (bson.errors.BSONError, PyMongoError)):
            raise PermanentError(f"catalogue refused the operation: {exc}") from exc
        return False


def connect(
    mongo_url: str | None,
    database: str,
    keep_finished: int | None = None,
    sole_writer: bool = False,
) -> Catalogue:
    """A catalogue on the real MongoDB at ``mongo_url``, or in memory when it is None.

    The in-memory catalogue (mongomock) lives inside this process: nothing
    survives a restart, and other processes cannot see it. It keeps at most
    ``keep_finished`` finished executions (None: all), so its memory stays flat.
    ``sole_writer``: no other process writes functions to this server's database
    (``standalone`` on its own FerretDB), so matches may be cached here as they
    are in memory.
    """
    if mongo_url:
        client: Any = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000, tz_aware=True)
        catalogue = Catalogue(client[database], cache_matches=sole_writer)
        try:
            catalogue.ensure_indexes()
        except BaseException:
            # Its monitor threads would otherwise outlive a caller that tries again.
            client.close()
            raise
        return catalogue
    else:
        from lambda_os.embedded import embedded_database

        db = embedded_database(database, indexed=COLLECTIONS)
        # Every write goes through this one object, so it may cache matches.
        catalogue = Catalogue(db, cache_matches=True, keep_finished=keep_finished, kind="memory")
    catalogue.ensure_indexes()
    return catalogue


def iter_all(list_page: Callable[[str | None], Page]) -> Iterable[Any]:
    """Walk every page of a listing."""
    marker: str | None = None
    while True:
        page = list_page(marker)
        yield from page.items
        if page.marker is None:
            return
        marker = page.marker
