"""Provision and record: run one function on one event and keep exactly one record of it.

``run_execution`` is the whole life of an execution, for the listener and for the
API's synchronous invocation alike:

1. claim the record for (event id, function id): the catalogue's unique index
   makes a redelivered event find the record it already has;
2. a finished record is returned as it is (the redelivery of an event whose
   outcome is stored but whose ack was lost), so a function never runs twice to
   completion on one event;
3. otherwise take the record's lease (``Catalogue.acquire_execution``): it is
   ``running`` under this listener until the function's timeout plus a margin.
   A record another listener holds is not run (``Step.defer``: the listener puts
   the event in a delay queue and looks again later); one whose lease lapsed (its
   listener died or stalled) is taken over as the next ``attempt``. Then the
   provisioner runs it and the outcome is stored, only while the lease is still
   ours: every write is fenced by the ``Lease`` (holder and attempt), so a
   listener that lost it changes nothing.

The common case, an event's first delivery, takes steps 1 and 3 in one write
(``start_step``: the record is inserted already leased), and the outcome is one
more, with no read back: two catalogue writes per execution.

Function failures are outcomes: a run that ends ``failed`` or ``timed_out`` for
any reason the function can cause (handler error, timeout, out of memory,
crashed) is retried up to the function's ``max_retries`` when the caller passes
``retry_delay_s`` (the listener does; a synchronous API invocation does not). The
record goes back to ``queued`` with ``attempt`` up by one and the failed run kept
in ``attempts``, and ``Step.retry`` tells the listener to publish the retry
message to a delay queue. A run cut off because its listener or host died
(taken over: ``interrupted`` in ``attempts``) spends none of those retries. After the last attempt the record stays failed and
``Step.dead_letter`` carries the reason.

``TransientError`` from the provisioner puts the record back to ``queued`` and
propagates, so the event is retried without spending an attempt; any other
platform error that will not go away (unknown runtime, package gone) is stored as
a ``failed`` record with reason ``cannot run``, never retried, because retrying
cannot help and the user must see why. An error nobody foresaw ends the record
``failed`` with reason ``internal error``, and an outcome the catalogue refuses
with ``not storable``: no record is ever left ``running`` under a lease nobody
renews. Every change of a record is one of the catalogue's transitions
(``Catalogue``'s state machine); this module writes none itself.

Given an ``Admission`` (the listener passes one; the API's synchronous path,
which answers 429 instead, and a cluster host, whose router admitted the run,
do not), a run that would pass its project's ``executions`` or ``memory_mb``
quota is not run: the write that started it is undone (``release_execution``:
back to ``queued``, no attempt spent) and ``Step.defer`` with ``wait_for_room``
sends the event to the short delay queues, to look again when a run may have
ended. The count comes after the write, under ``Admission.turn``, so two
listeners racing for the last room never both keep it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from lambda_os import storable
from lambda_os.errors import LambdaError, LeaseLost, NotFound, PermanentError, TransientError
from lambda_os.quotas import Quota
from lambda_os.records import (
    ExecutionRecord,
    FunctionRecord,
    Lease,
    execution_id_for,
    utcnow,
    with_changes,
)
from listener.admit import Admission, Ceiling
from listener.events import Event
from listener.match import match
from provisioner.base import Invocation, Outcome, Provisioner

LOGGER = logging.getLogger(__name__)

MAX_STORED_EVENT_BYTES = 64 * 1024
# How long past the function's own timeout a listener's lease on a run lasts: room
# for a container to start and its outcome to be stored. A listener that dies
# holds its executions this long, then another takes them over.
LEASE_MARGIN_S = 60.0
CANNOT_RUN = "cannot run"
INTERNAL_ERROR = "internal error"
NOT_STORABLE = "not storable"
# Reasons the platform writes itself (not a run of the function): never retried, and
# not dead-lettered either, since the record says all there is and a replay cannot help.
NOT_RETRIED = frozenset({CANNOT_RUN, "not queued", "unavailable", "function deleted"})
# Failures of the platform itself: never retried, but dead-lettered, so an operator
# sees them and can replay the event once the fault is fixed.
PLATFORM_FAULTS = frozenset({INTERNAL_ERROR, NOT_STORABLE})
NO_LEASE = {"lease_until": None, "leased_by": None}
MAX_REASON_DETAIL = 300
# How long a run's outcome write is tried through a catalogue outage before the
# event goes back to the queue (and the function would run again).
PERSIST_FOR_S = 120.0
# Runs cut off by a dead or stalled listener that do not use up the retry budget.
MAX_TAKEOVERS = 5
_T = TypeVar("_T")
# An error's message and traceback as stored, each: a function can raise with any
# text, and every retry keeps the previous error in ``attempts``, so uncapped they
# could push a record past MongoDB's 16 MiB document limit.
MAX_ERROR_TEXT_CHARS = 16 * 1024


class ExecutionStore(Protocol):
    """The part of the catalogue an execution needs: its state machine's transitions."""

    def create_execution(self, record: ExecutionRecord) -> tuple[ExecutionRecord, bool]: ...

    def start_execution(
        self, record: ExecutionRecord, owner: str, now: datetime, lease_until: datetime
    ) -> tuple[ExecutionRecord, bool]: ...

    def acquire_execution(
        self, execution_id: str, owner: str, now: datetime, lease_until: datetime
    ) -> ExecutionRecord | None: ...

    def renew_lease(self, lease: Lease, lease_until: datetime) -> Lease | None: ...

    def finish_execution(self, lease: Lease, changes: dict[str, Any]) -> bool: ...

    def retry_execution(
        self, lease: Lease, changes: dict[str, Any], previous: dict[str, Any]
    ) -> ExecutionRecord | None: ...

    def release_execution(self, lease: Lease) -> bool: ...

    def get_execution(self, execution_id: str) -> ExecutionRecord: ...

    def get_package(self, function: FunctionRecord) -> Any: ...

    def get_function_version(self, function_id: str, version: int) -> FunctionRecord: ...


