"""An outcome is stored as the catalogue can keep it, on mongomock as on a strict server.

The provisioner double echoes the event data as the result, so the data chooses it.
"""

from __future__ import annotations

from listener_helpers import FakeProvisioner, add_function

from lambda_os.storable import NOT_STORABLE
from listener.events import Event
from listener.execute import run_execution, start_step

HOSTILE = {"$where": 1, "a.b": [[2**70]], "x\u0000": -(2**64), "%24": "%2E"}


def event(data, event_id="e-1") -> Event:
    return Event(event_id, "orders", "created", data)


def test_hostile_event_and_result_are_stored_and_read_back_exactly(catalogue):
    function = add_function(catalogue, "echo")

    record = run_execution(catalogue, FakeProvisioner(), function, event(HOSTILE))

    stored = catalogue.get_execution(record.id)
    assert stored.status == "succeeded" and stored.finished_at is not None
    assert stored.event == HOSTILE
    assert stored.result == {"echo": HOSTILE, "function": "echo"} == record.result


def test_result_too_big_as_stored_ends_the_execution_failed_without_a_retry(catalogue):
    function = add_function(catalogue, "echo", max_retries=2)
    data = [{}] * 2_000_000  # 6 MB of JSON, 25.6 MiB as stored

    step = start_step(
        catalogue, FakeProvisioner(), function, event(data), retry_delay_s=lambda attempt: 0.0
    )

    stored = catalogue.get_execution(step.record.id)
    assert stored.status == "failed" and stored.finished_at is not None and stored.result is None
    assert stored.error["reason"] == NOT_STORABLE
    assert stored.error["message"].startswith("result is 25.6 MiB as stored, limit 15 MiB")
    assert stored.event["truncated"] is True
    assert not step.retry and NOT_STORABLE in step.dead_letter
