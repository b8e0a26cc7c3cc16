"""Dead letters: list the messages the listener gave up on, read one, send one back.

The listener records every dead letter in the catalogue (a malformed message, an
event whose function failed its last attempt, an internal error). Replaying is
the injected ``Replayer``'s (``listener.replay.Replayer`` checks the body is an
event, gives an exhausted execution a fresh retry budget and publishes with
publisher confirms); without one, 503. The API itself never talks to RabbitMQ.
"""

from __future__ import annotations

from typing import Protocol

import falcon

from catalog_api.auth.scope import scope_of
from catalog_api.paging import next_link
from catalog_api.schemas import DeadLetterListQuerySchema
from lambda_os.catalogue import Catalogue
from lambda_os.records import DeadLetterRecord


def dead_letter_url(dead_letter_id: str) -> str:
    return f"/v1/deadletters/{dead_letter_id}"


class Replayer(Protocol):
    """Send a dead letter back to the events queue."""

    def replay(self, record: DeadLetterRecord) -> DeadLetterRecord:
        """Publish the dead letter's event and return the record marked replayed.

        Returns only once the broker holds the event. Raises ``Conflict`` if it
        was replayed already, ``InvalidEvent`` if its body is not an event (or was
        truncated), ``TransientError`` when the broker is unavailable.
        """
        ...


class DeadLettersResource:
    """``/v1/deadletters``: oldest first, filtered by kind, function or event; no bodies."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = DeadLetterListQuerySchema().load(req.params)
        limit = query.pop("limit")
        marker = query.pop("marker", None)
        filters = scope_of(req, self._catalogue).by_function_filters(query)
        page = self._catalogue.list_dead_letters(filters, limit, marker)
        resp.media = {
            "deadletters": [record.to_api(include_body=False) for record in page.items],
            "next": next_link("/v1/deadletters", query, limit, page.marker),
        }


class DeadLetterResource:
    """``/v1/deadletters/{id}``: one dead letter with its body and headers."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def on_get(self, req: falcon.Request, resp: falcon.Response, dead_letter_id: str) -> None:
        resp.media = scope_of(req, self._catalogue).dead_letter(dead_letter_id).to_api()


class DeadLetterReplayResource:
    """``/v1/deadletters/{id}/replay``: 202 once the broker holds the event again."""

    def __init__(self, catalogue: Catalogue, replayer: Replayer | None) -> None:
        self._catalogue = catalogue
        self._replayer = replayer

    def on_post(self, req: falcon.Request, resp: falcon.Response, dead_letter_id: str) -> None:
        record = scope_of(req, self._catalogue).dead_letter(dead_letter_id)
        if self._replayer is None:
            raise falcon.HTTPServiceUnavailable(
                title="Replay unavailable",
                description="this API server was started without a connection to the broker, "
                "so it cannot replay dead letters; run the platform with `lambda-os standalone` "
                "or `lambda-os api`",
            )
        replayed = self._replayer.replay(record)
        resp.status = falcon.HTTP_202
        resp.location = dead_letter_url(replayed.id)
        resp.media = replayed.to_api(include_body=False)
