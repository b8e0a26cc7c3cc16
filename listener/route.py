"""Route: a cluster-mode listener records each execution and hands it to one host's queue.

``Router.handle`` takes the place of ``execute.run_event`` in a ``Listener`` that
runs nothing itself (``LAMBDA_OS_PLACEMENT=cluster``). It matches as ever; for
each function it creates the execution record (``queued``) and returns a
``Step`` that the consumer acts on before it acks the event:

- ``route``: the record was placed on a host (``Catalogue.place_execution``);
  the consumer publishes the event addressed to that function to the host's
  queue and acks the event only once the broker confirmed every such publish;
- ``defer`` with ``wait_for_room``: no host has room, the function is at its
  ``concurrency`` across the cluster, or its project at its ``executions`` or
  ``memory_mb`` quota; the addressed event waits in a delay queue and comes back
  here (never held in this process's memory), its record ``queued``;
- ``defer``: another host's run holds the execution's lease: look again later;
- a finished record (a redelivery) is answered as the listener always does.

An event's first delivery, when a host has room, takes one write fewer: the record
is inserted already placed (``_place_new``), as a listener inserts it already leased.

The host's worker (``lambda-os worker``) consumes its queue with the usual
``run_event`` path: the execution already exists, so it runs that one function.

Where: ``listener.placement`` chooses, on counts read from the catalogue's slots
(``Catalogue.placements``: one document per execution in flight, however many are
stored) under one lock per router, so this router's threads never over-fill a host
or overrun a function's concurrency between them. The router holds the slot
(``hold_slot``) before it places the record; the worker releases it when the run
ends, and the keeper prunes what a crash or the sweeper left (``prune_slots``). A
function's ``concurrency`` holds across routers too: after placing, the router
counts the function's other slots taken no later than this one by the catalogue
server's clock (``slots_held_before``); at or over the limit it takes the
placement back and waits. Of two routers racing for a function's last slot, the
one whose write the server applied last always sees the other's, so at most the
limit stay placed (both may back off on a tie, which only costs a delay). A
router that is the only live one skips that second count: every placement then
goes through its lock, so the count it read before placing was exact. A router
that joins waits one heartbeat interval before it places (``RegistryKeeper.join``),
by which time this one has counted it in, as the host shares already rely on.

A project's at-once quotas (``listener.admit``) are counted the same way, from
the same slots: the project's placed runs and their functions' memory. Only
when the quota is below what the active hosts hold at once, since otherwise
it cannot bind; racing routers count again after placing, the slots held no
later than theirs, as for ``concurrency``.

``RegistryKeeper`` is the router's clock: it heartbeats the router, learns the
live routers (for the shares) and the active hosts, marks silent hosts lost, and
recovers a lost host's work (``recover``).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from lambda_os.catalogue import Placement
from lambda_os.errors import LambdaError
from lambda_os.quotas import Quota
from lambda_os.records import ExecutionRecord, FunctionRecord, HostRecord, utcnow, with_changes
from listener.admit import Admission, Ceiling
from listener.events import Event
from listener.execute import Step, exhausted_reason, new_record
from listener.match import match
from listener.placement import HostLoad, RouterShare, choose_host

LOGGER = logging.getLogger(__name__)


class PlacementStore(Protocol):
    """The catalogue's part in routing: executions, their placement, and the registry."""

    def create_execution(self, record: ExecutionRecord) -> tuple[ExecutionRecord, bool]: ...

    def get_execution(self, execution_id: str) -> ExecutionRecord: ...

    def place_execution(
        self, record: ExecutionRecord, host_id: str, router_id: str
    ) -> ExecutionRecord | None: ...

    def unplace_execution(self, record: ExecutionRecord) -> bool: ...

    def placements(self) -> list[Placement]: ...

    def hold_slot(
        self, execution_id: str, function_id: str, host_id: str, router_id: str
    ) -> Placement: ...

    def release_slot(self, slot: Placement) -> None: ...

    def slots_held_before(self, slot: Placement) -> int: ...


class RegistryStore(Protocol):
    """The catalogue's part in keeping the registry."""

    def heartbeat_router(self, router_id: str) -> None: ...

    def live_routers(self, heartbeat_since: datetime) -> list[str]: ...

    def remove_router(self, router_id: str) -> None: ...

    def list_hosts(self, state: str | None = None) -> list[HostRecord]: ...

    def mark_lost_hosts(self, heartbeat_before: datetime) -> list[HostRecord]: ...

    def lapse_leases_of(self, lease_owner: str, now: datetime) -> int: ...

    def prune_slots(self, held_before: datetime) -> int: ...


class QueueMover(Protocol):
    """Moves every message from a queue back to the events queue, each confirmed first."""

    def move_to_events(self, queue: str) -> int: ...


