"""A queued event over its project's at-once quota waits; on mongomock, with a provisioner double.

No network: ``start_step`` and ``execute_step`` are driven as the listener drives
them, with an ``Admission``; the broker's part (the delay queues) is in
``test_queue_quotas.py``.
"""

from __future__ import annotations

from datetime import timedelta

from listener_helpers import FakeProvisioner, add_function

from lambda_os.records import Lease, execution_id_for, utcnow
from lambda_os.settings import Settings
from listener.admit import Admission, Ceiling
from listener.events import Event
from listener.execute import new_record, start_step


def event(event_id: str, event_type: str = "created", **fields) -> Event:
    return Event(event_id, "orders", event_type, {"n": event_id}, **fields)


def admission(catalogue, **options) -> Admission:
    return Admission(catalogue, Settings(), quota_cache_s=0, **options)


def hold_a_run(catalogue, function, event_id: str) -> Lease:
    """A run of ``function`` in progress elsewhere: its record ``running`` under a live lease."""
    now = utcnow()
    record, _ = catalogue.start_execution(
        new_record(function, event(event_id, function.event_type)),
        "another listener",
        now,
        now + timedelta(minutes=5),
    )
    return Lease.of(record)


def end_the_run(catalogue, lease: Lease) -> None:
    catalogue.finish_execution(
        lease, {"status": "succeeded", "finished_at": utcnow(), "duration_ms": 1.0}
    )


def test_an_event_at_its_projects_executions_quota_waits_queued_and_spends_no_attempt(catalogue):
    function = add_function(catalogue, "f")
    catalogue.set_quota("tests", {"executions": 1})
    hold_a_run(catalogue, function, "e-0")
    provisioner = FakeProvisioner()

    step = start_step(
        catalogue, provisioner, function, event("e-1"), admission=admission(catalogue)
    )

    assert (step.defer, step.wait_for_room, step.retry, step.dead_letter) == (
        True,
        True,
        False,
        None,
    )
    stored = catalogue.get_execution(execution_id_for("e-1", function.id))
    assert (stored.status, stored.attempt, stored.attempts, stored.leased_by) == (
        "queued",
        1,
        [],
        None,
    )
    assert provisioner.runs == []


def test_the_waiting_event_runs_once_the_projects_run_ends(catalogue):
    function = add_function(catalogue, "f")
    catalogue.set_quota("tests", {"executions": 1})
    lease = hold_a_run(catalogue, function, "e-0")
    gate = admission(catalogue)
    provisioner = FakeProvisioner()
    start_step(catalogue, provisioner, function, event("e-1"), admission=gate)
    end_the_run(catalogue, lease)

    # What comes back from the delay queue: the event addressed to the function.
    again = start_step(
        catalogue, provisioner, function, event("e-1", function_id=function.id), admission=gate
    )

    assert (again.defer, again.record.status, again.record.attempt) == (False, "succeeded", 1)
    assert len(provisioner.runs) == 1


def test_a_function_over_the_projects_memory_quota_waits_and_a_smaller_one_fits(catalogue):
    big = add_function(catalogue, "big", memory_mb=256)
    other = add_function(catalogue, "other", event_type="updated", memory_mb=256)
    small = add_function(catalogue, "small", event_type="deleted", memory_mb=32)
    catalogue.set_quota("tests", {"memory_mb": 300})
    hold_a_run(catalogue, big, "e-0")
    gate = admission(catalogue)

    waits = start_step(catalogue, FakeProvisioner(), other, event("e-1", "updated"), admission=gate)
    fits = start_step(catalogue, FakeProvisioner(), small, event("e-2", "deleted"), admission=gate)

    assert (waits.wait_for_room, waits.record.status) == (True, "queued")
    assert (fits.defer, fits.record.status) == (False, "succeeded")


def test_a_retry_at_the_quota_waits_and_keeps_its_attempt(catalogue):
    function = add_function(catalogue, "f", max_retries=2)
    catalogue.set_quota("tests", {"executions": 1})
    gate = admission(catalogue)
    failing = FakeProvisioner(status="failed")
    first = start_step(
        catalogue, failing, function, event("e-1"), admission=gate, retry_delay_s=lambda a: 0.0
    )
    assert first.retry and first.record.attempt == 2
    hold_a_run(catalogue, function, "e-0")

    retry = start_step(
        catalogue,
        FakeProvisioner(),
        function,
        event("e-1", function_id=function.id, attempt=2),
        admission=gate,
        retry_delay_s=lambda a: 0.0,
    )

    assert (retry.wait_for_room, retry.record.status, retry.record.attempt) == (True, "queued", 2)
    stored = catalogue.get_execution(retry.record.id)
    assert (stored.status, stored.attempt, len(stored.attempts)) == ("queued", 2, 1)


def test_another_projects_runs_do_not_count(catalogue):
    theirs = add_function(catalogue, "theirs", owner="elsewhere")
    ours = add_function(catalogue, "ours", event_type="updated")
    catalogue.set_quota("tests", {"executions": 1})
    hold_a_run(catalogue, theirs, "e-0")

    step = start_step(
        catalogue, FakeProvisioner(), ours, event("e-1", "updated"), admission=admission(catalogue)
    )

    assert (step.defer, step.record.status) == (False, "succeeded")


