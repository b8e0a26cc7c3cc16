"""Execution resources: list executions, read one, and read its logs as plain text."""

from __future__ import annotations

import falcon

from catalog_api.auth.scope import scope_of
from catalog_api.paging import next_link
from catalog_api.schemas import ExecutionListQuerySchema
from lambda_os.catalogue import Catalogue


def execution_url(execution_id: str) -> str:
    return f"/v1/executions/{execution_id}"


class ExecutionsResource:
    """``/v1/executions``: executions by id order, filtered by function and status.

    Listings leave ``logs`` out (each may hold 64 KiB); read one execution or its
    ``/logs`` for them.
    """

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = ExecutionListQuerySchema().load(req.params)
        limit = query.pop("limit")
        marker = query.pop("marker", None)
        filters = scope_of(req, self._catalogue).by_function_filters(query)
        page = self._catalogue.list_executions(filters, limit, marker)
        resp.media = {
            "executions": [record.to_api(include_logs=False) for record in page.items],
            "next": next_link("/v1/executions", query, limit, page.marker),
        }


class ExecutionResource:
    """``/v1/executions/{id}``: one execution with its event, outcome and logs."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def on_get(self, req: falcon.Request, resp: falcon.Response, execution_id: str) -> None:
        resp.media = scope_of(req, self._catalogue).execution(execution_id).to_api()


class ExecutionLogsResource:
    """``/v1/executions/{id}/logs``: the function's stdout and stderr as text."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def on_get(self, req: falcon.Request, resp: falcon.Response, execution_id: str) -> None:
        logs = scope_of(req, self._catalogue).execution(execution_id).logs
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = logs
