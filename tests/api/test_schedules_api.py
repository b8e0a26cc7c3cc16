"""A function's schedules through the API: added, listed with their next ticks, removed."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from api_helpers import HELLO, TokenTable, encode_multipart, function_fields
from falcon.testing import TestClient

from catalog_api.app import create_app


@pytest.fixture
def client(catalogue, settings) -> TestClient:
    return TestClient(create_app(catalogue, settings, authenticator=TokenTable()))


def call(client, who, method, path, headers=None, **kwargs):
    headers = {**(headers or {}), "X-Auth-Token": who}
    return client.simulate_request(method, path, headers=headers, **kwargs)


@pytest.fixture
def function_id(client) -> str:
    body, form_type = encode_multipart(
        function_fields(name="cron"), {"code": ("hello.py", HELLO, "text/x-python")}
    )
    created = call(
        client, "a-member", "POST", "/v1/functions", body=body, headers={"Content-Type": form_type}
    )
    assert created.status_code == 201, created.text
    return created.json["id"]


def test_a_cron_schedule_is_added_with_its_next_tick_in_its_time_zone(client, function_id):
    answer = call(
        client,
        "a-member",
        "POST",
        f"/v1/functions/{function_id}/schedules",
        json={"cron": "0 9 * * mon-fri", "timezone": "Europe/Paris"},
    )

    assert answer.status_code == 201, answer.text
    schedule = answer.json
    assert answer.headers["location"] == f"/v1/functions/{function_id}/schedules/{schedule['id']}"
    fires = datetime.fromisoformat(schedule["next_fire_at"])
    assert fires > datetime.now(UTC)
    assert fires.astimezone(ZoneInfo("Europe/Paris")).hour == 9
    assert (schedule["missed"], schedule["last_fired_at"]) == (0, None)


def test_schedules_are_listed_and_one_removed(client, function_id):
    path = f"/v1/functions/{function_id}/schedules"
    rate = call(client, "a-member", "POST", path, json={"rate_s": 300}).json
    call(client, "a-member", "POST", path, json={"cron": "*/5 * * * *"})

    listed = call(client, "a-reader", "GET", path)
    assert listed.status_code == 200
    assert [s["rate_s"] for s in listed.json["schedules"]] == [300, None]

    assert call(client, "a-member", "DELETE", f"{path}/{rate['id']}").status_code == 204
    assert call(client, "a-member", "DELETE", f"{path}/{rate['id']}").status_code == 404
    assert len(call(client, "a-member", "GET", path).json["schedules"]) == 1


@pytest.mark.parametrize(
    "body,says",
    [
        ({"cron": "61 * * * *"}, "outside 0-59"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"cron": "* * * * *", "rate_s": 60}, "either cron"),
        ({}, "either cron"),
        ({"rate_s": 0}, "rate_s"),
        ({"cron": "0 0 30 2 *"}, "no date that comes"),
        ({"every": "day"}, "every"),
    ],
)
def test_a_schedule_that_cannot_be_is_refused_saying_why(client, function_id, body, says):
    answer = call(client, "a-member", "POST", f"/v1/functions/{function_id}/schedules", json=body)

    assert answer.status_code == 422, answer.text
    assert says in answer.text


def test_another_projects_function_has_no_schedules_to_see_or_add(client, function_id):
    path = f"/v1/functions/{function_id}/schedules"
    assert call(client, "b-member", "GET", path).status_code == 404
    assert call(client, "b-member", "POST", path, json={"rate_s": 60}).status_code == 404
    assert call(client, "a-reader", "POST", path, json={"rate_s": 60}).status_code == 403


def test_a_deleted_functions_schedules_go_with_it(client, catalogue, function_id):
    call(client, "a-member", "POST", f"/v1/functions/{function_id}/schedules", json={"rate_s": 60})

    assert call(client, "a-member", "DELETE", f"/v1/functions/{function_id}").status_code == 204
    assert catalogue.list_schedules(function_id) == []
