"""Placement on plain data: a stable home per function version, stepping when full, shares."""

from __future__ import annotations

import collections
import hashlib
import itertools
import subprocess
import sys

import pytest

from listener.placement import (
    HostLoad,
    RouterShare,
    choose_host,
    coprime_steps,
    home_host,
    probe_order,
    share_of,
    stable_hash,
)


def hosts(*loads: tuple[str, int, int], slots: int = 4) -> list[HostLoad]:
    """Hosts from (id, in_use, mine), each with ``slots`` slots and 8 GB."""
    return [
        HostLoad(id=i, queue=f"q.{i}", slots_total=slots, memory_total_mb=8192, in_use=u, mine=m)
        for i, u, m in loads
    ]


def test_the_hash_is_the_same_in_every_process_and_every_run():
    here = stable_hash("fn-1:3")
    code = "from listener.placement import stable_hash; print(stable_hash('fn-1:3'))"
    elsewhere = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert int(elsewhere) == here
    assert here == int.from_bytes(hashlib.sha256(b"fn-1:3").digest()[:8], "big")


def test_a_function_version_keeps_its_home_whatever_order_the_hosts_come_in():
    listed = hosts(("a", 0, 0), ("b", 0, 0), ("c", 0, 0))
    homes = {home_host("fn", 1, order).id for order in itertools.permutations(listed)}
    assert len(homes) == 1


def test_homes_spread_over_the_hosts():
    listed = hosts(("a", 0, 0), ("b", 0, 0), ("c", 0, 0))
    homes = collections.Counter(home_host(f"fn-{n}", 1, listed).id for n in range(300))
    assert set(homes) == {"a", "b", "c"}
    assert min(homes.values()) > 60


def test_a_new_version_may_have_another_home():
    listed = hosts(*((f"h{n}", 0, 0) for n in range(5)))
    assert len({home_host("fn", version, listed).id for version in range(1, 20)}) > 1


@pytest.mark.parametrize("count", range(1, 13))
def test_the_probe_order_visits_every_host_once(count):
    for name in ("a", "b", "c", "d"):
        assert sorted(probe_order(name, 1, count)) == list(range(count))


def test_step_sizes_are_coprime_with_the_host_count():
    assert coprime_steps(6) == [1, 5]
    assert coprime_steps(7) == [1, 2, 3, 4, 5, 6]


def test_the_home_is_chosen_while_it_has_room():
    listed = hosts(("a", 0, 0), ("b", 0, 0), ("c", 0, 0))
    home = home_host("fn", 1, listed)
    assert choose_host("fn", 1, 128, listed, RouterShare()) == home


def test_a_full_home_steps_to_the_next_host_in_the_probe_order():
    listed = hosts(("a", 0, 0), ("b", 0, 0), ("c", 0, 0))
    order = [sorted(listed, key=lambda h: h.id)[i].id for i in probe_order("fn", 1, 3)]
    full_home = [
        HostLoad(h.id, h.queue, 4, 8192, in_use=4 if h.id == order[0] else 0) for h in listed
    ]
    assert choose_host("fn", 1, 128, full_home, RouterShare()).id == order[1]
    both_full = [
        HostLoad(h.id, h.queue, 4, 8192, in_use=0 if h.id == order[2] else 4) for h in listed
    ]
    assert choose_host("fn", 1, 128, both_full, RouterShare()).id == order[2]


def test_no_host_with_room_means_none():
    assert choose_host("fn", 1, 128, hosts(("a", 4, 0), ("b", 4, 4)), RouterShare()) is None
    assert choose_host("fn", 1, 128, [], RouterShare()) is None


def test_a_host_too_small_for_the_function_is_passed_over():
    small = HostLoad("a", "q.a", 4, memory_total_mb=256)
    big = HostLoad("b", "q.b", 4, memory_total_mb=4096)
    assert choose_host("fn", 1, 1024, [small, big], RouterShare()) == big


@pytest.mark.parametrize("routers", [1, 2, 3, 5])
@pytest.mark.parametrize("slots", [1, 2, 3, 4, 7, 8, 16])
def test_the_routers_shares_of_a_host_add_up_to_its_slots(routers, slots):
    for host_id in ("a", "b", "compute-17"):
        shares = [share_of(host_id, slots, RouterShare(rank, routers)) for rank in range(routers)]
        assert sum(shares) == slots
        assert max(shares) - min(shares) <= 1


def test_remainders_go_to_different_routers_on_different_hosts():
    extra = collections.Counter()
    for n in range(60):
        for rank in range(2):
            if share_of(f"h{n}", 3, RouterShare(rank, 2)) == 2:
                extra[rank] += 1
    assert extra[0] > 10 and extra[1] > 10


def test_two_routers_placing_at_once_never_over_fill_a_host():
    """Each router sees only its own placements and a stale total; together they stay within."""
    slots = 5
    placed = {0: 0, 1: 0}
    shares = [RouterShare(0, 2), RouterShare(1, 2)]
    for _ in range(20):  # both routers keep asking, each from a view with the total stale at 0
        for rank in (0, 1):
            view = [HostLoad("a", "q.a", slots, 8192, in_use=0, mine=placed[rank])]
            if choose_host("fn", 1, 128, view, shares[rank]) is not None:
                placed[rank] += 1
    assert placed[0] + placed[1] == slots


def test_a_router_counts_itself_among_the_live_ones():
    assert RouterShare.among("r2", ["r1", "r3"]) == RouterShare(1, 3)
    assert RouterShare.among("r1", []) == RouterShare(0, 1)
