"""Three listener processes on one queue and one real catalogue server, while faults strike.

Each test starts a FerretDB server of its own (so it can stop and restart it), three
``listener_process.py`` processes on the test's queues, and streams 300 events. A
third of the way in, the fault strikes: one listener is ``kill -9``ed; one is
stopped (SIGSTOP) past its lease and then continued; the catalogue server is
restarted; the catalogue is unreachable for 30 s. Then every event sent must have
one finished, succeeded record (0 lost, 0 duplicates), and no execution may ever
have run on two listeners at once: the function reports when it started and ended,
each listener logs every run it made, and the intervals of one execution's runs
must not overlap.

The listeners' AMQP heartbeat is 5 s here, so the outage row also shows that no
catalogue I/O blocks a connection's thread: every listener keeps the connection it
had before the outage.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from broker_tools import connected_at
from fault_helpers import Stream, mark_of
from fault_table import FaultRow

from lambda_os.catalogue import connect
from lambda_os.catalogue_server import CatalogueServer, find_binary
from lambda_os.errors import LambdaError
from lambda_os.packages import inspect_package
from lambda_os.records import ScheduleRecord, utcnow
from lambda_os.settings import Settings

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.mongo]

EVENTS = 300
LISTENERS = 3
TIMEOUT_S = 5  # the function's; its lease is this plus listener_process's 3 s margin
HEARTBEAT_S = 5
HANDLER = b"""import time

def handler(event, context):
    start = time.time()
    time.sleep(0.05)
    return {"n": event["n"], "start": start, "end": time.time()}
"""
LISTENER_PROCESS = Path(__file__).with_name("listener_process.py")
SETTLE_S = 240.0


def add_function(catalogue: Any, name: str, handler: bytes, **fields: Any) -> Any:
    """A function of ``handler`` (``main.handler``) on the stream's events, 3 retries."""
    info = inspect_package(handler, "main.py", "main.handler")
    config = {
        "name": name,
        "runtime": "python3.11",
        "event_source": "faults",
        "event_type": "tick",
        "owner": "faults",
        "timeout_s": TIMEOUT_S,
        "max_retries": 3,
        **fields,
    }
    return catalogue.create_function(config, handler, info)


class Cluster:
    """A catalogue server, a catalogue on it, and listener processes on the test's queues."""

    def __init__(self, settings: Settings, work: Path) -> None:
        if find_binary() is None:
            pytest.fail("the FerretDB catalogue server is not built (run deploy/setup.sh)")
        self.settings = settings
        self.work = work
        self._logs = [open(work / "ferretdb.log", "ab")]  # noqa: SIM115 - closed in stop()
        self.server = CatalogueServer(work / "catalogue", log=self._logs[0])
        self.server.start()
        self.database = f"cluster_{uuid.uuid4().hex[:8]}"
        self.catalogue = connect(self.server.url, self.database)
        add_function(self.catalogue, "tick", HANDLER)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []

    def start_listeners(self, count: int = LISTENERS) -> None:
        for index in range(count):
            name = f"cluster-listener-{uuid.uuid4().hex[:8]}"
            # A short state directory each: the agent's socket path must fit in 108 bytes.
            state_dir = tempfile.mkdtemp(prefix="los-", dir="/tmp")
            env = {
                **os.environ,
                "MONGO_URL": self.server.url,
                "MONGO_DB": self.database,
                "AMQP_URL": f"{self.settings.amqp_url}?heartbeat={HEARTBEAT_S}",
                "EVENTS_QUEUE": self.settings.events_queue,
                "DEAD_LETTER_QUEUE": self.settings.dead_letter_queue,
                "LAMBDA_OS_STATE_DIR": state_dir,
                "LAMBDA_OS_RUNTIME_IMAGE_PREFIX": self.settings.runtime_image_prefix,
                "LAMBDA_OS_CONCURRENCY": "2",
                "LAMBDA_OS_POOL_SIZE": "1",
                "LAMBDA_OS_SWEEP_INTERVAL_S": "2",
                "LAMBDA_OS_SWEEP_QUEUED_AFTER_S": "20",
                "LAMBDA_OS_TEST_RUN_LOG": str(self.work / f"runs-{index}.jsonl"),
                "LAMBDA_OS_TEST_LISTENER_NAME": name,
            }
            log = open(self.work / f"listener-{index}.log", "ab")  # noqa: SIM115 - see stop()
            self._logs.append(log)
            self.processes.append(
                subprocess.Popen([sys.executable, str(LISTENER_PROCESS)], env=env, stderr=log)
            )
            self.names.append(name)
        deadline = time.monotonic() + 60
        while set(connected_at(self.names)) != set(self.names):
            if time.monotonic() > deadline:
                pytest.fail(f"listeners did not connect; see {self.work}/listener-*.log")
            time.sleep(0.2)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.server.stop()
        for log in self._logs:
            log.close()

    def runs(self) -> list[dict[str, Any]]:
        found = []
        for path in self.work.glob("runs-*.jsonl"):
            found += [json.loads(line) for line in path.read_text().splitlines() if line]
        return found


