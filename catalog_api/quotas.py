"""Quotas: the checks the resources make before storing or running, and the quota routes.

``GET /v1/quota`` is the caller's own project: its limits and what it uses.
``GET|PUT /v1/quotas/{project_id}`` read and change any project's limits (admin
only, by the role table in ``catalog_api.auth.middleware``).
"""

from __future__ import annotations

import falcon
from marshmallow import Schema, fields, validate

from catalog_api.auth.scope import principal_of
from catalog_api.forms import MAX_CONFIG_BODY, read_json_object
from lambda_os.catalogue import Catalogue
from lambda_os.quotas import check_run, check_store, quota_of, usage_of
from lambda_os.settings import Settings


class QuotaChangeSchema(Schema):
    functions = fields.Integer(strict=True, validate=validate.Range(0, 1_000_000))
    package_bytes = fields.Integer(strict=True, validate=validate.Range(0, 1 << 50))
    executions = fields.Integer(strict=True, validate=validate.Range(0, 1_000_000))
    memory_mb = fields.Integer(strict=True, validate=validate.Range(0, 1 << 30))


class QuotaGuard:
    """Refuses what would pass a project's quota (403 to store, 429 to run now)."""

    def __init__(self, catalogue: Catalogue, settings: Settings) -> None:
        self._catalogue = catalogue
        self._settings = settings

    def before_store(self, project_id: str, new_functions: int, added_bytes: int) -> None:
        quota = quota_of(self._catalogue, self._settings, project_id)
        usage = usage_of(self._catalogue, project_id)
        check_store(quota, usage, project_id, new_functions, added_bytes)

    def before_run(self, project_id: str, memory_mb: int) -> None:
        quota = quota_of(self._catalogue, self._settings, project_id)
        check_run(quota, usage_of(self._catalogue, project_id), project_id, memory_mb)


def quota_view(catalogue: Catalogue, settings: Settings, project_id: str) -> dict[str, object]:
    return {
        "project_id": project_id,
        "quota": quota_of(catalogue, settings, project_id).to_api(),
        "usage": usage_of(catalogue, project_id).to_api(),
    }


class OwnQuotaResource:
    """``/v1/quota``: the caller's project's limits and use."""

    def __init__(self, catalogue: Catalogue, settings: Settings) -> None:
        self._catalogue = catalogue
        self._settings = settings

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        project = principal_of(req).project_id
        resp.media = quota_view(self._catalogue, self._settings, project)


MAX_PROJECT_ID = 128


def checked_project(project_id: str) -> str:
    """A project id as Keystone makes them (32 hex digits) or a name, at most 128 characters."""
    if not 0 < len(project_id) <= MAX_PROJECT_ID:
        raise falcon.HTTPUnprocessableEntity(
            title="Invalid project id",
            description=f"a project id has 1 to {MAX_PROJECT_ID} characters",
        )
    return project_id


class QuotaResource:
    """``/v1/quotas/{project_id}``: any project's limits and use; PUT changes limits."""

    def __init__(self, catalogue: Catalogue, settings: Settings) -> None:
        self._catalogue = catalogue
        self._settings = settings

    def on_get(self, req: falcon.Request, resp: falcon.Response, project_id: str) -> None:
        resp.media = quota_view(self._catalogue, self._settings, checked_project(project_id))

    def on_put(self, req: falcon.Request, resp: falcon.Response, project_id: str) -> None:
        checked_project(project_id)
        changes = QuotaChangeSchema().load(read_json_object(req, MAX_CONFIG_BODY))
        if not changes:
            raise falcon.HTTPBadRequest(
                title="Nothing to change",
                description="name at least one of functions, package_bytes, executions, memory_mb",
            )
        self._catalogue.set_quota(project_id, changes)
        resp.media = quota_view(self._catalogue, self._settings, project_id)
