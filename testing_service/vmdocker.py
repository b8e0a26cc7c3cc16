"""A played VM's own Docker Engine: a second ``dockerd`` in the VM's network namespace.

A real host runs its worker against the Docker Engine on that host, whose bridges,
iptables rules and routes live in the host's network stack. To show what a worker
sets up on such a machine (the egress network and its firewall) without touching
the machine's own engine, the VM player can give a VM an engine of its own:

- ``dockerd`` entered into the VM's netns only (``nsenter --net``, not ``ip netns
  exec``: that remounts ``/sys`` and hides the cgroup hierarchies dockerd needs),
  so its bridges and its iptables chains are the VM's, not the machine's;
- its own ``--data-root``, ``--exec-root``, ``--pidfile`` and socket, and no
  ``--containerd``: with no system containerd socket, dockerd starts a containerd
  of its own under its exec-root, so the two engines share no state; the machine's
  engine keeps its containerd under ``/var/run/docker``;
- ``--bridge=none``: no default bridge (a second ``docker0``) is made; the worker
  makes the only network it needs;
- the runtime images copied in from the machine's engine (``docker save`` piped to
  ``docker load``), since a VM has no registry to pull from here.

Its directories sit under a short ``/tmp/vmd-*``: the engine's and its containerd's
sockets must fit a Unix socket path (108 bytes). ``stop`` removes the engine's
containers, stops it (and its containerd), unmounts what it left mounted and
deletes its directories.

API::

    engine = VMDocker("vmpab12-2").start()
    engine.load(["lambda-os/runtime:python3.11"])
    engine.url                  # unix:///tmp/vmd-…/docker.sock, for DOCKER_HOST
    engine.stop()
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Self

import docker
import docker.errors

LOGGER = logging.getLogger(__name__)
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
LOAD_TIMEOUT_S = 300


class EngineFailed(Exception):
    """The VM's engine did not start, or an image could not be copied into it."""


class VMDocker:
    """One ``dockerd`` of a VM's own, in that VM's netns."""

    def __init__(self, netns: str, root: Path | None = None) -> None:
        self.netns = netns
        self.root = root or Path(tempfile.mkdtemp(prefix="vmd-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.pidfile = self.root / "docker.pid"
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        """The engine's command line, entered into the VM's network namespace only."""
        return [
            "nsenter",
            f"--net=/run/netns/{self.netns}",
            "dockerd",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.pidfile}",
            f"--host={self.url}",
            "--bridge=none",
            # Both engines would otherwise read /etc/docker/daemon.json, the machine's.
            f"--config-file={self.root / 'daemon.json'}",
        ]

    def start(self) -> Self:
        """Start the engine and wait until it answers; ``EngineFailed`` (and nothing left) if not."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "daemon.json").write_text("{}\n")
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115 - the engine writes it
        try:
            self.process = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while not self._answers():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    tail = (self.root / "dockerd.log").read_text(errors="replace")[-2000:]
                    raise EngineFailed(f"dockerd in netns {self.netns} did not start: {tail}")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        LOGGER.info("engine of netns %s answers on %s", self.netns, self.url)
        return self

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            with self.client() as client:
                return bool(client.ping())
        except docker.errors.DockerException:
            return False

    def client(self) -> closing[docker.DockerClient]:
        """A client on this engine, closed when the ``with`` ends."""
        return closing(docker.DockerClient(base_url=self.url, timeout=30))

    def load(self, images: Iterable[str], source: str | None = None) -> None:
        """Copy ``images`` from the machine's engine (or ``source``) into this one."""
        source_env = {**os.environ, **({"DOCKER_HOST": source} if source else {})}
        for image in images:
            save = subprocess.Popen(
                ["docker", "save", image],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=source_env,
            )
            try:
                loaded = subprocess.run(
                    ["docker", "--host", self.url, "load", "--quiet"],
                    stdin=save.stdout,
                    capture_output=True,
                    timeout=LOAD_TIMEOUT_S,
                    check=False,
                )
            finally:
                assert save.stdout is not None
                save.stdout.close()
                saved = save.wait()
            if saved != 0 or loaded.returncode != 0:
                raise EngineFailed(
                    f"copying {image} into the engine of {self.netns} failed: "
                    f"{save.stderr.read().decode(errors='replace') if save.stderr else ''}"
                    f"{loaded.stderr.decode(errors='replace')}"
                )
            LOGGER.info("loaded %s into the engine of netns %s", image, self.netns)

    def stop(self) -> None:
        """Remove the engine's containers, stop it and its containerd, delete its directories."""
        if self.process is not None and self.process.poll() is None:
            self._remove_containers()
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._kill_containerd()
        self._unmount()
        shutil.rmtree(self.root, ignore_errors=True)

    def _remove_containers(self) -> None:
        try:
            with self.client() as client:
                for container in client.containers.list(all=True):
                    container.remove(force=True)
        except docker.errors.DockerException as exc:
            LOGGER.warning("engine of netns %s: containers not removed: %s", self.netns, exc)

    def _kill_containerd(self) -> None:
        """The engine stops its containerd; this is for an engine that was killed."""
        pidfile = self.root / "exec" / "containerd" / "containerd.pid"
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self.root).encode() in cmdline:  # still ours, not a reused pid
            os.kill(pid, signal.SIGKILL)

    def _unmount(self) -> None:
        """Lazily unmount what the engine left mounted under its root (deepest first)."""
        with open("/proc/self/mounts") as mounts:
            points = [line.split()[1] for line in mounts]
        prefix = f"{self.root}/"
        for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
