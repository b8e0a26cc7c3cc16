"""Quotas per project: refusals name the quota and its value; admins change them.

Stored limits (functions, package bytes) refuse with 403; at-once limits (executions,
memory of executions) refuse a synchronous invocation with 429 and Retry-After.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from api_helpers import HELLO, TokenTable, encode_multipart, function_fields
from falcon.testing import TestClient

from catalog_api.app import create_app
from lambda_os.catalogue import Catalogue
from lambda_os.records import ExecutionRecord, execution_id_for, utcnow
from lambda_os.settings import Settings


class RecordingInvoker:
    """Finishes every invocation at once; counts them."""

    def __init__(self) -> None:
        self.calls = 0

    def invoke(self, function: Any, data: Any, alias: str | None = None) -> Any:
        self.calls += 1
        return ExecutionRecord(
            execution_id_for(f"e{self.calls}", function.id),
            function.id,
            function.version,
            f"e{self.calls}",
            status="succeeded",
        )

    def submit(self, function: Any, data: Any, alias: str | None = None) -> Any:
        return self.invoke(function, data)


@pytest.fixture
def invoker() -> RecordingInvoker:
    return RecordingInvoker()


@pytest.fixture
def client(catalogue: Catalogue, settings: Settings, invoker) -> TestClient:
    settings = dataclasses.replace(settings, quota_functions=2, quota_executions=1)
    app = create_app(catalogue, settings, invoker=invoker, authenticator=TokenTable())
    return TestClient(app)


def as_(who: str) -> dict[str, str]:
    return {"X-Auth-Token": who}


def upload(client: TestClient, who: str, name: str, code: bytes = HELLO):
    body, form_type = encode_multipart(
        function_fields(name=name), {"code": ("hello.py", code, "text/x-python")}
    )
    headers = {**as_(who), "Content-Type": form_type}
    return client.simulate_post("/v1/functions", body=body, headers=headers)


def test_a_project_over_its_function_quota_is_refused_with_403_naming_it(client):
    assert upload(client, "a-member", "one").status_code == 201
    assert upload(client, "a-member", "two").status_code == 201
    refused = upload(client, "a-member", "three")
    assert refused.status_code == 403
    assert refused.json["title"] == "Quota exceeded"
    assert "functions quota of 2" in refused.json["description"]
    assert "in use: 2" in refused.json["description"]
    # Another project has its own count, and nothing stored was lost.
    assert upload(client, "b-member", "three").status_code == 201
    listed = client.simulate_get("/v1/functions", headers=as_("a-member")).json["functions"]
    assert sorted(f["name"] for f in listed) == ["one", "two"]


def test_an_admin_raises_a_projects_quota_and_the_project_sees_it(client):
    for name in ("one", "two"):
        upload(client, "a-member", name)
    change = client.simulate_put(
        "/v1/quotas/project-a", json={"functions": 3}, headers=as_("admin")
    )
    assert change.status_code == 200, change.text
    assert change.json["quota"]["functions"] == 3
    assert upload(client, "a-member", "three").status_code == 201
    own = client.simulate_get("/v1/quota", headers=as_("a-reader")).json
    assert own["project_id"] == "project-a"
    assert own["quota"]["functions"] == 3 and own["usage"]["functions"] == 3
    assert own["usage"]["package_bytes"] == 3 * len(HELLO)


def test_only_admins_read_or_change_other_projects_quotas(client):
    assert client.simulate_get("/v1/quotas/project-b", headers=as_("a-member")).status_code == 403
    put = client.simulate_put(
        "/v1/quotas/project-a", json={"functions": 999}, headers=as_("a-member")
    )
    assert put.status_code == 403


@pytest.mark.parametrize(
    "body", [{}, {"functions": -1}, {"functions": "many"}, {"functions": 1.5}, {"other": 1}]
)
def test_a_bad_quota_change_is_a_4xx_and_changes_nothing(client, body):
    result = client.simulate_put("/v1/quotas/project-a", json=body, headers=as_("admin"))
    assert result.status_code in (400, 422), result.text
    quota = client.simulate_get("/v1/quotas/project-a", headers=as_("admin")).json["quota"]
    assert quota["functions"] == 2


def test_package_bytes_count_the_current_packages_of_the_project(client):
    client.simulate_put("/v1/quotas/project-a", json={"package_bytes": 100}, headers=as_("admin"))
    big = b"# " + b"x" * 150 + b"\ndef handler(event, context):\n    return 1\n"
    refused = upload(client, "a-member", "big", code=big)
    assert refused.status_code == 403
    assert "package_bytes quota of 100" in refused.json["description"]
    small = upload(client, "a-member", "small")
    assert small.status_code == 201
    # Replacing the code with a bigger package counts only the difference.
    put = client.simulate_put(
        f"/v1/functions/{small.json['id']}/code?filename=main.py",
        body=big,
        headers={**as_("a-member"), "Content-Type": "text/x-python"},
    )
    assert put.status_code == 403
    assert (
        client.simulate_get(f"/v1/functions/{small.json['id']}", headers=as_("a-member")).json[
            "version"
        ]
        == 1
    )


def test_a_synchronous_invocation_over_the_running_quota_gets_429(client, catalogue, invoker):
    created = upload(client, "a-member", "busy").json
    path = f"/v1/functions/{created['id']}/invocations"
    assert client.simulate_post(path, json={}, headers=as_("a-member")).status_code == 200
    # One execution of the project is running now: its quota allows one at once.
    record = ExecutionRecord(
        execution_id_for("running", created["id"]), created["id"], 1, "running"
    )
    catalogue.start_execution(record, "someone", utcnow(), utcnow() + timedelta(minutes=5))
    busy = client.simulate_post(path, json={}, headers=as_("a-member"))
    assert busy.status_code == 429
    assert busy.headers["Retry-After"]
    assert "executions quota of 1" in busy.json["description"]
    assert invoker.calls == 1
    # An asynchronous one waits on the queue instead.
    assert (
        client.simulate_post(path + "?mode=async", json={}, headers=as_("a-member")).status_code
        == 202
    )
