"""The scaling rules on plain data: hosts, servers and a clock, no cloud and no catalogue."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from lambda_os.records import HostRecord
from provisioner.cloud import HOST_ID_KEY, PLATFORM_KEY, Server
from provisioner.scaling import (
    BOOT,
    DELETE,
    DRAIN,
    NOTHING,
    REPLACE,
    Policy,
    Situation,
    decide,
    memory_load,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
POLICY = Policy(min_hosts=1, max_hosts=3, cooldown_s=60, register_grace_s=300)


def host(
    host_id: str, free: int = 2000, total: int = 4000, running: int = 0, state="active", idle=0
):
    return HostRecord(
        id=host_id,
        queue=f"q.{host_id}",
        server_id=f"srv-{host_id}",
        state=state,
        memory_total_mb=total,
        free_memory_mb=free,
        idle_memory_mb=idle,
        running=running,
        heartbeat_at=NOW,
    )


def server(host_id: str, age_s: float = 600, status: str = "ACTIVE") -> Server:
    return Server(
        id=f"srv-{host_id}",
        name=host_id,
        status=status,
        metadata={PLATFORM_KEY: "p", HOST_ID_KEY: host_id},
        addresses={},
        created=NOW - timedelta(seconds=age_s),
    )


def situation(hosts, servers=None, placed=None, **more) -> Situation:
    if servers is None:
        servers = [server(h.id) for h in hosts]
    return Situation(hosts=hosts, servers=servers, now=NOW, placed=placed or {}, **more)


def test_memory_load_is_the_share_of_memory_in_use():
    assert memory_load([host("a", free=1000), host("b", free=3000)]) == 0.5
    assert memory_load([]) is None


def test_memory_idle_containers_hold_is_not_load():
    # A burst ran and left warm containers behind: the memory is held, not used.
    warm = [host("a", free=200, idle=3800), host("b", free=200, idle=2800)]
    assert memory_load(warm) == 1000 / 8000


def test_a_cluster_that_only_keeps_a_burst_warm_shrinks():
    hosts = [host("a", free=100, idle=3900), host("b", free=4000), host("c", free=100, idle=3000)]
    decision = decide(situation(hosts), POLICY)
    assert decision.action == DRAIN


def test_the_host_keeping_functions_warm_is_drained_last():
    warm = dataclasses.replace(host("a", free=100, idle=3900), warm=["f:1", "g:1"])
    cold = host("b", free=3000)
    decision = decide(situation([warm, cold, host("c", free=3500)]), POLICY)
    assert (decision.action, decision.host_id) == (DRAIN, "c")
    decision = decide(situation([warm, cold]), POLICY)
    assert (decision.action, decision.host_id) == (DRAIN, "b")


def test_load_within_the_marks_does_nothing():
    decision = decide(situation([host("a", free=2000)]), POLICY)
    assert decision.action == NOTHING
    assert "within the marks" in decision.reason


def test_no_hosts_at_all_boots_one_to_reach_the_minimum():
    decision = decide(situation([]), POLICY)
    assert decision.action == BOOT
    assert "minimum" in decision.reason


def test_load_above_the_high_mark_boots_a_host():
    decision = decide(situation([host("a", free=800)]), POLICY)
    assert decision.action == BOOT
    assert "above the high mark" in decision.reason


def test_load_above_the_high_mark_at_the_maximum_boots_nothing():
    hosts = [host(h, free=100) for h in "abc"]
    decision = decide(situation(hosts), POLICY)
    assert decision.action == NOTHING
    assert "maximum" in decision.reason


def test_a_booted_server_not_yet_registered_counts_so_no_second_one_is_booted():
    decision = decide(
        situation([host("a", free=100)], [server("a"), server("b", age_s=10)]), POLICY
    )
    assert decision.action == NOTHING
    assert "yet to register" in decision.reason


def test_no_boot_within_the_cooldown_of_the_last_change():
    recent = NOW - timedelta(seconds=30)
    decision = decide(situation([host("a", free=100)], last_scaled_at=recent), POLICY)
    assert decision.action == NOTHING
    assert "cooling down" in decision.reason


def test_an_execution_waiting_too_long_boots_a_host_even_at_low_memory_load():
    waiting = NOW - timedelta(seconds=POLICY.waiting_after_s + 1)
    decision = decide(situation([host("a", free=3000)], oldest_queued_at=waiting), POLICY)
    assert decision.action == BOOT
    assert "waited" in decision.reason


def test_load_below_the_low_mark_drains_the_least_loaded_host():
    hosts = [host("a", free=3000), host("b", free=3900), host("c", free=3500)]
    decision = decide(situation(hosts), POLICY)
    assert (decision.action, decision.host_id, decision.server_id) == (DRAIN, "b", "srv-b")
    assert "below the low mark" in decision.reason


def test_a_host_with_running_executions_is_never_drained():
    hosts = [host("a", free=3000), host("b", free=3900, running=1)]
    decision = decide(situation(hosts), POLICY)
    assert decision.host_id == "a"


def test_a_host_with_executions_placed_on_it_is_never_drained():
    hosts = [host("a", free=3900), host("b", free=3900)]
    decision = decide(situation(hosts, placed={"a": 1, "b": 2}), POLICY)
    assert decision.action == NOTHING
    assert "every host runs something" in decision.reason


def test_the_minimum_host_is_never_drained():
    decision = decide(situation([host("a", free=4000)]), POLICY)
    assert decision.action == NOTHING


def test_no_drain_that_would_push_the_others_above_the_high_mark():
    # 10 % in use overall, but all of it on the small host that would be left.
    hosts = [host("a", free=0, total=1000), host("b", free=9000, total=9000)]
    decision = decide(situation(hosts), POLICY)
    assert decision.action == NOTHING
    assert "without b it would be 100%" in decision.reason


def test_a_drained_idle_host_has_its_server_deleted():
    hosts = [host("a"), host("b", state="draining")]
    decision = decide(situation(hosts), POLICY)
    assert (decision.action, decision.host_id, decision.server_id) == (DELETE, "b", "srv-b")
    assert "drained and idle" in decision.reason


def test_a_draining_host_that_still_runs_keeps_its_server():
    hosts = [host("a"), host("b", state="draining", running=1)]
    assert decide(situation(hosts), POLICY).action == NOTHING


def test_an_active_host_whose_server_was_deleted_is_replaced():
    hosts = [host("a"), host("b")]
    decision = decide(situation(hosts, servers=[server("a")]), POLICY)
    assert (decision.action, decision.host_id, decision.server_id) == (REPLACE, "b", "srv-b")
    assert "gone from the cloud" in decision.reason


def test_a_host_started_by_hand_is_never_replaced_drained_or_counted():
    manual = HostRecord(id="m", queue="q.m", memory_total_mb=4000, free_memory_mb=4000)
    foreign = HostRecord(id="other-1", queue="q.o", server_id="srv-x", memory_total_mb=4000)
    ours = host("lambda-os-a", free=3900)
    seen = situation([manual, foreign, ours], [server("lambda-os-a")], own_prefix="lambda-os-")
    assert decide(seen, Policy(min_hosts=1)).action == NOTHING
    assert decide(seen, Policy(min_hosts=2)).action == BOOT


def test_hosts_started_by_hand_add_to_the_load():
    manual = HostRecord(id="m", queue="q.m", memory_total_mb=4000, free_memory_mb=0)
    decision = decide(situation([manual, host("a", free=2000)], [server("a")]), POLICY)
    assert decision.action == BOOT
    assert "75%" in decision.reason


def test_a_server_that_never_registered_within_the_grace_period_is_deleted():
    decision = decide(situation([host("a")], [server("a"), server("b", age_s=301)]), POLICY)
    assert (decision.action, decision.server_id) == (DELETE, "srv-b")
    assert "never registered" in decision.reason


def test_a_server_in_error_is_deleted():
    decision = decide(situation([host("a")], [server("a"), server("b", status="ERROR")]), POLICY)
    assert (decision.action, decision.server_id) == (DELETE, "srv-b")
    assert "ERROR" in decision.reason


def test_the_policy_comes_from_the_settings_scale_options():
    from lambda_os.settings import Settings

    policy = Policy.from_settings(Settings(scale_high_mark=0.8, scale_max_hosts=9))
    assert (policy.high_mark, policy.max_hosts, policy.low_mark) == (0.8, 9, 0.3)


def test_the_server_of_a_host_lost_longer_than_the_grace_period_is_deleted():
    gone = dataclasses.replace(host("b", state="lost"), lost_at=NOW - timedelta(seconds=301))
    decision = decide(situation([host("a"), gone]), POLICY)
    assert (decision.action, decision.server_id) == (DELETE, "srv-b")
    assert "was lost" in decision.reason


def test_the_server_of_a_host_lost_moments_ago_is_kept_in_case_it_registers_again():
    gone = dataclasses.replace(host("b", state="lost"), lost_at=NOW - timedelta(seconds=10))
    assert decide(situation([host("a"), gone]), POLICY).action == NOTHING


def test_the_server_of_a_lost_host_counts_towards_the_maximum_so_load_boots_none_past_it():
    # Seen on the test cloud: a busy host missed its heartbeats, the load booted a
    # fourth server of three, and the lost host came back.
    gone = dataclasses.replace(host("c", state="lost"), lost_at=NOW - timedelta(seconds=10))
    decision = decide(situation([host("a", free=100), host("b", free=100), gone]), POLICY)
    assert decision.action == NOTHING
    assert "maximum of 3" in decision.reason and "lost" in decision.reason


def test_a_lost_host_below_the_minimum_is_still_replaced():
    policy = dataclasses.replace(POLICY, min_hosts=2)
    gone = dataclasses.replace(host("b", state="lost"), lost_at=NOW - timedelta(seconds=10))
    assert decide(situation([host("a"), gone]), policy).action == BOOT


def test_marks_the_wrong_way_round_or_a_minimum_above_the_maximum_are_refused():
    with pytest.raises(ValueError, match="low < high"):
        Policy(high_mark=0.3, low_mark=0.7)
    with pytest.raises(ValueError, match="min <= max"):
        Policy(min_hosts=5, max_hosts=2)
