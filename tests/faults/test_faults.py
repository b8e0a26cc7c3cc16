"""Nothing lost: a stream of events through a real listener while a fault is injected.

Each test publishes a stream of events (ids ``<fault>-<n>``) to its own queues;
a real ``Listener`` runs them on the real ``DockerProvisioner`` with the real
runtime image, on a mongomock catalogue in this process. A third of the way in,
the fault strikes. Then every event sent (confirmed by the broker) must have a
finished execution record (lost = 0), with one record and one successful run
per (event, function) (duplicates = 0). The table of results is printed at the
end of the run (tests/faults/conftest.py).

``kill -9`` of a listener process, and the other faults that need a catalogue
outliving a process, are in ``test_listener_cluster.py``, on a real server.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from broker_tools import close_connections_named
from fault_helpers import CountingProvisioner, Stream, restart_dockerd, restart_rabbitmq
from fault_table import FaultRow

from lambda_os.catalogue import connect
from lambda_os.packages import inspect_package
from lambda_os.settings import Settings
from listener.service import Backoff, Listener

pytestmark = [pytest.mark.faults, pytest.mark.integration]

EVENTS = 100
HANDLER = b"def handler(event, context):\n    return {'n': event['n']}\n"
SETTLE_S = 150.0
LISTENER_PROCESS = Path(__file__).with_name("listener_process.py")


def add_tick_function(catalogue: Any) -> Any:
    info = inspect_package(HANDLER, "main.py", "main.handler")
    fields = {
        "name": "tick",
        "runtime": "python3.11",
        "event_source": "faults",
        "event_type": "tick",
        "owner": "faults",
        "timeout_s": 20,
        "max_retries": 3,
    }
    return catalogue.create_function(fields, HANDLER, info)


def settle(catalogue: Any, sent: list[str], timeout_s: float = SETTLE_S) -> None:
    """Wait until every sent event has a finished record, or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        finished = {r.event_id for r in catalogue.list_executions({}, 100_000).items if r.finished}
        if finished.issuperset(sent):
            return
        time.sleep(0.25)


def count(
    fault: str, catalogue: Any, sent: list[str], successes: collections.Counter, seconds: float
) -> FaultRow:
    records = catalogue.list_executions({}, 100_000).items
    per_key = collections.Counter((r.event_id, r.function_id) for r in records)
    duplicates = sum(n - 1 for n in per_key.values() if n > 1)
    duplicates += sum(n - 1 for n in successes.values() if n > 1)
    finished = {r.event_id for r in records if r.finished}
    return FaultRow(
        fault=fault,
        sent=len(set(sent)),
        recorded=len(records),
        duplicates=duplicates,
        lost=len(set(sent) - finished),
        retried=sum(len(r.attempts) for r in records),
        seconds=round(seconds, 1),
    )


def run_with_fault(
    fault: str,
    settings: Settings,
    inject: Callable[[str], None],
    rows: list[FaultRow],
) -> FaultRow:
    """Stream events through a listener, inject the fault a third of the way in, count."""
    from provisioner.docker import DockerProvisioner

    catalogue = connect(None, f"faults_{uuid.uuid4().hex[:8]}")
    add_tick_function(catalogue)
    provisioner = CountingProvisioner(DockerProvisioner(settings))
    name = f"fault-listener-{uuid.uuid4().hex[:8]}"
    listener = Listener(
        settings,
        catalogue,
        provisioner,
        backoff=Backoff(initial_s=0.2, cap_s=2.0),
        transient_delay_s=0.5,
        name=name,
    )
    started = time.monotonic()
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(code=listener.run()), daemon=True)
    thread.start()
    try:
        stream = Stream(settings, fault, EVENTS).start()
        deadline = time.monotonic() + 60
        while len(stream.sent) < EVENTS // 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        inject(name)
        stream.join(timeout_s=180)
        settle(catalogue, stream.sent)
    finally:
        listener.stop()
        thread.join(timeout=60)
        provisioner.close()
    row = count(fault, catalogue, stream.sent, provisioner.successes, time.monotonic() - started)
    rows.append(row)
    assert result.get("code") == 0, result
    failed = [r for r in catalogue.list_executions({}, 100_000).items if r.status != "succeeded"]
    assert (row.lost, row.duplicates) == (0, 0), row
    assert row.sent == EVENTS and row.recorded == EVENTS, row
    assert failed == [], failed[:3]
    return row


def test_rabbitmq_restart_mid_stream_loses_nothing(fault_settings, fault_rows):
    run_with_fault("RabbitMQ restart", fault_settings, lambda _name: restart_rabbitmq(), fault_rows)


def test_connection_closed_by_the_broker_mid_stream_loses_nothing(fault_settings, fault_rows):
    def close_twice(name: str) -> None:
        assert close_connections_named(name) == 1
        time.sleep(1.0)
        # Again once it is back, so a run in flight on the new connection is cut off too.
        deadline = time.monotonic() + 30
        while close_connections_named(name) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)

    run_with_fault("connection closed by the broker", fault_settings, close_twice, fault_rows)


def test_docker_engine_restart_mid_stream_loses_nothing(fault_settings, fault_rows):
    run_with_fault(
        "Docker Engine restart", fault_settings, lambda _name: restart_dockerd(), fault_rows
    )
