"""A web page cannot drive the API: unknown Host names and cross-origin writes get 403."""

from __future__ import annotations

import pytest
from api_helpers import HELLO, encode_multipart, function_fields
from falcon.testing import TestClient

from catalog_api.app import create_app
from lambda_os.settings import Settings

EVIL = "http://evil.example"


def form_post(client: TestClient, **headers: str):
    body, form_type = encode_multipart(
        function_fields(network="true"), {"code": ("f.py", HELLO, "text/x-python")}
    )
    return client.simulate_post(
        "/v1/functions", body=body, headers={"Content-Type": form_type, **headers}
    )


@pytest.fixture
def loopback(catalogue) -> TestClient:
    """The API with the default settings: bound to 127.0.0.1:8080, nothing else allowed."""
    return TestClient(create_app(catalogue, Settings()))


def test_cross_site_form_post_through_a_rebound_name_is_refused_and_creates_nothing(
    loopback, catalogue
):
    result = form_post(loopback, Origin=EVIL, Host="attacker.example:8080")

    assert result.status_code == 403
    assert "attacker.example" in result.json["description"]
    assert loopback.simulate_get("/v1/functions", host="127.0.0.1").json["functions"] == []


def test_cross_origin_form_post_to_the_loopback_address_is_refused(loopback):
    result = form_post(loopback, Origin=EVIL, Host="127.0.0.1:8080")

    assert result.status_code == 403
    assert result.json["title"] == "Cross-origin request"
    assert EVIL in result.json["description"]


@pytest.mark.parametrize("method", ["PATCH", "PUT", "DELETE"])
def test_every_cross_origin_write_is_refused(loopback, method):
    result = loopback.simulate_request(
        method, "/v1/functions/nothing", headers={"Origin": "null", "Host": "localhost:8080"}
    )
    assert result.status_code == 403


def test_a_page_on_another_port_of_localhost_is_cross_origin(loopback):
    result = form_post(loopback, Origin="http://localhost:3000", Host="localhost:8080")
    assert result.status_code == 403


def test_unknown_host_is_refused_for_reads_too(loopback):
    result = loopback.simulate_get("/v1/functions", headers={"Host": "attacker.example:8080"})
    assert result.status_code == 403
    assert result.json["title"] == "Unknown host"


@pytest.mark.parametrize("host", ["localhost:8080", "127.0.0.1:8080", "[::1]:8080", "LOCALHOST"])
def test_loopback_names_are_answered_whatever_the_port(loopback, host):
    assert loopback.simulate_get("/v1/functions", headers={"Host": host}).status_code == 200


def test_same_origin_write_is_accepted_as_swagger_ui_sends_it(loopback):
    result = form_post(loopback, Origin="http://127.0.0.1:8080", Host="127.0.0.1:8080")
    assert result.status_code == 201, result.text


def test_write_without_origin_is_accepted_as_curl_sends_it(loopback):
    assert form_post(loopback, Host="127.0.0.1:8080").status_code == 201


def test_cross_origin_read_is_answered_since_the_browser_keeps_it_from_the_page(loopback):
    result = loopback.simulate_get(
        "/v1/functions", headers={"Origin": EVIL, "Host": "127.0.0.1:8080"}
    )
    assert result.status_code == 200
    assert "Access-Control-Allow-Origin" not in result.headers


def test_configured_hosts_and_origins_are_allowed(catalogue):
    settings = Settings(
        api_host="0.0.0.0",
        allowed_hosts="lambda.example.org, api.internal",
        allowed_origins="https://console.example.org/",
    )
    client = TestClient(create_app(catalogue, settings))

    assert client.simulate_get("/v1/functions", host="api.internal").status_code == 200
    assert client.simulate_get("/v1/functions", host="0.0.0.0").status_code == 403
    result = form_post(client, Origin="https://console.example.org", Host="lambda.example.org")
    assert result.status_code == 201, result.text


def test_bound_host_name_is_answered(catalogue):
    client = TestClient(create_app(catalogue, Settings(api_host="lambda.lan", api_port=9000)))
    assert client.simulate_get("/v1/functions", host="lambda.lan").status_code == 200


def test_star_answers_any_host_but_still_refuses_cross_origin_writes(catalogue):
    client = TestClient(create_app(catalogue, Settings(allowed_hosts="*")))

    assert client.simulate_get("/v1/functions", host="anything.example").status_code == 200
    assert form_post(client, Origin=EVIL, Host="anything.example").status_code == 403
