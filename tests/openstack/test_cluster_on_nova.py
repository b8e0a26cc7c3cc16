"""The platform end to end on the test cloud: the controller boots Nova servers, they serve.

Each server the controller boots is played as a VM (``testing_service.vmplay``): its
worker starts from the server's own user data, in a network namespace that reaches
the broker and catalogue only through the player's relays. A router places every
event; where an execution ran is its ``placed_on``.
"""

from __future__ import annotations

import collections
import signal
import time
import uuid

import nova_cluster as helpers
import pytest
from nova_cluster import eventually

from provisioner.scaling import BOOT, DELETE, DRAIN, REPLACE

pytestmark = [pytest.mark.integration, pytest.mark.openstack, pytest.mark.mongo]
nova_cluster = helpers.nova_cluster


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_an_event_runs_on_the_host_the_controller_booted_through_nova(nova_cluster):
    cluster = nova_cluster(scale_min_hosts=1, scale_max_hosts=1)
    cluster.start_controller()

    (host_id,) = cluster.wait_for_hosts(1)
    server = cluster.server_of(host_id)
    assert cluster.catalogue.get_host(host_id).server_id == server.id
    function = cluster.live.function(name("echo"))
    event_id = cluster.live.send(function, 7)

    (record,) = cluster.live.finished(function, 1)
    assert record.event_id == event_id
    assert record.status == "succeeded", record
    assert record.placed_on == host_id
    assert record.result["n"] == 7
    assert eventually(cluster.live.reply_ids, "the reply") == [event_id]


def test_a_burst_boots_more_servers_and_the_new_hosts_take_part_of_it(nova_cluster):
    # Two runs of 512 MB fill a host's 1 GiB: memory passes the high mark at once.
    cluster = nova_cluster(scale_min_hosts=1, scale_max_hosts=3, scale_waiting_after_s=1.0)
    cluster.start_controller()
    (first,) = cluster.wait_for_hosts(1)
    function = cluster.live.function(name("burst"), memory_mb=512)

    event_ids = [cluster.live.send(function, n, sleep=1.5) for n in range(16)]

    records = cluster.exactly_once(function, event_ids)
    placed = collections.Counter(r.placed_on for r in records.values())
    assert len(placed) >= 2 and set(placed) - {first}, placed
    assert 2 <= len(cluster.servers()) <= 3
    boots = [e for e in cluster.catalogue.list_scaling_events() if e.action == BOOT]
    assert any("above the high mark" in e.reason or "waited" in e.reason for e in boots), boots
    assert sorted(r.result["n"] for r in records.values()) == list(range(16))


def test_a_server_deleted_behind_the_controllers_back_is_replaced_and_no_event_is_lost(
    nova_cluster,
):
    cluster = nova_cluster(scale_min_hosts=2, scale_max_hosts=2)
    cluster.start_controller()
    before = cluster.wait_for_hosts(2)
    function = cluster.live.function(name("steady"))
    victim = cluster.live.home_of(function)  # where the function's events go
    server = cluster.server_of(victim)
    event_ids = [cluster.live.send(function, n, sleep=0.5) for n in range(6)]

    cluster.delete_vm(server.id)
    event_ids += [cluster.live.send(function, n, sleep=0.5) for n in range(6, 12)]

    records = cluster.exactly_once(function, event_ids)
    assert sorted(r.result["n"] for r in records.values()) == list(range(12))
    hosts = cluster.wait_for_hosts(2)
    (new,) = hosts - before
    assert victim not in hosts
    assert server.id not in {s.id for s in cluster.servers()}
    replaced = [e for e in cluster.catalogue.list_scaling_events() if e.host_id == victim]
    assert replaced and replaced[0].action == REPLACE, replaced
    assert server.id in replaced[0].reason
    assert new in {e.host_id for e in cluster.catalogue.list_scaling_events() if e.action == BOOT}


