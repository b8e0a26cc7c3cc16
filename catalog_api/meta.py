"""About the service itself: runtimes, health, the OpenAPI document and its Swagger UI.

The OpenAPI document lives in the repository's ``swagger/`` directory and is read
from there (``Path(__file__).parents[1] / "swagger"``). ``pip install -e .`` keeps
the package in the repository, so that path resolves; it is the one supported way
to install the API. The Swagger UI assets come from the ``swagger-ui-bundle``
package and are served from ``/docs/static/``, so ``/docs`` needs no internet access.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import falcon

from catalog_api.runtimes import RuntimeList
from lambda_os.catalogue import Catalogue
from lambda_os.settings import Settings

OPENAPI_PATH = Path(__file__).resolve().parents[1] / "swagger" / "openapi.yaml"
DOCS_STATIC = "/docs/static"

DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Lambda on OpenStack API</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/v1/openapi.yaml",
      dom_id: "#swagger-ui",
      validatorUrl: null,
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout"
    });
  </script>
</body>
</html>
"""

NO_ASSETS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Lambda on OpenStack API</title></head>
<body>
  <p>The Swagger UI assets (the swagger-ui-bundle package) are not installed here.
  The API is described by <a href="/v1/openapi.yaml">/v1/openapi.yaml</a>.</p>
</body>
</html>
"""


def swagger_ui_dir() -> Path | None:
    """Where swagger-ui-bundle keeps its static files, or None if it is not installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    path = Path(str(swagger_ui_path))
    return path if path.is_dir() else None


class RuntimesResource:
    """``/v1/runtimes``: the runtimes a function may name, with their images."""

    def __init__(self, runtimes: RuntimeList, settings: Settings) -> None:
        self._runtimes = [runtime.to_api(settings.runtime_image_prefix) for runtime in runtimes]

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"runtimes": self._runtimes}


class HealthResource:
    """``/healthz``: 200 while the catalogue answers (and, in ``standalone``, the listener
    consumes), 503 otherwise, with what each part says of itself."""

    def __init__(
        self, catalogue: Catalogue, listener_state: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        self._catalogue = catalogue
        self._listener_state = listener_state

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        health = self._catalogue.health()
        healthy = health.get("status") == "ok"
        if self._listener_state is not None:
            listener = self._listener_state()
            health["listener"] = listener
            healthy = healthy and listener.get("status") == "consuming"
            if not healthy and health.get("status") == "ok":
                health["status"] = "degraded"
        resp.status = falcon.HTTP_200 if healthy else falcon.HTTP_503
        resp.media = health


class OpenAPIResource:
    """``/v1/openapi.yaml``: the API's own description, as written in swagger/."""

    def __init__(self, path: Path = OPENAPI_PATH) -> None:
        self._path = path

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise falcon.HTTPNotFound(
                description=f"{self._path} is missing: install the API with `pip install -e .` "
                "from its repository"
            ) from exc
        resp.content_type = "application/yaml"
        resp.text = text


class DocsResource:
    """``/docs``: Swagger UI on the OpenAPI document, with every asset served locally."""

    def __init__(self, assets: Path | None) -> None:
        self._page = DOCS_PAGE if assets is not None else NO_ASSETS_PAGE

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = self._page
