"""The Docker backend of the provisioner seam: each execution in its own locked-down container.

``DockerProvisioner.run`` takes a container for the invocation, hands it the
function's package, runs the handler through the agent, and turns how that
ended into an ``Outcome``: the handler's result or error, ``timed_out`` when the
deadline passes (the container is killed), ``out of memory`` when the kernel's
OOM killer ended it (saying how much of the limit was files in ``/tmp``),
``crashed`` when the agent died any other way. A container serves again only
if nothing the handler started still runs in it: the agent ends it, and the
host checks the container's task count before keeping it warm.

The engine is reached only through ``DockerHost``; containers are made and
spoken to only through ``RuntimeContainer``.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lambda_os.errors import PermanentError, TransientError
from lambda_os.records import utcnow
from lambda_os.settings import Settings
from lambda_os.storable import MAX_STORED_DEPTH, NOT_STORABLE
from provisioner.base import Invocation, Outcome, Usage
from provisioner.docker.cache import PackageCache
from provisioner.docker.channel import (
    ChannelClosed,
    ChannelTimeout,
    LogTail,
    ProtocolViolation,
    ReplyTooDeep,
)
from provisioner.docker.container import (
    Limits,
    Reply,
    RuntimeContainer,
    StartFailed,
)
from provisioner.docker.egress import EgressNetwork
from provisioner.docker.firewall import Iptables
from provisioner.docker.host import DockerHost
from provisioner.docker.inventory import Inventory
from provisioner.docker.platform_addresses import platform_addresses
from provisioner.images import RUNTIMES
from provisioner.limits import ConcurrencyLimits, FairSlots

LOGGER = logging.getLogger(__name__)
# Unpacked packages outlive their warm containers by at least this long.
PACKAGE_GRACE_S = 600.0

# Pooled containers start with the catalogue's default memory; a function asking for
# another size has its container resized when it takes it (one engine call).
POOL_MEMORY_MB = 128
# Files in /tmp count toward the memory limit; an OOM error names /tmp from this much.
TMP_WORTH_NAMING = 1024 * 1024


@dataclass(frozen=True)
class Ending:
    """How one execution ended inside its container, and whether the container may serve again."""

    status: str
    result: Any = None
    error: dict[str, Any] | None = None
    logs: str = ""
    reusable: bool = False

    @classmethod
    def handler_error(cls, reply: Reply, tail: LogTail, reusable: bool) -> Ending:
        error = dict(reply.error or {})
        error["reason"] = "handler error"
        return cls("failed", error=error, logs=tail.text(), reusable=reusable)


def function_key(invocation: Invocation) -> tuple[Any, ...]:
    """What a warm container is loaded with; a container never serves a different key."""
    return (
        invocation.function_id,
        invocation.function_version,
        invocation.runtime,
        invocation.code_sha256,
        invocation.handler,
        invocation.memory_mb,
        invocation.network,
        tuple(sorted(invocation.environment.items())),
    )


def oom_killed(state: dict[str, Any]) -> bool:
    return bool(state.get("OOMKilled"))


def out_of_memory(memory_mb: int, tmp_bytes: int | None = None) -> dict[str, Any]:
    """The error of an OOM kill; it names /tmp when files there held part of the limit.

    The tmpfs is charged to the container's memory, so a function that fills
    /tmp is killed like one that allocates: the message says which it was.
    """
    message = f"the function used more than its {memory_mb} MB of memory and was killed"
    if tmp_bytes is not None and tmp_bytes >= TMP_WORTH_NAMING:
        message = (
            f"memory limit reached: {tmp_bytes / 2**20:.0f} MiB of it in /tmp (files there "
            f"count toward the function's {memory_mb} MB); the function was killed"
        )
    return {"type": "OutOfMemory", "message": message, "reason": "out of memory"}


def start_failure_error(runtime: str, exc: StartFailed) -> TransientError | PermanentError:
    """What a container that did not start means: retry if it was only slow, else never.

    A start that ran out of time says nothing about the runtime (a loaded host is
    enough), so the execution goes back to the queue. An agent that exited or
    closed its connection will do the same again: the image is broken.
    """
    if exc.transient:
        return TransientError(f"the {runtime} runtime did not start: {exc}")
    return PermanentError(
        f"the {runtime} runtime failed to start: {exc}; rebuild it with deploy/build-runtime-images"
    )


def pool_labels(runtime: str) -> dict[str, str]:
    """A pooled container is generic: it is labelled for its runtime only."""
    return {"lambda-os.runtime": runtime, "lambda-os.pool": "1"}


def labels_for(invocation: Invocation) -> dict[str, str]:
    """The labels naming what a container was started for (the platform's own are added by the host)."""
    return {
        "lambda-os.runtime": invocation.runtime,
        "lambda-os.function-id": invocation.function_id,
        "lambda-os.function-version": str(invocation.function_version),
        "lambda-os.execution-id": invocation.execution_id,
    }


def load_message(invocation: Invocation) -> dict[str, Any]:
    return {
        "handler": invocation.handler,
        "environment": dict(invocation.environment),
        "function_name": invocation.function_name,
        "function_version": invocation.function_version,
        "memory_limit_in_mb": invocation.memory_mb,
    }


def invoke_message(invocation: Invocation, deadline: float) -> dict[str, Any]:
    return {
        "execution_id": invocation.execution_id,
        "event_id": invocation.event_id,
        "event_source": invocation.event_source,
        "event_type": invocation.event_type,
        "data": invocation.data,
        "attempt": invocation.attempt,
        "timeout_ms": max(0, int((deadline - time.monotonic()) * 1000)),
    }


class DockerProvisioner:
    """Runs invocations in containers on one Docker Engine; thread-safe.

    A container that ended an execution cleanly stays warm for its function
    version for ``settings.warm_idle_s`` and serves that version again
    (``cold_start`` False); one that timed out, crashed, ran out of memory,
    failed to import its handler or could not be cleared of what the handler
    started is removed at once. ``settings.pool_size``
    generic containers per runtime wait, started, for a function's first
    execution, which then only hands over its package. Busy, warm and pooled
    containers stay within ``settings.host_memory_mb``: idle ones are evicted
    least recently used first when room is needed, and a run waits when the
    budget is all in use. ``warm_idle_s=0`` and ``pool_size=0`` give one fresh
    container per execution. One function holds at most ``concurrency -
    reserved_slots`` of the host's slots, so it cannot starve the others
    (``provisioner.limits.FairSlots``).
    """

    def __init__(
        self,
        settings: Settings,
        client: Any = None,
        *,
        host: DockerHost | None = None,
        clock: Callable[[], float] = time.monotonic,
        egress: EgressNetwork | None = None,
    ) -> None:
        self.settings = settings
        self.host = host or DockerHost(settings.docker_host, client)
        self.egress = egress or EgressNetwork(
            self.host,
            Iptables(),
            engine_is_local=(settings.docker_host or "unix://").startswith("unix://"),
            platform=lambda: platform_addresses(settings),
        )
        self.clock = clock
        self.state_dir = Path(settings.state_dir)
        self.packages = PackageCache(self.state_dir / "packages", clock)
        containers_root = self.state_dir / "containers"
        self.containers_dir = containers_root / self.host.owner.instance
        self.containers_dir.mkdir(parents=True, exist_ok=True)
        (self.containers_dir / "owner").write_text(self.host.owner.label)
        self._remove_abandoned(containers_root)
        self._host_cpus = self.host.cpus
        try:
            self.egress.ensure()
        except (PermanentError, TransientError) as exc:
            LOGGER.warning("%s", exc)  # tried again, and refused, for each such function
        self._slots = FairSlots(settings.concurrency, settings.reserved_slots)
        self._per_function = ConcurrencyLimits()
        self._lock = threading.Condition()
        self._inventory = Inventory(settings.host_memory_mb)
        # The clean start of each execution, in µs: the agent's cleanup as it reports it
        # plus the host's own check. Bounded; the bench reads it (case 2).
        self.cleanup_us: collections.deque[float] = collections.deque(maxlen=100_000)
        self._live: dict[str, RuntimeContainer] = {}
        self._starting_pool: dict[str, int] = {}
        self._no_pool: set[str] = set()
        self._images: dict[str, str] = {}
        self._closed = False
        self._wake = threading.Event()
        self._housekeeper: threading.Thread | None = None
        if settings.pool_size > 0 or settings.warm_idle_s > 0:
            self._housekeeper = threading.Thread(
                target=self._housekeeping, name="lambda-os-containers", daemon=True
            )
            self._housekeeper.start()

    @property
    def capacity(self) -> int:
        return self.settings.concurrency

    def _remove_abandoned(self, containers_root: Path) -> None:
        """Remove containers and directories left by a process of this platform that has exited."""
        removed = self.host.remove_abandoned()
        for directory in containers_root.iterdir():
            if directory == self.containers_dir or not directory.is_dir():
                continue
            owner_file = directory / "owner"
            owner = owner_file.read_text() if owner_file.exists() else None
            if self.host.owner.is_abandoned(owner):
                shutil.rmtree(directory, ignore_errors=True)
        if removed:
            LOGGER.info("removed %d containers left by earlier processes", removed)

    def _limits(self, memory_mb: int, network: bool = False) -> Limits:
        """A container's limits: its CPU capped at ``memory_mb_per_cpu``, within the host's cores."""
        return Limits(
            memory_mb=memory_mb,
            network=network,
            mb_per_cpu=self.settings.memory_mb_per_cpu,
            max_cpus=self._host_cpus,
        )

    def _image(self, runtime: str) -> str:
        image = self._images.get(runtime)
        if image is None:
            image = self.host.runtime_image(runtime, self.settings.runtime_image_prefix)
            self._images[runtime] = image
        return image

    def run(self, invocation: Invocation) -> Outcome:
        if self._closed:
            raise TransientError("the provisioner is shut down")
        if invocation.memory_mb > self.settings.host_memory_mb:
            raise PermanentError(
                f"the function asks for {invocation.memory_mb} MB; this host's budget is "
                f"{self.settings.host_memory_mb} MB"
            )
        image = self._image(invocation.runtime)
        if invocation.network:
            self.egress.ensure()
        package_dir = self.packages.get(invocation)
        key = function_key(invocation)
        # The function's own limit first, so a function at its limit holds no host slot;
        # then its fair share of the host's slots, so it leaves room for other functions.
        with (
            self._per_function.hold(invocation.function_id, invocation.concurrency),
            self._slots.hold(invocation.function_id),
        ):
            started_at = utcnow()
            clock = time.monotonic()
            try:
                container = self._acquire(invocation, key, image)
            except StartFailed as exc:
                ending = self._start_failure(invocation, exc)
                return self._outcome(started_at, clock, ending, cold_start=True, container_id="")
            cold = container.loaded != key
            reusable = False
            try:
                # After every wait (a slot, the function's limit, host memory): the caller
                # renews its lease here, and a run whose lease is gone never starts.
                if invocation.started is not None:
                    invocation.started()
                mark = container.usage_mark()
                ending = self._execute(container, invocation, package_dir)
                reusable = ending.reusable
                outcome = self._outcome(
                    started_at, clock, ending, cold_start=cold, container_id=container.id
                )
                used = container.usage_since(mark)
                return dataclasses.replace(
                    outcome, cpu_ms=used.cpu_ms, peak_memory_mb=used.peak_memory_mb
                )
            finally:
                self._release(container, key, reusable)

    def _acquire(
        self, invocation: Invocation, key: tuple[Any, ...], image: str
    ) -> RuntimeContainer:
        """A container for ``invocation``: warm for its version, else pooled, else a fresh one."""
        doomed: list[RuntimeContainer] = []
        try:
            with self._lock:
                warm = self._inventory.take_warm(key)
                if warm is not None:
                    return warm
                # A newer version has come: the older ones' warm containers will not serve again.
                doomed += self._inventory.remove_warm_where(
                    lambda other, _c: other[0] == key[0] and other[1] < key[1]
                )
                if not invocation.network:
                    pooled = self._inventory.take_pooled(invocation.runtime)
                    if pooled is not None:
                        self._wake.set()  # start its replacement
                        resize_to = invocation.memory_mb
                        if resize_to != pooled.memory_mb:
                            doomed += self._make_room(resize_to - pooled.memory_mb)
                            self._inventory.hold(resize_to - pooled.memory_mb)
                        container = pooled
                    else:
                        container = None
                else:
                    container = None
                if container is None:
                    doomed += self._make_room(invocation.memory_mb)
                    self._inventory.hold(invocation.memory_mb)
        finally:
            self._destroy_all(doomed)
        if container is not None:
            if container.memory_mb != invocation.memory_mb:
                try:
                    container.resize(invocation.memory_mb)
                except Exception:
                    self._discard(container, invocation.memory_mb)
                    raise
            return container
        try:
            if invocation.network:
                self.egress.ensure(recheck=True)
            return self._start(
                image,
                invocation.runtime,
                self._limits(invocation.memory_mb, network=invocation.network),
                labels_for(invocation),
            )
        except BaseException:
            with self._lock:
                self._inventory.free(invocation.memory_mb)
                self._lock.notify_all()
            raise

    def _make_room(self, memory_mb: int) -> list[RuntimeContainer]:
        """Under the lock: evict idle containers, or wait for busy ones, until ``memory_mb`` fits."""
        if memory_mb <= 0 or self._inventory.fits(memory_mb):
            return []
        while True:
            evicted = self._inventory.evict_for(memory_mb)
            if evicted is not None:
                for container in evicted:
                    LOGGER.info(
                        "evicting idle container %s (%s MB) to make room for %s MB",
                        container.name,
                        container.memory_mb,
                        memory_mb,
                    )
                return evicted
            if self._closed:
                raise TransientError("the provisioner is shut down")
            self._lock.wait(1.0)

    def _start(
        self, image: str, runtime: str, limits: Limits, labels: dict[str, str]
    ) -> RuntimeContainer:
        name = f"lambda-os-{uuid.uuid4().hex[:12]}"
        container = RuntimeContainer.start(
            self.host,
            image,
            runtime,
            name,
            limits,
            labels,
            self.containers_dir / name[len("lambda-os-") :],
        )
        container.last_used = self.clock()
        with self._lock:
            self._live[container.id] = container
            closed = self._closed
        if closed:
            self._discard(container, limits.memory_mb)
            raise TransientError("the provisioner is shut down")
        return container

    def _release(self, container: RuntimeContainer, key: tuple[Any, ...], reusable: bool) -> None:
        """Keep ``container`` warm for ``key`` if it may serve again, else remove it."""
        container.last_used = self.clock()
        with self._lock:
            keep = reusable and not self._closed and self.settings.warm_idle_s > 0
            if keep:
                self._inventory.put_warm(key, container)
                self._lock.notify_all()
                return
        self._discard(container, container.memory_mb)

    def _discard(self, container: RuntimeContainer, memory_mb: int) -> None:
        """Remove a busy container and give back its memory."""
        with self._lock:
            self._live.pop(container.id, None)
            self._inventory.free(memory_mb)
            self._lock.notify_all()
        container.destroy()

    def _destroy_all(self, containers: list[RuntimeContainer]) -> None:
        """Remove containers already taken out of the inventory (their memory is freed)."""
        for container in containers:
            with self._lock:
                self._live.pop(container.id, None)
            try:
                container.destroy()
            except (TransientError, PermanentError) as exc:
                LOGGER.warning("could not remove container %s: %s", container.name, exc)

    def usage(self) -> Usage:
        """Memory left in the budget and the function versions warm now (a host's heartbeat)."""
        with self._lock:
            free = self._inventory.budget_mb - self._inventory.held_mb
            idle = self._inventory.idle_mb
            warm = sorted({f"{key[0]}:{key[1]}" for key, _container in self._inventory.warm()})
        return Usage(free_memory_mb=max(0, free), warm=tuple(warm), idle_memory_mb=idle)

    def expire_idle(self) -> int:
        """Remove warm containers idle for longer than ``warm_idle_s``; return how many."""
        limit = self.clock() - self.settings.warm_idle_s
        with self._lock:
            expired = self._inventory.remove_warm_where(lambda _k, c: c.last_used < limit)
            if expired:
                self._lock.notify_all()
        self._destroy_all(expired)
        return len(expired)

    def fill_pool(self) -> int:
        """Start pooled containers until each runtime has ``pool_size``; return how many started."""
        started = 0
        for runtime in RUNTIMES:
            if runtime in self._no_pool:
                continue
            while True:
                with self._lock:
                    have = self._inventory.pooled(runtime) + self._starting_pool.get(runtime, 0)
                    if self._closed or have >= self.settings.pool_size:
                        break
                    if not self._inventory.fits(POOL_MEMORY_MB):
                        break  # the pool never evicts warm containers to grow
                    self._inventory.hold(POOL_MEMORY_MB)
                    self._starting_pool[runtime] = self._starting_pool.get(runtime, 0) + 1
                try:
                    image = self._image(runtime)
                    container = self._start(
                        image, runtime, self._limits(POOL_MEMORY_MB), pool_labels(runtime)
                    )
                except (PermanentError, TransientError, StartFailed) as exc:
                    with self._lock:
                        self._inventory.free(POOL_MEMORY_MB)
                        self._starting_pool[runtime] -= 1
                    if isinstance(exc, TransientError) or getattr(exc, "transient", False):
                        LOGGER.warning("cannot start a pooled %s container: %s", runtime, exc)
                    else:  # no image, or it does not start: no pool for it in this process
                        LOGGER.warning("no pool for runtime %s: %s", runtime, exc)
                        self._no_pool.add(runtime)
                    break
                with self._lock:
                    self._starting_pool[runtime] -= 1
                    self._inventory.put_pooled(container)
                    self._lock.notify_all()
                started += 1
        return started

    def pooled(self, runtime: str) -> list[str]:
        """Ids of the pooled containers now waiting for ``runtime``."""
        with self._lock:
            return [container.id for container in self._inventory.pooled_list(runtime)]

    def _housekeeping(self) -> None:
        """Keep the pool full and expire idle warm containers, until closed."""
        while not self._closed:
            try:
                if self.settings.pool_size > 0:
                    self.fill_pool()
                if self.settings.warm_idle_s > 0:
                    self.expire_idle()
                    self.packages.prune(max(self.settings.warm_idle_s, PACKAGE_GRACE_S))
            except Exception:
                LOGGER.exception("container housekeeping failed; trying again")
            self._wake.wait(min(1.0, max(0.05, self.settings.warm_idle_s / 4)))
            self._wake.clear()

    def _execute(
        self, container: RuntimeContainer, invocation: Invocation, package_dir: Path
    ) -> Ending:
        """Load (if needed) and run the handler in ``container``; say how it ended."""
        tail = LogTail()
        deadline = time.monotonic() + invocation.timeout_s
        key = function_key(invocation)
        container.executions += 1
        try:
            if container.loaded != key:
                container.hand_over(package_dir)
                reply = container.load(load_message(invocation), deadline, tail)
                if not reply.ok:
                    return Ending.handler_error(reply, tail, reusable=False)
                container.loaded = key
            reply = container.invoke(invoke_message(invocation, deadline), deadline, tail)
            checking = time.perf_counter_ns()
            clean = self._nothing_left(container, invocation, reply)
            if reply.cleanup_us is not None:
                self.cleanup_us.append(
                    reply.cleanup_us + (time.perf_counter_ns() - checking) / 1000
                )
        except ChannelTimeout:
            LOGGER.info(
                "execution %s (event %s) timed out after %s s",
                invocation.execution_id,
                invocation.event_id,
                invocation.timeout_s,
            )
            error = {
                "type": "Timeout",
                "message": f"the function ran past its timeout of {invocation.timeout_s} s "
                "and was stopped",
                "reason": "timeout",
            }
            return Ending("timed_out", error=error, logs=tail.text())
        except ChannelClosed as exc:
            return self._died(container, invocation, tail, exc)
        if reply.ok:
            return Ending("succeeded", result=reply.result, logs=tail.text(), reusable=clean)
        return Ending.handler_error(reply, tail, reusable=clean)

    @staticmethod
    def _nothing_left(container: RuntimeContainer, invocation: Invocation, reply: Reply) -> bool:
        """Whether nothing the handler started runs in ``container`` any more, so it may serve again.

        The agent says so, and the host checks the container's task count where it
        can see it: the agent shares its process with the function and cannot be
        taken at its word alone.
        """
        seen = container.runs_only_the_agent()
        if reply.clean and seen is not False:
            return True
        if not reply.clean:
            why = reply.left or "the agent did not say it had cleaned up"
        else:
            why = "the agent said it had cleaned up, but more than it and docker-init still run"
        LOGGER.info(
            "execution %s (event %s): %s; container %s is retired",
            invocation.execution_id,
            invocation.event_id,
            why,
            container.name,
        )
        return False

    def _died(
        self,
        container: RuntimeContainer,
        invocation: Invocation,
        tail: LogTail,
        cause: Exception,
    ) -> Ending:
        """The agent's connection dropped: find out from the engine whether memory killed it."""
        if isinstance(cause, ReplyTooDeep):
            LOGGER.info(
                "execution %s (event %s): %s", invocation.execution_id, invocation.event_id, cause
            )
            error = {
                "type": "ResultNotStorable",
                "message": "the result is not storable: it is nested too deeply for the host "
                f"to decode (the limit as stored is {MAX_STORED_DEPTH} levels)",
                "reason": NOT_STORABLE,
            }
            return Ending("failed", error=error, logs=tail.text())
        if isinstance(cause, ProtocolViolation):
            # The agent is still running: nothing to wait for. The container is not reused.
            LOGGER.warning(
                "execution %s (event %s): %s", invocation.execution_id, invocation.event_id, cause
            )
            error = {
                "type": "ProtocolViolation",
                "message": f"the runtime's reply broke the protocol: {cause}",
                "reason": "crashed",
            }
            return Ending("failed", error=error, logs=tail.text())
        state = container.exit_state()
        if oom_killed(state):
            LOGGER.info(
                "execution %s (event %s) ran out of memory (%s MB)",
                invocation.execution_id,
                invocation.event_id,
                invocation.memory_mb,
            )
            error = out_of_memory(invocation.memory_mb, container.tmp_used_bytes())
            return Ending("failed", error=error, logs=tail.text())
        code = state.get("ExitCode")
        LOGGER.info(
            "execution %s (event %s): runtime exited with %s (%s)",
            invocation.execution_id,
            invocation.event_id,
            code,
            cause,
        )
        error = {
            "type": "Crashed",
            "message": f"the runtime exited with code {code} before the function returned",
            "reason": "crashed",
        }
        return Ending("failed", error=error, logs=tail.text())

    def _start_failure(self, invocation: Invocation, exc: StartFailed) -> Ending:
        """Out of memory while starting is the execution's outcome; anything else is raised."""
        if oom_killed(exc.state):
            return Ending("failed", error=out_of_memory(invocation.memory_mb), logs=exc.logs)
        error = start_failure_error(invocation.runtime, exc)
        LOGGER.log(
            logging.WARNING if isinstance(error, TransientError) else logging.ERROR,
            "runtime container for execution %s (event %s) failed to start: %s\n%s",
            invocation.execution_id,
            invocation.event_id,
            exc,
            exc.logs,
        )
        raise error from exc

    def _outcome(
        self,
        started_at: datetime,
        clock: float,
        ending: Ending,
        cold_start: bool,
        container_id: str,
    ) -> Outcome:
        duration_ms = (time.monotonic() - clock) * 1000
        return Outcome(
            status=ending.status,
            result=ending.result,
            error=ending.error,
            logs=ending.logs,
            started_at=started_at,
            finished_at=utcnow(),
            duration_ms=round(duration_ms, 3),
            cold_start=cold_start,
            host=self.host.name,
            container_id=container_id,
        )

    def close(self) -> None:
        """Remove every container this provisioner started, busy ones included."""
        with self._lock:
            self._closed = True
            self._inventory.drain()
            containers = list(self._live.values())
            self._live.clear()
            self._lock.notify_all()
        self._wake.set()
        if self._housekeeper is not None:
            self._housekeeper.join(timeout=60)
        for container in containers:
            try:
                container.destroy()
            except (TransientError, PermanentError) as exc:
                LOGGER.warning("could not remove container %s: %s", container.name, exc)
        # Anything started while closing, or whose handle was lost, still carries our label.
        for summary in self.host.platform_containers(mine=True):
            self.host.remove(summary["Id"])
        shutil.rmtree(self.containers_dir, ignore_errors=True)
        self.host.close()
