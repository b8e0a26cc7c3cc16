"""Dead letters over HTTP: list them a page at a time, read one, replay it.

Replays go through the real ``listener.replay.Replayer`` on a publisher double,
so the checks it makes (a body that is an event, replayed once, the execution
reopened) are specified here without a broker; tests/listener replays through
the real RabbitMQ.
"""

from __future__ import annotations

import json

import pytest
from falcon.testing import TestClient

from catalog_api.app import create_app
from lambda_os.errors import TransientError
from lambda_os.records import DeadLetterRecord, ExecutionRecord, execution_id_for
from listener.deadletter import MAX_DEAD_LETTER_BODY_BYTES, body_fields
from listener.replay import REPLAY_HEADER, Replayer

EVENT = {"event_source": "orders", "event_type": "created", "data": {"n": 1}, "id": "ev-1"}


class FakePublisher:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.published: list[dict] = []

    def publish(self, body, *, message_id=None, headers=None, reply_to=None, correlation_id=None):
        if self.fail:
            raise TransientError("broker down (test double)")
        self.published.append(
            {
                "body": body,
                "message_id": message_id,
                "headers": headers,
                "reply_to": reply_to,
                "correlation_id": correlation_id,
            }
        )


def dead_letter(catalogue, body: bytes, kind: str = "internal error", **fields) -> DeadLetterRecord:
    return catalogue.add_dead_letter(
        DeadLetterRecord(id="", kind=kind, reason=f"{kind}: test", **body_fields(body), **fields)
    )


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def replaying(catalogue, settings, publisher) -> TestClient:
    return TestClient(create_app(catalogue, settings, replayer=Replayer(catalogue, publisher)))


def test_listing_pages_oldest_first_without_bodies_and_filters_by_kind(client, catalogue):
    made = [dead_letter(catalogue, json.dumps(EVENT).encode()) for _ in range(3)]
    dead_letter(catalogue, b"not json", kind="malformed")
    first = client.simulate_get("/v1/deadletters", params={"limit": 2}).json
    assert [d["id"] for d in first["deadletters"]] == [made[0].id, made[1].id]
    assert "body" not in first["deadletters"][0]
    second = client.simulate_get(first["next"]).json
    assert [d["kind"] for d in second["deadletters"]] == ["internal error", "malformed"]
    assert second["next"] is None
    malformed = client.simulate_get("/v1/deadletters", params={"kind": "malformed"}).json
    assert [d["body_size"] for d in malformed["deadletters"]] == [8]
    assert client.simulate_get("/v1/deadletters", params={"kind": "lost"}).status_code == 422


def test_reading_one_gives_its_body_reason_and_headers(client, catalogue):
    stored = dead_letter(catalogue, b"\xff\xfe", kind="malformed", headers={"x-trace": "t1"})
    body = client.simulate_get(f"/v1/deadletters/{stored.id}").json
    assert (body["kind"], body["reason"], body["headers"]) == (
        "malformed",
        "malformed: test",
        {"x-trace": "t1"},
    )
    assert (body["body"], body["body_encoding"]) == ("//4=", "base64")
    assert body["created_at"].endswith("Z") and body["replayed_at"] is None
    assert client.simulate_get("/v1/deadletters/nope").status_code == 404


def test_replay_without_a_replayer_answers_503_and_changes_nothing(client, catalogue):
    stored = dead_letter(catalogue, json.dumps(EVENT).encode())
    result = client.simulate_post(f"/v1/deadletters/{stored.id}/replay")
    assert result.status_code == 503
    assert catalogue.get_dead_letter(stored.id).replayed_at is None


def test_replay_publishes_the_body_under_its_id_then_marks_it_and_only_once(
    replaying, catalogue, publisher
):
    body = json.dumps(EVENT).encode()
    stored = dead_letter(
        catalogue,
        body,
        message_id="ev-1",
        reply_to="my.replies",
        correlation_id="c-1",
        headers={"x-trace": "t1", "x-lambda-reason": "old"},
    )
    result = replaying.simulate_post(f"/v1/deadletters/{stored.id}/replay")
    assert result.status_code == 202, result.text
    assert result.headers["location"] == f"/v1/deadletters/{stored.id}"
    assert result.json["replayed_at"] is not None
    (message,) = publisher.published
    assert message["body"] == body
    assert (message["message_id"], message["reply_to"], message["correlation_id"]) == (
        "ev-1",
        "my.replies",
        "c-1",
    )
    assert message["headers"] == {"x-trace": "t1", REPLAY_HEADER: stored.id}
    again = replaying.simulate_post(f"/v1/deadletters/{stored.id}/replay")
    assert again.status_code == 409
    assert len(publisher.published) == 1


def test_replay_of_a_malformed_body_is_refused_with_the_reason(replaying, catalogue, publisher):
    stored = dead_letter(catalogue, b'{"event_source": "orders"}', kind="malformed")
    result = replaying.simulate_post(f"/v1/deadletters/{stored.id}/replay")
    assert result.status_code == 422
    assert "event has no event_type" in result.json["description"]
    assert publisher.published == []
    assert catalogue.get_dead_letter(stored.id).replayed_at is None


def test_replay_of_a_truncated_body_is_refused(replaying, catalogue, publisher):
    stored = dead_letter(catalogue, b"x" * (MAX_DEAD_LETTER_BODY_BYTES + 1), kind="malformed")
    assert stored.body_truncated
    result = replaying.simulate_post(f"/v1/deadletters/{stored.id}/replay")
    assert result.status_code == 422 and "cannot be replayed" in result.json["description"]
    assert publisher.published == []


def test_replay_with_the_broker_down_answers_503_and_leaves_it_unreplayed(catalogue, settings):
    app = create_app(catalogue, settings, replayer=Replayer(catalogue, FakePublisher(fail=True)))
    stored = dead_letter(catalogue, json.dumps(EVENT).encode())
    result = TestClient(app).simulate_post(f"/v1/deadletters/{stored.id}/replay")
    assert result.status_code == 503 and result.headers["retry-after"]
    assert catalogue.get_dead_letter(stored.id).replayed_at is None


def test_replay_of_exhausted_retries_reopens_the_execution_with_a_fresh_budget(
    replaying, catalogue, publisher
):
    failed = ExecutionRecord(
        id=execution_id_for("ev-1", "f1"),
        function_id="f1",
        function_version=1,
        event_id="ev-1",
        status="failed",
        error={"type": "ValueError", "message": "boom", "reason": "handler error"},
        attempt=3,
        dead_letter_id="dl",
    )
    catalogue.create_execution(failed)
    body = json.dumps({**EVENT, "function_id": "f1"}).encode()
    stored = dead_letter(
        catalogue, body, kind="retries exhausted", event_id="ev-1", function_id="f1"
    )
    assert replaying.simulate_post(f"/v1/deadletters/{stored.id}/replay").status_code == 202
    reopened = catalogue.get_execution(failed.id)
    assert (reopened.status, reopened.attempt, reopened.first_attempt) == ("queued", 4, 4)
    assert reopened.dead_letter_id is None
    assert reopened.attempts[-1]["error"]["message"] == "boom"
    assert publisher.published[0]["message_id"] == "ev-1"
