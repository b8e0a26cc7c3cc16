"""Plays the test cloud's VMs: Nova's fake driver boots nothing, so this starts their workers.

For every ACTIVE server of a platform the player reads the cloud-init user data the
controller wrote (``provisioner.userdata``), takes the worker's environment file from
its ``write_files``, renders ``{{ v1.instance_id }}`` with the server's id and starts
``lambda-os worker`` with that environment in a network namespace of the VM's own.
Each namespace is joined by a veth to a bridge the player makes in the root
namespace, on 198.18.0.0/15 (RFC 2544 benchmarking: never routed); a VM gets only its
/24 link and no default route, so nothing it runs can leave the machine. A server
that disappears from the cloud loses its worker and namespace, as a deleted VM would.

API (stable; other suites use it)::

    with VMPlayer(cloud, state_root=Path("/tmp/vmp"), extra_env={...}) as player:
        player.sync()           # start VMs for new ACTIVE servers, stop gone ones
        player.vms              # server id -> PlayedVM (netns, address, process)
    # leaving stops every worker and removes the netns, veths and bridge it made

``own_docker=True`` gives each VM a Docker Engine of its own in its netns
(``testing_service.vmdocker``), with ``own_docker_images`` copied into it, and points
the worker's ``DOCKER_HOST`` there; otherwise workers share the machine's engine.

``extra_env`` is for test-only overrides (e.g. a short heartbeat); the worker's URLs
must already name the bridge address (``LAMBDA_OS_WORKER_AMQP_URL`` /
``LAMBDA_OS_WORKER_MONGO_URL`` on the controller's side).

CLI: ``python -m testing_service.vmplay`` plays the VMs of the platform the settings
name until interrupted.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import yaml

from provisioner.cloud import Cloud
from provisioner.userdata import ENV_FILE, SERVER_ID_PLACEHOLDER
from testing_service.vmdocker import VMDocker

LOGGER = logging.getLogger(__name__)
SUBNET = ipaddress.ip_network("198.18.0.0/24")
RESERVED = ipaddress.ip_network("198.18.0.0/15")
WORKER = [str(Path(sys.executable).with_name("lambda-os")), "worker"]
RUNTIME_IMAGES = ("lambda-os/runtime:python3.11",)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def range_in_use() -> bool:
    """Whether any route on this machine already covers the benchmarking range."""
    routes = subprocess.run(["ip", "-4", "route"], check=True, capture_output=True, text=True)
    for line in routes.stdout.splitlines():
        dest = line.split()[0]
        if dest != "default" and ipaddress.ip_network(dest, strict=False).overlaps(RESERVED):
            return True
    return False


def worker_env(user_data: str, server_id: str) -> dict[str, str]:
    """The environment file cloud-init would write, rendered for ``server_id``."""
    lines = [line for line in user_data.splitlines() if not line.startswith("## template")]
    config = yaml.safe_load("\n".join(lines))
    for entry in config.get("write_files", []):
        if entry.get("path") == ENV_FILE:
            content = entry["content"].replace(SERVER_ID_PLACEHOLDER, server_id)
            return dict(line.split("=", 1) for line in content.splitlines() if "=" in line)
    raise ValueError(f"user data writes no {ENV_FILE}")


@dataclass
class PlayedVM:
    server_id: str
    netns: str
    veth: str
    address: str
    state_dir: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)
    engine: VMDocker | None = None


class VMPlayer:
    """Starts and stops one worker per ACTIVE server, each in a netns of its own."""

    def __init__(
        self,
        cloud: Cloud,
        state_root: Path,
        extra_env: dict[str, str] | None = None,
        *,
        own_docker: bool = False,
        own_docker_images: tuple[str, ...] = RUNTIME_IMAGES,
    ) -> None:
        self._cloud = cloud
        self._own_docker = own_docker
        self._own_images = own_docker_images
        self._engines: dict[str, VMDocker] = {}  # netns -> engine, so stop() finds half-made ones
        self._root = state_root
        self._extra = dict(extra_env or {})
        self._tag = uuid.uuid4().hex[:4]
        self.bridge = f"vmp{self._tag}"
        self.bridge_address = str(SUBNET.network_address + 1)
        self.vms: dict[str, PlayedVM] = {}
        self._next = 2
        self._started = False
        self._pending: list[tuple[str, str]] = []

    def start(self) -> Self:
        if range_in_use():
            raise RuntimeError(f"{RESERVED} is routed on this machine: refusing to play VMs")
        self._root.mkdir(parents=True, exist_ok=True)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        self._started = True
        return self

    def sync(self) -> None:
        """Play every ACTIVE server not yet played; stop those the cloud no longer has."""
        servers = {s.id: s for s in self._cloud.servers()}
        for server_id in list(self.vms):
            if server_id not in servers or servers[server_id].status != "ACTIVE":
                self._stop_vm(self.vms.pop(server_id))
        for server in servers.values():
            if server.status == "ACTIVE" and server.id not in self.vms and server.user_data:
                self._start_vm(server.id, server.user_data)

    def _start_vm(self, server_id: str, user_data: str) -> PlayedVM:
        n = self._next
        self._next += 1
        netns = f"vmp{self._tag}-{n}"
        veth = f"vmp{self._tag}h{n}"  # ≤ 15 chars: interface names are IFNAMSIZ-bounded
        address = str(SUBNET.network_address + n)
        _ip("netns", "add", netns)
        # Known before anything else is made, so stop() removes a half-made VM too.
        self._pending.append((veth, netns))
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", veth, "master", self.bridge, "up")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        state_dir = self._root / f"vm{n}"
        state_dir.mkdir(parents=True, exist_ok=True)
        env = {**worker_env(user_data, server_id), "LAMBDA_OS_STATE_DIR": str(state_dir)}
        env.update(self._extra)
        if self._own_docker:
            engine = self._engines[netns] = VMDocker(netns)
            engine.start().load(self._own_images)
            env["DOCKER_HOST"] = engine.url
        base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        log = open(state_dir / "worker.log", "ab")  # noqa: SIM115 - the process owns it
        process = subprocess.Popen(
            ["ip", "netns", "exec", netns, *WORKER],
            env={**base, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        LOGGER.info(
            "playing server %s as %s (%s) in netns %s",
            server_id,
            address,
            env.get("LAMBDA_OS_HOST_ID"),
            netns,
        )
        self.vms[server_id] = PlayedVM(
            server_id, netns, veth, address, state_dir, process, env, self._engines.get(netns)
        )
        self._pending.remove((veth, netns))
        return self.vms[server_id]

    def kill(self, server_id: str) -> None:
        """SIGKILL a VM's worker (a crashed host), leaving its netns."""
        vm = self.vms[server_id]
        os.killpg(vm.process.pid, signal.SIGKILL)
        vm.process.wait()

    def _stop_vm(self, vm: PlayedVM) -> None:
        if vm.process.poll() is None:
            os.killpg(vm.process.pid, signal.SIGTERM)
            try:
                vm.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(vm.process.pid, signal.SIGKILL)
                vm.process.wait()
        self._stop_engine(vm.netns)
        subprocess.run(["ip", "link", "del", vm.veth], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", vm.netns], check=False, capture_output=True)

    def _stop_engine(self, netns: str) -> None:
        engine = self._engines.pop(netns, None)
        if engine is not None:
            engine.stop()

    def stop(self) -> None:
        """Stop every worker and remove every netns, veth and the bridge made."""
        for server_id in list(self.vms):
            self._stop_vm(self.vms.pop(server_id))
        for veth, netns in self._pending:
            self._stop_engine(netns)
            subprocess.run(["ip", "link", "del", veth], check=False, capture_output=True)
            subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
        self._pending.clear()
        if self._started:
            subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)
            self._started = False
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    import time

    from lambda_os.settings import Settings
    from provisioner.nova import connect

    logging.basicConfig(level=logging.INFO)
    settings = Settings.from_env()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with VMPlayer(connect(settings), Path(f"/tmp/vmplay-{os.getpid()}")) as player:
        print(f"bridge {player.bridge} at {player.bridge_address}: point the worker URLs there")
        try:
            while not stop.is_set():
                player.sync()
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
