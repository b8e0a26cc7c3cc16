"""Reading request bodies within limits: raw bytes, strict JSON, and multipart forms.

Bodies are read here and nowhere else, so every route gets the same guarantees:
a Content-Length over the route's limit is refused (413) before anything is read,
a body that runs past it while streaming is refused too, JSON must be UTF-8,
well formed and at most ``MAX_JSON_DEPTH`` deep (400 otherwise), its values
storable (``jsonlimits.check_storable``: 64-bit integers, finite numbers, valid
Unicode, no NUL in keys; 422 otherwise), and a
multipart form is parsed from the already bounded bytes.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import falcon
import falcon.media

from lambda_os.jsonlimits import (
    MAX_JSON_DEPTH,
    UnstorableJSON,
    check_storable,
    json_depth,
    refuse_constant,
)
from lambda_os.packages import MAX_UPLOAD_BYTES

MAX_FORM_PARTS = 32
FORM_OVERHEAD_BYTES = 1024 * 1024
# A 50 MiB package in base64 plus the rest of the document.
MAX_PACKAGE_BODY = MAX_UPLOAD_BYTES * 4 // 3 + FORM_OVERHEAD_BYTES
MAX_CONFIG_BODY = 64 * 1024
MAX_EVENT_BODY = 1024 * 1024


@dataclass
class Form:
    """A multipart form: text fields by name, and the ``code`` file part if there was one."""

    fields: dict[str, str] = field(default_factory=dict)
    code: bytes | None = None
    filename: str = ""


def media_type(req: falcon.Request) -> str:
    """The request's media type, lower case, without parameters; "" when absent."""
    return (req.content_type or "").split(";", 1)[0].strip().lower()


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The whole request body, refused with 413 once it is known to exceed ``limit``.

    A chunked body has no Content-Length, and falcon's ``bounded_stream`` reads
    nothing then; gunicorn decodes the chunks in ``wsgi.input``, which ends with
    the last one, so it is read from there under the same limit. A client that
    stops sending gets 408 once the server's read time-out passes
    (``lambda_os.worker``).
    """
    length = req.content_length
    if length is not None and length > limit:
        raise falcon.HTTPContentTooLarge(
            title="Request body too large",
            description=f"the body is {length} bytes; this request takes at most {limit}",
        )
    stream = req.bounded_stream if length is not None or not _chunked(req) else req.stream
    try:
        data = stream.read(limit + 1)
    except TimeoutError as exc:
        raise falcon.HTTPError(
            falcon.HTTP_408,
            title="Request timeout",
            description="the body stopped arriving before it was complete",
        ) from exc
    if len(data) > limit:
        raise falcon.HTTPContentTooLarge(
            title="Request body too large",
            description=f"the body is over {limit} bytes, the most this request takes",
        )
    return data


def _chunked(req: falcon.Request) -> bool:
    codings = (req.get_header("Transfer-Encoding") or "").lower().split(",")
    return "chunked" in (coding.strip() for coding in codings)


def parse_json(data: bytes) -> Any:
    """Strict JSON from UTF-8 bytes: nesting at most MAX_JSON_DEPTH, every value storable."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise falcon.HTTPBadRequest(
            title="Malformed JSON", description=f"the body is not UTF-8: {exc}"
        ) from exc
    try:
        value = json.loads(text, parse_constant=refuse_constant)
    except RecursionError as exc:
        raise _too_deep() from exc
    except ValueError as exc:
        raise falcon.HTTPBadRequest(title="Malformed JSON", description=str(exc)) from exc
    if json_depth(value) > MAX_JSON_DEPTH:
        raise _too_deep()
    try:
        check_storable(value)
    except UnstorableJSON as exc:
        raise falcon.HTTPUnprocessableEntity(
            title="Unsupported JSON value", description=str(exc)
        ) from exc
    return value


def read_json(req: falcon.Request, limit: int, empty: Any = None) -> Any:
    """The body as JSON; an empty body gives ``empty``. 415 for another media type."""
    kind = media_type(req)
    if kind not in ("", "application/json"):
        raise falcon.HTTPUnsupportedMediaType(
            description=f"{kind!r} is not accepted here; send application/json"
        )
    data = read_body(req, limit)
    if not data.strip():
        return empty
    return parse_json(data)


def read_json_object(req: falcon.Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, as configuration changes must be."""
    value = read_json(req, limit, empty={})
    if not isinstance(value, dict):
        raise falcon.HTTPBadRequest(
            title="Malformed request", description="the body must be a JSON object"
        )
    return value


def parse_form(req: falcon.Request, data: bytes) -> Form:
    """Split bounded multipart bytes into text fields and the ``code`` file part.

    falcon's parser raises its own 400 (``MultipartParseError``, ``HTTPInvalidHeader``)
    for a broken form; this adds 400s for unnamed, repeated or non-UTF-8 fields.
    """
    handler = falcon.media.MultipartFormHandler()
    handler.parse_options.max_body_part_buffer_size = max(len(data), 1)
    handler.parse_options.max_body_part_count = MAX_FORM_PARTS
    form = handler.deserialize(io.BytesIO(data), req.content_type, len(data))
    out = Form()
    for part in form:
        name = part.name
        if not name:
            raise _bad_form("every form part needs a name")
        if name == "code":
            if out.code is not None:
                raise _bad_form("the form has more than one 'code' part")
            out.code = part.get_data()
            out.filename = part.filename or ""
            continue
        if name in out.fields:
            raise _bad_form(f"the form field {name!r} is given more than once")
        try:
            out.fields[name] = part.get_data().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad_form(f"the form field {name!r} is not UTF-8 text") from exc
    return out


def _bad_form(description: str) -> falcon.HTTPBadRequest:
    return falcon.HTTPBadRequest(title="Malformed form", description=description)


def _too_deep() -> falcon.HTTPBadRequest:
    return falcon.HTTPBadRequest(
        title="Malformed JSON",
        description=f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep",
    )
