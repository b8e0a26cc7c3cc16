"""The scaling decision: given the hosts, the cloud's servers and the policy, what to do next.

This is the controller's judgement, kept apart from its hands (``provisioner.controller``)
so each rule can be read and tested on plain data. ``decide`` makes one decision per
call, the most urgent first, and says why; the controller applies it and asks again.

The rules, in order:

1. A host the registry calls ``active`` whose server is gone from the cloud (deleted
   behind the platform's back) is replaced: routers must stop placing on it, and its
   capacity is booted again.
2. A server in ``ERROR``, one that booted but whose host never registered within the
   grace period, or one whose host was lost that long ago, is deleted: it costs money
   and serves nothing.
3. A ``draining`` host with nothing running and nothing placed on it has its server
   deleted: draining is how a host is taken out without losing work.
4. Fewer hosts (registered or still booting) than the minimum: boot one.
5. Memory in use above the high mark, or an execution queued longer than allowed,
   and fewer servers than the maximum (those of lost hosts included, since they
   may register again): boot one, unless a boot or drain happened within the
   cooldown or a booted server has yet to register (its capacity is on the way).
6. Memory in use below the low mark with more than the minimum: drain the least
   loaded host that runs nothing, if the others stay below the high mark without it.

Servers booted but not yet registered count as hosts for the minimum and maximum, so
a restarted controller that reads ``Cloud.servers()`` boots no duplicates. Hosts that
are not the controller's (a worker started by hand) add to the load, but are never
counted, drained, replaced or deleted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from lambda_os.records import HostRecord
from lambda_os.settings import Settings
from provisioner.cloud import Server

BOOT = "boot"
REPLACE = "replace"
DELETE = "delete"
DRAIN = "drain"
NOTHING = "nothing"
# The actions that change capacity on purpose, which the cooldown spaces out.
SCALING_ACTIONS = (BOOT, DRAIN)


@dataclass(frozen=True)
class Policy:
    """The thresholds of the scaling rules (from ``Settings``: ``scale_*``)."""

    high_mark: float = 0.70
    low_mark: float = 0.30
    min_hosts: int = 1
    max_hosts: int = 4
    cooldown_s: float = 120.0
    register_grace_s: float = 300.0
    waiting_after_s: float = 60.0

    def __post_init__(self) -> None:
        # Marks the wrong way round would boot and drain by turns for ever.
        if not 0 <= self.low_mark < self.high_mark <= 1:
            raise ValueError(
                f"the scaling marks need 0 <= low < high <= 1, not {self.low_mark}, "
                f"{self.high_mark}"
            )
        if not 0 <= self.min_hosts <= self.max_hosts:
            raise ValueError(
                f"the host counts need 0 <= min <= max, not {self.min_hosts}, {self.max_hosts}"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            high_mark=settings.scale_high_mark,
            low_mark=settings.scale_low_mark,
            min_hosts=settings.scale_min_hosts,
            max_hosts=settings.scale_max_hosts,
            cooldown_s=settings.scale_cooldown_s,
            register_grace_s=settings.scale_register_grace_s,
            waiting_after_s=settings.scale_waiting_after_s,
        )


@dataclass(frozen=True)
class Decision:
    """What to do, to which host and server, and why (the reason is recorded and shown)."""

    action: str
    reason: str
    host_id: str | None = None
    server_id: str | None = None


@dataclass(frozen=True)
class Situation:
    """What the controller saw on one pass.

    ``placed`` counts each host's unfinished executions placed on it by the routers
    (a host's own ``running`` can lag a heartbeat behind). ``oldest_queued_at`` is the
    creation time of the oldest execution still queued, None when none waits.
    ``last_scaled_at`` is the time of the last boot or drain, for the cooldown.
    ``own_prefix`` begins every host id the controller gives: only such a host is
    replaced when its server is gone, so a worker started by hand on a server of
    another platform (or none) is never taken for one of ours. Hosts of others count
    towards the load, but only the controller's own are counted, drained and deleted.
    """

    hosts: Sequence[HostRecord]
    servers: Sequence[Server]
    now: datetime
    placed: Mapping[str, int]
    oldest_queued_at: datetime | None = None
    last_scaled_at: datetime | None = None
    own_prefix: str = ""


def memory_load(hosts: Sequence[HostRecord]) -> float | None:
    """The share of the hosts' memory running executions hold, per their last heartbeats;
    None without hosts. Idle warm and pooled containers do not count: a host gives
    their memory back the moment a run needs it, so a cluster that ran a burst and
    now only keeps it warm is idle, and may shrink."""
    total = sum(h.memory_total_mb for h in hosts)
    if total <= 0:
        return None
    free = sum(min(h.free_memory_mb + h.idle_memory_mb, h.memory_total_mb) for h in hosts)
    return (total - free) / total


def decide(situation: Situation, policy: Policy) -> Decision:
    """The most urgent thing to do now, by the rules in this module's docstring."""
    now = situation.now
    servers = {s.host_id: s for s in situation.servers if s.host_id and s.status != "DELETED"}
    hosts = {h.id: h for h in situation.hosts}

    for host in situation.hosts:
        if (
            host.state == "active"
            and host.server_id
            and host.id.startswith(situation.own_prefix)
            and host.id not in servers
        ):
            return Decision(
                REPLACE,
                f"server {host.server_id} of active host {host.id} is gone from the cloud",
                host.id,
                host.server_id,
            )

    grace = timedelta(seconds=policy.register_grace_s)
    for host_id, server in servers.items():
        if server.status == "ERROR":
            fault = f": {server.fault}" if server.fault else ""
            return Decision(DELETE, f"server is in ERROR{fault}", host_id, server.id)
        lost = hosts.get(host_id)
        if (
            lost is not None
            and lost.state == "lost"
            and lost.lost_at
            and now - lost.lost_at > grace
        ):
            return Decision(
                DELETE,
                f"host {host_id} was lost at {lost.lost_at:%H:%M:%S} and has not registered again",
                host_id,
                server.id,
            )
        if host_id not in hosts and now - server.created > grace:
            return Decision(
                DELETE,
                f"booted {server.created:%H:%M:%S} but never registered within "
                f"{policy.register_grace_s:.0f} s",
                host_id,
                server.id,
            )

    for host in situation.hosts:
        if host.state == "draining" and host.id in servers and _idle(host, situation.placed):
            return Decision(
                DELETE, f"host {host.id} is drained and idle", host.id, servers[host.id].id
            )

    # Every active host of ours has its server by now (rule 1 returned otherwise).
    active = [h for h in situation.hosts if h.state == "active"]
    own = [h for h in active if h.id in servers]
    booting = [hid for hid in servers if hid not in hosts]
    counted = len(own) + len(booting)
    # A lost host's server is kept for the grace period in case it registers again
    # (a missed heartbeat or two on a busy host): it serves nothing, so the minimum
    # may replace it, but load may not boot past the maximum around it.
    lost = [hid for hid in servers if hid in hosts and hosts[hid].state == "lost"]
    if counted < policy.min_hosts:
        return Decision(
            BOOT,
            f"{counted} hosts (with {len(booting)} booting) below the minimum of "
            f"{policy.min_hosts}",
        )

    cooling = situation.last_scaled_at is not None and now - situation.last_scaled_at < timedelta(
        seconds=policy.cooldown_s
    )
    load = memory_load(active)
    waited = now - situation.oldest_queued_at if situation.oldest_queued_at is not None else None
    want_more = None
    if load is not None and load > policy.high_mark:
        want_more = f"memory {load:.0%} in use, above the high mark {policy.high_mark:.0%}"
    elif waited is not None and waited > timedelta(seconds=policy.waiting_after_s):
        want_more = (
            f"an execution has waited {waited.total_seconds():.0f} s, longer than "
            f"{policy.waiting_after_s:.0f} s"
        )
    if want_more:
        if counted + len(lost) >= policy.max_hosts:
            held = f" ({len(lost)} of them lost, kept in case they return)" if lost else ""
            return Decision(
                NOTHING, f"{want_more}, but at the maximum of {policy.max_hosts} hosts{held}"
            )
        if booting:
            return Decision(NOTHING, f"{want_more}; {len(booting)} booted host(s) yet to register")
        if cooling:
            return Decision(NOTHING, f"{want_more}; cooling down after the last change")
        return Decision(BOOT, want_more)

    if load is not None and load < policy.low_mark and len(own) > policy.min_hosts:
        if cooling:
            return Decision(
                NOTHING, "memory below the low mark; cooling down after the last change"
            )
        idle = [h for h in own if _idle(h, situation.placed)]
        if not idle:
            return Decision(NOTHING, "memory below the low mark, but every host runs something")
        # The host with the fewest warm function versions goes first: draining one
        # that keeps functions warm would turn their next events into cold starts.
        victim = min(
            idle,
            key=lambda h: (
                len(h.warm),
                -(h.free_memory_mb + h.idle_memory_mb) / max(h.memory_total_mb, 1),
                h.id,
            ),
        )
        rest = [h for h in active if h.id != victim.id]
        after = memory_load(rest)
        if after is not None and after > policy.high_mark:
            return Decision(
                NOTHING,
                f"memory below the low mark, but without {victim.id} it would be {after:.0%}",
            )
        return Decision(
            DRAIN,
            f"memory {load:.0%} in use, below the low mark {policy.low_mark:.0%}; "
            f"{victim.id} runs nothing and keeps the fewest functions warm",
            victim.id,
            servers[victim.id].id,
        )
    shown = "no hosts" if load is None else f"memory {load:.0%} in use"
    return Decision(NOTHING, f"{shown}, {counted} hosts: within the marks")


def _idle(host: HostRecord, placed: Mapping[str, int]) -> bool:
    return host.running == 0 and placed.get(host.id, 0) == 0
