"""The container lifecycle: create one runtime container with every limit, talk to its agent, remove it.

A ``RuntimeContainer`` is a started container whose agent has connected to the
host over a Unix socket in the container's own host directory
(``<state_dir>/containers/<instance>/<name>/``, mounted read-only at
``/run/lambda-os``). It starts generic: a function's package is handed over by
hard-linking its unpacked files into ``task/`` of that directory (``/var/task`` in
the container) and sending ``load``. The same steps serve a fresh container, a
warm one and one taken from the pre-started pool.

Only ``DockerHost`` talks to the engine; this module decides what is asked of it.
What is checked on every execution (the container's task count, its /tmp) is read
through the host's kernel by a ``Probe`` (``probe.py``), which is faster than asking.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import docker.types

from provisioner.docker.channel import Channel, ChannelClosed, ChannelTimeout, LogTail, listen
from provisioner.docker.egress import NETWORK
from provisioner.docker.host import DockerHost
from provisioner.docker.probe import Probe

LOGGER = logging.getLogger(__name__)

AGENT_UID = 10001
MOUNT_POINT = "/run/lambda-os"
TASK_DIR = "/var/task"  # a symlink in the image to MOUNT_POINT/task
SOCKET_NAME = "agent.sock"
PIDS_LIMIT = 128
TMP_MB = 64
STARTUP_TIMEOUT_S = 30.0
# How long to wait, after the agent's connection drops, for dockerd to see the exit.
EXIT_WAIT_S = 10.0
# Tasks in an idle container: docker-init and the agent's one thread.
IDLE_TASKS = 2
# As AWS Lambda: a function gets one CPU's worth of time at 1769 MB, in proportion below
# and above it, but never less than a tenth of one (an import would crawl) ...
MB_PER_CPU = 1769
MIN_CPUS = 0.1
# ... measured by the CFS scheduler over this period (docker's default; microseconds).
CPU_PERIOD_US = 100_000
# The agent boots under at least this cap, and the function's own applies before any of
# its code runs: at 0.1 CPU the interpreter's start alone would add half a second to
# every cold start, which is the platform's cost, not the function's.
STARTUP_CPUS = 1.0


@dataclass(frozen=True)
class Limits:
    """What one container may use; its CPU, weighted and capped, follows its memory.

    ``cpu_shares`` weighs containers against each other when the host is busy (1024 MB
    gets docker's 1024). The shares alone let a small function take a whole core on an
    idle host and make its timings depend on the neighbours, so ``cpus`` also caps it:
    ``memory_mb / mb_per_cpu`` CPUs, at least ``MIN_CPUS``, at most ``max_cpus`` (the
    host's cores). ``mb_per_cpu=0`` leaves the CPU uncapped.
    """

    memory_mb: int
    network: bool = False
    pids: int = PIDS_LIMIT
    tmp_mb: int = TMP_MB
    mb_per_cpu: int = MB_PER_CPU
    max_cpus: float | None = None

    @property
    def cpu_shares(self) -> int:
        return max(2, self.memory_mb)

    @property
    def cpus(self) -> float | None:
        """The hard cap in CPUs, or None when there is none."""
        if self.mb_per_cpu <= 0:
            return None
        cpus = max(MIN_CPUS, self.memory_mb / self.mb_per_cpu)
        return cpus if self.max_cpus is None else min(cpus, max(MIN_CPUS, self.max_cpus))

    def cpu_cap(self, at_least: float = 0.0) -> dict[str, int]:
        """The engine's arguments for the cap (raised to ``at_least``): a CFS quota, or nothing.

        A quota rather than ``nano_cpus``: the engine refuses to change the quota of a
        container created with ``nano_cpus``, and a pooled container is resized.
        """
        cpus = self.cpus
        if cpus is None:
            return {}
        return {
            "cpu_period": CPU_PERIOD_US,
            "cpu_quota": round(max(cpus, at_least) * CPU_PERIOD_US),
        }

    def resized(self, memory_mb: int) -> Limits:
        return replace(self, memory_mb=memory_mb)


def container_config(
    image: str,
    name: str,
    limits: Limits,
    labels: dict[str, str],
    directory: Path,
    cpus_at_least: float = 0.0,
) -> dict[str, Any]:
    """The arguments for ``containers.create``: the isolation every function runs under.

    ``cpus_at_least`` raises the CPU cap for the agent's start (``STARTUP_CPUS``).
    """
    memory = f"{limits.memory_mb}m"
    return {
        "image": image,
        "name": name,
        "detach": True,
        "labels": labels,
        "user": f"{AGENT_UID}:{AGENT_UID}",
        # docker-init (tini) as PID 1 reaps the function's orphaned children, which
        # would otherwise pile up as zombies against the pids limit in a warm container.
        "init": True,
        # network: true joins the platform's egress network, never the default bridge:
        # no other container, the host or a private address is reachable from it.
        "network_mode": NETWORK if limits.network else "none",
        "mem_limit": memory,
        "memswap_limit": memory,  # equal to the memory limit: no swap
        "cpu_shares": limits.cpu_shares,
        **limits.cpu_cap(cpus_at_least),
        "pids_limit": limits.pids,
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={limits.tmp_mb}m,mode=1777"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "volumes": {str(directory): {"bind": MOUNT_POINT, "mode": "ro"}},
        # The agent sends the function's output over its socket; the engine's log only
        # holds the agent's own failures, so it is kept small.
        "log_config": docker.types.LogConfig(
            type="json-file", config={"max-size": "1m", "max-file": "1"}
        ),
        "hostname": "lambda",
        # The egress firewall is IPv4; with IPv6 off the container has no link-local
        # route around it to the bridge's own fe80:: address on the host.
        **({"sysctls": {"net.ipv6.conf.all.disable_ipv6": "1"}} if limits.network else {}),
    }


@dataclass
class Reply:
    """The agent's answer to ``load`` or ``invoke``.

    ``clean`` is the agent's word that nothing the handler started still runs;
    ``left`` says what does when it is not. An answer that does not say is not clean.
    """

    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None
    clean: bool = False
    left: str | None = None
    cleanup_us: int | None = None  # what the agent's cleanup took, as it says


class StartFailed(Exception):
    """The container exited, or its agent never connected, before it could serve anything.

    ``transient`` when nothing says the runtime is broken: the agent was only slow
    (a loaded host), or the container was removed from under us. Trying again may work.
    """

    def __init__(
        self, message: str, state: dict[str, Any] | None, logs: str, transient: bool = False
    ) -> None:
        super().__init__(message)
        self.state = state or {}
        self.logs = logs
        self.transient = transient


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class RunUsage(NamedTuple):
    """What one run took of its container: CPU milliseconds and peak memory (MiB)."""

    cpu_ms: float | None
    peak_memory_mb: float | None


@dataclass(eq=False)
class RuntimeContainer:
    """A started container with its agent connected; serves one message at a time."""

    host: DockerHost
    id: str
    name: str
    runtime: str
    limits: Limits
    directory: Path
    channel: Channel
    probe: Probe = field(default_factory=Probe)
    loaded: tuple[Any, ...] | None = None
    executions: int = 0
    last_used: float = field(default_factory=time.monotonic)
    destroyed: bool = False
    _destroy_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def start(
        cls,
        host: DockerHost,
        image: str,
        runtime: str,
        name: str,
        limits: Limits,
        labels: dict[str, str],
        directory: Path,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> RuntimeContainer:
        """Create and start a container and wait for its agent; ``StartFailed`` if it dies first."""
        directory.mkdir(parents=True, mode=0o755)
        socket_path = directory / SOCKET_NAME
        server = listen(socket_path, AGENT_UID)
        container_id = ""
        channel: Channel | None = None
        probe = Probe()
        try:
            config = container_config(image, name, limits, labels, directory, STARTUP_CPUS)
            container = host.create(**config)
            container_id = container.id
            host.start(container)
            conn = cls._accept(host, container_id, server, startup_timeout_s)
            channel = Channel(conn)
            try:
                channel.handshake(time.monotonic() + startup_timeout_s)
            except (ChannelClosed, ChannelTimeout) as exc:
                raise StartFailed(
                    f"agent in {name} did not say it was ready: {exc!r}",
                    host.state(container_id),
                    host.logs(container_id),
                    transient=isinstance(exc, ChannelTimeout),
                ) from exc
            probe = Probe.attach((host.state(container_id) or {}).get("Pid"))
            if limits.cpu_cap(STARTUP_CPUS) != limits.cpu_cap():
                # The function's own cap, before any of its code is loaded.
                host.update(container_id, limits.memory_mb, limits.cpu_shares, **limits.cpu_cap())
        except BaseException:
            server.close()
            probe.close()
            if channel is not None:
                channel.close()
            if container_id:
                host.remove(container_id)
            shutil.rmtree(directory, ignore_errors=True)
            raise
        server.close()
        socket_path.unlink(missing_ok=True)  # nobody else may connect
        return cls(host, container_id, name, runtime, limits, directory, channel, probe)

    @staticmethod
    def _accept(
        host: DockerHost, container_id: str, server: socket.socket, timeout_s: float
    ) -> socket.socket:
        deadline = time.monotonic() + timeout_s
        server.settimeout(0.25)
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                state = host.state(container_id)
                if state is None:
                    raise StartFailed(
                        f"container {container_id[:12]} was removed before its agent connected",
                        state,
                        "",
                        transient=True,
                    ) from None
                if not state.get("Running"):
                    raise StartFailed(
                        f"container {container_id[:12]} exited before its agent connected",
                        state,
                        host.logs(container_id),
                    ) from None
                if time.monotonic() > deadline:
                    raise StartFailed(
                        f"agent in {container_id[:12]} did not connect within {timeout_s} s",
                        state,
                        host.logs(container_id),
                        transient=True,
                    ) from None
                continue
            conn.settimeout(None)
            return conn

    @property
    def memory_mb(self) -> int:
        return self.limits.memory_mb

    def resize(self, memory_mb: int) -> None:
        """Give a running (pooled) container a function's memory limit, CPU weight and CPU cap."""
        limits = self.limits.resized(memory_mb)
        self.host.update(
            self.id, memory_mb=memory_mb, cpu_shares=limits.cpu_shares, **limits.cpu_cap()
        )
        self.limits = limits

    def hand_over(self, package_dir: Path) -> None:
        """Put a function's unpacked package at ``/var/task`` (hard links, so it is instant)."""
        task = self.directory / "task"
        if task.exists():
            shutil.rmtree(task)
        shutil.copytree(package_dir, task, copy_function=_link_or_copy)

    def load(self, message: dict[str, Any], deadline: float, tail: LogTail) -> Reply:
        """Import the handler; ``ChannelTimeout``/``ChannelClosed`` if it hangs or dies."""
        frame = self.channel.request(
            {"type": "load", "task_dir": TASK_DIR, **message}, deadline, tail
        )
        return self._reply(frame, expect="loaded")

    def invoke(self, message: dict[str, Any], deadline: float, tail: LogTail) -> Reply:
        """Run the handler on one event; ``ChannelTimeout``/``ChannelClosed`` as for ``load``."""
        frame = self.channel.request({"type": "invoke", **message}, deadline, tail)
        return self._reply(frame, expect="result")

    @staticmethod
    def _reply(frame: dict[str, Any], expect: str) -> Reply:
        kind = frame.get("type")
        if kind == expect == "loaded":
            return Reply(ok=True)
        if kind == "result":
            clean = frame.get("clean") is True
            left = frame.get("left")
            left = str(left)[:200] if left is not None else None
            spent = frame.get("cleanup_us")
            cleanup_us = spent if type(spent) is int and spent >= 0 else None
            if frame.get("ok"):
                return Reply(
                    ok=True,
                    result=frame.get("result"),
                    clean=clean,
                    left=left,
                    cleanup_us=cleanup_us,
                )
            error = frame.get("error")
            if isinstance(error, dict):
                return Reply(ok=False, error=error, clean=clean, left=left, cleanup_us=cleanup_us)
        raise ChannelClosed(f"agent sent {str(frame)[:200]} instead of {expect!r}")

    def runs_only_the_agent(self) -> bool | None:
        """Whether docker-init and the agent's thread are all that run; None if unseen.

        Read from the kernel, not asked of the agent: the function shares the
        agent's process and could make it say anything.
        """
        tasks = self.probe.tasks()
        return None if tasks is None else tasks <= IDLE_TASKS

    def tmp_used_bytes(self) -> int | None:
        """Bytes of files in the container's ``/tmp``; readable after it has died, until destroyed."""
        return self.probe.tmp_used_bytes()

    def usage_mark(self) -> int | None:
        """Before a run: the CPU counter now, with the memory high-water mark reset."""
        self.probe.reset_peak()
        return self.probe.cpu_ns()

    def usage_since(self, mark: int | None) -> RunUsage:
        """After a run: its CPU time and the memory high-water mark (see ``probe``)."""
        now = self.probe.cpu_ns()
        peak = self.probe.peak_bytes()
        return RunUsage(
            cpu_ms=None if mark is None or now is None else round((now - mark) / 1e6, 3),
            peak_memory_mb=None if peak is None else round(peak / 2**20, 2),
        )

    def exit_state(self) -> dict[str, Any]:
        """The container's ``State`` once it has exited (or after ``EXIT_WAIT_S``)."""
        self.host.wait(self.id, EXIT_WAIT_S)
        return self.host.state(self.id) or {}

    def destroy(self) -> None:
        """Close the connection, remove the container and its directory; only the first call acts."""
        with self._destroy_lock:
            if self.destroyed:
                return
            self.destroyed = True
        # Remove first: a thread still talking to the agent then sees the connection drop.
        try:
            self.host.remove(self.id)
        finally:
            self.channel.close()
            self.probe.close()
            shutil.rmtree(self.directory, ignore_errors=True)