def overlapping(runs: list[dict[str, Any]]) -> list[str]:
    """Executions two of whose runs overlapped in time, by the function's own clock."""
    by_execution: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for run in runs:
        if run.get("start") is not None and run.get("end") is not None:
            by_execution[run["execution_id"]].append((run["start"], run["end"]))
    clashes = []
    for execution_id, intervals in by_execution.items():
        intervals.sort()
        if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(intervals)):
            clashes.append(execution_id)
    return clashes


@pytest.fixture
def cluster(fault_settings: Settings) -> Iterator[Cluster]:
    work = Path(tempfile.mkdtemp(prefix="cluster-", dir="/tmp"))
    running = Cluster(fault_settings, work)
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_cluster_fault(
    fault: str,
    cluster: Cluster,
    inject: Callable[[Cluster], None],
    rows: list[FaultRow],
    with_ids: bool = True,
) -> FaultRow:
    cluster.start_listeners()
    started = time.monotonic()
    stream = Stream(cluster.settings, fault, EVENTS, interval_s=0.01, with_ids=with_ids).start()
    deadline = time.monotonic() + 60
    while len(stream.sent) < EVENTS // 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    inject(cluster)
    stream.join(timeout_s=240)
    sent = set(stream.sent)
    records: list[Any] = []
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        try:
            records = cluster.catalogue.list_executions({}, 100_000).items
        except LambdaError:  # the catalogue may still be coming back
            time.sleep(0.5)
            continue
        if {mark_of(r) for r in records if r.finished}.issuperset(sent):
            break
        time.sleep(0.5)
    per_key = collections.Counter((mark_of(r), r.function_id) for r in records)
    runs = cluster.runs()
    clashes = overlapping(runs)
    row = FaultRow(
        fault=fault,
        sent=len(sent),
        recorded=len(records),
        duplicates=sum(n - 1 for n in per_key.values() if n > 1),
        lost=len(sent - {mark_of(r) for r in records if r.finished}),
        retried=sum(len(r.attempts) for r in records),
        seconds=round(time.monotonic() - started, 1),
        overlapping=len(clashes),
    )
    rows.append(row)
    not_succeeded = [(r.id, r.status, r.error) for r in records if r.status != "succeeded"]
    assert (row.lost, row.duplicates, row.overlapping) == (0, 0, 0), (row, clashes[:3])
    assert row.sent == EVENTS and row.recorded == EVENTS, row
    assert not_succeeded == [], not_succeeded[:3]
    return row


def kill_one(running: Cluster) -> None:
    running.processes[0].send_signal(signal.SIGKILL)
    running.processes[0].wait(timeout=30)


def test_three_listeners_one_killed_mid_stream_lose_nothing(cluster, fault_rows):
    run_cluster_fault("3 listeners, one `kill -9`", cluster, kill_one, fault_rows)


def test_events_without_ids_lose_nothing_and_run_once_through_a_listeners_kill(cluster, fault_rows):
    # The listeners number them: a second record would have another id, same mark.
    run_cluster_fault(
        "3 listeners, one `kill -9`, events without ids",
        cluster,
        kill_one,
        fault_rows,
        with_ids=False,
    )


def test_three_listeners_one_stopped_past_its_lease_lose_nothing_and_never_overlap(
    cluster, fault_rows
):
    def stop_past_the_lease(running: Cluster) -> None:
        pid = running.processes[0].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(TIMEOUT_S + 3 + 10)  # past the lease, and past the broker's heartbeat
        finally:
            os.kill(pid, signal.SIGCONT)

    run_cluster_fault(
        "3 listeners, one stopped (SIGSTOP) past its lease, then continued",
        cluster,
        stop_past_the_lease,
        fault_rows,
    )


def test_three_listeners_through_a_catalogue_server_restart_lose_nothing(cluster, fault_rows):
    def restart(running: Cluster) -> None:
        running.server.stop()
        running.server.start()

    run_cluster_fault("3 listeners, catalogue server restarted", cluster, restart, fault_rows)


def test_three_listeners_through_a_30_s_catalogue_outage_lose_nothing_and_keep_heartbeats(
    cluster, fault_rows
):
    before: dict[str, str] = {}

    def outage(running: Cluster) -> None:
        before.update(connected_at(running.names))
        running.server.stop()
        try:
            time.sleep(30)
        finally:
            running.server.start()

    run_cluster_fault("3 listeners, catalogue unreachable for 30 s", cluster, outage, fault_rows)
    assert len(before) == LISTENERS
    # Heartbeats every 5 s all through: no listener lost the connection it had.
    assert connected_at(cluster.names) == before


SCHEDULED = b"""import time

def handler(event, context):
    start = time.time()
    return {"scheduled_at": event["scheduled_at"], "start": start, "end": time.time()}
"""


