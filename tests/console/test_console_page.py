"""``/console`` serves one page and its own two assets, public, local, and locked to its origin."""

from __future__ import annotations

import re

import falcon.testing
import pytest
from falcon.testing import TestClient

from catalog_api.app import create_app
from lambda_os.settings import Settings

HOST = falcon.testing.helpers.DEFAULT_HOST


@pytest.fixture
def client(catalogue, tmp_path) -> TestClient:
    """The API with its own tokens, so that /v1 asks for one."""
    settings = Settings(allowed_hosts=HOST, auth="tokens", state_dir=str(tmp_path))
    return TestClient(create_app(catalogue, settings))


def test_the_page_needs_no_token_while_the_data_it_shows_does(client):
    page = client.simulate_get("/console")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert client.simulate_get("/v1/functions").status_code == 401


def test_the_page_loads_only_its_own_assets_and_they_are_served(client):
    page = client.simulate_get("/console")

    assert "://" not in page.text
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
    assert sorted(assets) == ["/console/console.css", "/console/console.js"]
    script = client.simulate_get("/console/console.js")
    style = client.simulate_get("/console/console.css")
    assert (script.status_code, style.status_code) == (200, 200)
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.headers["content-type"].startswith("text/css")


def test_the_policy_lets_the_page_load_from_and_call_its_own_origin_only(client):
    policy = client.simulate_get("/console").headers["content-security-policy"]

    directives = dict(item.strip().split(" ", 1) for item in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"


def test_the_script_calls_only_this_api_with_its_token_header(client):
    script = client.simulate_get("/console/console.js").text

    urls = set(re.findall(r"[a-z]+://[^\s\"'`]+", script))
    assert urls == {"http://www.w3.org/2000/svg"}  # a namespace name, never fetched
    assert '"X-Auth-Token"' in script
    assert ".innerHTML" not in script and ".outerHTML" not in script


@pytest.mark.parametrize("asset", ["__init__.py", "index.html", "..%2F__init__.py", "nope.js"])
def test_nothing_but_the_two_assets_is_served(client, asset):
    assert client.simulate_get(f"/console/{asset}").status_code == 404
