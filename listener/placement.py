"""Placement: which host's queue an invocation goes to, decided on plain data.

As OpenWhisk's sharding balancer does it: every function version has a *home*
host, chosen by a stable hash of ``function_id:version`` over the active hosts
sorted by id, so its invocations keep landing where its containers are warm.
When the home host is full the search steps through the others by a step size
coprime to the number of hosts (also drawn from the hash), so it visits every
host once and two busy functions that share a home spill onto different hosts.
No host with room: None, and the event waits in RabbitMQ.

A host has room for one more invocation when:

- its memory budget can hold the function at all;
- fewer unfinished executions are placed on it than it has slots (``in_use``,
  counted from the catalogue: what every router placed there and is not final);
- this router's own placements there (``mine``) are under its share.

The share is how several routers on one catalogue avoid over-filling a host
without talking to each other: each live router owns ``slots / routers`` of
every host's slots (``share_of``), the remainder going to different routers on
different hosts, so the shares of one host add up to exactly its slots. Each
router checks only its own count against its own share, so two routers racing
for a host's last slot cannot both take it. The catalogue counts are exact and
current (an execution leaves them the moment it is final), unlike a heartbeat's
free slots, which would cap what a host is given at its slots per heartbeat
interval; the heartbeat's figures are for operators (``GET /v1/hosts``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class HostLoad:
    """One active host as placement sees it: its size and what is placed on it now."""

    id: str
    queue: str
    slots_total: int
    memory_total_mb: int
    in_use: int = 0
    mine: int = 0


@dataclass(frozen=True)
class RouterShare:
    """This router's place among the live routers: ``rank`` in 0..``routers`` - 1."""

    rank: int = 0
    routers: int = 1

    @classmethod
    def among(cls, router_id: str, live: Sequence[str]) -> RouterShare:
        """The share of ``router_id`` among the live router ids (itself counted if missing)."""
        ids = sorted(set(live) | {router_id})
        return cls(ids.index(router_id), len(ids))


def stable_hash(text: str) -> int:
    """A hash that every process and every run agrees on (Python's ``hash`` is salted)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def coprime_steps(count: int) -> list[int]:
    """Step sizes that visit each of ``count`` hosts exactly once from any start."""
    return [step for step in range(1, count + 1) if math.gcd(step, count) == 1]


def probe_order(function_id: str, version: int, count: int) -> list[int]:
    """Indexes of ``count`` hosts (sorted by id) in the order a function version tries them."""
    if count <= 0:
        return []
    key = stable_hash(f"{function_id}:{version}")
    home = key % count
    steps = coprime_steps(count)
    step = steps[(key // count) % len(steps)]
    return [(home + i * step) % count for i in range(count)]


def share_of(host_id: str, slots_total: int, share: RouterShare) -> int:
    """How many of a host's slots this router owns; a host's shares sum to its slots."""
    base, extra = divmod(slots_total, share.routers)
    offset = stable_hash(host_id) % share.routers
    return base + (1 if (share.rank - offset) % share.routers < extra else 0)


def has_room(host: HostLoad, memory_mb: int, share: RouterShare) -> bool:
    """Whether this router may place one more invocation of ``memory_mb`` on ``host``."""
    return (
        memory_mb <= host.memory_total_mb
        and host.in_use < host.slots_total
        and host.mine < share_of(host.id, host.slots_total, share)
    )


def choose_host(
    function_id: str,
    version: int,
    memory_mb: int,
    hosts: Sequence[HostLoad],
    share: RouterShare,
) -> HostLoad | None:
    """The first host with room in the function version's probe order; None if none has."""
    ordered = sorted(hosts, key=lambda host: host.id)
    for index in probe_order(function_id, version, len(ordered)):
        if has_room(ordered[index], memory_mb, share):
            return ordered[index]
    return None


def home_host(function_id: str, version: int, hosts: Sequence[HostLoad]) -> HostLoad | None:
    """Where a function version goes while its home has room."""
    ordered = sorted(hosts, key=lambda host: host.id)
    order = probe_order(function_id, version, len(ordered))
    return ordered[order[0]] if order else None
