"""Two hosts and a router, live: real RabbitMQ, the real Docker Engine, FerretDB.

Each host is a ``lambda-os worker`` process with 2 slots on the local engine; the
router places every execution. Where an execution ran is its ``placed_on``.
"""

from __future__ import annotations

import collections
import time

import cluster_helpers
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.mongo]
live_cluster = cluster_helpers.live_cluster


def eventually(check, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def max_overlap(records) -> int:
    """The most runs that were in the function at once, by the function's own clock."""
    edges = []
    for record in records:
        edges += [(record.result["start"], 1), (record.result["end"], -1)]
    running = peak = 0
    for _moment, change in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        running += change
        peak = max(peak, running)
    return peak


def test_events_for_one_function_land_on_its_home_host_and_find_it_warm(live_cluster):
    live_cluster.start_worker("alpha")
    live_cluster.start_worker("beta")
    live_cluster.wait_for_hosts("alpha", "beta")
    fn = live_cluster.function("homely")
    home = live_cluster.home_of(fn)

    for n in range(4):  # one at a time: each finds the home host with room
        live_cluster.send(fn, n)
        live_cluster.finished(fn, n + 1)

    records = sorted(live_cluster.finished(fn, 4), key=lambda r: r.result["n"])
    assert [r.status for r in records] == ["succeeded"] * 4
    assert {r.placed_on for r in records} == {home}
    assert [r.cold_start for r in records[1:]] == [False, False, False]
    # The home host's next heartbeat says the version is warm there.
    assert eventually(lambda: f"{fn.id}:1" in live_cluster.catalogue.get_host(home).warm)


def test_when_the_home_host_is_full_events_step_to_the_next(live_cluster):
    live_cluster.start_worker("alpha")
    live_cluster.start_worker("beta")
    live_cluster.wait_for_hosts("alpha", "beta")
    fn = live_cluster.function("busy")
    home = live_cluster.home_of(fn)
    other = ({"alpha", "beta"} - {home}).pop()

    sent = {live_cluster.send(fn, n, sleep=3.0) for n in range(4)}

    records = live_cluster.finished(fn, 4)
    assert [r.status for r in records] == ["succeeded"] * 4
    assert collections.Counter(r.placed_on for r in records) == {home: 2, other: 2}
    time.sleep(0.5)
    assert set(live_cluster.reply_ids()) == sent


def test_a_functions_concurrency_holds_across_hosts(live_cluster):
    live_cluster.start_worker("alpha")
    live_cluster.start_worker("beta")
    live_cluster.wait_for_hosts("alpha", "beta")
    fn = live_cluster.function("limited", concurrency=3)

    for n in range(6):
        live_cluster.send(fn, n, sleep=1.5)

    records = live_cluster.finished(fn, 6)
    assert [r.status for r in records] == ["succeeded"] * 6
    assert {r.placed_on for r in records} == {"alpha", "beta"}  # 4 slots in all ...
    assert max_overlap(records) <= 3  # ... but never more than 3 at once


def test_a_projects_executions_quota_holds_across_hosts_and_functions(live_cluster):
    live_cluster.start_worker("alpha")
    live_cluster.start_worker("beta")
    live_cluster.wait_for_hosts("alpha", "beta")
    functions = [live_cluster.function("quota-a"), live_cluster.function("quota-b")]
    live_cluster.catalogue.set_quota("tests", {"executions": 2})

    for n in range(6):
        live_cluster.send(functions[n % 2], n, sleep=1.5)

    records = [r for fn in functions for r in live_cluster.finished(fn, 3)]
    assert [(r.status, r.attempt) for r in records] == [("succeeded", 1)] * 6
    assert max_overlap(records) <= 2  # 4 slots in all, but the project may use 2


def test_a_killed_host_loses_no_event_and_its_invocations_finish_elsewhere(live_cluster):
    live_cluster.start_worker("alpha")
    live_cluster.start_worker("beta")
    live_cluster.wait_for_hosts("alpha", "beta")
    fn = live_cluster.function("survivor", max_retries=0)
    home = live_cluster.home_of(fn)
    other = ({"alpha", "beta"} - {home}).pop()

    sent = {live_cluster.send(fn, n, sleep=1.5) for n in range(8)}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        running = live_cluster.catalogue.list_executions(
            {"function_id": fn.id, "status": "running"}, 100
        ).items
        if any(r.leased_by and r.leased_by.startswith(f"{home}:") for r in running):
            break
        time.sleep(0.05)
    live_cluster.kill(home)

    records = live_cluster.finished(fn, 8, timeout_s=50)
    assert sorted(r.event_id for r in records) == sorted(sent)  # one record per event
    assert [r.status for r in records] == ["succeeded"] * 8  # max_retries 0: none spent
    assert {r.placed_on for r in records} == {other}
    interrupted = [r for r in records if any(a["status"] == "interrupted" for a in r.attempts)]
    assert interrupted  # the runs the killed host had were taken over ...
    assert all(r.placed_on == other for r in interrupted)  # ... on the other host
    assert live_cluster.catalogue.get_host(home).state == "lost"
    time.sleep(0.5)
    assert set(live_cluster.reply_ids()) == sent


def test_two_routers_on_one_catalogue_never_over_fill_a_host(live_cluster):
    second = live_cluster.add_router()
    live_cluster.start_worker("alpha")
    live_cluster.wait_for_hosts("alpha")
    fn = live_cluster.function("shared")
    assert second.share_view().routers == 2

    for n in range(8):
        live_cluster.send(fn, n, sleep=1.0)
    peak = 0
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        records = live_cluster.catalogue.list_executions({"function_id": fn.id}, 100).items
        unfinished = [r for r in records if not r.finished and r.placed_on == "alpha"]
        peak = max(peak, len(unfinished))
        if sum(1 for r in records if r.finished) == 8:
            break
        time.sleep(0.05)

    records = live_cluster.finished(fn, 8)
    assert [r.status for r in records] == ["succeeded"] * 8
    assert peak <= 2  # the host's 2 slots, one each ...
    assert len({r.placed_by for r in records}) == 2  # ... and both routers placed on it
    assert max_overlap(records) <= 2