class Router:
    """Places each matched function's execution on a host (see the module doc); thread-safe."""

    def __init__(
        self,
        catalogue: Any,
        router_id: str,
        clock: Callable[[], datetime] = utcnow,
        admission: Admission | None = None,
    ) -> None:
        """``admission`` holds projects to their at-once quotas; without it, none is counted."""
        self._catalogue = catalogue
        self.router_id = router_id
        self._clock = clock
        self._admission = admission
        self._lock = threading.Lock()
        self._hosts: tuple[HostRecord, ...] = ()
        self._share = RouterShare()

    def refresh(self, hosts: Sequence[HostRecord], share: RouterShare) -> None:
        """The active hosts and this router's share, as the registry keeper last read them."""
        self._hosts = tuple(host for host in hosts if host.state == "active")
        self._share = share

    @property
    def hosts(self) -> tuple[HostRecord, ...]:
        return self._hosts

    def share_view(self) -> RouterShare:
        """This router's share as its keeper last computed it."""
        return self._share

    def handle(self, event: Event) -> list[Step]:
        """Every function the event runs, each recorded and placed (or waiting)."""
        return [self._route(function, event) for function in match(self._catalogue, event)]

    def _route(self, function: FunctionRecord, event: Event) -> Step:
        if event.attempt is None:  # an event's first delivery, nearly always
            placed = self._place_new(function, new_record(function, event), event)
            if placed is not None:
                return placed
        record, _created = self._catalogue.create_execution(new_record(function, event))
        if event.attempt is not None and (record.finished or record.attempt != event.attempt):
            LOGGER.info(
                "event %s: retry message for attempt %d of execution %s is stale",
                event.id,
                event.attempt,
                record.id,
            )
            return Step(record, reply=False)
        if record.finished:
            return Step(record, dead_letter=exhausted_reason(record))
        now = self._clock()
        if record.status == "running" and record.lease_until and record.lease_until > now:
            return Step(record, defer=True)
        return self._place(function, record, event)

    def _place_new(
        self, function: FunctionRecord, record: ExecutionRecord, event: Event
    ) -> Step | None:
        """Insert a new execution already placed on a host with room: one write fewer.

        None when there is no room or the record exists already (a redelivery): the
        caller then records and places it the long way, which answers both.
        """
        quota = self._binding(function)
        with self._lock:
            placements = self._catalogue.placements()
            if any(p.execution_id == record.id for p in placements):
                return None  # placed already: a redelivery, the long way
            of_function = sum(1 for p in placements if p.function_id == function.id)
            if of_function >= function.concurrency:
                return None
            if self._over_quota(function, quota, placements, record.id) is not None:
                return None
            host = choose_host(
                record.function_id,
                record.function_version,
                function.memory_mb,
                self._loads(placements),
                self._share,
            )
            if host is None:
                return None
            slot = self._catalogue.hold_slot(record.id, function.id, host.id, self.router_id)
            placed = with_changes(
                record, placed_on=host.id, placed_by=self.router_id, placed_at=slot.placed_at
            )
            stored, created = self._catalogue.create_execution(placed)
            if not created:
                # Only the slot taken here: the record's own placement has its own.
                self._catalogue.release_slot(slot)
                return None
            if self._lost_race(function, quota, slot):
                self._catalogue.unplace_execution(stored)
                self._catalogue.release_slot(slot)
                return Step(
                    self._catalogue.get_execution(record.id), defer=True, wait_for_room=True
                )
        LOGGER.debug("event %s: execution %s recorded on %s", event.id, record.id, host.id)
        return Step(stored, route=host.queue)

    def _place(self, function: FunctionRecord, record: ExecutionRecord, event: Event) -> Step:
        """Place a queued record (or a lapsed running one) on a host with room, or wait."""
        waiting = Step(record, defer=True, wait_for_room=True)
        quota = self._binding(function)
        with self._lock:
            placements = self._catalogue.placements()
            of_function = sum(
                1
                for p in placements
                if p.function_id == function.id and p.execution_id != record.id
            )
            if of_function >= function.concurrency:
                LOGGER.debug("event %s: function %s is at its concurrency", event.id, function.id)
                return waiting
            busy = self._over_quota(function, quota, placements, record.id)
            if busy is not None:
                LOGGER.info("event %s: %s; execution %s waits", event.id, busy, record.id)
                return waiting
            loads = self._loads(placements)
            host = choose_host(
                record.function_id, record.function_version, function.memory_mb, loads, self._share
            )
            if host is None:
                LOGGER.info(
                    "event %s: no host has room for function %s; waiting", event.id, function.id
                )
                return waiting
            # The slot first: every placed unfinished execution is counted from then on.
            slot = self._catalogue.hold_slot(record.id, function.id, host.id, self.router_id)
            placed = self._catalogue.place_execution(record, host.id, self.router_id)
            if placed is None:
                self._catalogue.release_slot(slot)
                current = self._catalogue.get_execution(record.id)
                LOGGER.info(
                    "event %s: execution %s moved on (%s) while being placed",
                    event.id,
                    record.id,
                    current.status,
                )
                return Step(current, defer=not current.finished)
            if self._lost_race(function, quota, slot):
                self._catalogue.unplace_execution(placed)
                self._catalogue.release_slot(slot)
                return waiting
        LOGGER.debug("event %s: execution %s placed on %s", event.id, record.id, host.id)
        return Step(placed, route=host.queue)

    def _binding(self, function: FunctionRecord) -> Quota | None:
        """The project's at-once quota if it could bind on the active hosts, else None."""
        if self._admission is None:
            return None
        hosts = self._hosts
        ceiling = Ceiling(
            sum(host.slots_total for host in hosts), sum(host.memory_total_mb for host in hosts)
        )
        return self._admission.binding(function, ceiling)

    def _over_quota(
        self,
        function: FunctionRecord,
        quota: Quota | None,
        placements: Sequence[Placement],
        execution_id: str,
    ) -> str | None:
        """Under the lock: why one more run would pass the project's quota; None if it fits."""
        if quota is None or self._admission is None:
            return None
        others = [p for p in placements if p.execution_id != execution_id]
        return self._admission.over_if_placed(function, quota, others)

    def _lost_race(self, function: FunctionRecord, quota: Quota | None, slot: Placement) -> bool:
        """After placing, with other routers live: whether slots held no later than ours fill
        the function's concurrency or the project's quota, so this placement is taken back.

        Alone, this router's lock already kept the counts exact (see the module doc).
        """
        if self._share.routers <= 1:
            return False
        if self._catalogue.slots_held_before(slot) >= function.concurrency:
            return True
        if quota is None:
            return False
        earlier = [
            p
            for p in self._catalogue.placements()
            if p.execution_id != slot.execution_id
            and (p.placed_at is None or slot.placed_at is None or p.placed_at <= slot.placed_at)
        ]
        return self._over_quota(function, quota, earlier, slot.execution_id) is not None

    def _loads(self, placements: Sequence[Placement]) -> list[HostLoad]:
        hosts = self._hosts
        in_use = Counter(p.host_id for p in placements)
        mine = Counter(p.host_id for p in placements if p.router_id == self.router_id)
        return [
            HostLoad(
                id=host.id,
                queue=host.queue,
                slots_total=host.slots_total,
                memory_total_mb=host.memory_total_mb,
                in_use=in_use[host.id],
                mine=mine[host.id],
            )
            for host in hosts
        ]


