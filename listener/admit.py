"""Admit: whether a project's at-once quotas leave room for one more run of a queued event.

A synchronous invocation over a project's ``executions`` or ``memory_mb`` quota is
refused with 429 (``catalog_api.quotas``); an event from the queue has no caller
to refuse, so it waits: the listener (``listener.execute``) and the router
(``listener.route``) hand it back as a ``Step`` that defers it to the short delay
queues, as for a function at its ``concurrency``. It spends no attempt and its
record stays ``queued``.

Reading the use costs queries, so it is read only when the quota could bind:
``binding`` answers None when the quota is at least what the runner can run at
once at all (``Ceiling``: the active hosts' slots and memory for a router, the
provisioner's slots for a listener alone on its catalogue), and the quotas
themselves are read at most every ``quota_cache_s`` per project: they change
when an admin says so, and a change a second late is no loss for a budget.
Where no ceiling is known (several listeners on one catalogue) every event of
the project is counted.
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
# The largest memory a function may ask for (catalog_api.schemas), for a listener's ceiling.
MAX_FUNCTION_MEMORY_MB = 4096


class AdmissionStore(Protocol):
    """What admission reads of the catalogue: quotas, and what a project runs."""

    def get_quota(self, project_id: str) -> dict[str, int]: ...

    def usage_of(self, project_id: str) -> dict[str, int]: ...

    def function_memory_of(self, owner: str) -> dict[str, int]: ...


@dataclass(frozen=True)
class Ceiling:
    """The most a runner can hold at once, whatever the quotas: runs and their memory."""

    runs: int
    memory_mb: int

    @classmethod
    def of_slots(cls, slots: int) -> Ceiling:
        """A listener's: ``slots`` runs, each of at most the largest memory a function has."""
        return cls(slots, slots * MAX_FUNCTION_MEMORY_MB)


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
        self._quotas: dict[str, tuple[float, Quota]] = {}
        self._quotas_lock = threading.Lock()
        self.turn = threading.Lock()

    def binding(self, function: FunctionRecord, ceiling: Ceiling | None) -> Quota | None:
        """The function's project's quota if it could bind under ``ceiling``; None if it cannot."""
        quota = self._quota(function.owner)
        if (
            ceiling is not None
            and quota.executions >= ceiling.runs
            and quota.memory_mb >= ceiling.memory_mb
        ):
            return None
        return quota

    def over_after_start(self, function: FunctionRecord, quota: Quota) -> str | None:
        """Why a run just started (now ``running``, so counted) passes the quota; None if not."""
        usage = usage_of(self._store, function.owner)
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

    def _quota(self, project_id: str) -> Quota:
        now = self._clock()
        with self._quotas_lock:
            cached = self._quotas.get(project_id)
        if cached is not None and now - cached[0] < self._quota_cache_s:
            return cached[1]
        quota = quota_of(self._store, self._settings, project_id)
        with self._quotas_lock:
            self._quotas[project_id] = (now, quota)
        return quota


def refusal(quota: Quota, usage: Quota, function: FunctionRecord) -> str | None:
    """Why one more run of ``function`` on top of ``usage`` passes ``quota``; None if it fits."""
    try:
        check_run(quota, usage, function.owner, function.memory_mb)
    except QuotaBusy as exc:
        return exc.description
    return None
