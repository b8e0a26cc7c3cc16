"""``POST /v1/events``: events over HTTP, published to the broker for the listeners.

For a publisher that speaks HTTP rather than AMQP. The body is one event (a JSON
object, as swagger/events.md describes it), many (a JSON array), or a multipart
form with one file part per event. Every event is checked as the listener would
check it, given an id if it has none (so the answer can name it), and published
with publisher confirms; the answer, 202, lists the ids once the broker holds them
all. A body with one bad event publishes none of them (422, naming which).

An event belongs to the caller's project: it goes through the projects exchange
with the routing key ``<project>.api``, the same way a project's own publisher
user's events do (``listener.project``), so it can run only that project's
functions, whoever the caller is. ``function_id`` is the platform's own field and
is refused here. A broker that fails half-way answers 503 with the ids it did take
(``published``): those events will run; send the others again.
"""

from __future__ import annotations

import io
import json
from typing import Protocol

import falcon
import falcon.media

from catalog_api.auth.scope import principal_of
from catalog_api.forms import media_type, parse_json, read_body
from lambda_os.errors import InvalidEvent, TransientError
from listener.events import MAX_EVENT_BYTES, encode_event, new_event_id, parse_event
from listener.topology import Topology

MAX_EVENTS_PER_REQUEST = 1000
MAX_EVENTS_BODY = 16 * 1024 * 1024
ROUTING_SUFFIX = "api"


class EventSink(Protocol):
    """What publishing needs of ``listener.publish.Publisher``."""

    @property
    def topology(self) -> Topology: ...

    def publish(
        self,
        body: bytes,
        *,
        message_id: str | None = None,
        routing_key: str | None = None,
        exchange: str = "",
    ) -> None: ...


class EventsResource:
    """``/v1/events``: publish one or many events (see the module doc)."""

    def __init__(self, sink: EventSink | None) -> None:
        self._sink = sink

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        project = principal_of(req).project_id
        events = [_checked(raw, index) for index, raw in enumerate(_read_events(req))]
        if self._sink is None:
            raise falcon.HTTPServiceUnavailable(
                title="Events unavailable",
                description="this API server was started without a broker to publish to; "
                "publish the events to RabbitMQ (swagger/events.md)",
            )
        topology = self._sink.topology
        key = f"{project}.{ROUTING_SUFFIX}"
        published: list[str] = []
        for event_id, body in events:
            try:
                self._sink.publish(
                    body, message_id=event_id, routing_key=key, exchange=topology.projects_exchange
                )
            except TransientError as exc:
                resp.status = falcon.HTTP_503
                resp.set_header("Retry-After", "1")
                resp.media = {
                    "title": "Broker unavailable",
                    "description": f"{len(published)} of {len(events)} events were published "
                    f"before the broker failed ({exc.description}); send the others again",
                    "published": published,
                }
                return
            published.append(event_id)
        resp.status = falcon.HTTP_202
        resp.media = {"ids": published}


def _read_events(req: falcon.Request) -> list[bytes]:
    """The request's events, each as its JSON text: one, an array, or one per form file."""
    kind = media_type(req)
    data = read_body(req, MAX_EVENTS_BODY)
    if kind == "multipart/form-data":
        raws = _form_events(req, data)
    elif kind in ("", "application/json"):
        raws = _json_events(data)
    else:
        raise falcon.HTTPUnsupportedMediaType(
            description=f"{kind!r} is not accepted here; send application/json (one event or "
            "an array of them) or multipart/form-data (one file per event)"
        )
    if not raws:
        raise falcon.HTTPBadRequest(title="No events", description="the body holds no event")
    if len(raws) > MAX_EVENTS_PER_REQUEST:
        raise InvalidEvent(f"{len(raws)} events; at most {MAX_EVENTS_PER_REQUEST} per request")
    return raws


def _json_events(data: bytes) -> list[bytes]:
    value = parse_json(data)  # 400 for a body that is not JSON, as everywhere
    items = value if isinstance(value, list) else [value]
    return [json.dumps(item, separators=(",", ":")).encode() for item in items]


def _form_events(req: falcon.Request, data: bytes) -> list[bytes]:
    handler = falcon.media.MultipartFormHandler()
    handler.parse_options.max_body_part_buffer_size = max(len(data), 1)
    handler.parse_options.max_body_part_count = MAX_EVENTS_PER_REQUEST + 1
    form = handler.deserialize(io.BytesIO(data), req.content_type, len(data))
    raws = []
    for part in form:
        if not part.filename:
            raise falcon.HTTPBadRequest(
                title="Malformed form",
                description=f"part {part.name!r} is not a file: each part is one event's file",
            )
        raws.append(part.stream.read())
    return raws


def _checked(raw: bytes, index: int) -> tuple[str, bytes]:
    """(id, body to publish) for event number ``index``; 422 saying which and why."""
    where = f"event {index}"
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"{where} is {len(raw)} bytes; at most {MAX_EVENT_BYTES}")
    try:
        event = parse_event(raw)
    except InvalidEvent as exc:
        raise InvalidEvent(f"{where}: {exc.description}") from exc
    if event.function_id is not None:
        raise InvalidEvent(f"{where}: function_id is the platform's own field")
    event_id = event.id if event.id_origin == "event" else new_event_id()
    try:
        body = encode_event(
            event.event_source, event.event_type, event.data, id=event_id, alias=event.alias
        )
    except InvalidEvent as exc:
        raise InvalidEvent(f"{where}: {exc.description}") from exc
    return event_id, body
