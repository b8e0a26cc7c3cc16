"""The records that cross every seam: a function and one execution of it.

They are frozen dataclasses so a record handed to the provisioner or the API
cannot change under it; the catalogue converts them to and from MongoDB
documents (``_id`` holds ``id``) and ``to_api`` gives their JSON form.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EXECUTION_STATUSES = ("queued", "running", "succeeded", "failed", "timed_out")
FINAL_STATUSES = frozenset({"succeeded", "failed", "timed_out"})


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


@dataclass(frozen=True)
class FunctionRecord:
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
    version: int = 1
    code_sha256: str = ""
    code_size: int = 0
    code_filename: str = "main.py"
    package_id: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def to_document(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["_id"] = doc.pop("id")
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> FunctionRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}
        values["id"] = doc["_id"]
        return cls(**values)

    def to_api(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("package_id")
        out["created_at"] = iso(self.created_at)
        out["updated_at"] = iso(self.updated_at)
        return out


@dataclass(frozen=True)
class ExecutionRecord:
    """One run of one function version on one event, with its outcome.

    ``event_id`` and ``function_id`` together name the execution uniquely, so a
    redelivered event finds the record it already has instead of making another.
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
    attempt: int = 1

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    def to_document(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["_id"] = doc.pop("id")
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> ExecutionRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}
        values["id"] = doc["_id"]
        return cls(**values)

    def to_api(self, include_logs: bool = True) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("created_at", "started_at", "finished_at"):
            out[key] = iso(getattr(self, key))
        if not include_logs:
            out.pop("logs")
        return out
