"""Admit: whether a project's at-once quotas leave room for one more run of a queued event.

A synchronous invocation over a project's ``executions`` or ``memory_mb`` quota is
refused with 429 (``catalog_api.quotas``); an event from the queue has no caller
to refuse, so it waits: the listener (``listener.execute``) and the router
(``listener.route``) hand it back as a ``Step`` that defers it to the short delay
queues, as a router does for a function at its ``concurrency``. It spends no
attempt and its record stays ``queued``.

Reading the use costs queries, so it is read only when the quota could bind:
``binding`` answers None when the quota is at least what can run at once at all
(``Ceiling``: the active hosts' slots and memory for a router; for
``lambda-os standalone``, alone on its catalogue, the listener's and the API's
threads, each running one function of at most the project's largest memory).
The quotas are read at most every ``quota_cache_s`` per project (they change when an
admin says so, and a change a second late is no loss for a budget), the largest
memory at most every ``LARGEST_REREAD_S`` by one thread, raised meanwhile by every
function seen. Where no ceiling is known (several listeners on one
catalogue) every event of a project is counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from lambda_os.catalogue import Placement
from lambda_os.errors import QuotaBusy
from lambda_os.quotas import Quota, check_run, quota_of, usage_of
from lambda_os.records import FunctionRecord
from lambda_os.settings import Settings

QUOTA_CACHE_S = 2.0
# How old an exact count of a project's runs may be and still be trusted while it
# leaves the project under half of its quotas (``Admission.over_after_start``).
RECOUNT_S = 1.0
# How often the largest memory of a project's functions is read again (every function).
LARGEST_REREAD_S = 60.0


class AdmissionStore(Protocol):
    """What admission reads of the catalogue: quotas, and what a project runs."""

    def get_quota(self, project_id: str) -> dict[str, int]: ...

    def usage_of(self, project_id: str) -> dict[str, int]: ...

    def function_memory_of(self, owner: str) -> dict[str, int]: ...


@dataclass(frozen=True)
class Ceiling:
    """The most that can run at once, whatever the quotas: runs and their memory.

    ``memory_mb`` None: ``runs`` times the largest memory among the project's functions.
    """

    runs: int
    memory_mb: int | None = None


@dataclass(frozen=True)
class _Count:
    """A project's runs at once as last counted, plus this process's starts since."""

    at: float
    executions: int
    memory_mb: int


@dataclass(frozen=True)
class _Limits:
    """What is cached of a project: its quota, and when it was read."""

    read_at: float
    quota: Quota


class Admission:
    """A project's at-once quotas as seen by the event path (see the module doc); thread-safe.

    ``turn`` is held around the write that makes a run count and the count that
    checks it, so this process's threads never pass a quota between them; across
    processes, each one counts after its own write and backs off if over.
    """

    def __init__(
        self,
        store: AdmissionStore,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        quota_cache_s: float = QUOTA_CACHE_S,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._quota_cache_s = quota_cache_s
        self._limits: dict[str, _Limits] = {}
        self._counts: dict[str, _Count] = {}  # written under ``turn``
        self._largest: dict[str, tuple[float, int]] = {}  # owner -> (read at, largest MB)
        self._reading: set[str] = set()  # owners whose largest is being read now
        self._limits_lock = threading.Lock()
        self.turn = threading.Lock()

    def binding(self, function: FunctionRecord, ceiling: Ceiling | None) -> Quota | None:
        """The function's project's quota if it could bind under ``ceiling``; None if it cannot."""
        limits = self._limits_of(function.owner)
        quota = limits.quota
        if ceiling is None or quota.executions < ceiling.runs:
            return quota
        if ceiling.memory_mb is not None:
            memory = ceiling.memory_mb
        else:
            largest = self._largest_mb(function)
            if largest is None:
                return quota  # not known yet: this one is counted
            memory = ceiling.runs * largest
        return quota if quota.memory_mb < memory else None

    def over_after_start(self, function: FunctionRecord, quota: Quota) -> str | None:
        """Why a run just started (now ``running``, so counted) passes the quota; None if not.

        Called under ``turn``. Counting costs two queries, on a busy project every
        event; so a count at most ``RECOUNT_S`` old that, with this process's starts
        since added (runs that ended are not taken off), leaves the project under
        half of both quotas is trusted: to pass the quota meanwhile, the other
        processes would have to start the other half within that second. Nearer
        the quota every start is counted exactly.
        """
        owner = function.owner
        now = self._clock()
        last = self._counts.get(owner)
        if last is not None and now - last.at < RECOUNT_S:
            executions = last.executions + 1
            memory = last.memory_mb + function.memory_mb
            if executions * 2 <= quota.executions and memory * 2 <= quota.memory_mb:
                self._counts[owner] = _Count(last.at, executions, memory)
                return None
        usage = usage_of(self._store, owner)
        self._counts[owner] = _Count(now, usage.executions, usage.memory_mb)
        before = Quota(
            usage.functions,
            usage.package_bytes,
            max(0, usage.executions - 1),
            max(0, usage.memory_mb - function.memory_mb),
        )
        return refusal(quota, before, function)

    def over_if_placed(
        self, function: FunctionRecord, quota: Quota, placements: Iterable[Placement]
    ) -> str | None:
        """Why placing one more run passes the quota, given the slots other runs hold."""
        memory = self._store.function_memory_of(function.owner)
        memory[function.id] = function.memory_mb
        held = [p for p in placements if p.function_id in memory]
        usage = Quota(0, 0, len(held), sum(memory[p.function_id] for p in held))
        return refusal(quota, usage, function)

    def _limits_of(self, project_id: str) -> _Limits:
        now = self._clock()
        with self._limits_lock:
            cached = self._limits.get(project_id)
        if cached is not None and now - cached.read_at < self._quota_cache_s:
            return cached
        limits = _Limits(now, quota_of(self._store, self._settings, project_id))
        with self._limits_lock:
            self._limits[project_id] = limits
        return limits

    def _largest_mb(self, function: FunctionRecord) -> int | None:
        """The largest memory among the project's functions, ``function`` included.

        Reading it means reading every function of the project, so one thread reads it
        at a time, at most every ``LARGEST_REREAD_S``; meanwhile every function seen
        raises it, and a change that lowers it waits for the next reading (counting
        more, never less). None while its first reading is under way elsewhere.
        """
        owner = function.owner
        now = self._clock()
        with self._limits_lock:
            cached = self._largest.get(owner)
            due = cached is None or now - cached[0] >= LARGEST_REREAD_S
            reads = due and owner not in self._reading
            if reads:
                self._reading.add(owner)
        if reads:
            try:
                read = max(self._store.function_memory_of(owner).values(), default=0)
            finally:
                with self._limits_lock:
                    self._reading.discard(owner)
            cached = (now, read)
        if cached is None:
            return None
        with self._limits_lock:
            stored = self._largest.get(owner)
            # Never below what another thread stored meanwhile: only a reading lowers it.
            kept = stored[1] if stored is not None and not reads else 0
            largest = max(cached[1], kept, function.memory_mb)
            self._largest[owner] = (cached[0] if reads or stored is None else stored[0], largest)
        return largest


def refusal(quota: Quota, usage: Quota, function: FunctionRecord) -> str | None:
    """Why one more run of ``function`` on top of ``usage`` passes ``quota``; None if it fits."""
    try:
        check_run(quota, usage, function.owner, function.memory_mb)
    except QuotaBusy as exc:
        return exc.description
    return None
