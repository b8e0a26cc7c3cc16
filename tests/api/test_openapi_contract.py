"""The OpenAPI document and the app agree: same routes both ways, answers as documented."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalog_api.app import create_app
from catalog_api.meta import OPENAPI_PATH

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
BASE = "http://127.0.0.1:8080"
CURL_EXAMPLES = Path(__file__).resolve().parents[2] / "swagger" / "curl-examples.md"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, item[method])
        for path, item in document["paths"].items()
        for method in METHODS
        if method in item
    ]


def routed(app) -> set[tuple[str, str]]:
    """(uri template, method) for every responder a resource defines, from falcon's router."""
    found = set()
    stack = list(app._router._roots)
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.resource is None:
            continue
        for method, responder in node.method_map.items():
            # falcon fills unimplemented methods with its own 405/OPTIONS responders.
            if getattr(responder, "__self__", None) is node.resource:
                found.add((node.uri_template, method.lower()))
    return found


def test_document_is_valid_openapi_3(document):
    validator = pytest.importorskip(
        "openapi_spec_validator", reason="openapi-spec-validator not installed"
    )
    assert document["openapi"] == "3.0.3"
    validator.validate(document)


def test_every_route_is_documented_and_every_documented_operation_is_routed(
    catalogue, settings, document
):
    app = create_app(catalogue, settings)
    documented = {(path, method) for path, method, _ in operations(document)}

    assert routed(app) == documented


def test_every_operation_has_an_id_a_summary_and_a_curl_example(document):
    ids = []
    for path, method, operation in operations(document):
        ids.append(operation["operationId"])
        assert operation["summary"], (path, method)
        samples = operation["x-codeSamples"]
        url = BASE + re.sub(r"\{(\w+)\}", lambda m: "$" + m.group(1).upper(), path)
        assert samples and all(s["source"].startswith("curl ") for s in samples), (path, method)
        assert any(url in s["source"] for s in samples), (path, method, url)
        if method != "get":
            assert any(
                f"-X {method.upper()}" in s["source"]
                or "-F " in s["source"]
                or " -d " in s["source"]
                for s in samples
            ), (path, method)
    assert len(ids) == len(set(ids))


def test_every_error_response_is_described_as_json(document):
    responses = document["components"]["responses"]
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            if "$ref" in response:
                response = responses[response["$ref"].rsplit("/", 1)[1]]
            schema = response["content"]["application/json"]["schema"]["$ref"]
            assert schema.rsplit("/", 1)[1] in ("Error", "ValidationError", "Health"), (
                path,
                method,
                status,
            )


def test_probing_each_operation_answers_a_documented_status(client, document):
    for path, method, operation in operations(document):
        url = re.sub(r"\{\w+\}", "nope", path)
        result = client.simulate_request(method.upper(), url)
        assert result.status_code < 500 or url == "/healthz", (method, url, result.text)
        assert str(result.status_code) in operation["responses"], (method, url, result.status)


def test_curl_walkthrough_uses_the_documented_examples(document):
    samples = {
        line
        for _, _, operation in operations(document)
        for sample in operation["x-codeSamples"]
        for line in sample["source"].splitlines()
    }
    commands = [
        line.split(" | ")[0]
        for line in CURL_EXAMPLES.read_text(encoding="utf-8").splitlines()
        if line.startswith("curl ")
    ]

    assert len(commands) >= 8
    for command in commands:
        assert command in samples, command


def test_every_operation_documents_the_403_a_web_page_gets(client, document):
    for path, method, operation in operations(document):
        url = re.sub(r"\{\w+\}", "nope", path)
        result = client.simulate_request(
            method.upper(),
            url,
            headers={"Host": "attacker.example", "Origin": "http://evil.example"},
        )
        assert result.status_code == 403, (method, url, result.status)
        assert "403" in operation["responses"], (method, url)


def test_the_document_says_which_operations_need_a_token(document):
    from catalog_api.auth.middleware import is_public

    # Optional in the document: only LAMBDA_OS_AUTH=keystone asks for it.
    assert document["security"] == [{"keystoneToken": []}, {}]
    scheme = document["components"]["securitySchemes"]["keystoneToken"]
    assert (scheme["in"], scheme["name"]) == ("header", "X-Auth-Token")
    for path, method, operation in operations(document):
        if is_public(path):
            assert operation.get("security") == [], (method, path)
        else:
            assert "security" not in operation, (method, path)
            assert "401" in operation["responses"], (method, path)
