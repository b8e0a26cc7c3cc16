"""The service's own endpoints: runtimes, health, the OpenAPI document and /docs."""

from __future__ import annotations

import re

import pytest
import yaml
from falcon.testing import TestClient

from catalog_api.app import create_app
from catalog_api.runtimes import Runtime


def test_runtimes_lists_python311_with_its_image(client):
    result = client.simulate_get("/v1/runtimes")

    assert result.status_code == 200
    names = {runtime["name"]: runtime for runtime in result.json["runtimes"]}
    assert names["python3.11"]["image"] == "lambda-os/runtime:python3.11"
    assert names["python3.11"]["description"]


def test_runtimes_given_to_create_app_are_the_ones_accepted(catalogue, settings, upload):
    custom = TestClient(
        create_app(catalogue, settings, runtimes=[Runtime("python3.12", "py312", "newer")])
    )

    assert [r["name"] for r in custom.simulate_get("/v1/runtimes").json["runtimes"]] == [
        "python3.12"
    ]
    assert upload(runtime="python3.12").status_code == 422  # the default app knows only 3.11


def test_healthz_is_200_when_the_catalogue_answers(client):
    result = client.simulate_get("/healthz")

    assert result.status_code == 200
    assert result.json["status"] == "ok"


class UnreachableCatalogue:
    def health(self):
        return {"status": "unavailable", "error": "connection refused"}


def test_healthz_is_503_when_the_catalogue_does_not_answer(settings):
    client = TestClient(create_app(UnreachableCatalogue(), settings))

    result = client.simulate_get("/healthz")

    assert result.status_code == 503
    assert result.json["status"] == "unavailable"


@pytest.mark.parametrize(
    ("listener", "status", "health"),
    [("consuming", 200, "ok"), ("connecting", 503, "degraded"), ("stopping", 503, "degraded")],
)
def test_healthz_in_standalone_says_whether_the_listener_consumes(
    catalogue, settings, listener, status, health
):
    state = {"status": listener, "queue": "lambda.events", "received": 3}
    client = TestClient(create_app(catalogue, settings, listener_state=lambda: state))

    result = client.simulate_get("/healthz")

    assert result.status_code == status
    assert result.json["status"] == health
    assert result.json["listener"] == state
    assert result.json["catalogue"] == "memory"


def test_openapi_document_is_served_as_yaml(client):
    result = client.simulate_get("/v1/openapi.yaml")

    assert result.status_code == 200
    assert "yaml" in result.headers["content-type"]
    document = yaml.safe_load(result.text)
    assert document["openapi"].startswith("3.0")
    assert "/v1/functions" in document["paths"]


def test_docs_page_references_only_local_assets(client):
    result = client.simulate_get("/docs")

    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/html")
    assert "://" not in result.text
    assert "validatorUrl: null" in result.text
    for asset in re.findall(r'(?:src|href)="([^"]+)"', result.text):
        assert asset.startswith("/"), asset
        assert client.simulate_get(asset).status_code == 200, asset


def test_docs_assets_are_served_locally(client):
    script = client.simulate_get("/docs/static/swagger-ui-bundle.js")

    assert script.status_code == 200
    assert b"SwaggerUIBundle" in script.content


def test_metrics_count_requests_by_route_template_not_path(client, created):
    for _ in range(2):
        client.simulate_get(f"/v1/functions/{created['id']}")
    client.simulate_get("/v1/functions/no-such-function")
    result = client.simulate_get("/metrics")
    assert result.status_code == 200
    assert result.headers["Content-Type"].startswith("text/plain")
    text = result.text
    route = 'route="/v1/functions/{function_id}"'
    assert f'lambda_os_http_requests_total{{method="GET",{route},status="200"}}' in text
    assert f'lambda_os_http_requests_total{{method="GET",{route},status="404"}}' in text
    assert created["id"] not in text and "no-such-function" not in text