def test_a_schedule_every_second_fires_each_tick_once_through_a_listeners_kill(cluster, fault_rows):
    function = add_function(
        cluster.catalogue, "every-second", SCHEDULED, event_type="never-published"
    )
    first = utcnow() + timedelta(seconds=3)
    schedule = cluster.catalogue.add_schedule(
        ScheduleRecord("", function.id, "faults", rate_s=1, start_at=first, next_fire_at=first)
    )
    cluster.start_listeners()
    started = time.monotonic()
    time.sleep(10)
    kill_one(cluster)
    time.sleep(10)
    cluster.catalogue.delete_schedule(function.id, schedule.id)

    records: list[Any] = []
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        records = cluster.catalogue.list_executions({"function_id": function.id}, 10_000).items
        if records and all(r.finished for r in records):
            break
        time.sleep(0.5)
    assert records, "no tick of the schedule fired"
    prefix = f"schedule-{schedule.id}-"
    ticks = sorted(
        datetime.strptime(r.event_id.removeprefix(prefix), "%Y%m%dT%H%M%SZ") for r in records
    )
    span = int((ticks[-1] - ticks[0]).total_seconds())
    expected = {ticks[0] + timedelta(seconds=n) for n in range(span + 1)}
    per_tick = collections.Counter(ticks)
    runs = [run for run in cluster.runs() if run["event_id"].startswith(prefix)]
    succeeded = collections.Counter(r["execution_id"] for r in runs if r["status"] == "succeeded")
    row = FaultRow(
        fault="3 listeners, one `kill -9`, a schedule every second",
        sent=len(expected),
        recorded=len(records),
        duplicates=sum(n - 1 for n in per_tick.values() if n > 1)
        + sum(n - 1 for n in succeeded.values() if n > 1),
        lost=len(expected - set(ticks)),
        retried=sum(len(r.attempts) for r in records),
        seconds=round(time.monotonic() - started, 1),
        overlapping=len(overlapping(runs)),
    )
    fault_rows.append(row)
    assert (row.lost, row.duplicates, row.overlapping) == (0, 0, 0), row
    assert row.sent >= 15, row  # ticked all along, the kill included
    assert [r.status for r in records if r.status != "succeeded"] == []


BATCHED = b"""import time

def handler(event, context):
    start = time.time()
    time.sleep(0.2)
    return {"marks": [item["mark"] for item in event], "start": start, "end": time.time()}
"""
BATCH_SIZE = 10


def kill_the_collector(running: Cluster) -> int:
    """``kill -9`` the listener that ran the latest batch (the one consuming the batch
    queue, with a batch running and the next gathering); its index."""
    latest = max(
        running.work.glob("runs-*.jsonl"), key=lambda path: path.stat().st_mtime, default=None
    )
    index = 0 if latest is None else int(latest.stem.removeprefix("runs-"))
    running.processes[index].send_signal(signal.SIGKILL)
    running.processes[index].wait(timeout=30)
    return index


def test_batches_through_a_kill_of_the_listener_gathering_them_hold_each_event_once(
    cluster, fault_rows
):
    (single,) = cluster.catalogue.list_functions({}, 10).items
    cluster.catalogue.delete_function(single.id)
    function = add_function(
        cluster.catalogue, "batched", BATCHED, batch_size=BATCH_SIZE, batch_window_s=0.5
    )
    fault = "3 listeners, one `kill -9` while gathering, batches of 10"
    cluster.start_listeners()
    started = time.monotonic()
    stream = Stream(cluster.settings, fault, EVENTS, interval_s=0.01).start()
    deadline = time.monotonic() + 60
    while len(stream.sent) < EVENTS // 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = kill_the_collector(cluster)
    killed_at = time.time()
    stream.join(timeout_s=240)
    sent = set(stream.sent)

    def succeeded() -> list[Any]:
        records = cluster.catalogue.list_executions({"function_id": function.id}, 100_000).items
        return [r for r in records if r.status == "succeeded"]

    records: list[Any] = []
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        records = succeeded()
        if {e for r in records for e in r.batch_events}.issuperset(sent):
            break
        time.sleep(0.5)
    in_batches = collections.Counter(e for r in records for e in r.batch_events)
    # What the function itself was given, by the marks it returned.
    returned = collections.Counter(m for r in records for m in r.result["marks"])
    runs = [run for run in cluster.runs() if run["status"] == "succeeded"]
    ran = collections.Counter(run["execution_id"] for run in runs)
    row = FaultRow(
        fault=fault,
        sent=len(sent),
        recorded=len(records),
        duplicates=sum(n - 1 for n in in_batches.values() if n > 1)
        + sum(n - 1 for n in ran.values() if n > 1),
        lost=len(sent - set(in_batches)),
        retried=sum(len(r.attempts) for r in records),
        seconds=round(time.monotonic() - started, 1),
        overlapping=len(overlapping(cluster.runs())),
    )
    fault_rows.append(row)
    assert (row.lost, row.duplicates, row.overlapping) == (0, 0, 0), row
    assert returned == in_batches
    # Another listener took the batch queue over.
    pids = {process.pid for n, process in enumerate(cluster.processes) if n != killed}
    assert any(run["pid"] in pids and run["start"] > killed_at for run in runs), runs[-3:]
    # Gathered, not one by one: the events came every 10 ms and a batch waits 0.5 s.
    assert max(len(r.batch_events) for r in records) == BATCH_SIZE
    assert len(records) < EVENTS / 2, len(records)
