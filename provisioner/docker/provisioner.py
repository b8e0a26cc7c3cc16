"""The Docker backend of the provisioner seam: each execution in its own locked-down container.

``DockerProvisioner.run`` takes a container for the invocation, hands it the
function's package, runs the handler through the agent, and turns how that
ended into an ``Outcome``: the handler's result or error, ``timed_out`` when the
deadline passes (the container is killed), ``out of memory`` when the kernel's
OOM killer ended it, ``crashed`` when the agent died any other way.

The engine is reached only through ``DockerHost``; containers are made and
spoken to only through ``RuntimeContainer``.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lambda_os.errors import PermanentError, TransientError
from lambda_os.records import utcnow
from lambda_os.settings import Settings
from provisioner.base import Invocation, Outcome
from provisioner.docker.cache import PackageCache
from provisioner.docker.channel import ChannelClosed, ChannelTimeout, LogTail
from provisioner.docker.container import (
    Limits,
    Reply,
    RuntimeContainer,
    StartFailed,
)
from provisioner.docker.host import DockerHost

LOGGER = logging.getLogger(__name__)

OOM_EXIT_CODE = 137  # 128 + SIGKILL


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


def out_of_memory(memory_mb: int) -> dict[str, Any]:
    return {
        "type": "OutOfMemory",
        "message": f"the function used more than its {memory_mb} MB of memory and was killed",
        "reason": "out of memory",
    }


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
        "timeout_ms": max(0, int((deadline - time.monotonic()) * 1000)),
    }


class DockerProvisioner:
    """Runs invocations in containers on one Docker Engine; thread-safe."""

    def __init__(
        self,
        settings: Settings,
        client: Any = None,
        *,
        host: DockerHost | None = None,
    ) -> None:
        self.settings = settings
        self.host = host or DockerHost(settings.docker_host, client)
        self.state_dir = Path(settings.state_dir)
        self.packages = PackageCache(self.state_dir / "packages")
        containers_root = self.state_dir / "containers"
        self.containers_dir = containers_root / self.host.owner.instance
        self.containers_dir.mkdir(parents=True, exist_ok=True)
        (self.containers_dir / "owner").write_text(self.host.owner.label)
        self._remove_abandoned(containers_root)
        self._slots = threading.BoundedSemaphore(settings.concurrency)
        self._lock = threading.Lock()
        self._live: dict[str, RuntimeContainer] = {}
        self._images: dict[str, str] = {}
        self._closed = False

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

    def _image(self, runtime: str) -> str:
        image = self._images.get(runtime)
        if image is None:
            image = self.host.runtime_image(runtime, self.settings.runtime_image_prefix)
            self._images[runtime] = image
        return image

    def run(self, invocation: Invocation) -> Outcome:
        if self._closed:
            raise TransientError("the provisioner is shut down")
        image = self._image(invocation.runtime)
        package_dir = self.packages.get(invocation)
        with self._slots:
            started_at = utcnow()
            clock = time.monotonic()
            try:
                container = self._acquire(invocation, image)
            except StartFailed as exc:
                ending = self._start_failure(invocation, exc)
                return self._outcome(started_at, clock, ending, cold_start=True, container_id="")
            reusable = False
            try:
                ending = self._execute(container, invocation, package_dir)
                reusable = ending.reusable
                return self._outcome(
                    started_at,
                    clock,
                    ending,
                    cold_start=container.executions == 1,
                    container_id=container.id,
                )
            finally:
                self._release(container, reusable)

    def _acquire(self, invocation: Invocation, image: str) -> RuntimeContainer:
        """A container to run ``invocation`` in: a fresh one."""
        name = f"lambda-os-{uuid.uuid4().hex[:12]}"
        container = RuntimeContainer.start(
            self.host,
            image,
            invocation.runtime,
            name,
            Limits(memory_mb=invocation.memory_mb, network=invocation.network),
            labels_for(invocation),
            self.containers_dir / name[len("lambda-os-") :],
        )
        with self._lock:
            self._live[container.id] = container
        LOGGER.debug(
            "started container %s for execution %s (event %s)",
            container.name,
            invocation.execution_id,
            invocation.event_id,
        )
        return container

    def _release(self, container: RuntimeContainer, reusable: bool) -> None:
        """Done with ``container``: remove it (issue #3 runs one execution per container)."""
        with self._lock:
            self._live.pop(container.id, None)
        container.destroy()

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
            return Ending("succeeded", result=reply.result, logs=tail.text(), reusable=True)
        return Ending.handler_error(reply, tail, reusable=True)

    def _died(
        self,
        container: RuntimeContainer,
        invocation: Invocation,
        tail: LogTail,
        cause: Exception,
    ) -> Ending:
        """The agent's connection dropped: find out from the engine whether memory killed it."""
        state = container.exit_state()
        if oom_killed(state):
            LOGGER.info(
                "execution %s (event %s) ran out of memory (%s MB)",
                invocation.execution_id,
                invocation.event_id,
                invocation.memory_mb,
            )
            return Ending("failed", error=out_of_memory(invocation.memory_mb), logs=tail.text())
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
        if oom_killed(exc.state):
            return Ending("failed", error=out_of_memory(invocation.memory_mb), logs=exc.logs)
        LOGGER.error(
            "runtime container for execution %s (event %s) failed to start: %s\n%s",
            invocation.execution_id,
            invocation.event_id,
            exc,
            exc.logs,
        )
        raise PermanentError(
            f"the {invocation.runtime} runtime failed to start: {exc}; "
            "rebuild it with deploy/build-runtime-images"
        ) from exc

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
        """Remove every container this provisioner started."""
        self._closed = True
        with self._lock:
            containers = list(self._live.values())
            self._live.clear()
        for container in containers:
            container.destroy()
        for summary in self.host.platform_containers(mine=True):
            self.host.remove(summary["Id"])
        shutil.rmtree(self.containers_dir, ignore_errors=True)
        self.host.close()
