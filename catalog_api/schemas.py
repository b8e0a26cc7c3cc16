"""What a request may say: marshmallow schemas for functions, listings and invocations.

Every schema refuses unknown fields (``unknown=RAISE``) so a typo is a 422, not a
silently ignored setting. Form fields arrive as strings, so numbers, booleans and
the ``environment`` object also accept their text form; JSON bodies give them typed.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, pre_load, validate, validates

from lambda_os.packages import HANDLER_PATTERN
from lambda_os.records import ALIAS_NAME, ALIAS_NAME_RULE, DEAD_LETTER_KINDS, EXECUTION_STATUSES

# \Z, not $: marshmallow's Regexp uses match, and $ also matches before a trailing newline.
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}\Z"
# Visible ASCII: no spaces or control characters, so a pair matches exactly what is typed.
EVENT_KEY_PATTERN = r"^[!-~]{1,128}\Z"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z"
MAX_ENVIRONMENT_BYTES = 4096
MAX_DESCRIPTION = 1024
MAX_MARKER = 128
MAX_FILENAME = 255
DEFAULT_RUNTIME = "python3.11"
DEFAULT_HANDLER = "main.handler"
VALID_HANDLER = validate.Regexp(
    HANDLER_PATTERN.pattern, error="must be 'module.function', e.g. 'main.handler'"
)
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Set once the function exists; changed only by PUT /code or by the platform itself.
READ_ONLY_FIELDS = (
    "id",
    "owner",
    "version",
    "code_base64",
    "code_filename",
    "code_sha256",
    "code_size",
    "created_at",
    "updated_at",
)


class WholeNumber(fields.Integer):
    """An integer, given as a number or its text; 4.5 is refused rather than truncated."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, float) and not value.is_integer():
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class Environment(fields.Dict):
    """A string -> string object, or its JSON text (how a multipart form field carries it)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            keys=fields.String(
                validate=validate.Regexp(
                    ENV_NAME_PATTERN, error="must be a variable name of [A-Za-z0-9_], at most 128"
                )
            ),
            values=fields.String(validate=_environment_value),
            validate=_environment_size,
            **kwargs,
        )

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError) as exc:
                raise ValidationError("must be a JSON object of string values") from exc
        return super()._deserialize(value, attr, data, **kwargs)


def _environment_value(value: str) -> None:
    """No NUL (Docker hands ``NAME=value`` over as a C string: the engine refuses one, so
    every run would fail) and valid Unicode (a ``\\ud800`` escape in the JSON text of a
    form field decodes to a lone surrogate, which cannot be stored)."""
    if "\0" in value:
        raise ValidationError("must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError("must be valid Unicode (it holds a lone surrogate)") from exc


def _environment_size(value: dict[str, str]) -> None:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in value.items())
    if size > MAX_ENVIRONMENT_BYTES:
        raise ValidationError(
            f"names and values add up to {size} bytes; the limit is {MAX_ENVIRONMENT_BYTES}"
        )


MAX_BATCH_SIZE = 1000
# As long as Lambda's own longest batching window: a batch's messages stay unacked that long.
MAX_BATCH_WINDOW_S = 300.0


class Base64Bytes(fields.String):
    """Standard base64 text, decoded to the bytes it stands for."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bytes:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValidationError("is not valid base64") from exc


