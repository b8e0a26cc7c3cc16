"""The provisioner seam: run one function version on one event, and say how it went.

The listener and the API's synchronous invocations talk only to this interface.
Backends sit beside it (``provisioner.docker`` today; Nova-managed hosts later),
and keep the host (where containers run) apart from the container lifecycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class Invocation:
    """Everything a backend needs to run one execution; nothing here reaches the catalogue.

    ``load_package`` returns the package bytes; backends call it only when they
    have not already unpacked the package with this ``code_sha256``.
    """

    execution_id: str
    function_id: str
    function_name: str
    function_version: int
    runtime: str
    handler: str
    memory_mb: int
    timeout_s: int
    code_sha256: str
    package_kind: str  # "py" or "zip"
    package_filename: str  # for "py": the file name the source is imported from
    load_package: Callable[[], bytes]
    event_id: str
    event_source: str
    event_type: str
    data: Any = None
    environment: dict[str, str] = field(default_factory=dict)
    network: bool = False
    attempt: int = 1
    concurrency: int = 10  # the function's limit on executions at once
    # Called once the backend holds its capacity and a container, right before the
    # run: a wait for a function's concurrency or the host's memory can be long, and
    # the listener renews its lease on the execution here. It raises (``LeaseLost``)
    # when the lease is gone, and then the run does not start.
    started: Callable[[], None] | None = None


@dataclass(frozen=True)
class Outcome:
    """How one execution ended.

    ``status`` is ``succeeded``, ``failed`` or ``timed_out``. ``error`` is None on
    success, else ``{"type", "message", "traceback"?, "reason"?}``: ``reason`` is the
    platform's word for why (``timeout``, ``out of memory``, ``crashed``, ``handler error``).
    ``cpu_ms`` and ``peak_memory_mb`` are what the run took of its container, where
    the backend can see it (None otherwise).
    """

    status: str
    result: Any
    error: dict[str, Any] | None
    logs: str
    started_at: datetime
    finished_at: datetime
    duration_ms: float
    cold_start: bool
    host: str
    container_id: str = ""
    cpu_ms: float | None = None
    peak_memory_mb: float | None = None


@dataclass(frozen=True)
class Usage:
    """What a backend holds now, for its host's heartbeat: memory left, versions kept warm.

    ``warm`` names each function version with an idle warm container as
    ``function_id:version``; ``idle_memory_mb`` is what idle containers hold.
    """

    free_memory_mb: int
    warm: tuple[str, ...] = ()
    # Of the memory not free, what idle warm and pooled containers hold: reclaimed as
    # soon as a run needs it, so it is not load (the scaling controller leaves it out).
    idle_memory_mb: int = 0


class Provisioner(Protocol):
    """What the listener and the API need from a backend."""

    @property
    def capacity(self) -> int:
        """How many executions this backend runs at once; the listener's prefetch follows it."""
        ...

    def run(self, invocation: Invocation) -> Outcome:
        """Run to completion (or timeout) and return the outcome.

        Function failures are outcomes, not exceptions. ``TransientError`` means the
        backend itself failed (engine unreachable) and the work may be retried;
        ``PermanentError`` means it cannot run at all (unknown runtime, no image).
        """
        ...

    def close(self) -> None:
        """Stop and remove every container this backend started."""
        ...


class Reporting(Protocol):
    """A backend that can say what it holds (``DockerProvisioner``); a cluster host needs one."""

    def usage(self) -> Usage: ...
