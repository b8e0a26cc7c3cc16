"""Quotas per project: how much a project may store and run at once, and what it uses.

Four limits, each with a default in the settings that an admin may change per
project (``Catalogue.set_quota``): ``functions`` (how many), ``package_bytes``
(their current packages together), ``executions`` (running at once) and
``memory_mb`` (the memory of those running at once). A change that would pass a
stored limit is refused for good (``QuotaExceeded``, 403); a run that would pass an
at-once limit may succeed later (``QuotaBusy``, 429). Each refusal names the quota,
its value and the use, so a user knows what to ask their admin for.

Two uploads racing can both pass the ``functions`` check; the catalogue has no
cross-document transaction on every backend, and a quota is a budget, not a lock.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

from lambda_os.errors import QuotaBusy, QuotaExceeded
from lambda_os.settings import Settings

QUOTA_NAMES = ("functions", "package_bytes", "executions", "memory_mb")


@dataclass(frozen=True)
class Quota:
    """A project's limits (or, as ``usage``, what it uses of each)."""

    functions: int
    package_bytes: int
    executions: int
    memory_mb: int

    @classmethod
    def defaults(cls, settings: Settings) -> Quota:
        return cls(
            functions=settings.quota_functions,
            package_bytes=settings.quota_package_bytes,
            executions=settings.quota_executions,
            memory_mb=settings.quota_memory_mb,
        )

    def with_changes(self, changes: dict[str, int]) -> Quota:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if k in QUOTA_NAMES})

    def to_api(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class QuotaStore(Protocol):
    """What quotas need of the catalogue (``lambda_os.catalogue.Catalogue``)."""

    def get_quota(self, project_id: str) -> dict[str, int]: ...

    def usage_of(self, project_id: str) -> dict[str, int]: ...


def quota_of(store: QuotaStore, settings: Settings, project_id: str) -> Quota:
    """The project's limits: its stored ones over the settings' defaults."""
    return Quota.defaults(settings).with_changes(store.get_quota(project_id))


def usage_of(store: QuotaStore, project_id: str) -> Quota:
    """What the project uses now, read once (each reading is a count of its records)."""
    used = store.usage_of(project_id)
    return Quota(**{name: int(used.get(name, 0)) for name in QUOTA_NAMES})


def check_store(
    quota: Quota, usage: Quota, project_id: str, new_functions: int, added_bytes: int
) -> None:
    """``QuotaExceeded`` if ``new_functions`` more and ``added_bytes`` more would pass a limit."""
    if new_functions and usage.functions + new_functions > quota.functions:
        _refuse(QuotaExceeded, project_id, "functions", quota.functions, usage.functions)
    if added_bytes > 0 and usage.package_bytes + added_bytes > quota.package_bytes:
        _refuse(
            QuotaExceeded,
            project_id,
            "package_bytes",
            quota.package_bytes,
            usage.package_bytes,
            f"; this package would add {added_bytes}",
        )


def check_run(quota: Quota, usage: Quota, project_id: str, memory_mb: int) -> None:
    """``QuotaBusy`` if one more run of ``memory_mb`` would pass an at-once limit."""
    if usage.executions + 1 > quota.executions:
        _refuse(QuotaBusy, project_id, "executions", quota.executions, usage.executions)
    if usage.memory_mb + memory_mb > quota.memory_mb:
        _refuse(
            QuotaBusy,
            project_id,
            "memory_mb",
            quota.memory_mb,
            usage.memory_mb,
            f"; this run needs {memory_mb}",
        )


def _refuse(
    kind: type[QuotaExceeded], project: str, name: str, limit: int, used: int, more: str = ""
) -> Any:
    raise kind(f"project {project!r} is at its {name} quota of {limit} (in use: {used}{more})")