def test_a_controller_killed_with_sigkill_and_restarted_boots_no_duplicates(nova_cluster):
    cluster = nova_cluster(scale_min_hosts=2, scale_max_hosts=2)
    first = cluster.controller_process()
    eventually(cluster.servers, "the first boot")
    first.send_signal(signal.SIGKILL)  # between its boots, or just after them
    first.wait()
    booted = {s.id for s in cluster.servers()}

    second = cluster.controller_process()
    cluster.wait_for_hosts(2)
    passes = 6  # the restarted controller judges the two hosts again and again
    time.sleep(passes * cluster.settings.scale_interval_s)

    assert second.poll() is None, "the restarted controller exited"
    servers = {s.id for s in cluster.servers()}
    assert len(servers) == 2 and booted <= servers
    # A kill between Nova's answer and the catalogue write leaves a boot unrecorded,
    # never a server booted twice: each recorded boot names one of the two.
    boots = [e for e in cluster.catalogue.list_scaling_events() if e.action == BOOT]
    assert {e.server_id for e in boots} <= servers and len(boots) <= 2, boots


def test_idle_scales_down_by_draining_one_host_and_deleting_it_once_it_runs_nothing(
    nova_cluster,
):
    # Four 512 MB runs fill both 1 GiB hosts; no warm containers, so a host whose
    # runs end holds no memory. A high mark of 100 % lets one host go while the
    # other is still full.
    cluster = nova_cluster(
        scale_min_hosts=2,
        scale_max_hosts=2,
        scale_low_mark=0.6,
        scale_high_mark=1.0,
        worker_env={"LAMBDA_OS_WARM_IDLE_S": "0"},
    )
    cluster.start_controller()
    cluster.wait_for_hosts(2)
    cluster.stop_controller()
    function = cluster.live.function(name("idle"), memory_mb=512)
    event_ids = [cluster.live.send(function, n, sleep=1.0 + 1.5 * n) for n in range(4)]
    eventually(
        lambda: len({r.placed_on for r in cluster.live.finished(function, 0) if r.started_at}) == 2,
        "runs on both hosts",
    )

    cluster.start_controller(scale_min_hosts=1)  # now one host is more than enough

    records = cluster.exactly_once(function, event_ids)

    def one_left() -> set[str] | None:
        """The one active host once every other has gone all the way (drained, deleted)."""
        if cluster.catalogue.list_hosts("draining"):
            return None
        hosts = cluster.active_hosts()
        events = cluster.catalogue.list_scaling_events()
        drained = {e.host_id for e in events if e.action == DRAIN}
        deleted = {e.host_id for e in events if e.action == DELETE}
        return hosts if len(hosts) == 1 and drained <= deleted else None

    (kept,) = eventually(one_left, "one host left")
    events = list(reversed(cluster.catalogue.list_scaling_events()))  # oldest first
    taken = [(e.action, e.host_id) for e in events if e.action in (DRAIN, DELETE)]
    gone = taken[0][1]
    assert taken[:2] == [(DRAIN, gone), (DELETE, gone)]
    # Every host that went was drained first and ran nothing any more when its server
    # was deleted (a busy machine may let the second host finish and go too, and the
    # minimum boot a new one: the order of things is what this checks).
    for host_id in {host for _action, host in taken}:
        actions = [action for action, host in taken if host == host_id]
        assert actions == [DRAIN, DELETE], (host_id, taken)
        deleted_at = next(e.at for e in events if e.action == DELETE and e.host_id == host_id)
        ran_there = [r for r in records.values() if r.placed_on == host_id]
        assert all(r.finished_at <= deleted_at for r in ran_there), host_id
        assert cluster.catalogue.get_host(host_id).state == "retired"
    assert any(r.placed_on == gone for r in records.values())
    assert kept != gone
    eventually(
        lambda: [s.host_id for s in cluster.servers()] == [kept], "only the kept host's server"
    )
