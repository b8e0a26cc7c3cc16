"""Provision and record: run one function on one event and keep exactly one record of it.

``run_execution`` is the whole life of an execution, for the listener and for the
API's synchronous invocation alike:

1. claim the record for (event id, function id): the catalogue's unique index
   makes a redelivered event find the record it already has;
2. a finished record is returned as it is (the redelivery of an event whose
   outcome is stored but whose ack was lost), so a function never runs twice to
   completion on one event in one listener;
3. otherwise mark it running (``attempt`` goes up when a previous run was cut
   off), ask the provisioner to run it, and store the outcome.

Function failures are outcomes. ``TransientError`` from the provisioner puts the
record back to ``queued`` and propagates, so the event is retried; any other
platform error that will not go away (unknown runtime, package gone) is stored as
a ``failed`` record, because retrying cannot help and the user must see why.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from lambda_os.errors import LambdaError, TransientError
from lambda_os.records import ExecutionRecord, FunctionRecord, utcnow
from listener.events import Event
from listener.match import match
from provisioner.base import Invocation, Outcome, Provisioner

LOGGER = logging.getLogger(__name__)

MAX_STORED_EVENT_BYTES = 64 * 1024


class ExecutionStore(Protocol):
    """The part of the catalogue an execution needs."""

    def claim_execution(self, record: ExecutionRecord) -> tuple[ExecutionRecord, bool]: ...

    def update_execution(self, execution_id: str, changes: dict[str, Any]) -> ExecutionRecord: ...

    def get_package(self, function: FunctionRecord) -> Any: ...


def new_execution_id() -> str:
    return uuid.uuid4().hex


def stored_event_data(data: Any) -> Any:
    """The event data as the record keeps it: itself up to 64 KiB of JSON, else a marker."""
    size = len(json.dumps(data, separators=(",", ":")).encode("utf-8"))
    if size <= MAX_STORED_EVENT_BYTES:
        return data
    return {"truncated": True, "size_bytes": size, "limit_bytes": MAX_STORED_EVENT_BYTES}


def claim(
    catalogue: ExecutionStore,
    function: FunctionRecord,
    event: Event,
    ids: Callable[[], str] = new_execution_id,
) -> tuple[ExecutionRecord, bool]:
    """The execution record for (event, function): a new ``queued`` one, or the stored one."""
    record = ExecutionRecord(
        id=ids(),
        function_id=function.id,
        function_version=function.version,
        event_id=event.id,
        event_source=event.event_source,
        event_type=event.event_type,
        event=stored_event_data(event.data),
        status="queued",
    )
    return catalogue.claim_execution(record)


def run_execution(
    catalogue: ExecutionStore,
    provisioner: Provisioner,
    function: FunctionRecord,
    event: Event,
    clock: Callable[[], datetime] = utcnow,
    ids: Callable[[], str] = new_execution_id,
) -> ExecutionRecord:
    """Claim, run and record one execution; return its final record (see the module doc)."""
    record, _created = claim(catalogue, function, event, ids)
    return execute_claimed(catalogue, provisioner, function, event, record, clock)


def execute_claimed(
    catalogue: ExecutionStore,
    provisioner: Provisioner,
    function: FunctionRecord,
    event: Event,
    record: ExecutionRecord,
    clock: Callable[[], datetime] = utcnow,
) -> ExecutionRecord:
    """Run an execution already claimed; a finished record is returned without running."""
    if record.finished:
        LOGGER.info(
            "event %s: function %s already has finished execution %s (%s); not running again",
            event.id,
            function.id,
            record.id,
            record.status,
        )
        return record
    attempt = record.attempt + 1 if record.status == "running" else record.attempt
    record = catalogue.update_execution(
        record.id, {"status": "running", "started_at": clock(), "attempt": attempt}
    )
    invocation = _invocation(catalogue, function, event, record)
    try:
        outcome = provisioner.run(invocation)
    except TransientError:
        LOGGER.warning(
            "event %s: execution %s of function %s could not start; back to queued",
            event.id,
            record.id,
            function.id,
        )
        catalogue.update_execution(record.id, {"status": "queued", "started_at": None})
        raise
    except LambdaError as exc:
        LOGGER.error(
            "event %s: execution %s of function %s cannot run: %s",
            event.id,
            record.id,
            function.id,
            exc.description,
        )
        now = clock()
        return catalogue.update_execution(
            record.id,
            {
                "status": "failed",
                "error": {
                    "type": type(exc).__name__,
                    "message": exc.description,
                    "reason": "cannot run",
                },
                "finished_at": now,
                "duration_ms": 0.0,
            },
        )
    final = catalogue.update_execution(record.id, _outcome_changes(outcome))
    LOGGER.info(
        "event %s: execution %s of function %s v%d %s in %.0f ms",
        event.id,
        final.id,
        function.id,
        function.version,
        final.status,
        outcome.duration_ms,
    )
    return final


def _invocation(
    catalogue: ExecutionStore, function: FunctionRecord, event: Event, record: ExecutionRecord
) -> Invocation:
    return Invocation(
        execution_id=record.id,
        function_id=function.id,
        function_name=function.name,
        function_version=function.version,
        runtime=function.runtime,
        handler=function.handler,
        memory_mb=function.memory_mb,
        timeout_s=function.timeout_s,
        code_sha256=function.code_sha256,
        package_kind="zip" if function.code_filename == "" else "py",
        package_filename=function.code_filename,
        load_package=lambda: catalogue.get_package(function).data,
        event_id=event.id,
        event_source=event.event_source,
        event_type=event.event_type,
        data=event.data,
        environment=dict(function.environment),
        network=function.network,
        attempt=record.attempt,
    )


def _outcome_changes(outcome: Outcome) -> dict[str, Any]:
    return {
        "status": outcome.status,
        "result": outcome.result,
        "error": outcome.error,
        "logs": outcome.logs,
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
        "duration_ms": outcome.duration_ms,
        "cold_start": outcome.cold_start,
        "host": outcome.host,
    }


def run_event(
    catalogue: Any,
    provisioner: Provisioner,
    event: Event,
    clock: Callable[[], datetime] = utcnow,
    ids: Callable[[], str] = new_execution_id,
) -> list[ExecutionRecord]:
    """Match, then run each function in turn; every record is stored when this returns.

    The functions of one event run one after another on the caller's thread: one
    event holds one of the listener's slots (its prefetch follows the
    provisioner's capacity), so a wide fan-out cannot overrun the host. A
    ``TransientError`` stops the event; the records already finished are kept and
    skipped when it comes back.
    """
    return [
        run_execution(catalogue, provisioner, function, event, clock, ids)
        for function in match(catalogue, event)
    ]
