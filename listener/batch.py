"""Batch: run a function once on a list of its events, each event in exactly one batch.

A function with ``batch_size`` set does not run per event: the listener puts each
of its events, addressed to it, in the function's batch queue
(``batch_queue``), and the collector (``listener.gather``) takes them from there
in groups of up to ``batch_size``, or what came within ``batch_window_s`` of the
first. ``BatchRunner.run`` then makes one execution of the group, whose
``event`` is the list of the events' data and whose ``batch_events`` their ids.

Exactly one batch per (event, function), whatever the broker redelivers: before
anything runs, each event is claimed for the batch in the catalogue
(``Catalogue.claim_batch``, keyed by function and event, so only one claim can
win). An event claimed by an earlier batch (its listener died with the messages
unacked, and they came back in other groups) is not run again in this one: that
earlier batch is run instead, from the members the catalogue kept, through the
same state machine as every execution (a finished batch is not run again, a
lapsed lease is taken over, a live one is waited for). Only when every batch a
group touches is final are its messages acked (``listener.gather``).

Retries of a failed batch happen here, not through the delay queues: the
messages stay unacked until the record is final, so a listener that dies
between attempts leaves them to be redelivered, and the next collector finds the
record waiting for its retry.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

import pika

from lambda_os.errors import LambdaError, NotFound, TransientError
from lambda_os.records import ExecutionRecord, FunctionRecord, utcnow
from listener.deadletter import dead_letter_record
from listener.events import Event
from listener.execute import Step, execute_step, start_step
from listener.topology import Topology
from provisioner.base import Provisioner

LOGGER = logging.getLogger(__name__)

# How long a batch whose run another listener holds (or that waits for room) waits
# before it looks again.
LOOK_AGAIN_S = 1.0
# Rounds of claiming again what a batch ran without; what is left then waits for its redelivery.
MAX_ROUNDS = 5


def batch_queue(topology: Topology, function_id: str) -> str:
    """The queue a batching function's events wait in; under the events queue's name."""
    return f"{topology.events_queue}.batch.{function_id}"


def batch_queue_arguments(topology: Topology) -> dict[str, Any]:
    """Dead letters as the events queue's; one consumer at a time, so that one
    collector sees every waiting event and batches come out full."""
    return {**topology.events_arguments, "x-single-active-consumer": True}


def new_batch_id() -> str:
    return f"batch-{uuid.uuid4().hex}"


class Member(NamedTuple):
    """One event of a batch as its message brought it."""

    event_id: str
    data: Any


class BatchRunner:
    """Claims a group's events for a batch and runs every batch the group touches.

    ``options`` are ``execute_step``'s keywords (retry delays, lease margin,
    owner, admission), as the listener runs single events with them. ``wait``
    pauses for that many seconds and says whether the listener is stopping, in
    which case a batch is left as the catalogue has it, for the redelivery.
    """

    def __init__(
        self,
        catalogue: Any,
        provisioner: Provisioner,
        wait: Callable[[float], bool],
        clock: Callable[[], datetime] = utcnow,
        new_id: Callable[[], str] = new_batch_id,
        **options: Any,
    ) -> None:
        self._catalogue = catalogue
        self._provisioner = provisioner
        self._wait = wait
        self._clock = clock
        self._new_id = new_id
        self._options = options

    def run(
        self, function_id: str, members: list[Member]
    ) -> dict[str, ExecutionRecord | None] | None:
        """Run ``members`` (distinct event ids) of the function as batches: by event id,
        the final record of the batch each is in (None: the function is gone, nothing
        to run); an event left out may not be acked. None when stopping before every
        batch was final (leave the messages unacked).

        An event whose claim names a batch that finished without it (the batch was
        read while its claims were still being written) is claimed again, for a
        new batch, and run there.
        """
        try:
            function = self._catalogue.get_function(function_id)
        except NotFound:
            LOGGER.info("batch of %d events: function %s is gone", len(members), function_id)
            return dict.fromkeys((member.event_id for member in members), None)
        batch_id = self._new_id()
        owners = self._catalogue.claim_batch(
            function_id, batch_id, [(member.event_id, member.data) for member in members]
        )
        records: dict[str, ExecutionRecord | None] = {}
        pending = list(members)
        for _round in range(MAX_ROUNDS):
            own = [member for member in pending if owners[member.event_id] == batch_id]
            # Earlier batches first (their events are older), in the order their events came.
            earlier = [
                b for b in dict.fromkeys(owners[m.event_id] for m in pending) if b != batch_id
            ]
            batches = [(other, self._members_of(other)) for other in earlier]
            if own:
                batches.append((batch_id, own))
            for each_id, each_members in batches:
                record = self._run_one(function, each_id, each_members)
                if record is None:
                    return None
                records.update(dict.fromkeys(record.batch_events or [], record))
            pending = [member for member in pending if member.event_id not in records]
            if not pending:
                break
            LOGGER.warning(
                "function %s: %d events were claimed by a batch that ran without them; "
                "claiming them again",
                function_id,
                len(pending),
            )
            batch_id = self._new_id()
            owners = self._catalogue.reclaim_batch(
                function_id, batch_id, [(m.event_id, owners[m.event_id]) for m in pending]
            )
        return records

    def _members_of(self, batch_id: str) -> list[Member]:
        return [Member(*pair) for pair in self._catalogue.batch_members(batch_id)]

    def _run_one(
        self, function: FunctionRecord, batch_id: str, members: list[Member]
    ) -> ExecutionRecord | None:
        """One batch's execution to its end, through the catalogue's state machine."""
        event = Event(
            id=batch_id,
            event_source=function.event_source,
            event_type=function.event_type,
            data=[member.data for member in members],
            function_id=function.id,
            batch=tuple(member.event_id for member in members),
        )
        step = start_step(
            self._catalogue, self._provisioner, function, event, self._clock, **self._options
        )
        while not step.record.finished:
            record = step.record
            pause = LOOK_AGAIN_S
            if record.awaiting_retry:
                pause = max(0.0, (record.retry_at - self._clock()).total_seconds())
            if self._wait(pause):
                return None
            record = self._catalogue.get_execution(record.id)
            attempt = record.attempt if record.status == "queued" else None
            step = execute_step(
                self._catalogue,
                self._provisioner,
                function,
                dataclasses.replace(event, attempt=attempt),
                record,
                self._clock,
                **self._options,
            )
        if step.dead_letter:
            self._dead_letter(event, step)
        LOGGER.info(
            "batch %s of function %s: %d events, %s",
            batch_id,
            function.id,
            len(members),
            step.record.status,
        )
        return step.record

    def _dead_letter(self, event: Event, step: Step) -> None:
        """Keep the batch whose last attempt failed among the dead letters, to be replayed."""
        body = _batch_body(event)
        letter = dead_letter_record(
            "retries exhausted",
            step.dead_letter or "retries exhausted",
            body,
            pika.BasicProperties(message_id=event.id, content_type="application/json"),
            "",
            event.id,
            step.record.function_id,
            step.record.id,
        )
        try:
            self._catalogue.dead_letter_execution(step.record.id, letter)
        except TransientError:
            raise
        except LambdaError as exc:
            LOGGER.error("batch %s: cannot record the dead letter: %s", event.id, exc.description)


def _batch_body(event: Event) -> bytes:
    """The batch addressed to its function, as its dead letter keeps it."""
    return json.dumps(
        {
            "event_source": event.event_source,
            "event_type": event.event_type,
            "data": event.data,
            "id": event.id,
            "function_id": event.function_id,
        },
        separators=(",", ":"),
    ).encode("utf-8")