@dataclass(frozen=True)
class Step:
    """What one delivery did to one execution, and what the listener does about it.

    ``retry``: this delivery queued the next attempt (``record.attempt``); publish
    the retry message to its delay queue. ``defer``: another listener holds the
    run's lease; publish the event for this function to a delay queue and look
    again then (never a nack-and-requeue, which would spin). ``dead_letter``: the
    last attempt failed; dead-letter the event for this function with this reason.
    ``reply``: the record goes to ``reply_to`` (only final records, and not for a
    stale retry). ``route``: a router placed the execution on a host; publish the
    event addressed to that function to this queue (the host's own), confirmed,
    before the ack. ``wait_for_room``: with ``defer``, no host has room (or the
    function is at its concurrency, or its project at an at-once quota): wait in
    the short delay queues only.
    """

    record: ExecutionRecord
    retry: bool = False
    defer: bool = False
    dead_letter: str | None = None
    reply: bool = True
    route: str | None = None
    wait_for_room: bool = False

    def __post_init__(self) -> None:
        if not self.record.finished:
            object.__setattr__(self, "reply", False)


@functools.cache
def process_owner() -> str:
    """This process's name on the leases it takes: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def stored_event_data(data: Any) -> Any:
    """The event data as the record keeps it: itself up to 64 KiB as stored, else a marker."""
    return storable.stored_event_data(data, MAX_STORED_EVENT_BYTES)


def claim(
    catalogue: ExecutionStore,
    function: FunctionRecord,
    event: Event,
) -> tuple[ExecutionRecord, bool]:
    """The execution record for (event, function): a new ``queued`` one, or the stored one."""
    return catalogue.create_execution(new_record(function, event))


def new_record(function: FunctionRecord, event: Event) -> ExecutionRecord:
    """A ``queued`` record of ``function`` on ``event``, not stored yet."""
    return ExecutionRecord(
        id=execution_id_for(event.id, function.id),
        function_id=function.id,
        function_version=function.version,
        event_id=event.id,
        event_source=event.event_source,
        event_type=event.event_type,
        event=stored_event_data(event.data),
        status="queued",
        reply_to=event.reply_to,
        correlation_id=event.correlation_id,
        alias=event.alias,
        batch_events=None if event.batch is None else list(event.batch),
    )


@dataclass(frozen=True)
class _Run:
    """Everything one delivery of one (event, function) works with."""

    catalogue: ExecutionStore
    provisioner: Provisioner
    function: FunctionRecord
    event: Event
    clock: Callable[[], datetime]
    owner: str
    lease_margin_s: float
    retry_delay_s: Callable[[int], float] | None
    admission: Admission | None = None
    ceiling: Ceiling | None = None
    gone: str | None = None  # why the version the record was made for cannot run

    @property
    def retries(self) -> bool:
        return self.retry_delay_s is not None

    def lease_until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.function.timeout_s + self.lease_margin_s)


def _run_of(
    catalogue: ExecutionStore,
    provisioner: Provisioner,
    function: FunctionRecord,
    event: Event,
    clock: Callable[[], datetime],
    owner: str | None = None,
    lease_margin_s: float = LEASE_MARGIN_S,
    retry_delay_s: Callable[[int], float] | None = None,
    admission: Admission | None = None,
    ceiling: Ceiling | None = None,
) -> _Run:
    return _Run(
        catalogue,
        provisioner,
        function,
        event,
        clock,
        owner or process_owner(),
        lease_margin_s,
        retry_delay_s,
        admission,
        ceiling,
    )


def start_step(
    catalogue: ExecutionStore,
    provisioner: Provisioner,
    function: FunctionRecord,
    event: Event,
    clock: Callable[[], datetime] = utcnow,
    **options: Any,
) -> Step:
    """``claim`` then ``execute_step``, with one write fewer when (event, function) is new.

    Nearly every delivery is an event's first: its record is inserted already
    running under this listener's lease (``start_execution``). A redelivery or a
    retry message finds the stored record and goes the long way. ``options`` are
    ``execute_step``'s keywords.
    """
    run = _run_of(catalogue, provisioner, function, event, clock, **options)
    quota = _binding(run)
    with _turn(run, quota):
        now = clock()
        record, created = catalogue.start_execution(
            new_record(function, event), run.owner, now, run.lease_until(now)
        )
        waiting = _wait_if_over(run, record, quota) if created else None
    if waiting is not None:
        return waiting
    if not created:
        return _step(run, record)
    return _run_leased(run, record, now)


def resume_step(
    catalogue: ExecutionStore,
    provisioner: Provisioner,
    function: FunctionRecord,
    event: Event,
    clock: Callable[[], datetime] = utcnow,
    **options: Any,
) -> Step:
    """``start_step`` for an execution a router recorded before it placed it on this host.

    Its record exists, so it is read rather than inserted: one read where a
    failed insert and a read would come to the same record, and so to the same
    step. Should it be gone, the event starts as a new one. ``options`` are
    ``execute_step``'s keywords.
    """
    try:
        record = catalogue.get_execution(execution_id_for(event.id, function.id))
    except NotFound:
        return start_step(catalogue, provisioner, function, event, clock, **options)
    return _step(_run_of(catalogue, provisioner, function, event, clock, **options), record)


def run_execution(
    catalogue: ExecutionStore,
    provisioner: Provisioner,
    function: FunctionRecord,
    event: Event,
    clock: Callable[[], datetime] = utcnow,
    **options: Any,
) -> ExecutionRecord:
    """Claim, run and record one execution; return its record (see the module doc).

    ``options`` are ``execute_step``'s keywords; without ``retry_delay_s`` a
    failed run is final.
    """
    record, _created = claim(catalogue, function, event)
    return execute_step(catalogue, provisioner, function, event, record, clock, **options).record


def execute_claimed(
    catalogue: ExecutionStore,
    provisioner: Provisioner,
    function: FunctionRecord,
    event: Event,
    record: ExecutionRecord,
    clock: Callable[[], datetime] = utcnow,
) -> ExecutionRecord:
    """Run an execution already claimed, without retries (the API's synchronous invocation)."""
    return execute_step(catalogue, provisioner, function, event, record, clock).record


def execute_step(
    catalogue: ExecutionStore,
    provisioner: Provisioner,
    function: FunctionRecord,
    event: Event,
    record: ExecutionRecord,
    clock: Callable[[], datetime] = utcnow,
    *,
    owner: str | None = None,
    lease_margin_s: float = LEASE_MARGIN_S,
    retry_delay_s: Callable[[int], float] | None = None,
    admission: Admission | None = None,
    ceiling: Ceiling | None = None,
) -> Step:
    """Run an execution already claimed, under a lease, and say what the listener does next.

    A finished record is returned without running. A retry message (``event.attempt``)
    for an attempt the record no longer waits for is stale and does nothing.
    ``retry_delay_s(attempt)`` is the backoff before ``attempt``; when given, a
    failed run with retries left queues the next attempt (``Step.retry``) and one
    without ends the record and asks for a dead letter (``Step.dead_letter``).
    A record another listener holds under a live lease is not run: ``Step.defer``.
    ``admission`` holds the run to its project's at-once quotas, counting only
    where they could pass ``ceiling`` (see the module doc).
    """
    run = _run_of(
        catalogue,
        provisioner,
        function,
        event,
        clock,
        owner,
        lease_margin_s,
        retry_delay_s,
        admission,
        ceiling,
    )
    return _step(run, record)


def _step(run: _Run, record: ExecutionRecord) -> Step:
    event = run.event
    if event.attempt is not None and (record.finished or record.attempt != event.attempt):
        LOGGER.info(
            "event %s: retry message for attempt %d of execution %s is stale (%s, attempt %d)",
            event.id,
            event.attempt,
            record.id,
            record.status,
            record.attempt,
        )
        return Step(record, reply=False)
    if record.finished:
        LOGGER.info(
            "event %s: function %s already has finished execution %s (%s); not running again",
            event.id,
            run.function.id,
            record.id,
            record.status,
        )
        return Step(record, dead_letter=exhausted_reason(record) if run.retries else None)
    now = run.clock()
    if event.attempt is None and record.awaiting_retry and record.retry_at > now:
        # Another copy of the event (a redelivery, a sweep) must not run the next
        # attempt before its backoff ends: its own retry message will.
        return Step(record, defer=True)
    if record.function_version != run.function.version:
        # Matched before a deploy (or retried across one): it runs the version it was made for.
        try:
            run = dataclasses.replace(
                run,
                function=run.catalogue.get_function_version(
                    record.function_id, record.function_version
                ),
            )
        except NotFound as exc:
            run = dataclasses.replace(run, gone=exc.description)
    quota = _binding(run)
    with _turn(run, quota):
        now = run.clock()
        acquired = run.catalogue.acquire_execution(record.id, run.owner, now, run.lease_until(now))
        waiting = None if acquired is None else _wait_if_over(run, acquired, quota)
    if waiting is not None:
        return waiting
    if acquired is None:
        current = run.catalogue.get_execution(record.id)
        if current.finished:
            return Step(current, dead_letter=exhausted_reason(current) if run.retries else None)
        LOGGER.info(
            "event %s: execution %s is %s under %r until %s; looking again later",
            event.id,
            record.id,
            current.status,
            current.leased_by,
            current.lease_until,
        )
        return Step(current, defer=True)
    return _run_leased(run, acquired, now)


def _binding(run: _Run) -> Quota | None:
    """The project's at-once quota if this run must be counted against it, else None."""
    if run.admission is None:
        return None
    return run.admission.binding(run.function, run.ceiling)


def _turn(run: _Run, quota: Quota | None) -> contextlib.AbstractContextManager[Any]:
    """This process's turn to start a counted run; nothing to wait for when none is counted."""
    if quota is None or run.admission is None:
        return contextlib.nullcontext()
    return run.admission.turn


def _wait_if_over(run: _Run, record: ExecutionRecord, quota: Quota | None) -> Step | None:
    """None if the run just started fits its project's quota; else undo the start and wait."""
    if quota is None or run.admission is None:
        return None
    reason = run.admission.over_after_start(run.function, quota)
    if reason is None:
        return None
    if not run.catalogue.release_execution(Lease.of(record)):
        # Taken over between our write and this one: whoever holds it now runs it.
        return Step(run.catalogue.get_execution(record.id), reply=False)
    LOGGER.info("event %s: %s; execution %s waits", run.event.id, reason, record.id)
    released = with_changes(record, status="queued", started_at=None, **NO_LEASE)
    return Step(released, defer=True, wait_for_room=True)


def _run_leased(run: _Run, record: ExecutionRecord, now: datetime) -> Step:
    """Run an execution this listener leased at ``now``; store and return how it ended."""
    catalogue, function, event = run.catalogue, run.function, run.event
    lease = Lease.of(record)

    def renew_if_waited() -> None:
        # Waiting for capacity ate into the lease: give the run its whole timeout again.
        nonlocal lease
        started = run.clock()
        if started - now > timedelta(seconds=run.lease_margin_s / 2):
            renewed = catalogue.renew_lease(lease, run.lease_until(started))
            if renewed is None:
                raise LeaseLost(f"the lease on execution {record.id} lapsed while it waited")
            lease = renewed

    invocation = _invocation(catalogue, function, event, record, started=renew_if_waited)
    try:
        if run.gone is not None:
            raise PermanentError(run.gone)
        outcome = run.provisioner.run(invocation)
    except LeaseLost as exc:
        LOGGER.warning("event %s: %s; another listener runs it", event.id, exc.description)
        return Step(catalogue.get_execution(record.id), reply=False)
    except TransientError:
        LOGGER.warning(
            "event %s: execution %s of function %s could not start; back to queued",
            event.id,
            record.id,
            function.id,
        )
        catalogue.release_execution(lease)
        raise
    except LambdaError as exc:
        LOGGER.error(
            "event %s: execution %s of function %s cannot run: %s",
            event.id,
            record.id,
            function.id,
            exc.description,
        )
        error = {"type": type(exc).__name__, "message": exc.description, "reason": CANNOT_RUN}
        return Step(_finish(run, record, lease, _failed_changes(run, error)))
    except Exception as exc:
        # A bug or a host fault we did not foresee: the record ends failed rather than
        # stay running under a lease nobody renews. The details, host paths included,
        # go to the log only.
        LOGGER.error(
            "event %s: execution %s of function %s failed in the platform",
            event.id,
            record.id,
            function.id,
            exc_info=exc,
        )
        error = {
            "type": "InternalError",
            "message": f"the platform failed to run it ({type(exc).__name__})",
            "reason": INTERNAL_ERROR,
        }
        final = _finish(run, record, lease, _failed_changes(run, error))
        return Step(final, dead_letter=exhausted_reason(final) if run.retries else None)
    used = spent_attempts(record)
    if outcome.status != "succeeded" and run.retry_delay_s and used <= function.max_retries:
        return _queue_retry(run, record, lease, outcome, run.retry_delay_s)
    final = _finish(run, record, lease, _outcome_changes(outcome))
    LOGGER.info(
        "event %s: execution %s of function %s v%d %s in %.0f ms (attempt %d)",
        event.id,
        final.id,
        function.id,
        function.version,
        final.status,
        outcome.duration_ms,
        final.attempt,
    )
    return Step(final, dead_letter=exhausted_reason(final) if run.retries else None)


def _failed_changes(run: _Run, error: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "failed",
        "error": stored_error(error),
        "finished_at": run.clock(),
        "duration_ms": 0.0,
    }


def _finish(
    run: _Run, record: ExecutionRecord, lease: Lease, changes: dict[str, Any]
) -> ExecutionRecord:
    """Store the run's outcome under this listener's lease; the record as it now stands.

    Built from the record we ran and the changes, with no read back. If the
    lease was lost meanwhile (this listener stalled past it and another took the
    run over), the outcome is dropped and the stored record comes back: the
    newer run's owner writes the result. An outcome the catalogue refuses (a
    document it cannot store) ends the record failed with that reason instead,
    so it is never left running.
    """
    try:
        stored = _persist(lambda: run.catalogue.finish_execution(lease, changes), run.event)
    except PermanentError as exc:
        LOGGER.error(
            "event %s: the outcome of execution %s cannot be stored: %s",
            run.event.id,
            record.id,
            exc.description,
        )
        changes = _failed_changes(
            run,
            {
                "type": "NotStorable",
                "message": f"the outcome could not be stored: {exc.description}",
                "reason": NOT_STORABLE,
            },
        )
        changes["logs"] = ""
        stored = _persist(lambda: run.catalogue.finish_execution(lease, changes), run.event)
    if stored:
        return with_changes(record, **changes, **NO_LEASE)
    current = run.catalogue.get_execution(record.id)
    LOGGER.warning(
        "event %s: lease on execution %s was lost before its outcome was stored; "
        "it is %s under %r, and this run's outcome (%s) is dropped",
        run.event.id,
        record.id,
        current.status,
        current.leased_by,
        changes.get("status"),
    )
    return current


def _persist(write: Callable[[], _T], event: Event) -> _T:
    """Make a run's final write, waiting out a catalogue outage rather than losing the outcome.

    The run has happened: giving up would run the function again. Retrying is
    safe however long it takes, because the write is fenced by the lease's holder
    and attempt, not by its time: if another listener took the run over
    meanwhile, the write matches nothing.
    """
    deadline = time.monotonic() + PERSIST_FOR_S
    delay = 0.25
    while True:
        try:
            return write()
        except TransientError as exc:
            if time.monotonic() + delay > deadline:
                raise
            LOGGER.warning(
                "event %s: storing the outcome failed (%s); trying again in %.1f s",
                event.id,
                exc.description,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _queue_retry(
    run: _Run,
    record: ExecutionRecord,
    lease: Lease,
    outcome: Outcome,
    retry_delay_s: Callable[[int], float],
) -> Step:
    event = run.event
    attempt = record.attempt + 1
    delay_s = retry_delay_s(attempt)
    error = outcome.error or {}
    previous = {
        "attempt": record.attempt,
        "status": outcome.status,
        "error": stored_error(outcome.error),
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
        "duration_ms": outcome.duration_ms,
        "host": outcome.host,
    }
    retry_changes = {
        "retry_at": run.clock() + timedelta(seconds=delay_s),
        "error": stored_error(outcome.error),
        "logs": outcome.logs,
        "result": None,
        "started_at": None,
        "finished_at": None,
        "duration_ms": None,
    }
    queued = _persist(lambda: run.catalogue.retry_execution(lease, retry_changes, previous), event)
    if queued is None:
        current = run.catalogue.get_execution(record.id)
        LOGGER.warning(
            "event %s: lease on execution %s was lost before its retry was queued; "
            "it is %s under %r, and this run's outcome (%s) is dropped",
            event.id,
            record.id,
            current.status,
            current.leased_by,
            outcome.status,
        )
        return Step(current, reply=False)
    LOGGER.info(
        "event %s: execution %s of function %s %s on attempt %d (%s); attempt %d in %.1f s",
        event.id,
        record.id,
        run.function.id,
        outcome.status,
        record.attempt,
        error.get("reason", "no reason"),
        attempt,
        delay_s,
    )
    return Step(queued, retry=True, reply=False)


def spent_attempts(record: ExecutionRecord) -> int:
    """The runs that count against ``max_retries``: this one and the earlier failed ones.

    A run cut off because its listener or host died (``interrupted``, taken over)
    is the platform's failure, not the function's, so it spends no retry, up to
    ``MAX_TAKEOVERS`` of them: past that, something about the event itself keeps
    ending its listeners, and the takeovers count.
    """
    interrupted = sum(
        1
        for entry in record.attempts
        if entry.get("status") == "interrupted"
        and isinstance(entry.get("attempt"), int)
        and entry["attempt"] >= record.first_attempt
    )
    return record.attempt - record.first_attempt + 1 - min(interrupted, MAX_TAKEOVERS)


def exhausted_reason(record: ExecutionRecord) -> str | None:
    """The dead-letter reason for a record whose last attempt failed, if none was sent yet."""
    if record.status not in ("failed", "timed_out") or record.dead_letter_id is not None:
        return None
    error = record.error or {}
    if error.get("reason") in NOT_RETRIED:
        return None
    attempts = spent_attempts(record)
    detail = f"{error.get('type', record.status)}: {error.get('message', '')}"[:MAX_REASON_DETAIL]
    if error.get("reason") in PLATFORM_FAULTS:
        return f"{error['reason']}: {detail}"
    return (
        f"retries exhausted: {attempts} attempt{'s' if attempts != 1 else ''} of function "
        f"{record.function_id} ended {record.status} ({error.get('reason', 'no reason')}); "
        f"last: {detail}"
    )


def _invocation(
    catalogue: ExecutionStore,
    function: FunctionRecord,
    event: Event,
    record: ExecutionRecord,
    started: Callable[[], None] | None = None,
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
        concurrency=function.concurrency,
        started=started,
    )


def stored_error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """The error as a record keeps it: ``message`` and ``traceback`` cut to 16 Ki characters.

    A message keeps its start; a traceback its end, where the exception is. Each
    says it was cut and how long it was.
    """
    if not error:
        return error
    stored = dict(error)
    message = stored.get("message")
    if isinstance(message, str) and len(message) > MAX_ERROR_TEXT_CHARS:
        note = f"... [cut: {len(message)} characters, the first {{}} kept]"
        keep = MAX_ERROR_TEXT_CHARS - len(note) - 8
        stored["message"] = message[:keep] + note.format(keep)
    traceback = stored.get("traceback")
    if isinstance(traceback, str) and len(traceback) > MAX_ERROR_TEXT_CHARS:
        note = f"[cut: {len(traceback)} characters, the last {{}} kept] ..."
        keep = MAX_ERROR_TEXT_CHARS - len(note) - 8
        stored["traceback"] = note.format(keep) + traceback[-keep:]
    return stored


def _outcome_changes(outcome: Outcome) -> dict[str, Any]:
    """The outcome as the record stores it; a result the catalogue cannot store fails the run."""
    return storable.storable_outcome(
        {
            "status": outcome.status,
            "result": outcome.result,
            "error": stored_error(outcome.error),
            "logs": outcome.logs,
            "started_at": outcome.started_at,
            "finished_at": outcome.finished_at,
            "duration_ms": outcome.duration_ms,
            "cold_start": outcome.cold_start,
            "host": outcome.host,
            "cpu_ms": outcome.cpu_ms,
            "peak_memory_mb": outcome.peak_memory_mb,
        }
    )


class BatchQueues(Protocol):
    """Where a batching function's events wait for their batch (``listener.gather``)."""

    def ensure(self, function: FunctionRecord) -> str: ...


def run_event(
    catalogue: Any,
    provisioner: Provisioner,
    event: Event,
    clock: Callable[[], datetime] = utcnow,
    placed: bool = False,
    batches: BatchQueues | None = None,
    **options: Any,
) -> list[Step]:
    """Match, then run each function in turn; every record is stored when this returns.

    ``placed``: the event comes from a cluster host's own queue, where a router put
    it after recording its execution (``resume_step``). ``batches``: a function
    with ``batch_size`` does not run here; its step routes the event, addressed to
    it, to its batch queue (an event addressed to a function, such as a batch the
    sweeper sends again, always runs as it is).

    The functions of one event run one after another on the caller's thread: one
    event holds one of the listener's slots (its prefetch follows the
    provisioner's capacity), so a wide fan-out cannot overrun the host. A
    ``TransientError`` stops the event; the records already finished are kept and
    skipped when it comes back. ``options`` are ``execute_step``'s keywords.
    """
    step = resume_step if placed else start_step
    steps = []
    for function in match(catalogue, event):
        if batches is not None and function.batch_size and event.function_id is None:
            queue = batches.ensure(function)
            steps.append(Step(new_record(function, event), route=queue, reply=False))
        else:
            steps.append(step(catalogue, provisioner, function, event, clock, **options))
    return steps
