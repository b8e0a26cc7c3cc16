"""Every error the API answers with, as JSON ``{"title", "description"}``.

Registered once by ``create_app``: the platform's own exceptions map to their
statuses here (the resources never catch them), marshmallow's field messages
become a 422 with an ``errors`` object, and falcon's own HTTP errors (400, 404,
405, 413, 415) are rendered in the same JSON shape whatever the client accepts.
"""

from __future__ import annotations

import logging
from typing import Any

import falcon
from marshmallow import ValidationError

from lambda_os.errors import (
    Conflict,
    InvalidEvent,
    InvalidPackage,
    LambdaError,
    LeaseLost,
    NotFound,
    PackageTooLarge,
    PermanentError,
    QuotaBusy,
    QuotaExceeded,
    TransientError,
)

LOGGER = logging.getLogger(__name__)
RETRY_AFTER_S = 5

# Most specific first: PackageTooLarge is also an InvalidPackage.
STATUSES: tuple[tuple[type[LambdaError], str], ...] = (
    (PackageTooLarge, falcon.HTTP_413),
    (InvalidPackage, falcon.HTTP_422),
    (NotFound, falcon.HTTP_404),
    (Conflict, falcon.HTTP_409),
    (QuotaBusy, falcon.HTTP_429),
    (QuotaExceeded, falcon.HTTP_403),
    (InvalidEvent, falcon.HTTP_422),
    (TransientError, falcon.HTTP_503),
    (LeaseLost, falcon.HTTP_503),
    # The catalogue refused what the request would store (a document MongoDB cannot hold).
    (PermanentError, falcon.HTTP_422),
)


def status_for(exc: LambdaError) -> str:
    """The status for one of our errors: never a 500, which would say we did not foresee it."""
    for kind, status in STATUSES:
        if isinstance(exc, kind):
            return status
    return falcon.HTTP_422


def handle_lambda_error(
    req: falcon.Request, resp: falcon.Response, exc: LambdaError, params: dict[str, Any]
) -> None:
    resp.status = status_for(exc)
    if isinstance(exc, (TransientError, PermanentError)):
        LOGGER.warning("%s %s answered %s: %s", req.method, req.path, resp.status, exc)
    resp.content_type = falcon.MEDIA_JSON  # a resource may have set another type before failing
    resp.media = {"title": exc.title, "description": exc.description}
    if isinstance(exc, (TransientError, LeaseLost, QuotaBusy)):
        resp.set_header("Retry-After", str(RETRY_AFTER_S))


def handle_validation_error(
    req: falcon.Request, resp: falcon.Response, exc: ValidationError, params: dict[str, Any]
) -> None:
    messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    resp.status = falcon.HTTP_422
    resp.content_type = falcon.MEDIA_JSON
    resp.media = {
        "title": "Invalid request",
        "description": "; ".join(f"{key}: {_flatten(value)}" for key, value in messages.items()),
        "errors": messages,
    }


def serialize_http_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    """Render falcon's own errors as our JSON, with a description even when falcon has none."""
    resp.content_type = falcon.MEDIA_JSON
    resp.media = {"title": exc.title, "description": exc.description or exc.title}


def register(app: falcon.App) -> None:
    app.add_error_handler(LambdaError, handle_lambda_error)
    app.add_error_handler(ValidationError, handle_validation_error)
    app.set_error_serializer(serialize_http_error)


def _flatten(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key}: {_flatten(item)}" for key, item in value.items())
    if isinstance(value, list):
        return " ".join(_flatten(item) for item in value)
    return str(value)
