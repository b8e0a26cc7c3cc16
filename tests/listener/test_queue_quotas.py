"""Events from the queue keep to their project's at-once quotas: they wait, and all run.

End to end on the real RabbitMQ and the real Docker Engine (2 slots, so without
the quota two runs would overlap); the catalogue is mongomock. How many ran at
once is read from the records' ``started_at`` and ``finished_at``.
"""

from __future__ import annotations

import textwrap

import pytest
from listener_helpers import add_function, running, wait_for

from listener.events import encode_event
from listener.service import Backoff, Listener

pytestmark = pytest.mark.integration

SLEEPS = textwrap.dedent(
    """
    import time

    def handler(event, context):
        time.sleep(1.0)
        return event
    """
).encode()


def run_all(settings, catalogue, provisioner, broker, events, functions):
    """Publish ``events`` (event type, id) at once; every function's finished records."""
    listener = Listener(settings, catalogue, provisioner, backoff=Backoff(0.1, 0.5))
    with running(listener):
        for event_type, event_id in events:
            broker.publish(
                settings.events_queue,
                encode_event("orders", event_type, {"n": event_id}, id=event_id),
            )

        def finished():
            records = [
                record
                for function in functions
                for record in catalogue.list_executions({"function_id": function.id}, 10).items
            ]
            done = len(records) == len(events) and all(r.finished for r in records)
            return records if done else None

        records = wait_for(finished, timeout_s=120, what="every execution to finish")
    assert broker.ready(settings.events_queue) == 0
    assert broker.ready(settings.dead_letter_queue) == 0
    return records


def most_at_once(records) -> int:
    """The most runs whose [started_at, finished_at) overlapped."""
    edges = sorted(
        [(r.started_at, 1) for r in records] + [(r.finished_at, -1) for r in records],
        key=lambda edge: (edge[0], edge[1]),
    )
    now = peak = 0
    for _moment, change in edges:
        now += change
        peak = max(peak, now)
    return peak


def assert_each_ran_once_on_its_first_attempt(records) -> None:
    assert [r.status for r in records] == ["succeeded"] * len(records), [r.error for r in records]
    assert [(r.attempt, r.attempts) for r in records] == [(1, [])] * len(records)
    assert len({r.id for r in records}) == len(records)


def test_events_of_a_project_at_its_executions_quota_wait_and_run_one_at_a_time(
    docker_settings, docker_provisioner, catalogue, broker
):
    function = add_function(catalogue, "sleeper", source=SLEEPS)
    catalogue.set_quota("tests", {"executions": 1})

    records = run_all(
        docker_settings,
        catalogue,
        docker_provisioner,
        broker,
        [("created", f"e-{n}") for n in range(3)],
        [function],
    )

    assert_each_ran_once_on_its_first_attempt(records)
    assert most_at_once(records) == 1


def test_functions_whose_memory_together_passes_the_projects_quota_never_overlap(
    docker_settings, docker_provisioner, catalogue, broker
):
    first = add_function(catalogue, "first", source=SLEEPS, memory_mb=256)
    second = add_function(catalogue, "second", event_type="updated", source=SLEEPS, memory_mb=256)
    catalogue.set_quota("tests", {"memory_mb": 300})

    records = run_all(
        docker_settings,
        catalogue,
        docker_provisioner,
        broker,
        [("created", "e-1"), ("updated", "e-2"), ("created", "e-3"), ("updated", "e-4")],
        [first, second],
    )

    assert_each_ran_once_on_its_first_attempt(records)
    assert most_at_once(records) == 1
