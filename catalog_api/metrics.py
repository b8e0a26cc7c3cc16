"""``/v1/functions/{id}/metrics``: a function's figures over the last ``window_s`` seconds."""

from __future__ import annotations

from datetime import timedelta

import falcon
from marshmallow import RAISE, Schema, validate

from catalog_api.auth.scope import scope_of
from catalog_api.schemas import WholeNumber
from lambda_os.catalogue import Catalogue
from lambda_os.metrics import MAX_RECORDS, function_metrics
from lambda_os.records import utcnow

MAX_WINDOW_S = 31 * 86400


class MetricsQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    window_s = WholeNumber(load_default=86400, validate=validate.Range(60, MAX_WINDOW_S))


class FunctionMetricsResource:
    """Executions, errors by reason, duration percentiles, cold starts, runs per day."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def on_get(self, req: falcon.Request, resp: falcon.Response, function_id: str) -> None:
        window_s = MetricsQuerySchema().load(req.params)["window_s"]
        function = scope_of(req, self._catalogue).function(function_id)
        since = utcnow() - timedelta(seconds=window_s)
        docs, truncated = self._catalogue.executions_since(function.id, since, MAX_RECORDS)
        resp.media = {
            "function_id": function.id,
            "window_s": window_s,
            **function_metrics(docs, since, truncated),
        }
