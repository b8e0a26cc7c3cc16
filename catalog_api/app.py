"""The WSGI application: ``create_app`` wires resources to routes, ``get_app`` builds the real one.

``lambda-os api`` and ``lambda-os standalone`` build the app with every real part
in ``lambda_os/serve.py`` (invocations and replays through RabbitMQ). ``get_app``
is the catalogue alone, for ``gunicorn 'catalog_api.app:get_app()'`` without a
broker: invocations and replays answer 503 there. Tests call ``create_app`` with
a mongomock catalogue and, for invocations and replays, doubles.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import falcon
import falcon.media

from catalog_api import errors
from catalog_api.auth import (
    Authentication,
    Authenticator,
    api_tokens_for,
    authenticator_for,
    protect,
)
from catalog_api.console import ConsoleAssetResource, ConsolePageResource
from catalog_api.crosssite import CrossSiteGuard
from catalog_api.deadletters import (
    DeadLetterReplayResource,
    DeadLetterResource,
    DeadLettersResource,
    Replayer,
)
from catalog_api.events import EventSink, EventsResource
from catalog_api.executions import ExecutionLogsResource, ExecutionResource, ExecutionsResource
from catalog_api.functions import CodeResource, FunctionResource, FunctionsResource
from catalog_api.hosts import HostEventsResource, HostsResource
from catalog_api.invocations import InvocationsResource
from catalog_api.invoker import Invoker
from catalog_api.meta import (
    DOCS_STATIC,
    DocsResource,
    HealthResource,
    OpenAPIResource,
    RuntimesResource,
    swagger_ui_dir,
)
from catalog_api.metrics import FunctionMetricsResource
from catalog_api.prometheus import MetricsResource, RequestMetrics
from catalog_api.quotas import OwnQuotaResource, QuotaGuard, QuotaResource
from catalog_api.runtimes import RUNTIMES, RuntimeList
from catalog_api.schedules import ScheduleResource, SchedulesResource
from catalog_api.users import TokensResource, UserResource, UsersResource
from catalog_api.versions import (
    AliasesResource,
    AliasResource,
    VersionResource,
    VersionsResource,
)
from lambda_os.catalogue import Catalogue, connect
from lambda_os.settings import Settings


def create_app(
    catalogue: Catalogue,
    settings: Settings,
    invoker: Invoker | None = None,
    runtimes: RuntimeList | None = None,
    replayer: Replayer | None = None,
    listener_state: Callable[[], dict[str, Any]] | None = None,
    authenticator: Authenticator | None = None,
    events: EventSink | None = None,
) -> falcon.App:
    """The API on this catalogue; invocations (``invoker``), dead-letter replays
    (``replayer``) and events over HTTP (``events``) answer 503 when theirs is None. ``listener_state`` is the listener's
    in the same process (``standalone``), which ``/healthz`` reports. Callers are
    authenticated by ``authenticator``, by default the one ``LAMBDA_OS_AUTH`` names
    (a WSGI wrapper the mode needs, such as Keystone's, is ``served``'s)."""
    runtimes = RUNTIMES if runtimes is None else tuple(runtimes)
    api_tokens = api_tokens_for(catalogue, settings)
    if authenticator is None:
        authenticator = api_tokens or authenticator_for(settings)
    app = falcon.App(
        middleware=[RequestMetrics(), CrossSiteGuard(settings), Authentication(authenticator)]
    )
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = falcon.media.JSONHandler(dumps=_dumps)
    errors.register(app)

    quotas = QuotaGuard(catalogue, settings)
    app.add_route("/v1/functions", FunctionsResource(catalogue, runtimes, quotas))
    app.add_route("/v1/functions/{function_id}", FunctionResource(catalogue, runtimes))
    app.add_route("/v1/functions/{function_id}/code", CodeResource(catalogue, quotas))
    app.add_route(
        "/v1/functions/{function_id}/invocations", InvocationsResource(catalogue, invoker, quotas)
    )
    app.add_route("/v1/functions/{function_id}/metrics", FunctionMetricsResource(catalogue))
    app.add_route("/v1/functions/{function_id}/schedules", SchedulesResource(catalogue))
    app.add_route(
        "/v1/functions/{function_id}/schedules/{schedule_id}", ScheduleResource(catalogue)
    )
    app.add_route("/v1/functions/{function_id}/versions", VersionsResource(catalogue))
    app.add_route("/v1/functions/{function_id}/versions/{version}", VersionResource(catalogue))
    app.add_route("/v1/functions/{function_id}/aliases", AliasesResource(catalogue))
    app.add_route("/v1/functions/{function_id}/aliases/{alias}", AliasResource(catalogue))
    app.add_route("/v1/executions", ExecutionsResource(catalogue))
    app.add_route("/v1/executions/{execution_id}", ExecutionResource(catalogue))
    app.add_route("/v1/executions/{execution_id}/logs", ExecutionLogsResource(catalogue))
    app.add_route("/v1/events", EventsResource(events))
    app.add_route("/v1/deadletters", DeadLettersResource(catalogue))
    app.add_route("/v1/deadletters/{dead_letter_id}", DeadLetterResource(catalogue))
    app.add_route(
        "/v1/deadletters/{dead_letter_id}/replay", DeadLetterReplayResource(catalogue, replayer)
    )
    app.add_route("/v1/auth/tokens", TokensResource(api_tokens))
    app.add_route("/v1/users", UsersResource(api_tokens))
    app.add_route("/v1/users/{name}", UserResource(api_tokens))
    app.add_route("/v1/quota", OwnQuotaResource(catalogue, settings))
    app.add_route("/v1/quotas/{project_id}", QuotaResource(catalogue, settings))
    app.add_route("/v1/hosts", HostsResource(catalogue))
    app.add_route("/v1/hosts/events", HostEventsResource(catalogue))
    app.add_route("/v1/runtimes", RuntimesResource(runtimes, settings))
    app.add_route("/v1/openapi.yaml", OpenAPIResource())
    app.add_route("/healthz", HealthResource(catalogue, listener_state))
    app.add_route("/metrics", MetricsResource())

    app.add_route("/console", ConsolePageResource())
    app.add_route("/console/{asset}", ConsoleAssetResource())

    assets = swagger_ui_dir()
    app.add_route("/docs", DocsResource(assets))
    if assets is not None:
        app.add_static_route(DOCS_STATIC, str(assets))
    return app


def _dumps(value: Any) -> str:
    """JSON ending in a newline, so curl output in a terminal ends its line."""
    return json.dumps(value, ensure_ascii=False) + "\n"


def served(app: falcon.App, settings: Settings) -> Callable[..., Any]:
    """The WSGI application as it is served: ``app`` behind what the auth mode needs."""
    return protect(app, settings)


def get_app() -> Callable[..., Any]:
    """The API on the catalogue the environment names (in memory without ``MONGO_URL``)."""
    settings = Settings.from_env()
    return served(create_app(connect(settings.mongo_url, settings.mongo_db), settings), settings)
