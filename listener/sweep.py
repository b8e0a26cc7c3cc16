"""Sweep: put back on the queue the work of executions that nothing will run any more.

An execution waits on a message: its event in the events queue, or its retry in
a delay queue. Most faults keep that message (the broker redelivers what was not
acked), but not all: a listener that dead-lettered and acked a message whose
record it left ``running``, a retry message lost with a broker that had not
persisted it, an event published by the API whose record was made but whose
listener died after the ack. Such a record would wait forever.

The sweeper, run by every listener on a timer, finds records ``running`` past
their lease and records ``queued`` long past their retry time (or their
creation), marks each one swept (one conditional write: of two sweepers, one
wins) and publishes its event again, addressed to that one function. Whichever
listener gets the message takes the record through the catalogue's state
machine as any delivery does: a lapsed lease is taken over as the next attempt,
a queued record is run, and a record that moved on meanwhile makes the message
a no-op. A record whose event data was too large to keep cannot be re-run: it
ends ``failed``, saying so, if it is still stranded a whole ``queued_after`` after
it was first found (its own message may still come). A record whose function
was deleted ends ``failed`` (``function deleted``). Each pass also removes the replaced function
versions that no queued or running execution references any more, and the
claims of batches made more than a day before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from lambda_os.errors import InvalidEvent, LambdaError, NotFound
from lambda_os.records import ExecutionRecord, utcnow
from listener.events import encode_event

LOGGER = logging.getLogger(__name__)

SWEPT_HEADER = "x-lambda-swept"
BATCH_CLAIMS_KEPT = timedelta(days=1)


class SweptStore(Protocol):
    """The catalogue's part in a sweep."""

    def stranded_executions(
        self, now: datetime, queued_before: datetime, limit: int = 100
    ) -> list[ExecutionRecord]: ...

    def mark_swept(self, record: ExecutionRecord, now: datetime) -> bool: ...

    def fail_stranded(self, record: ExecutionRecord, error: dict[str, Any]) -> bool: ...

    def prune_retired_versions(self, retired_before: datetime) -> int: ...

    def prune_batch_members(self, created_before: datetime) -> int: ...

    def get_function(self, function_id: str) -> Any: ...


class EventPublisher(Protocol):
    def publish(
        self,
        body: bytes,
        *,
        message_id: str | None = None,
        headers: dict[str, Any] | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
    ) -> None: ...


class Sweeper:
    """Finds stranded executions and publishes their events again (see the module doc)."""

    def __init__(
        self,
        catalogue: SweptStore,
        publisher: EventPublisher,
        queued_after_s: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._catalogue = catalogue
        self._publisher = publisher
        self._queued_after = timedelta(seconds=queued_after_s)
        self._clock = clock

    def sweep_once(self) -> int:
        """One pass; how many executions' work went back on the queue (or ended failed)."""
        now = self._clock()
        swept = 0
        for record in self._catalogue.stranded_executions(now, now - self._queued_after):
            if self._put_back(record, now):
                swept += 1
        # Replaced versions go once nothing references them; the delay covers an event
        # matched to one but not yet recorded.
        self._catalogue.prune_retired_versions(now - self._queued_after)
        # A batch's claims guard against its messages coming back; after a day none will.
        self._catalogue.prune_batch_members(now - BATCH_CLAIMS_KEPT)
        return swept

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Sweep every ``interval_s`` until ``stop``; a failed pass is logged and tried again."""
        while not stop.wait(interval_s):
            try:
                count = self.sweep_once()
            except LambdaError as exc:
                LOGGER.warning("sweep failed: %s", exc.description)
                continue
            except Exception:
                # One bad record or a bug must not end this listener's sweeping for good.
                LOGGER.exception("sweep failed")
                continue
            if count:
                LOGGER.info("sweep: %d stranded executions put back", count)

    def _put_back(self, record: ExecutionRecord, now: datetime) -> bool:
        try:
            self._catalogue.get_function(record.function_id)
        except NotFound:
            error = {
                "type": "NotFound",
                "message": f"function {record.function_id!r} was deleted before this "
                "execution could run again",
                "reason": "function deleted",
            }
            return self._catalogue.fail_stranded(record, error)
        event = record.event
        if isinstance(event, dict) and event.get("truncated") is True and "limit_bytes" in event:
            if record.requeued_at is None:
                # Its own message may still be on its way (a redelivery, a deferral):
                # only a record still stranded a whole ``queued_after`` later is lost.
                return self._catalogue.mark_swept(record, now)
            error = {
                "type": "EventNotKept",
                "message": "its run was lost and the event was too large to keep, so it "
                "cannot be run again",
                "reason": "event lost",
            }
            return self._catalogue.fail_stranded(record, error)
        try:
            body = encode_event(
                record.event_source,
                record.event_type,
                event,
                id=record.event_id,
                function_id=record.function_id,
            )
        except InvalidEvent as exc:
            error = {"type": "InvalidEvent", "message": exc.description, "reason": "event lost"}
            return self._catalogue.fail_stranded(record, error)
        if not self._catalogue.mark_swept(record, now):
            return False  # another sweeper has it, or it moved on
        # A failed publish leaves it marked swept: it is found again ``queued_after`` later.
        # With the first delivery's reply_to, so the run answers whoever asked.
        self._publisher.publish(
            body,
            message_id=record.event_id,
            headers={SWEPT_HEADER: record.attempt},
            reply_to=record.reply_to,
            correlation_id=record.correlation_id,
        )
        LOGGER.info(
            "event %s: execution %s was %s with nothing behind it (attempt %d); event published again",
            record.event_id,
            record.id,
            record.status,
            record.attempt,
        )
        return True
