"""``POST /v1/events``: events over HTTP reach the real RabbitMQ as the caller's project's.

The API publishes through the listener's own confirmed ``Publisher`` on the test's
queues; what the broker holds is read back from the events queue (exchange,
routing key, message id, body), and one test runs a listener on them to show that
an event posted by project A's member runs A's function and not B's.
"""

from __future__ import annotations

import json
from typing import Any

import falcon
import pytest
from falcon.testing import TestClient
from listener_helpers import FakeProvisioner, add_function, running, wait_for

from catalog_api.app import create_app
from catalog_api.auth.principal import Principal
from listener.publish import Publisher
from listener.service import Backoff, Listener
from listener.topology import Topology

pytestmark = pytest.mark.integration

CALLERS = {
    "a-member": Principal("alpha", "alice", frozenset({"member"})),
    "a-reader": Principal("alpha", "rita", frozenset({"reader"})),
}
ORDER = {"event_source": "orders", "event_type": "created", "data": {"order": 42}}


class Tokens:
    challenge = 'Bearer realm="test"'

    def authenticate(self, req: falcon.Request) -> Principal | None:
        return CALLERS.get(req.get_header("X-Auth-Token") or "")


@pytest.fixture
def publisher(broker_settings):
    publisher = Publisher(broker_settings, name="test events api")
    yield publisher
    publisher.close()


@pytest.fixture
def client(catalogue, broker_settings, publisher) -> TestClient:
    app = create_app(catalogue, broker_settings, authenticator=Tokens(), events=publisher)
    return TestClient(app)


def post(client: TestClient, who: str | None, **kwargs: Any):
    headers = dict(kwargs.pop("headers", {}))
    if who is not None:
        headers["X-Auth-Token"] = who
    return client.simulate_post("/v1/events", headers=headers, **kwargs)


def held(broker, settings) -> list[tuple[Any, Any, dict[str, Any]]]:
    """(delivery, properties, body) of every message on the events queue, taken off it."""
    out = []
    while True:
        method, properties, body = broker.channel.basic_get(settings.events_queue, auto_ack=True)
        if method is None:
            return out
        out.append((method, properties, json.loads(body)))


def test_one_event_goes_to_the_broker_as_the_callers_projects_under_a_new_id(
    client, broker, broker_settings
):
    answer = post(client, "a-member", json=ORDER)

    assert answer.status_code == 202, answer.text
    (event_id,) = answer.json["ids"]
    ((method, properties, body),) = held(broker, broker_settings)
    topology = Topology.from_settings(broker_settings)
    assert (method.exchange, method.routing_key) == (topology.projects_exchange, "alpha.api")
    assert properties.message_id == event_id == body["id"]
    assert properties.delivery_mode == 2  # persistent, as the contract asks of publishers
    assert {k: body[k] for k in ORDER} == ORDER


def test_an_array_publishes_each_event_in_order_keeping_the_ids_it_gives(
    client, broker, broker_settings
):
    events = [{**ORDER, "id": "order-1"}, {**ORDER, "data": {"order": 2}}]

    answer = post(client, "a-member", json=events)

    assert answer.status_code == 202, answer.text
    ids = answer.json["ids"]
    assert ids[0] == "order-1" and len(ids) == 2 and ids[1] != "order-1"
    bodies = [body for _m, _p, body in held(broker, broker_settings)]
    assert [b["id"] for b in bodies] == ids
    assert [b["data"] for b in bodies] == [{"order": 42}, {"order": 2}]


def test_a_form_publishes_one_event_per_file(client, broker, broker_settings):
    boundary = "eventsboundary"
    parts = []
    for name, event in (("first", {**ORDER, "id": "f-1"}), ("second", {**ORDER, "id": "f-2"})):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{name}.json"\r\nContent-Type: application/json\r\n\r\n'
            f"{json.dumps(event)}\r\n"
        )
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()

    answer = post(
        client,
        "a-member",
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )

    assert answer.status_code == 202, answer.text
    assert answer.json["ids"] == ["f-1", "f-2"]
    assert [b["id"] for _m, _p, b in held(broker, broker_settings)] == ["f-1", "f-2"]


@pytest.mark.parametrize(
    "events,says",
    [
        ([ORDER, {"event_source": "orders"}], "event 1"),
        ([{**ORDER, "function_id": "f00"}], "function_id is the platform's own field"),
        ([ORDER, "not an event"], "event 1"),
        ([], "no event"),
    ],
)
def test_one_bad_event_publishes_none_and_the_answer_says_which(
    client, broker, broker_settings, events, says
):
    answer = post(client, "a-member", json=events)

    assert 400 <= answer.status_code < 500, answer.text
    assert says in answer.json["description"]
    assert held(broker, broker_settings) == []


def test_a_reader_may_not_publish_and_nobody_without_a_token(client, broker, broker_settings):
    assert post(client, "a-reader", json=ORDER).status_code == 403
    assert post(client, None, json=ORDER).status_code == 401
    assert held(broker, broker_settings) == []


def test_an_event_posted_by_a_projects_member_runs_only_that_projects_function(
    client, catalogue, broker_settings
):
    alpha = add_function(catalogue, "alpha-fn", owner="alpha")
    beta = add_function(catalogue, "beta-fn", owner="beta")  # the same trigger
    listener = Listener(broker_settings, catalogue, FakeProvisioner(), backoff=Backoff(0.1, 0.5))

    with running(listener):
        answer = post(client, "a-member", json={"event_source": "orders", "event_type": "created"})
        assert answer.status_code == 202, answer.text
        (event_id,) = answer.json["ids"]
        ran = wait_for(
            lambda: catalogue.list_executions({"event_id": event_id}, 10).items,
            what="the posted event's execution",
        )

    assert [r.function_id for r in ran] == [alpha.id]
    assert catalogue.list_executions({"function_id": beta.id}, 10).items == []
