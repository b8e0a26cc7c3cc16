"""An event's project: read from the delivery (exchange, routing key), never from the body;
matching then keeps to that project's functions. Pure logic and mongomock; no network."""

from __future__ import annotations

import pytest
from listener_helpers import add_function

from lambda_os.errors import InvalidEvent
from listener.events import Event, encode_event, parse_event
from listener.execute import claim
from listener.match import match
from listener.project import project_of
from listener.topology import Topology

TOPOLOGY = Topology("lambda.events", "lambda.dead")


def test_a_delivery_through_the_projects_exchange_belongs_to_the_first_key_segment():
    assert project_of("lambda.events.projects", "alpha.orders.created", TOPOLOGY) == "alpha"
    assert project_of("lambda.events.projects", "alpha", TOPOLOGY) == "alpha"


def test_a_delivery_through_the_default_exchange_belongs_to_no_one_project():
    assert project_of("", "lambda.events", TOPOLOGY) is None


def test_a_delivery_through_the_host_output_exchange_is_the_platforms_own():
    assert project_of(TOPOLOGY.from_hosts_exchange, "lambda.events", TOPOLOGY) is None


def test_a_projects_exchange_key_with_an_empty_first_segment_is_not_an_event():
    with pytest.raises(InvalidEvent, match="names no project"):
        project_of("lambda.events.projects", ".orders", TOPOLOGY)
    with pytest.raises(InvalidEvent, match="names no project"):
        project_of("lambda.events.projects", "", TOPOLOGY)


def test_the_projects_exchange_is_named_after_the_events_queue():
    assert Topology("q.x", "d").projects_exchange == "q.x.projects"


def test_a_project_field_in_the_body_is_not_read():
    body = b'{"event_source": "orders", "event_type": "created", "project": "beta"}'
    assert parse_event(body).project is None


def project_event(project: str | None, **fields) -> Event:
    return Event("e-1", "orders", "created", None, project=project, **fields)


def test_a_projects_event_runs_only_that_projects_functions(catalogue):
    alpha = add_function(catalogue, "a", owner="alpha")
    add_function(catalogue, "b", owner="beta")
    assert [f.id for f in match(catalogue, project_event("alpha"))] == [alpha.id]


def test_a_project_with_no_function_for_the_trigger_runs_nothing(catalogue):
    add_function(catalogue, "b", owner="beta")
    assert match(catalogue, project_event("alpha")) == []


def test_the_platforms_own_event_matches_every_project_as_before(catalogue):
    alpha = add_function(catalogue, "a", owner="alpha")
    beta = add_function(catalogue, "b", owner="beta")
    assert [f.id for f in match(catalogue, project_event(None))] == sorted([alpha.id, beta.id])


def test_a_project_cannot_address_another_projects_queued_execution(catalogue):
    alpha = add_function(catalogue, "a", owner="alpha")
    beta = add_function(catalogue, "b", owner="beta", event_source="pay", event_type="refund")
    claim(catalogue, beta, project_event(None, function_id=beta.id))
    forged = project_event("alpha", function_id=beta.id)
    assert [f.id for f in match(catalogue, forged)] == [alpha.id]


def test_a_project_may_address_its_own_queued_execution(catalogue):
    add_function(catalogue, "a", owner="alpha")
    second = add_function(catalogue, "a2", owner="alpha", event_type="other")
    claim(catalogue, second, project_event(None, function_id=second.id))
    addressed = project_event("alpha", function_id=second.id)
    assert [f.id for f in match(catalogue, addressed)] == [second.id]


def test_a_retry_addressed_by_the_platform_keeps_running_its_function(catalogue):
    """A retry comes back through the default exchange: no project, addressed by id."""
    beta = add_function(catalogue, "b", owner="beta")
    claim(catalogue, beta, project_event("beta"))
    retry = parse_event(encode_event("orders", "created", id="e-1", function_id=beta.id))
    assert retry.project is None
    assert [f.id for f in match(catalogue, retry)] == [beta.id]
