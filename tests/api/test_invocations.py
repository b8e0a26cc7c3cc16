"""POST /v1/functions/{id}/invocations: the HTTP side of running a function.

The running itself is the Invoker's; here a double stands in for it, so these
tests pin the mapping: body -> event data, sync -> 200 with the record,
async -> 202 with the queued id and Location, failures -> 503.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from falcon.testing import TestClient

from catalog_api.app import create_app
from catalog_api.invoker import Invoker
from lambda_os.catalogue import Catalogue
from lambda_os.errors import TransientError
from lambda_os.records import ExecutionRecord, FunctionRecord, execution_id_for, utcnow


class RecordingInvoker:
    """Stores what it was asked to run and answers like the real invoker would."""

    def __init__(self, catalogue: Catalogue, fail: bool = False) -> None:
        self.catalogue = catalogue
        self.fail = fail
        self.calls: list[tuple[str, str, Any]] = []

    def _record(
        self, function: FunctionRecord, data: Any, status: str, alias: str | None
    ) -> ExecutionRecord:
        event_id = f"http-{len(self.calls)}"
        return ExecutionRecord(
            id=execution_id_for(event_id, function.id),
            function_id=function.id,
            function_version=function.version,
            event_id=event_id,
            event=data,
            status=status,
            alias=alias,
        )

    def invoke(
        self, function: FunctionRecord, data: Any, alias: str | None = None
    ) -> ExecutionRecord:
        self.calls.append(("invoke", function.id, data))
        if self.fail:
            raise TransientError("docker engine is not reachable")
        record = dataclasses.replace(
            self._record(function, data, "succeeded", alias),
            result={"echo": data},
            finished_at=utcnow(),
        )
        stored, _ = self.catalogue.create_execution(record)
        return stored

    def submit(
        self, function: FunctionRecord, data: Any, alias: str | None = None
    ) -> ExecutionRecord:
        self.calls.append(("submit", function.id, data))
        if self.fail:
            raise TransientError("broker did not confirm the event")
        stored, _ = self.catalogue.create_execution(self._record(function, data, "queued", alias))
        return stored


@pytest.fixture
def invoker(catalogue) -> RecordingInvoker:
    return RecordingInvoker(catalogue)


@pytest.fixture
def client(catalogue, settings, invoker) -> TestClient:
    double: Invoker = invoker
    return TestClient(create_app(catalogue, settings, invoker=double))


def test_sync_invocation_passes_the_body_as_data_and_answers_200_with_the_execution(
    client, created, invoker
):
    result = client.simulate_post(
        f"/v1/functions/{created['id']}/invocations", json={"name": "world"}
    )

    assert result.status_code == 200, result.text
    assert invoker.calls == [("invoke", created["id"], {"name": "world"})]
    assert result.json["status"] == "succeeded"
    assert result.json["result"] == {"echo": {"name": "world"}}
    assert client.simulate_get(f"/v1/executions/{result.json['id']}").json["event"] == {
        "name": "world"
    }


def test_empty_body_is_null_data(client, created, invoker):
    result = client.simulate_post(f"/v1/functions/{created['id']}/invocations")

    assert result.status_code == 200
    assert invoker.calls == [("invoke", created["id"], None)]


@pytest.mark.parametrize("data", [42, "text", [1, 2], None, True])
def test_any_json_value_is_data(client, created, invoker, data):
    result = client.simulate_post(f"/v1/functions/{created['id']}/invocations", json=data)

    assert result.status_code == 200
    assert invoker.calls[-1][2] == data


def test_async_invocation_answers_202_with_queued_id_and_location(client, created, invoker):
    result = client.simulate_post(
        f"/v1/functions/{created['id']}/invocations", params={"mode": "async"}, json={"n": 1}
    )

    queued_id = execution_id_for("http-1", created["id"])
    assert result.status_code == 202
    assert result.json == {"id": queued_id, "status": "queued"}
    assert result.headers["location"] == f"/v1/executions/{queued_id}"
    assert invoker.calls == [("submit", created["id"], {"n": 1})]
    assert client.simulate_get(f"/v1/executions/{queued_id}").json["status"] == "queued"


def test_invoker_transient_failure_is_503_with_retry_after(catalogue, settings, created):
    failing = TestClient(create_app(catalogue, settings, invoker=RecordingInvoker(catalogue, True)))

    for params in ({}, {"mode": "async"}):
        result = failing.simulate_post(
            f"/v1/functions/{created['id']}/invocations", params=params, json={}
        )
        assert result.status_code == 503
        assert result.headers["retry-after"]
        assert result.json["description"]


def test_without_an_invoker_invocations_are_503_saying_why(catalogue, settings, created):
    bare = TestClient(create_app(catalogue, settings))

    result = bare.simulate_post(f"/v1/functions/{created['id']}/invocations", json={})

    assert result.status_code == 503
    assert "invoker" in result.json["description"]


def test_invoking_an_unknown_function_is_404(client, invoker):
    result = client.simulate_post("/v1/functions/nope/invocations", json={})

    assert result.status_code == 404
    assert invoker.calls == []


def test_unknown_mode_is_422(client, created, invoker):
    result = client.simulate_post(
        f"/v1/functions/{created['id']}/invocations", params={"mode": "later"}
    )

    assert result.status_code == 422
    assert invoker.calls == []


@pytest.mark.parametrize(
    "body", [b"{", b"\xc3\x28", b"[" * 33 + b"]" * 33], ids=["malformed", "not-utf8", "too-deep"]
)
def test_bad_event_body_is_400(client, created, invoker, body):
    result = client.simulate_post(
        f"/v1/functions/{created['id']}/invocations",
        body=body,
        headers={"Content-Type": "application/json"},
    )

    assert result.status_code == 400
    assert invoker.calls == []


def test_non_json_event_body_is_415(client, created):
    result = client.simulate_post(
        f"/v1/functions/{created['id']}/invocations",
        body="hi",
        headers={"Content-Type": "text/plain"},
    )

    assert result.status_code == 415


def test_event_body_over_1_mib_is_413(client, created, invoker):
    data = "x" * (1024 * 1024)

    result = client.simulate_post(f"/v1/functions/{created['id']}/invocations", json=data)

    assert result.status_code == 413
    assert invoker.calls == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'["\\ud800"]', '$[0]: string "\\ud800" is not valid Unicode'),
        (b'{"\\udfff": 1}', "is not valid Unicode"),
        (b'{"x": 1e999}', "$.x: inf is not a finite number"),
        (b"-1e999", "$: -inf is not a finite number"),
    ],
)
def test_invocation_data_the_catalogue_cannot_store_is_refused_with_422_and_where(
    client, created, invoker, raw, reason
):
    result = client.simulate_post(
        f"/v1/functions/{created['id']}/invocations",
        body=raw,
        headers={"Content-Type": "application/json"},
    )

    assert result.status_code == 422, result.text
    assert result.json["title"] == "Unsupported JSON value"
    assert reason in result.json["description"]
    assert invoker.calls == []


def test_invocation_data_past_the_64_bit_limits_and_with_keys_mongodb_refuses_is_run(
    client, created, invoker
):
    data = [
        2**63 - 1,
        -(2**63),
        123456789012345678901234567890,
        -(2**64),
        1.5e308,
        "\U0001f600",
        {"$where": "a.b", "a\u0000b": 1},
    ]
    result = client.simulate_post(f"/v1/functions/{created['id']}/invocations", json=data)

    assert result.status_code == 200, result.text
    assert invoker.calls[-1][2] == data