class FunctionSchema(Schema):
    """A function's configuration as given on creation; defaults fill what is left out."""

    class Meta:
        unknown = RAISE

    name = fields.String(
        required=True,
        validate=validate.Regexp(NAME_PATTERN, error="must be 1-64 of A-Z a-z 0-9 _ -"),
    )
    runtime = fields.String(load_default=DEFAULT_RUNTIME)
    handler = fields.String(
        load_default=DEFAULT_HANDLER,
        validate=[
            validate.Length(max=128),
            VALID_HANDLER,
        ],
    )
    memory_mb = WholeNumber(load_default=128, validate=validate.Range(64, 4096))
    timeout_s = WholeNumber(load_default=30, validate=validate.Range(1, 900))
    event_source = fields.String(
        required=True,
        validate=validate.Regexp(EVENT_KEY_PATTERN, error="must be 1-128 visible ASCII characters"),
    )
    event_type = fields.String(
        required=True,
        validate=validate.Regexp(EVENT_KEY_PATTERN, error="must be 1-128 visible ASCII characters"),
    )
    environment = Environment(load_default=dict)
    description = fields.String(load_default="", validate=validate.Length(max=MAX_DESCRIPTION))
    network = fields.Boolean(load_default=False)
    max_retries = WholeNumber(load_default=2, validate=validate.Range(0, 10))
    concurrency = WholeNumber(load_default=10, validate=validate.Range(1, 1000))
    # null: each event runs on its own; a number: events run as lists of up to that many.
    batch_size = WholeNumber(
        load_default=None, allow_none=True, validate=validate.Range(1, MAX_BATCH_SIZE)
    )
    batch_window_s = fields.Float(
        load_default=1.0,
        validate=validate.Range(0, MAX_BATCH_WINDOW_S, min_inclusive=False),
    )

    def __init__(self, runtimes: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._runtimes = tuple(runtimes)

    @validates("runtime")
    def _known_runtime(self, value: str, **kwargs: Any) -> None:
        if value not in self._runtimes:
            raise ValidationError(f"unknown runtime; one of {', '.join(self._runtimes)}")


class FunctionCreateJSONSchema(FunctionSchema):
    """Creation as one JSON document: the configuration plus the package in base64."""

    code_base64 = Base64Bytes(required=True)
    code_filename = fields.String(load_default="", validate=validate.Length(max=MAX_FILENAME))


class FunctionPatchSchema(FunctionSchema):
    """Configuration changes: any subset of the fields, no defaults, never the code."""

    def __init__(self, runtimes: Sequence[str], **kwargs: Any) -> None:
        super().__init__(runtimes, partial=True, **kwargs)

    @pre_load
    def _refuse_read_only(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict):
            fixed = sorted(key for key in data if key in READ_ONLY_FIELDS)
            if fixed:
                raise ValidationError(
                    {
                        key: [
                            "cannot be changed here; new code goes to PUT /v1/functions/{id}/code"
                        ]
                        for key in fixed
                    }
                )
        return data


class CodeQuerySchema(Schema):
    """Query of PUT /code: the upload's file name and, optionally, a new handler."""

    class Meta:
        unknown = RAISE

    filename = fields.String(load_default="", validate=validate.Length(max=MAX_FILENAME))
    handler = fields.String(validate=VALID_HANDLER)


class CodeFormSchema(Schema):
    """Non-file fields of a multipart PUT /code."""

    class Meta:
        unknown = RAISE

    handler = fields.String(validate=VALID_HANDLER)


class PageQuerySchema(Schema):
    """Pagination shared by every listing."""

    class Meta:
        unknown = RAISE

    limit = WholeNumber(load_default=DEFAULT_LIMIT, validate=validate.Range(1, MAX_LIMIT))
    marker = fields.String(validate=validate.Length(1, MAX_MARKER))


class ScalingEventQuerySchema(Schema):
    """The newest scaling decisions: how many (no marker: the list is read newest first)."""

    class Meta:
        unknown = RAISE

    limit = WholeNumber(load_default=DEFAULT_LIMIT, validate=validate.Range(1, MAX_LIMIT))


class FunctionListQuerySchema(PageQuerySchema):
    name = fields.String(validate=validate.Length(1, 64))
    event_source = fields.String(validate=validate.Length(1, 128))
    event_type = fields.String(validate=validate.Length(1, 128))


class ExecutionListQuerySchema(PageQuerySchema):
    function_id = fields.String(validate=validate.Length(1, 128))
    status = fields.String(validate=validate.OneOf(EXECUTION_STATUSES))


class DeadLetterListQuerySchema(PageQuerySchema):
    kind = fields.String(validate=validate.OneOf(DEAD_LETTER_KINDS))
    function_id = fields.String(validate=validate.Length(1, 128))
    event_id = fields.String(validate=validate.Length(1, 255))


class InvocationQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    mode = fields.String(load_default="sync", validate=validate.OneOf(("sync", "async")))
    alias = fields.String(
        validate=validate.Regexp(ALIAS_NAME.pattern + r"\Z", error=f"must be {ALIAS_NAME_RULE}")
    )
