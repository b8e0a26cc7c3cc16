"""The records that cross every seam: a function, one execution of it, and a dead letter.

They are frozen dataclasses so a record handed to the provisioner or the API
cannot change under it; the catalogue converts them to and from MongoDB
documents (``_id`` holds ``id``) and ``to_api`` gives their JSON form.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar

from lambda_os.storable import from_stored, to_stored

EXECUTION_STATUSES = ("queued", "running", "succeeded", "failed", "timed_out")
FINAL_STATUSES = frozenset({"succeeded", "failed", "timed_out"})


def execution_id_for(event_id: str, function_id: str) -> str:
    """The id of the one execution of ``function_id`` on ``event_id``.

    Derived, not drawn: a redelivered event computes the id its execution already
    has, so the primary key alone keeps one record per (event, function), on
    MongoDB and in memory alike, with no unique index to check on every insert.
    """
    digest = hashlib.sha256(f"{event_id}\0{function_id}".encode()).hexdigest()
    return digest[:32]


def utcnow() -> datetime:
    """Now, in UTC, truncated to milliseconds as MongoDB stores it."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso(value: datetime | None) -> str | None:
    """An ISO-8601 UTC timestamp with a ``Z``, or None."""
    if value is None:
        return None
    if value.tzinfo is None:  # pymongo and mongomock hand back naive UTC datetimes
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_R = TypeVar("_R", bound="Stored")


def with_changes(record: _R, **changes: Any) -> _R:
    """``dataclasses.replace(record, **changes)``, without running ``__init__`` again.

    The records keep their fields in ``__dict__`` and have no ``__post_init__``,
    so a copy of that with the changes is the record ``replace`` would build; it
    costs a tenth as much, and the event path makes two per execution.
    """
    unknown = changes.keys() - _field_names(type(record))
    if unknown:
        raise TypeError(f"{type(record).__name__} has no fields {sorted(unknown)}")
    copy = object.__new__(type(record))
    copy.__dict__.update(record.__dict__)
    copy.__dict__.update(changes)
    return copy


class Stored:
    """The MongoDB form of a record dataclass: ``_id`` holds ``id``.

    Keys a document has that the record does not know are ignored, so documents
    written by a newer version of the platform still load. The ``free_form``
    fields hold whatever JSON a function or an event brought: they are stored
    in ``lambda_os.storable``'s form and read back as they were, so every
    backend, strict MongoDB or lenient mongomock, keeps the same document.
    """

    free_form: ClassVar[tuple[str, ...]] = ()

    def to_document(self) -> dict[str, Any]:
        """The document to store: the fields as they are, not deep-copied.

        Every store copies what it is given (pymongo encodes it, mongomock copies
        it), so a deep copy here (``dataclasses.asdict``) only cost time on every
        write of the event path. ``storable.NotStorable`` if a free-form field
        has no stored form.
        """
        doc = {"_id": self.id}  # type: ignore[attr-defined]
        for name in _field_names(type(self)):
            if name != "id":
                doc[name] = getattr(self, name)
        for name in self.free_form:
            doc[name] = to_stored(doc[name])
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Self:
        known = _field_names(cls)
        values = {k: v for k, v in doc.items() if k in known}
        for name in cls.free_form:
            if name in values:
                values[name] = from_stored(values[name])
        values["id"] = doc["_id"]
        return cls(**values)

    @classmethod
    def stored_changes(cls, changes: dict[str, Any]) -> dict[str, Any]:
        """The fields of a ``$set`` (or of a ``$push`` of one entry) as the document takes them.

        An update writes fields without ``to_document``; this gives its free-form
        ones the same stored form. A pushed entry is encoded as a value of its own,
        which is the form it takes in the list unless it is a list itself (it would
        be tagged); and a modifier such as ``$each`` would be escaped like any key.
        ``storable.NotStorable`` as for ``to_document``.
        """
        if not any(name in changes for name in cls.free_form):
            return changes
        return {
            name: to_stored(value) if name in cls.free_form else value
            for name, value in changes.items()
        }


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


