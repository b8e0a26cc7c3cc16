"""``/v1/functions/{id}/versions`` and ``/aliases``: published versions, and names for them.

``POST .../versions`` publishes the function's current revision (its code and
configuration, under the revision's own ``version`` number) as a version that never
changes; publishing a revision published already answers 200 with it. Once its
revision is published, a configuration change makes the next revision, as new code
does (``Catalogue.update_function``). A published version is kept until it is
deleted, which an alias pointing to it prevents (409).

``PUT .../aliases/{alias}`` points an alias (``live``, ``staging``) at a published
version, optionally sending a share of the runs (``additional_weight``) to a second
one. Events name an alias with their ``alias`` field (``listener.match``) and
invocations with ``?alias=`` (``catalog_api.invocations``); the execution records
the alias and the version that ran. All of it is the function's project's, as the
function is, and goes with it when it is deleted.
"""

from __future__ import annotations

import re
from typing import Any

import falcon
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from catalog_api.auth.scope import scope_of
from catalog_api.forms import MAX_CONFIG_BODY, read_json_object
from catalog_api.schemas import MAX_DESCRIPTION
from lambda_os.catalogue import Catalogue
from lambda_os.errors import NotFound
from lambda_os.records import ALIAS_NAME, ALIAS_NAME_RULE, AliasRecord

# Each published version keeps its package: the cap keeps a project's stored bytes
# within reach of its package quota, which counts the current packages only.
MAX_PUBLISHED_VERSIONS = 100
MAX_ALIASES_PER_FUNCTION = 20
MAX_VERSION = 2**31 - 1
_VERSION_IN_PATH = re.compile(r"[1-9][0-9]{0,9}")


class WeightField(fields.Float):
    """A JSON number: marshmallow's Float would also take the text "0.5"."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class PublishSchema(Schema):
    class Meta:
        unknown = RAISE

    description = fields.String(load_default="", validate=validate.Length(max=MAX_DESCRIPTION))


class AliasSchema(Schema):
    class Meta:
        unknown = RAISE

    version = fields.Integer(strict=True, required=True, validate=validate.Range(1, MAX_VERSION))
    additional_version = fields.Integer(
        strict=True, allow_none=True, load_default=None, validate=validate.Range(1, MAX_VERSION)
    )
    additional_weight = WeightField(
        allow_none=True, load_default=None, validate=validate.Range(0, 1, max_inclusive=False)
    )

    @validates_schema
    def _split(self, data: dict[str, Any], **_kwargs: Any) -> None:
        other, weight = data.get("additional_version"), data.get("additional_weight")
        if (other is None) != (weight is None):
            raise ValidationError(
                "give additional_version and additional_weight together (the share of runs, "
                "0 to under 1, that go to additional_version), or neither"
            )
        if other is not None and other == data["version"]:
            raise ValidationError("additional_version must differ from version")


def version_url(function_id: str, version: int) -> str:
    return f"/v1/functions/{function_id}/versions/{version}"


def alias_url(function_id: str, alias: str) -> str:
    return f"/v1/functions/{function_id}/aliases/{alias}"


def version_number(function_id: str, text: str) -> int:
    """The version a path names; a path that names none is a version that is not there."""
    if not _VERSION_IN_PATH.fullmatch(text) or int(text) > MAX_VERSION:
        raise NotFound(f"version {text!r} of function {function_id!r} is not published")
    return int(text)


class VersionsResource:
    """``/v1/functions/{id}/versions``: list (GET) and publish (POST) versions."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def on_get(self, req: falcon.Request, resp: falcon.Response, function_id: str) -> None:
        function = scope_of(req, self._catalogue).function(function_id)
        published = self._catalogue.list_published_versions(function.id)
        resp.media = {"versions": [version.to_api() for version in published]}

    def on_post(self, req: falcon.Request, resp: falcon.Response, function_id: str) -> None:
        function = scope_of(req, self._catalogue).function(function_id)
        data = PublishSchema().load(read_json_object(req, MAX_CONFIG_BODY))
        published = self._catalogue.list_published_versions(function.id)
        if len(published) >= MAX_PUBLISHED_VERSIONS and all(
            version.version != function.version for version in published
        ):
            raise falcon.HTTPConflict(
                title="Too many versions",
                description=f"a function keeps at most {MAX_PUBLISHED_VERSIONS} published "
                "versions; delete one that no alias points to first",
            )
        version, created = self._catalogue.publish_version(function.id, data["description"])
        if created:
            resp.status = falcon.HTTP_201
            resp.location = version_url(function.id, version.version)
        resp.media = version.to_api()


class VersionResource:
    """``/v1/functions/{id}/versions/{version}``: read (GET) or delete (DELETE) one."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, function_id: str, version: str
    ) -> None:
        function = scope_of(req, self._catalogue).function(function_id)
        number = version_number(function.id, version)
        resp.media = self._catalogue.get_published_version(function.id, number).to_api()

    def on_delete(
        self, req: falcon.Request, resp: falcon.Response, function_id: str, version: str
    ) -> None:
        function = scope_of(req, self._catalogue).function(function_id)
        self._catalogue.delete_published_version(function.id, version_number(function.id, version))
        resp.status = falcon.HTTP_204


class AliasesResource:
    """``/v1/functions/{id}/aliases``: list a function's aliases (GET)."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def on_get(self, req: falcon.Request, resp: falcon.Response, function_id: str) -> None:
        function = scope_of(req, self._catalogue).function(function_id)
        resp.media = {"aliases": [a.to_api() for a in self._catalogue.list_aliases(function.id)]}


class AliasResource:
    """``/v1/functions/{id}/aliases/{alias}``: read (GET), set (PUT) or remove (DELETE) one."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, function_id: str, alias: str
    ) -> None:
        function = scope_of(req, self._catalogue).function(function_id)
        resp.media = self._catalogue.get_alias(function.id, alias).to_api()

    def on_put(
        self, req: falcon.Request, resp: falcon.Response, function_id: str, alias: str
    ) -> None:
        function = scope_of(req, self._catalogue).function(function_id)
        if not ALIAS_NAME.fullmatch(alias):
            raise ValidationError({"alias": [f"the name in the path must be {ALIAS_NAME_RULE}"]})
        data = AliasSchema().load(read_json_object(req, MAX_CONFIG_BODY))
        aliases = self._catalogue.list_aliases(function.id)
        if len(aliases) >= MAX_ALIASES_PER_FUNCTION and all(a.name != alias for a in aliases):
            raise falcon.HTTPConflict(
                title="Too many aliases",
                description=f"a function has at most {MAX_ALIASES_PER_FUNCTION} aliases",
            )
        draft = AliasRecord(
            id="",
            function_id=function.id,
            name=alias,
            version=data["version"],
            additional_version=data["additional_version"],
            additional_weight=data["additional_weight"] or 0.0,
        )
        stored, created = self._catalogue.put_alias(draft)
        if created:
            resp.status = falcon.HTTP_201
            resp.location = alias_url(function.id, alias)
        resp.media = stored.to_api()

    def on_delete(
        self, req: falcon.Request, resp: falcon.Response, function_id: str, alias: str
    ) -> None:
        function = scope_of(req, self._catalogue).function(function_id)
        self._catalogue.delete_alias(function.id, alias)
        resp.status = falcon.HTTP_204
