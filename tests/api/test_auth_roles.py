"""Who may do what: every endpoint tried by every kind of caller, across two projects.

The callers come from a table of tokens (the Keystone mode's own token check is
tried against the real Keystone in tests/openstack/test_keystone_api.py); what is
under test here is the API's part: the role table, and that another project's
records answer exactly as missing ones do.
"""

from __future__ import annotations

from typing import Any

import pytest
from api_helpers import (
    CALLERS,
    ENDPOINTS,
    HELLO,
    TokenTable,
    allowed_for,
    body_for,
    encode_multipart,
    expected_status,
    function_fields,
)
from falcon.testing import TestClient

from catalog_api.app import create_app
from lambda_os.catalogue import Catalogue
from lambda_os.records import AliasRecord, DeadLetterRecord, ExecutionRecord, execution_id_for
from lambda_os.settings import Settings


@pytest.fixture
def client(catalogue: Catalogue, settings: Settings) -> TestClient:
    return TestClient(create_app(catalogue, settings, authenticator=TokenTable()))


def call(client: TestClient, who: str | None, method: str, path: str, **kwargs: Any):
    headers = dict(kwargs.pop("headers", {}))
    if who is not None:
        headers["X-Auth-Token"] = who
    return client.simulate_request(method, path, headers=headers, **kwargs)


def upload(client: TestClient, who: str, name: str = "hello"):
    body, form_type = encode_multipart(
        function_fields(name=name), {"code": ("hello.py", HELLO, "text/x-python")}
    )
    return call(
        client, who, "POST", "/v1/functions", body=body, headers={"Content-Type": form_type}
    )


@pytest.fixture
def a_function(client: TestClient, catalogue: Catalogue) -> dict[str, Any]:
    """Project A's function, one execution of it, one dead letter of it, its version 1
    published and its alias live pointing there."""
    created = upload(client, "a-member")
    assert created.status_code == 201, created.text
    function = created.json
    execution_id = execution_id_for("event-a", function["id"])
    catalogue.create_execution(ExecutionRecord(execution_id, function["id"], 1, "event-a"))
    letter = catalogue.add_dead_letter(
        DeadLetterRecord("", "failed", "it failed", function_id=function["id"])
    )
    catalogue.publish_version(function["id"])
    catalogue.put_alias(AliasRecord("", function["id"], "live", 1))
    return {**function, "execution_id": execution_id, "dead_letter_id": letter.id}


@pytest.mark.parametrize("method,template", ENDPOINTS)
@pytest.mark.parametrize("who", CALLERS)
def test_each_caller_gets_its_answer_on_project_a_resources(
    client, a_function, who, method, template
):
    path = template.format(**a_function)
    result = call(client, who, method, path, **body_for(method, template))
    expected = expected_status(who, method, allowed_for(method, template))
    assert result.status_code == expected, (who, method, path, result.text)


def test_an_unknown_id_and_another_projects_id_answer_alike(client, a_function):
    theirs = call(client, "b-member", "GET", f"/v1/functions/{a_function['id']}")
    missing = call(client, "b-member", "GET", "/v1/functions/no-such-function")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json["title"] == missing.json["title"]
    assert a_function["id"] in theirs.json["description"]
    assert "project" not in theirs.json["description"]


def test_listings_hold_only_the_callers_project(client, a_function):
    assert upload(client, "b-member", name="bees").status_code == 201
    for who, names in (("a-member", ["hello"]), ("b-member", ["bees"])):
        listed = call(client, who, "GET", "/v1/functions").json["functions"]
        assert [f["name"] for f in listed] == names
    assert len(call(client, "admin", "GET", "/v1/functions").json["functions"]) == 2

    for path, key in (("/v1/executions", "executions"), ("/v1/deadletters", "deadletters")):
        assert len(call(client, "a-reader", "GET", path).json[key]) == 1
        assert call(client, "b-member", "GET", path).json[key] == []
        # Naming A's function in the filter shows B nothing either.
        filtered = call(client, "b-member", "GET", f"{path}?function_id={a_function['id']}")
        assert filtered.json[key] == []


def test_a_new_function_belongs_to_the_callers_project(client):
    created = upload(client, "b-member")
    assert created.json["owner"] == "project-b"


def test_two_projects_may_use_the_same_function_name(client):
    assert upload(client, "a-member", name="same").status_code == 201
    assert upload(client, "b-member", name="same").status_code == 201


@pytest.mark.parametrize("who,status", [("admin", 200), ("a-member", 403), ("a-reader", 403)])
def test_only_admins_see_the_hosts(client, who, status):
    for path in ("/v1/hosts", "/v1/hosts/events"):
        assert call(client, who, "GET", path).status_code == status


def test_without_a_valid_token_the_answer_is_401_with_a_challenge(client):
    for token in (None, "forged"):
        result = call(client, token, "GET", "/v1/functions")
        assert result.status_code == 401
        assert result.headers["WWW-Authenticate"] == TokenTable.challenge
        assert "X-Auth-Token" in result.json["description"]


def test_health_and_the_api_description_need_no_token(client):
    assert call(client, None, "GET", "/healthz").status_code == 200
    assert call(client, None, "GET", "/v1/openapi.yaml").status_code == 200