@dataclass(frozen=True)
class FunctionRecord(Stored):
    """A registered function: its configuration and a pointer to its code package."""

    id: str
    name: str
    runtime: str
    event_source: str
    event_type: str
    owner: str
    handler: str = "main.handler"
    memory_mb: int = 128
    timeout_s: int = 30
    environment: dict[str, str] = field(default_factory=dict)
    description: str = ""
    network: bool = False
    max_retries: int = 2
    concurrency: int = 10
    # Set: the function's events are gathered and run as one execution of a list
    # (``listener.batch``), up to this many, or what came within the window.
    batch_size: int | None = None
    batch_window_s: float = 1.0
    version: int = 1
    code_sha256: str = ""
    code_size: int = 0
    code_filename: str = "main.py"
    package_id: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def to_api(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("package_id")
        out["created_at"] = iso(self.created_at)
        out["updated_at"] = iso(self.updated_at)
        return out


@dataclass(frozen=True)
class ExecutionRecord(Stored):
    """One run of one function version on one event, with its outcome.

    ``event_id`` and ``function_id`` together name the execution uniquely, so a
    redelivered event finds the record it already has instead of making another.

    ``attempt`` counts the runs; ``attempts`` keeps what each earlier run left
    (status, error, timings) when it was retried or cut off. ``first_attempt`` is
    where the current retry budget starts (a replay from the dead letters starts
    a new one). ``lease_until`` and ``leased_by`` say which listener runs it now
    and until when; ``requeued_at`` when its work last went back on the queue
    (a release, a replay, the sweeper), which the sweeper waits from.
    ``placed_on`` names the host whose queue holds its invocation (cluster
    placement only), ``placed_by`` the router that put it there and ``placed_at``
    when, by the catalogue server's clock. ``reply_to`` and ``correlation_id`` are
    where the publisher of its event wanted the answer, kept for a run the sweeper
    starts again. Those eight stay out of the API. ``alias`` names the alias the
    event or invocation ran the function through (``function_version`` is then the
    version the alias chose); None when it named none.
    """

    id: str
    function_id: str
    function_version: int
    event_id: str
    event_source: str = ""
    event_type: str = ""
    event: Any = None
    status: str = "queued"
    result: Any = None
    error: dict[str, Any] | None = None
    logs: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    cold_start: bool | None = None
    host: str | None = None
    cpu_ms: float | None = None
    peak_memory_mb: float | None = None
    # A batch's execution (``listener.batch``): the ids of its events, in the order of ``event``.
    batch_events: list[str] | None = None
    attempt: int = 1
    attempts: list[dict[str, Any]] = field(default_factory=list)
    first_attempt: int = 1
    retry_at: datetime | None = None
    dead_letter_id: str | None = None
    lease_until: datetime | None = None
    leased_by: str | None = None
    requeued_at: datetime | None = None
    placed_on: str | None = None
    placed_by: str | None = None
    placed_at: datetime | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    alias: str | None = None

    free_form = ("event", "result", "error", "attempts")

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def awaiting_retry(self) -> bool:
        """Queued again after a failed attempt, for the retry message in a delay queue."""
        return self.status == "queued" and self.retry_at is not None

    def to_api(self, include_logs: bool = True) -> dict[str, Any]:
        """The JSON form; nested values are shared with the record, not copied (read-only use)."""
        out = {name: getattr(self, name) for name in _API_EXECUTION_FIELDS}
        for key in ("created_at", "started_at", "finished_at", "retry_at"):
            out[key] = iso(getattr(self, key))
        out["attempts"] = [_iso_values(entry) for entry in self.attempts]
        if not include_logs:
            out.pop("logs")
        return out


# In declaration order, without what stays internal (the lease, the sweep, the retry
# budget's start, the placement, where the answer goes).
_INTERNAL_EXECUTION_FIELDS = frozenset(
    {
        "lease_until",
        "leased_by",
        "first_attempt",
        "requeued_at",
        "placed_on",
        "placed_by",
        "placed_at",
        "reply_to",
        "correlation_id",
    }
)
_API_EXECUTION_FIELDS = tuple(
    f.name for f in dataclasses.fields(ExecutionRecord) if f.name not in _INTERNAL_EXECUTION_FIELDS
)

DEAD_LETTER_KINDS = ("malformed", "retries exhausted", "internal error")


@dataclass(frozen=True)
class DeadLetterRecord(Stored):
    """A message the listener gave up on, kept so an operator can read and replay it.

    ``body`` is the message body as text (``body_encoding`` ``utf-8``) or, when it
    is not UTF-8, as base64; at most ``MAX_DEAD_LETTER_BODY_BYTES`` of it are kept
    (``body_truncated`` says so). ``kind`` is one of ``DEAD_LETTER_KINDS``.
    """

    id: str
    kind: str
    reason: str
    body: str = ""
    body_encoding: str = "utf-8"
    body_size: int = 0
    body_truncated: bool = False
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    event_id: str | None = None
    function_id: str | None = None
    execution_id: str | None = None
    queue: str = ""
    created_at: datetime | None = None
    replayed_at: datetime | None = None

    def to_api(self, include_body: bool = True) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["created_at"] = iso(self.created_at)
        out["replayed_at"] = iso(self.replayed_at)
        if not include_body:
            out.pop("body")
        return out


def _iso_values(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in entry.items()}


@dataclass(frozen=True)
class Lease:
    """A listener's hold on one running execution: the fencing token of every write by its run.

    ``attempt`` is part of it: a takeover raises the attempt, so even a holder
    with the same name (a listener that took the record back later) cannot write
    with a token from an earlier run.
    """

    execution_id: str
    owner: str
    attempt: int
    until: datetime

    @classmethod
    def of(cls, record: ExecutionRecord) -> Lease:
        if record.status != "running" or record.leased_by is None or record.lease_until is None:
            raise ValueError(f"execution {record.id} is {record.status}, not leased")
        return cls(record.id, record.leased_by, record.attempt, record.lease_until)


HOST_STATES = ("active", "draining", "lost", "retired")


@dataclass(frozen=True)
class HostRecord(Stored):
    """One host that runs functions for the cluster: what it has, and what it said last.

    ``queue`` is its own invocation queue; ``lease_owner`` the name its runs take
    leases under, so the executions of a lost host can be found. ``slots_total``
    and ``memory_total_mb`` are fixed at registration; the ``free_*``,
    ``idle_memory_mb`` (held by idle containers, given back when needed), ``running``
    and ``warm`` (``function_id:version`` of its warm containers) fields are its
    last heartbeat's. ``state`` is ``active`` (routers place on it), ``draining``
    (it finishes what it has, routers place nothing more) or ``lost`` (it missed
    its heartbeats; it must register again to come back) or ``retired`` (the
    controller deleted its server: kept as history, judged by no one).
    """

    id: str
    queue: str
    server_id: str | None = None
    state: str = "active"
    memory_total_mb: int = 0
    slots_total: int = 0
    free_memory_mb: int = 0
    idle_memory_mb: int = 0
    free_slots: int = 0
    running: int = 0
    warm: list[str] = field(default_factory=list)
    lease_owner: str = ""
    registered_at: datetime | None = None
    heartbeat_at: datetime | None = None
    lost_at: datetime | None = None
    retired_at: datetime | None = None

    def to_api(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("registered_at", "heartbeat_at", "lost_at", "retired_at"):
            out[key] = iso(getattr(self, key))
        return out


@dataclass(frozen=True)
class RouterRecord(Stored):
    """A live router (a cluster-mode listener): routers split every host's slots among them."""

    id: str
    heartbeat_at: datetime | None = None


@dataclass(frozen=True)
class HostBeat:
    """What a host says in each heartbeat: what it has free, what runs, what is warm."""

    free_memory_mb: int
    free_slots: int
    running: int
    warm: tuple[str, ...] = ()
    idle_memory_mb: int = 0


@dataclass(frozen=True)
class ScheduleRecord(Stored):
    """A function's schedule: a cron expression in a time zone, or a rate, and its next tick.

    ``next_fire_at`` is the tick the schedule waits for. The listener whose write
    moves it on (one conditional write: of two, one wins) fired that tick first;
    the tick's event has an id of its own (``tick_event_id``), so a tick fired twice
    still runs its function once. ``missed`` counts the ticks that passed while no
    listener ran (reported, never fired late in a burst), ``last_missed_at`` the
    latest of them. ``start_at`` is a rate's origin.
    """

    id: str
    function_id: str
    owner: str
    cron: str | None = None
    timezone: str = "UTC"
    rate_s: int | None = None
    start_at: datetime | None = None
    next_fire_at: datetime | None = None
    last_fired_at: datetime | None = None
    missed: int = 0
    last_missed_at: datetime | None = None
    created_at: datetime | None = None

    def to_api(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("start_at", "next_fire_at", "last_fired_at", "last_missed_at", "created_at"):
            out[key] = iso(getattr(self, key))
        return out


# Lower case, a letter first: never all digits, so an alias cannot pass for a version number.
ALIAS_NAME = re.compile(r"[a-z][a-z0-9-]{0,63}")
ALIAS_NAME_RULE = "1-64 of a-z 0-9 -, beginning with a letter"
# What a published version's ``configuration`` leaves out: who and what the function is,
# its code (given apart) and bookkeeping. Every other field is how a run of it runs.
_NOT_CONFIGURATION = frozenset(
    {
        "id",
        "owner",
        "name",
        "description",
        "event_source",
        "event_type",
        "version",
        "code_sha256",
        "code_size",
        "code_filename",
        "created_at",
        "updated_at",
    }
)


@dataclass(frozen=True)
class PublishedVersion:
    """A revision of a function frozen under its number: its code and configuration as published.

    ``function`` is the function record as it was at that revision (its package
    included), which is what a run of the version runs. The number is the
    revision's own ``FunctionRecord.version``, so an execution's
    ``function_version`` names the published version it ran. Which events reach
    the function stays the current record's business (``event_source`` and
    ``event_type`` of the version are not used), so they are not part of its
    ``configuration``.
    """

    function: FunctionRecord
    description: str = ""
    published_at: datetime | None = None

    @property
    def version(self) -> int:
        return self.function.version

    def to_api(self) -> dict[str, Any]:
        function = self.function.to_api()
        return {
            "function_id": self.function.id,
            "version": self.version,
            "description": self.description,
            "published_at": iso(self.published_at),
            "code_sha256": self.function.code_sha256,
            "code_size": self.function.code_size,
            "configuration": {k: v for k, v in function.items() if k not in _NOT_CONFIGURATION},
        }


@dataclass(frozen=True)
class AliasRecord(Stored):
    """A name (``live``, ``staging``) for one of a function's published versions, or two.

    With ``additional_version``, that share (``additional_weight``, in [0, 1)) of
    the runs goes to it and the rest to ``version``: which one an (event,
    function) pair gets is ``version_for``, a function of the pair alone, so every
    delivery of an event chooses alike. ``id`` is ``alias_id(function_id, name)``.
    """

    id: str
    function_id: str
    name: str
    version: int
    additional_version: int | None = None
    additional_weight: float = 0.0
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def versions(self) -> tuple[int, ...]:
        """The versions the alias may run: one, or the main and the additional one."""
        if self.additional_version is None:
            return (self.version,)
        return (self.version, self.additional_version)

    def version_for(self, event_id: str, function_id: str) -> int:
        """The version a run of ``function_id`` on ``event_id`` gets through this alias."""
        if self.additional_version is not None and split_point(event_id, function_id) < (
            self.additional_weight
        ):
            return self.additional_version
        return self.version

    def to_api(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("id")
        out["created_at"] = iso(self.created_at)
        out["updated_at"] = iso(self.updated_at)
        return out


def alias_id(function_id: str, name: str) -> str:
    return f"{function_id}:{name}"


def split_point(event_id: str, function_id: str) -> float:
    """A number in [0, 1) drawn from (event id, function id) alone: where a weighted alias
    splits. Derived rather than random, as ``execution_id_for`` is, so a redelivered
    event, a second listener or a retry all choose the version the first delivery chose;
    a hash spreads distinct pairs evenly, so the shares hold over many events."""
    digest = hashlib.sha256(f"alias-split\0{event_id}\0{function_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def tick_event_id(schedule_id: str, tick: datetime) -> str:
    """The event id of one tick of one schedule: the same wherever and however often it fires."""
    return f"schedule-{schedule_id}-{tick.astimezone(UTC):%Y%m%dT%H%M%SZ}"


@dataclass(frozen=True)
class ScalingEvent(Stored):
    """One decision of the scaling controller, with its reason, as it applied it.

    ``action`` is the decision's (``boot``, ``replace``, ``drain``, ``delete``);
    ``error`` what the cloud or catalogue said when applying it failed, None when it
    went through. Ids begin with the time, so they sort oldest first.
    """

    id: str
    action: str
    reason: str
    host_id: str | None = None
    server_id: str | None = None
    error: str | None = None
    at: datetime | None = None

    def to_api(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["at"] = iso(self.at)
        return out
