"""The Docker host: one engine, its runtime images, and the only place docker's errors are caught.

Everything that talks to the engine goes through ``DockerHost``, which turns
``docker.errors.APIError`` and connection failures into ``TransientError`` (the
engine is down or overloaded: retry) or ``PermanentError`` (the request itself is
wrong: do not). The container lifecycle (``container.py``) and the provisioner
above it never see a docker exception. A later Nova-managed host plugs in here.

It also knows which containers are whose. Every container carries the label
``lambda-os.owner`` = ``<hostname>/<pid>/<process start time>/<instance>``, so a
new process can tell containers left by a dead one (removed at start) from those
of a live sibling on the same engine (an API worker next to the listener: kept).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import docker
import docker.errors
import docker.models.containers
import requests.exceptions

from lambda_os.errors import PermanentError, TransientError
from provisioner.images import BUILD_COMMAND, image_name, runtime_spec

LOGGER = logging.getLogger(__name__)

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
PLATFORM_LABEL = "lambda-os"
OWNER_LABEL = "lambda-os.owner"


@contextmanager
def engine_errors(action: str) -> Iterator[None]:
    """Convert what the docker SDK raises while doing ``action`` into our errors."""
    try:
        yield
    except docker.errors.APIError as exc:
        if exc.is_server_error() or exc.status_code in (408, 429):
            raise TransientError(f"Docker Engine failed to {action}: {exc.explanation}") from exc
        raise PermanentError(f"Docker Engine refused to {action}: {exc.explanation}") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise TransientError(f"Docker Engine is not reachable to {action}: {exc}") from exc


def _process_start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name (field 2) may hold spaces; fields after its ")" are plain.
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return fields[19]


class Owner:
    """This process's identity on the engine, and the test of whether another's is still alive."""

    def __init__(self) -> None:
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.instance = uuid.uuid4().hex[:12]
        self.label = f"{self.hostname}/{self.pid}/{_process_start_time(self.pid)}/{self.instance}"

    def is_abandoned(self, label: str | None) -> bool:
        """True when ``label`` names a process of this machine that has exited."""
        try:
            hostname, pid, started, _instance = (label or "").split("/")
        except ValueError:
            return True
        if hostname != self.hostname:
            return False
        return not pid.isdigit() or _process_start_time(int(pid)) != started


class DockerHost:
    """One Docker Engine, reached through the docker SDK."""

    def __init__(
        self,
        docker_host: str | None = None,
        client: docker.DockerClient | None = None,
    ) -> None:
        self._owns_client = client is None
        with engine_errors("connect"):
            self.client = client or docker.DockerClient(base_url=docker_host or DEFAULT_DOCKER_HOST)
        self.owner = Owner()
        self._name: str | None = None

    @property
    def name(self) -> str:
        """The engine's host name, for ``Outcome.host``."""
        if self._name is None:
            with engine_errors("describe itself"):
                self._name = str(self.client.info().get("Name") or socket.gethostname())
        return self._name

    def runtime_image(self, runtime: str, prefix: str) -> str:
        """The image for ``runtime``; ``PermanentError`` if unknown or not built."""
        runtime_spec(runtime)
        name = image_name(prefix, runtime)
        try:
            with engine_errors(f"look up image {name}"):
                self.client.images.get(name)
        except PermanentError as exc:
            if isinstance(exc.__cause__, docker.errors.ImageNotFound):
                raise PermanentError(
                    f"runtime image {name} is not on this host: run {BUILD_COMMAND}"
                ) from exc.__cause__
            raise
        return name

    def create(self, **kwargs: Any) -> docker.models.containers.Container:
        labels = dict(kwargs.pop("labels", {}))
        labels[PLATFORM_LABEL] = "1"
        labels[OWNER_LABEL] = self.owner.label
        with engine_errors("create a container"):
            return self.client.containers.create(labels=labels, **kwargs)

    def start(self, container: docker.models.containers.Container) -> None:
        with engine_errors(f"start container {container.name}"):
            container.start()

    @property
    def cpus(self) -> int:
        """The engine's CPU count, the most a container's CPU cap can usefully be."""
        with engine_errors("describe itself"):
            return int(self.client.info().get("NCPU") or os.cpu_count() or 1)

    def update(self, container_id: str, memory_mb: int, cpu_shares: int, **cpu_cap: int) -> None:
        """Change a running container's memory limit (swap kept equal: none), CPU weight and cap.

        ``cpu_cap`` is ``cpu_period`` and ``cpu_quota``, or nothing to leave the cap alone.
        """
        memory = f"{memory_mb}m"
        with engine_errors("resize a container"):
            self.client.api.update_container(
                container_id,
                mem_limit=memory,
                memswap_limit=memory,
                cpu_shares=cpu_shares,
                **cpu_cap,
            )

    def state(self, container_id: str) -> dict[str, Any] | None:
        """The container's ``State`` from inspect, or None if it no longer exists."""
        try:
            with engine_errors("inspect a container"):
                return self.client.api.inspect_container(container_id)["State"]
        except PermanentError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                return None
            raise

    def wait(self, container_id: str, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the container to exit; return quietly either way."""
        try:
            self.client.api.wait(container_id, timeout=timeout_s)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            pass

    def logs(self, container_id: str) -> str:
        """What the container's own processes wrote outside any execution (agent failures)."""
        try:
            with engine_errors("read a container's logs"):
                raw = self.client.api.logs(container_id, stdout=True, stderr=True, tail=200)
        except (PermanentError, TransientError):
            return ""
        return raw.decode("utf-8", "replace")

    def remove(self, container_id: str) -> None:
        """Kill and remove the container; one that is already gone is fine."""
        try:
            with engine_errors("remove a container"):
                self.client.api.remove_container(container_id, force=True, v=True)
        except PermanentError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                return
            # 409: removal already in progress (dockerd is removing it for another caller).
            if isinstance(exc.__cause__, docker.errors.APIError) and (
                exc.__cause__.status_code == 409
            ):
                return
            raise

    def platform_containers(self, mine: bool = False) -> list[dict[str, Any]]:
        """Containers with the platform's label (only this instance's when ``mine``)."""
        filters = {"label": [f"{PLATFORM_LABEL}=1"]}
        if mine:
            filters["label"].append(f"{OWNER_LABEL}={self.owner.label}")
        with engine_errors("list containers"):
            return self.client.api.containers(all=True, filters=filters)

    def remove_abandoned(self) -> int:
        """Remove the platform's containers whose owning process has exited; return how many."""
        removed = 0
        for summary in self.platform_containers():
            owner = summary.get("Labels", {}).get(OWNER_LABEL)
            if self.owner.is_abandoned(owner):
                LOGGER.info("removing container %s left by %s", summary["Id"][:12], owner)
                self.remove(summary["Id"])
                removed += 1
        return removed

    def close(self) -> None:
        """Close the engine connection if this host opened it (a client passed in is the caller's)."""
        if self._owns_client:
            self.client.close()
