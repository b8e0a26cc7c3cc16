"""Executions over HTTP: list with filters and pages, read one, read its logs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lambda_os.records import ExecutionRecord, execution_id_for


@pytest.fixture
def stored(catalogue):
    """Five executions of two functions; listings come in id order."""
    started = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    records = [
        ExecutionRecord(
            id=execution_id_for(f"ev{index}", "f-a" if index % 2 == 0 else "f-b"),
            function_id="f-a" if index % 2 == 0 else "f-b",
            function_version=1,
            event_id=f"ev{index}",
            event_source="demo",
            event_type="greeting",
            event={"n": index},
            status="succeeded" if index < 3 else "failed",
            result={"n": index},
            logs=f"log line {index}\n",
            started_at=started,
            finished_at=started,
            duration_ms=1.5,
        )
        for index in range(5)
    ]
    for record in records:
        catalogue.create_execution(record)
    return records


def test_get_execution_returns_the_record_with_logs(client, stored):
    result = client.simulate_get(f"/v1/executions/{stored[1].id}")

    assert result.status_code == 200
    body = result.json
    assert body["id"] == stored[1].id and body["function_id"] == "f-b"
    assert body["status"] == "succeeded"
    assert body["result"] == {"n": 1}
    assert body["logs"] == "log line 1\n"
    assert body["started_at"] == "2024-05-01T12:00:00.000Z"


def test_get_unknown_execution_is_404(client):
    assert client.simulate_get("/v1/executions/nope").status_code == 404
    assert client.simulate_get("/v1/executions/nope/logs").status_code == 404


def test_logs_are_plain_text(client, stored):
    result = client.simulate_get(f"/v1/executions/{stored[3].id}/logs")

    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain")
    assert result.text == "log line 3\n"


def test_list_filters_by_function_and_status_without_logs(client, stored):
    def ids(**params):
        result = client.simulate_get("/v1/executions", params=params)
        assert result.status_code == 200
        assert all("logs" not in item for item in result.json["executions"])
        return [item["id"] for item in result.json["executions"]]

    def expected(*indexes):
        return sorted(stored[index].id for index in indexes)

    assert ids() == expected(0, 1, 2, 3, 4)
    assert ids(function_id="f-a") == expected(0, 2, 4)
    assert ids(status="failed") == expected(3, 4)
    assert ids(function_id="f-b", status="failed") == expected(3)


def test_list_pages_with_next_link(client, stored):
    first = client.simulate_get("/v1/executions", params={"limit": "2", "function_id": "f-a"})

    in_order = sorted(stored[index].id for index in (0, 2, 4))
    assert [item["id"] for item in first.json["executions"]] == in_order[:2]
    path, _, query = first.json["next"].partition("?")
    second = client.simulate_get(path, query_string=query)
    assert [item["id"] for item in second.json["executions"]] == in_order[2:]
    assert second.json["next"] is None


@pytest.mark.parametrize("query", ["status=done", "limit=0", "limit=5000", "color=red"])
def test_bad_execution_query_is_422(client, query):
    result = client.simulate_get("/v1/executions", query_string=query)

    assert result.status_code == 422
