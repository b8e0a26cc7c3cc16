"""The host registry and placement through the catalogue, on mongomock and the real server.

Hosts change only through the catalogue's host transitions; a router places
executions with ``place_execution`` and counts what is placed, so these tests
drive ``Router`` on a catalogue with registered hosts and read back where each
execution went.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from lambda_os.catalogue import HOST_TRANSITIONS, TRANSITIONS, Catalogue
from lambda_os.packages import inspect_package
from lambda_os.records import ExecutionRecord, FunctionRecord, HostBeat, HostRecord, utcnow
from lambda_os.settings import Settings
from listener.admit import Admission
from listener.events import Event
from listener.execute import execute_step, new_record, spent_attempts
from listener.placement import HostLoad, home_host, probe_order
from listener.route import Router
from provisioner.base import Invocation, Outcome

HANDLER = b"def handler(event, context):\n    return event\n"


@pytest.fixture(params=["mongomock", pytest.param("mongodb", marks=pytest.mark.mongo)])
def store(request) -> Iterator[Catalogue]:
    if request.param == "mongomock":
        yield request.getfixturevalue("catalogue")
    else:
        yield request.getfixturevalue("real_catalogue")


def host(host_id: str, slots: int = 2, memory_mb: int = 4096) -> HostRecord:
    return HostRecord(
        id=host_id,
        queue=f"q.host.{host_id}",
        server_id=f"nova-{host_id}",
        memory_total_mb=memory_mb,
        slots_total=slots,
        lease_owner=f"{host_id}:1:abc",
    )


def function(store: Catalogue, name: str = "f", concurrency: int = 10, **fields) -> FunctionRecord:
    info = inspect_package(HANDLER, "main.py", "main.handler")
    base = {
        "name": name,
        "runtime": "python3.11",
        "event_source": "cluster",
        "event_type": name,
        "owner": "tests",
        "concurrency": concurrency,
    }
    return store.create_function({**base, **fields}, HANDLER, info)


def event(n: int, function: FunctionRecord) -> Event:
    return Event(id=f"evt-{n}", event_source="cluster", event_type=function.event_type, data=n)


def routed(store: Catalogue, router: Router, count: int, fn: FunctionRecord, start: int = 0):
    return [router.handle(event(n, fn))[0] for n in range(start, start + count)]


def refreshed(store: Catalogue, router: Router, routers: int = 1, rank: int = 0) -> Router:
    from listener.placement import RouterShare

    router.refresh(store.list_hosts(), RouterShare(rank, routers))
    return router


# -- the registry ----------------------------------------------------------------


def test_every_host_transition_is_a_catalogue_method():
    for _from, _to, method, _condition in HOST_TRANSITIONS + TRANSITIONS:
        assert callable(getattr(Catalogue, method)), method


def test_a_registered_host_is_active_and_listed_with_what_it_has(store):
    store.register_host(host("b", slots=4))
    store.register_host(host("a"))

    listed = store.list_hosts()

    assert [h.id for h in listed] == ["a", "b"]
    assert listed[1].state == "active"
    assert (listed[1].slots_total, listed[1].memory_total_mb) == (4, 4096)
    assert listed[1].server_id == "nova-b"
    assert listed[1].heartbeat_at is not None


def test_a_heartbeat_records_free_memory_slots_warm_versions_and_running(store):
    store.register_host(host("a"))

    assert store.heartbeat_host("a", HostBeat(1000, 1, 1, ("fn:2",)))

    record = store.get_host("a")
    assert (record.free_memory_mb, record.free_slots, record.running) == (1000, 1, 1)
    assert record.warm == ["fn:2"]


def test_a_host_silent_past_the_cutoff_is_marked_lost_once(store):
    store.register_host(host("a"))
    time.sleep(0.01)
    store.register_host(host("b"))
    cutoff = store.get_host("b").heartbeat_at

    first = store.mark_lost_hosts(cutoff)
    second = store.mark_lost_hosts(cutoff)

    assert [h.id for h in first] == ["a"]
    assert second == []  # of two routers, one marks it and recovers its work
    lost = store.mark_lost_hosts(utcnow() + timedelta(seconds=1))
    assert {h.id for h in first + lost} == {"a", "b"}
    assert {h.state for h in store.list_hosts()} == {"lost"}


def test_a_lost_host_cannot_heartbeat_its_way_back_only_register_again(store):
    store.register_host(host("a"))
    store.mark_lost_hosts(utcnow() + timedelta(seconds=1))

    assert not store.heartbeat_host("a", HostBeat(0, 0, 0))
    assert store.get_host("a").state == "lost"

    store.register_host(host("a"))
    assert store.get_host("a").state == "active"
    assert store.heartbeat_host("a", HostBeat(0, 0, 0))


def test_a_draining_host_heartbeats_but_is_not_placed_on_and_can_be_lost(store):
    store.register_host(host("a"))
    assert store.drain_host("a")
    assert not store.drain_host("a")
    assert store.heartbeat_host("a", HostBeat(0, 2, 0))
    assert store.list_hosts("active") == []
    assert [h.id for h in store.mark_lost_hosts(utcnow() + timedelta(seconds=1))] == ["a"]


def test_live_routers_are_those_heard_from_since_the_cutoff(store):
    store.heartbeat_router("r2")
    store.heartbeat_router("r1")
    assert store.live_routers(utcnow() - timedelta(seconds=30)) == ["r1", "r2"]
    assert store.live_routers(utcnow() + timedelta(seconds=1)) == []
    store.remove_router("r1")
    assert store.live_routers(utcnow() - timedelta(seconds=30)) == ["r2"]


def test_a_lost_hosts_leases_end_now_so_the_sweeper_finds_them(store):
    fn = function(store)
    now = utcnow()
    record, _ = store.start_execution(
        new_record(fn, event(1, fn)), "a:1:abc", now, now + timedelta(minutes=5)
    )
    other, _ = store.start_execution(
        new_record(fn, event(2, fn)), "b:1:abc", now, now + timedelta(minutes=5)
    )

    assert store.lapse_leases_of("a:1:abc", now) == 1

    stranded = store.stranded_executions(now + timedelta(seconds=1), now - timedelta(minutes=5))
    assert [r.id for r in stranded] == [record.id]
    assert store.get_execution(other.id).lease_until > now


def test_a_host_registering_with_a_new_worker_ends_the_leases_of_its_earlier_one(store):
    fn = function(store)
    now = utcnow()
    store.register_host(host("a"))  # its worker leases as "a:1:abc"
    earlier, _ = store.start_execution(
        new_record(fn, event(1, fn)), "a:1:abc", now, now + timedelta(minutes=5)
    )
    elsewhere, _ = store.start_execution(
        new_record(fn, event(2, fn)), "b:1:abc", now, now + timedelta(minutes=5)
    )

    store.register_host(dataclasses.replace(host("a"), lease_owner="a:2:def"))  # restarted

    stranded = store.stranded_executions(
        utcnow() + timedelta(seconds=1), now - timedelta(minutes=5)
    )
    assert [r.id for r in stranded] == [earlier.id]
    assert store.get_execution(elsewhere.id).lease_until > now


def test_a_host_registering_again_with_the_same_worker_keeps_its_leases(store):
    fn = function(store)
    now = utcnow()
    store.register_host(host("a"))
    record, _ = store.start_execution(
        new_record(fn, event(1, fn)), "a:1:abc", now, now + timedelta(minutes=5)
    )

    store.register_host(host("a"))  # e.g. found lost wrongly, and back

    assert store.get_execution(record.id).lease_until > now


# -- placement -----------------------------------------------------------------


def test_a_routers_events_for_one_function_go_to_its_home_host(store):
    for host_id in ("a", "b", "c"):
        store.register_host(host(host_id, slots=4))
    fn = function(store)
    router = refreshed(store, Router(store, "r1"))
    loads = [HostLoad(h.id, h.queue, 4, 4096) for h in store.list_hosts()]
    home = home_host(fn.id, fn.version, loads)

    steps = routed(store, router, 3, fn)

    assert {step.route for step in steps} == {home.queue}
    for step in steps:
        stored = store.get_execution(step.record.id)
        assert (stored.status, stored.placed_on, stored.placed_by) == ("queued", home.id, "r1")


def test_when_the_home_host_is_full_the_router_steps_to_the_next(store):
    for host_id in ("a", "b", "c"):
        store.register_host(host(host_id, slots=2))
    fn = function(store)
    router = refreshed(store, Router(store, "r1"))
    ordered = sorted(store.list_hosts(), key=lambda h: h.id)
    order = [ordered[i].id for i in probe_order(fn.id, fn.version, 3)]

    steps = routed(store, router, 7, fn)

    placed = [step.record.placed_on for step in steps[:6]]
    assert placed == [order[0]] * 2 + [order[1]] * 2 + [order[2]] * 2
    assert steps[6].defer and steps[6].wait_for_room and steps[6].route is None


def test_a_finished_execution_frees_its_slot(store):
    store.register_host(host("a", slots=1))
    fn = function(store)
    router = refreshed(store, Router(store, "r1"))
    first = routed(store, router, 1, fn)[0]
    assert routed(store, router, 1, fn, start=1)[0].wait_for_room

    now = utcnow()
    running = store.acquire_execution(first.record.id, "a:1:abc", now, now + timedelta(minutes=1))
    from lambda_os.records import Lease

    store.releases_slots = True  # as the host's worker finishes its runs
    store.finish_execution(Lease.of(running), {"status": "succeeded", "finished_at": now})

    assert routed(store, router, 1, fn, start=1)[0].route == "q.host.a"


def test_a_slot_left_by_an_execution_that_ended_another_way_is_pruned(store):
    store.register_host(host("a", slots=1))
    fn = function(store)
    router = refreshed(store, Router(store, "r1"))
    first = routed(store, router, 1, fn)[0]
    error = {"type": "Lost", "message": "its event is gone", "reason": "stranded"}
    assert store.fail_stranded(store.get_execution(first.record.id), error)  # the sweeper
    assert routed(store, router, 1, fn, start=1)[0].wait_for_room  # the slot still looks taken

    assert store.prune_slots(held_before=utcnow() - timedelta(minutes=1)) == 0  # too recent
    assert store.prune_slots(held_before=utcnow() + timedelta(seconds=1)) == 1

    assert routed(store, router, 1, fn, start=1)[0].route == "q.host.a"


def test_pruning_keeps_the_slot_of_an_execution_still_placed(store):
    store.register_host(host("a", slots=1))
    fn = function(store)
    router = refreshed(store, Router(store, "r1"))
    routed(store, router, 1, fn)

    assert store.prune_slots(held_before=utcnow() + timedelta(seconds=1)) == 0
    assert routed(store, router, 1, fn, start=1)[0].wait_for_room


def test_placements_are_the_slots_held_by_unfinished_placed_executions(store):
    store.register_host(host("a", slots=2))
    store.register_host(host("b", slots=2))
    fn, other = function(store, "f"), function(store, "g")
    router = refreshed(store, Router(store, "r1"))
    steps = routed(store, router, 3, fn) + routed(store, router, 1, other, start=3)
    assert all(step.route for step in steps)
    now = utcnow()
    done = store.acquire_execution(steps[0].record.id, "a:1:abc", now, now + timedelta(minutes=1))
    from lambda_os.records import Lease

    store.releases_slots = True  # as the host's worker finishes its runs
    store.finish_execution(Lease.of(done), {"status": "succeeded", "finished_at": now})

    placed = sorted(store.placements(), key=lambda p: p.execution_id)

    expected = sorted(steps[1:], key=lambda step: step.record.id)
    assert [p.execution_id for p in placed] == [step.record.id for step in expected]
    assert [p.function_id for p in placed] == [step.record.function_id for step in expected]
    assert [p.host_id for p in placed] == [step.record.placed_on for step in expected]
    assert {p.router_id for p in placed} == {"r1"}


def test_a_functions_concurrency_holds_across_hosts(store):
    for host_id in ("a", "b"):
        store.register_host(host(host_id, slots=4))
    fn = function(store, concurrency=3)
    router = refreshed(store, Router(store, "r1"))

    steps = routed(store, router, 5, fn)

    assert sum(1 for step in steps if step.route) == 3
    assert all(step.wait_for_room for step in steps[3:])
    waiting = store.get_execution(steps[4].record.id)
    assert (waiting.status, waiting.placed_on) == ("queued", None)


def quota_router(store: Catalogue, admission_store=None) -> Router:
    admission = Admission(admission_store or store, Settings(), quota_cache_s=0)
    return refreshed(store, Router(store, "r1", admission=admission))


def test_a_projects_executions_quota_holds_across_its_functions_and_hosts(store):
    for host_id in ("a", "b"):
        store.register_host(host(host_id, slots=4))
    f, g = function(store, "f"), function(store, "g")
    store.set_quota("tests", {"executions": 3})
    router = quota_router(store)

    steps = [router.handle(event(n, (f, g)[n % 2]))[0] for n in range(6)]

    assert sum(1 for step in steps if step.route) == 3
    assert all(step.defer and step.wait_for_room for step in steps[3:])
    waiting = store.get_execution(steps[5].record.id)
    assert (waiting.status, waiting.placed_on, waiting.attempt) == ("queued", None, 1)


def test_a_projects_memory_quota_counts_the_memory_of_its_placed_runs(store):
    store.register_host(host("a", slots=4))
    f = function(store, "f", memory_mb=256)
    g = function(store, "g", memory_mb=256)
    store.set_quota("tests", {"memory_mb": 300})
    router = quota_router(store)

    first = router.handle(event(1, f))[0]
    second = router.handle(event(2, g))[0]

    assert first.route == "q.host.a"
    assert second.wait_for_room and second.route is None


def test_an_event_that_waited_for_its_projects_quota_is_placed_once_a_run_ends(store):
    store.register_host(host("a", slots=4))
    fn = function(store)
    store.set_quota("tests", {"executions": 1})
    router = quota_router(store)
    first = router.handle(event(1, fn))[0]
    assert router.handle(event(2, fn))[0].wait_for_room

    for slot in store.placements():
        store.release_slot(slot)  # as the host's worker does when the first run ends
    again = router.handle(event(2, fn))[0]

    assert first.route and again.route == "q.host.a"
    stored = store.list_executions({"function_id": fn.id}, 10).items
    assert sorted(r.id for r in stored) == sorted([first.record.id, again.record.id])


class CountingReads:
    """The catalogue for an ``Admission``, counting the reads of what a project runs."""

    def __init__(self, store: Catalogue) -> None:
        self._store = store
        self.counted = 0

    def get_quota(self, project_id):
        return self._store.get_quota(project_id)

    def function_memory_of(self, owner):
        self.counted += 1
        return self._store.function_memory_of(owner)


def test_a_quota_the_active_hosts_cannot_reach_is_never_counted(store):
    store.register_host(host("a", slots=2, memory_mb=4096))
    fn = function(store)
    store.set_quota("tests", {"executions": 2, "memory_mb": 4096})
    reads = CountingReads(store)
    router = quota_router(store, reads)

    steps = routed(store, router, 3, fn)

    assert [bool(step.route) for step in steps] == [True, True, False]  # the host is full
    assert reads.counted == 0


def test_two_routers_on_one_catalogue_keep_to_their_shares_of_a_host(store):
    store.register_host(host("a", slots=3))
    fn = function(store)
    first = refreshed(store, Router(store, "r1"), routers=2, rank=0)
    second = refreshed(store, Router(store, "r2"), routers=2, rank=1)

    steps = []
    for n in range(4):
        steps.append(first.handle(event(2 * n, fn))[0])
        steps.append(second.handle(event(2 * n + 1, fn))[0])

    placed = [step for step in steps if step.route]
    assert len(placed) == 3
    by_router = {step.record.placed_by for step in placed}
    assert by_router == {"r1", "r2"}


def test_a_redelivered_event_finds_its_record_and_places_it_again_not_a_second_one(store):
    store.register_host(host("a", slots=4))
    fn = function(store)
    router = refreshed(store, Router(store, "r1"))

    first = router.handle(event(1, fn))[0]
    again = router.handle(event(1, fn))[0]

    assert first.record.id == again.record.id
    assert again.route == "q.host.a"
    assert store.list_executions({"function_id": fn.id}, 10).items == [
        store.get_execution(first.record.id)
    ]


def test_an_execution_running_under_a_live_lease_is_deferred_and_a_lapsed_one_placed(store):
    store.register_host(host("a", slots=4))
    fn = function(store)
    router = refreshed(store, Router(store, "r1"))
    now = utcnow()
    store.start_execution(new_record(fn, event(1, fn)), "x:1:abc", now, now + timedelta(minutes=5))
    lapsed, _ = store.start_execution(
        new_record(fn, event(2, fn)), "x:1:abc", now, now - timedelta(seconds=1)
    )

    deferred = router.handle(event(1, fn))[0]
    placed = router.handle(event(2, fn))[0]

    assert deferred.defer and not deferred.wait_for_room and deferred.route is None
    assert placed.route == "q.host.a" and placed.record.id == lapsed.id


def test_no_active_host_means_the_event_waits_in_the_broker(store):
    fn = function(store)
    router = refreshed(store, Router(store, "r1"))

    step = router.handle(event(1, fn))[0]

    assert step.defer and step.wait_for_room
    assert store.get_execution(step.record.id).status == "queued"


# -- the retry budget ----------------------------------------------------------------


class Failing:
    """A provisioner double whose every run fails as a handler error would."""

    capacity = 1

    def run(self, invocation: Invocation) -> Outcome:
        now = utcnow()
        error = {"type": "ValueError", "message": "no", "reason": "handler error"}
        return Outcome("failed", None, error, "", now, now, 1.0, False, "test")

    def close(self) -> None:
        pass


def test_an_interrupted_attempt_spends_no_retry(store):
    fn = function(store, max_retries=1)
    evt = event(1, fn)
    now = utcnow()
    # Attempt 1 ran on a host that was lost: its lease lapsed and another takes it over.
    store.start_execution(new_record(fn, evt), "lost:1:abc", now, now - timedelta(seconds=1))
    record = store.get_execution(new_record(fn, evt).id)

    step = execute_step(store, Failing(), fn, evt, record, retry_delay_s=lambda _attempt: 1.0)

    assert step.retry  # attempt 2 failed: the one retry is still there
    assert [entry["status"] for entry in step.record.attempts] == ["interrupted", "failed"]
    # The failed run and the queued third one: the last that one retry allows.
    assert (step.record.attempt, spent_attempts(step.record)) == (3, 2)


def test_spent_attempts_count_failed_runs_of_this_budget_only():
    record = ExecutionRecord(
        id="x",
        function_id="f",
        function_version=1,
        event_id="e",
        attempt=5,
        first_attempt=2,
        attempts=[
            {"attempt": 1, "status": "failed"},
            {"attempt": 2, "status": "interrupted"},
            {"attempt": 3, "status": "failed"},
            {"attempt": 4, "status": "interrupted"},
        ],
    )
    assert spent_attempts(record) == 2


def test_a_new_event_is_recorded_already_placed_and_holds_one_slot(store):
    store.register_host(host("a", slots=2))
    fn = function(store)
    router = refreshed(store, Router(store, "r1"))

    (step,) = router.handle(event(1, fn))

    stored = store.get_execution(step.record.id)
    assert (step.route, stored.status, stored.placed_on, stored.placed_by) == (
        "q.host.a",
        "queued",
        "a",
        "r1",
    )
    assert [p.execution_id for p in store.placements()] == [stored.id]
    assert stored.placed_at == store.placements()[0].placed_at  # the server's clock


def test_a_redelivered_event_of_a_finished_execution_leaves_no_slot_held(store):
    store.register_host(host("a", slots=2))
    fn = function(store)
    router = refreshed(store, Router(store, "r1"))
    (first,) = router.handle(event(1, fn))
    now = utcnow()
    running = store.acquire_execution(first.record.id, "a:1:abc", now, now + timedelta(minutes=1))
    from lambda_os.records import Lease

    store.releases_slots = True  # as the host's worker finishes its runs
    store.finish_execution(Lease.of(running), {"status": "succeeded", "finished_at": now})

    (again,) = router.handle(event(1, fn))

    assert again.record.status == "succeeded" and again.route is None
    assert store.placements() == []
    assert len(store.list_executions({}, 10).items) == 1


def test_a_router_that_loses_the_race_for_a_record_gives_back_only_its_own_slot(store):
    store.register_host(host("a", slots=2))
    fn = function(store)
    router = refreshed(store, Router(store, "r1"))
    (won,) = router.handle(event(1, fn))
    lost = store.hold_slot(won.record.id, fn.id, "a", "r2")  # a second router, a moment late

    store.release_slot(lost)  # its place_execution found the record moved on

    (kept,) = store.placements()
    assert (kept.execution_id, kept.router_id) == (won.record.id, "r1")


def test_a_drained_or_lost_host_retires_and_stays_retired(store):
    for host_id in ("d", "l", "a"):
        store.register_host(host(host_id))
    store.drain_host("d")
    store._hosts.update_one({"_id": "l"}, {"$set": {"state": "lost"}})

    assert store.retire_host("d") and store.retire_host("l")
    assert not store.retire_host("a")  # an active host must be found lost first
    assert not store.retire_host("d")
    assert {h.id: h.state for h in store.list_hosts()} == {
        "a": "active",
        "d": "retired",
        "l": "retired",
    }
    # Neither heartbeats nor the lost check bring it back; registering again does.
    assert not store.heartbeat_host("d", HostBeat(1, 1, 0))
    store.register_host(host("d"))
    assert store.get_host("d").state == "active"


class _Backend:
    """What a host's heartbeat reads of its provisioner."""

    capacity = 2

    def usage(self):
        from provisioner.base import Usage

        return Usage(free_memory_mb=4096)


def test_a_retired_hosts_worker_does_not_register_again_but_a_lost_ones_does(store):
    from listener.heartbeat import CountingProvisioner, Heartbeat

    beats = Heartbeat(store, host("w"), CountingProvisioner(_Backend()), 1.0)
    beats.beat_once()
    assert store.get_host("w").state == "active"

    store._hosts.update_one({"_id": "w"}, {"$set": {"state": "lost"}})
    beats.beat_once()  # wrongly found lost: it comes back
    assert store.get_host("w").state == "active"

    store.drain_host("w")
    assert store.retire_host("w")
    beats.beat_once()  # its server was deleted: it stays retired
    assert store.get_host("w").state == "retired"