class RegistryKeeper:
    """A router's upkeep of the registry, every heartbeat interval (see the module doc).

    A host is lost when its last heartbeat is older than ``lost_after`` intervals.
    The router whose write marks it lost (only one does) ``recover``s it: the
    leases its runs hold end now, so the sweeper puts those executions back on
    the events queue at its next pass, and every message in its queue goes back
    to the events queue, where a router places it again. A lost host's queue is
    emptied again on every pass, for what a router with an older view of the
    hosts still sent there. A run cut off this way is ``interrupted``: it spends
    none of the function's retries.
    """

    def __init__(
        self,
        catalogue: RegistryStore,
        router: Router,
        mover: QueueMover,
        interval_s: float,
        lost_after: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._catalogue = catalogue
        self._router = router
        self._mover = mover
        self._interval_s = interval_s
        self._silence = timedelta(seconds=interval_s * max(1, lost_after))
        self._clock = clock

    def keep_once(self) -> list[HostRecord]:
        """One pass; the hosts this pass marked lost."""
        now = self._clock()
        router_id = self._router.router_id
        self._catalogue.heartbeat_router(router_id)
        share = RouterShare.among(router_id, self._catalogue.live_routers(now - self._silence))
        lost = self._catalogue.mark_lost_hosts(now - self._silence)
        hosts = self._catalogue.list_hosts()
        self._router.refresh(hosts, share)
        # Older than a pass: a slot held since may still have its placement on the way.
        self._catalogue.prune_slots(now - timedelta(seconds=self._interval_s * 2))
        for host in lost:
            taken = self._catalogue.lapse_leases_of(host.lease_owner, now)
            LOGGER.warning(
                "host %s missed its heartbeats since %s: marked lost; %d runs handed over",
                host.id,
                host.heartbeat_at,
                taken,
            )
        for host in hosts:
            if host.state == "lost":
                moved = self._mover.move_to_events(host.queue)
                if moved:
                    LOGGER.warning(
                        "host %s is lost: %d invocations moved back to be placed again",
                        host.id,
                        moved,
                    )
        return lost

    def join(self, stop: threading.Event) -> None:
        """Register this router, then wait one interval before it places anything.

        By then every live router has counted it in and shrunk its own share, so
        the shares of a host still add up to its slots while a router joins.
        """
        self.keep_once()
        if not stop.wait(self._interval_s):
            self.keep_once()

    def run(self, stop: threading.Event) -> None:
        """Keep until ``stop``; a failed pass is logged and tried again. Leaves on stop."""
        while True:
            try:
                self.keep_once()
            except LambdaError as exc:
                LOGGER.warning("registry upkeep failed: %s", exc.description)
            if stop.wait(self._interval_s):
                break
        try:
            self._catalogue.remove_router(self._router.router_id)
        except LambdaError as exc:
            LOGGER.warning("could not leave the routers: %s", exc.description)
