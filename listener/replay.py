"""Replay: send a dead letter back to the events queue (``POST /v1/deadletters/{id}/replay``).

The API's ``Replayer`` seam, on the listener's side because it needs the event
contract and the broker. A replay publishes the body exactly as it was
dead-lettered, under the event's id, with publisher confirms, and only then marks
the dead letter replayed. A dead letter of exhausted retries is addressed to one
function; its execution record is reopened first (``queued``, with a fresh retry
budget and the failed run kept in ``attempts``), or the listener would find it
finished and not run it again. If the publish then fails, the record is put back
as it was, since no message would ever run it.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from lambda_os.errors import Conflict, InvalidEvent, LambdaError, NotFound
from lambda_os.records import DeadLetterRecord, ExecutionRecord, execution_id_for
from listener.deadletter import original_headers, own_headers, record_body
from listener.events import parse_event

LOGGER = logging.getLogger(__name__)

REPLAY_HEADER = "x-lambda-replay-of"


class ConfirmedPublisher(Protocol):
    """What a replay needs from ``listener.publish.Publisher``."""

    def publish(
        self,
        body: bytes,
        *,
        message_id: str | None = None,
        headers: dict[str, Any] | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
    ) -> None: ...


class Replayer:
    """Replays dead letters from the catalogue through a confirmed publisher."""

    def __init__(self, catalogue: Any, publisher: ConfirmedPublisher) -> None:
        self._catalogue = catalogue
        self._publisher = publisher

    def replay(self, record: DeadLetterRecord) -> DeadLetterRecord:
        """Publish it again; ``Conflict``, ``InvalidEvent`` or ``TransientError`` if not."""
        if record.replayed_at is not None:
            raise Conflict(f"dead letter {record.id!r} was replayed already")
        if record.body_truncated:
            raise InvalidEvent(
                f"only the first {len(record_body(record))} of its {record.body_size} bytes "
                "were kept, so it cannot be replayed"
            )
        body = record_body(record)
        try:
            event = parse_event(body, message_id=record.message_id)
        except InvalidEvent as exc:
            raise InvalidEvent(f"the dead letter is not an event: {exc.description}") from exc
        before = None
        if record.kind == "retries exhausted" and event.function_id is not None:
            before = self._finished_execution(event.id, event.function_id)
            if (
                before is not None
                and self._catalogue.reopen_execution(event.id, event.function_id) is None
            ):
                before = None  # not reopened by us (a concurrent replay): nothing to put back
        headers = {
            key: value
            for key, value in own_headers(original_headers(record.headers)).items()
            if not key.startswith("x-lambda-")
        }
        headers[REPLAY_HEADER] = record.id
        try:
            self._publisher.publish(
                body,
                message_id=record.message_id or event.id,
                headers=headers,
                reply_to=record.reply_to,
                correlation_id=record.correlation_id,
            )
        except Exception:
            if before is not None:
                self._put_back(before, event.id)
            raise
        LOGGER.info("event %s: dead letter %s replayed", event.id, record.id)
        try:
            return self._catalogue.mark_dead_letter_replayed(record.id)
        except Conflict:  # a concurrent replay marked it first; both events are published
            return self._catalogue.get_dead_letter(record.id)

    def _finished_execution(self, event_id: str, function_id: str) -> ExecutionRecord | None:
        try:
            current = self._catalogue.get_execution(execution_id_for(event_id, function_id))
        except NotFound:
            return None
        return current if current.finished else None

    def _put_back(self, before: ExecutionRecord, event_id: str) -> None:
        """Undo the reopening after a failed publish: no message will ever run that record.

        Put back as it was (finished, its dead letter named), so the replay can be
        tried again; only if nothing has touched the reopened record since.
        """
        try:
            if not self._catalogue.undo_reopen(before):
                LOGGER.warning(
                    "event %s: execution %s changed during the failed replay; left as it is",
                    event_id,
                    before.id,
                )
                return
        except LambdaError as exc:
            LOGGER.error(
                "event %s: the replay was not published and execution %s stays queued with "
                "nothing to run it: %s",
                event_id,
                before.id,
                exc.description,
            )
            return
        LOGGER.info("event %s: replay not published; execution %s put back", event_id, before.id)