class CountingStore:
    """The catalogue, counting how often the quota and the use are read."""

    def __init__(self, catalogue) -> None:
        self._catalogue = catalogue
        self.reads = {"get_quota": 0, "usage_of": 0}

    def get_quota(self, project_id):
        self.reads["get_quota"] += 1
        return self._catalogue.get_quota(project_id)

    def usage_of(self, project_id):
        self.reads["usage_of"] += 1
        return self._catalogue.usage_of(project_id)

    def function_memory_of(self, owner):
        return self._catalogue.function_memory_of(owner)


def test_a_quota_no_smaller_than_what_can_run_at_once_is_never_counted(catalogue):
    function = add_function(catalogue, "f", memory_mb=128)
    add_function(catalogue, "bigger", event_type="updated", memory_mb=256)
    store = CountingStore(catalogue)
    gate = Admission(store, Settings(quota_executions=8, quota_memory_mb=8 * 256))

    # 8 runs, each of at most the project's largest function: the quota cannot bind.
    assert gate.binding(function, Ceiling(runs=8)) is None
    assert gate.binding(function, Ceiling(runs=9)) is not None
    assert gate.binding(function, Ceiling(runs=8, memory_mb=8 * 256 + 1)) is not None
    assert gate.binding(function, None) is not None  # nothing known: always counted
    assert store.reads["usage_of"] == 0


def test_a_projects_quota_is_read_once_per_cache_period(catalogue):
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    class Store:
        reads = 0

        def get_quota(self, project_id):
            self.reads += 1
            return {"executions": 1}

    clock, store = Clock(), Store()
    gate = Admission(store, Settings(), clock=clock, quota_cache_s=2.0)
    function = add_function(catalogue, "f")

    for _ in range(5):
        gate.binding(function, None)
    clock.now = 2.5
    quota = gate.binding(function, None)

    assert store.reads == 2 and quota.executions == 1


def test_standalone_on_its_own_catalogue_never_counts_under_the_default_quotas(catalogue):
    from lambda_os.serve import gunicorn_options, standalone_ceiling

    settings = Settings()
    function = add_function(catalogue, "f", memory_mb=1024)
    store = CountingStore(catalogue)
    threads = gunicorn_options(settings, workers=1)["threads"]

    quota = Admission(store, settings).binding(
        function, standalone_ceiling(settings.concurrency, threads)
    )

    assert quota is None and store.reads["usage_of"] == 0


def test_far_below_its_quota_a_project_is_counted_once_a_second_and_near_it_every_start(
    catalogue,
):
    function = add_function(catalogue, "f", memory_mb=128)
    catalogue.set_quota("tests", {"executions": 10, "memory_mb": 100_000})
    store = CountingStore(catalogue)
    now = [0.0]
    gate = Admission(store, Settings(), clock=lambda: now[0], quota_cache_s=60)
    quota = gate.binding(function, None)

    # The first start is counted (0 running here); each later one adds one to that
    # count, and up to half of 10 it is trusted without counting again.
    assert [gate.over_after_start(function, quota) for _ in range(6)] == [None] * 6
    assert store.reads["usage_of"] == 1
    gate.over_after_start(function, quota)  # 6 of 10 would pass half: counted exactly
    assert store.reads["usage_of"] == 2

    now[0] += 1.5  # the count is too old to trust, however far below
    gate.over_after_start(function, quota)
    assert store.reads["usage_of"] == 3


def test_an_exact_count_still_refuses_the_start_that_passes_the_quota(catalogue):
    function = add_function(catalogue, "f")
    catalogue.set_quota("tests", {"executions": 2})
    hold_a_run(catalogue, function, "e-0")
    hold_a_run(catalogue, function, "e-1")
    hold_a_run(catalogue, function, "e-2")  # as if this start made the third
    gate = admission(catalogue)
    quota = gate.binding(function, None)

    assert "executions" in (gate.over_after_start(function, quota) or "")


def test_the_largest_memory_of_a_projects_functions_is_read_once_a_minute_not_per_event(
    catalogue,
):
    small = add_function(catalogue, "small", memory_mb=128)
    bigger = add_function(catalogue, "bigger", event_type="updated", memory_mb=512)
    catalogue.set_quota("tests", {"executions": 1000, "memory_mb": 4096})
    reads = []

    class Store(CountingStore):
        def function_memory_of(self, owner):
            reads.append(owner)
            return super().function_memory_of(owner)

    now = [0.0]
    gate = Admission(Store(catalogue), Settings(), clock=lambda: now[0], quota_cache_s=60)
    ceiling = Ceiling(runs=10)  # 10 runs of the largest, 512 MB: more than the 4096 MB quota

    assert all(gate.binding(small, ceiling) is not None for _ in range(100))
    assert reads == ["tests"]
    now[0] += 61
    gate.binding(small, ceiling)
    assert reads == ["tests", "tests"]
    assert gate.binding(bigger, ceiling) is not None
