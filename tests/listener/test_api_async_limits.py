"""An asynchronous invocation the listener would refuse is a 422 at the API, and nothing is queued."""

from __future__ import annotations

import falcon.testing
import pytest
from listener_helpers import FakeProvisioner, add_function

from catalog_api.app import create_app
from listener.invoker import Invoker
from listener.publish import Publisher

pytestmark = pytest.mark.integration


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth - 1):
        value = [value]
    return value


def test_async_body_at_the_api_depth_limit_is_refused_as_an_invalid_event(
    broker_settings, broker, catalogue
):
    # 32 levels (a scalar is 0) is the most the API takes in a body; the event adds one.
    function = add_function(catalogue, "deep")
    publisher = Publisher(broker_settings)
    try:
        app = create_app(
            catalogue, broker_settings, invoker=Invoker(catalogue, FakeProvisioner(), publisher)
        )
        client = falcon.testing.TestClient(app)
        response = client.simulate_post(
            f"/v1/functions/{function.id}/invocations",
            params={"mode": "async"},
            json=nested(33),
        )
    finally:
        publisher.close()
    assert response.status_code == 422
    assert response.json["title"] == "Invalid event"
    assert "nested deeper" in response.json["description"]
    assert broker.ready(broker_settings.events_queue) == 0
    assert catalogue.list_executions({"function_id": function.id}, limit=10).items == []
