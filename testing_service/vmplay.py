"""Plays the test cloud's VMs: Nova's fake driver boots nothing, so this starts their workers.

For every ACTIVE server of a platform the player reads the cloud-init user data the
controller wrote (``provisioner.userdata``), takes the worker's environment file from
its ``write_files``, renders ``{{ v1.instance_id }}`` with the server's id and starts
``lambda-os worker`` with that environment in a network namespace of the VM's own.
Each namespace is joined by a veth to a bridge the player makes in the root
namespace, on the first /24 of 198.18.0.0/15 (RFC 2544 benchmarking: never routed)
that no route on the machine covers, so two players (two test runs) work side by
side; a VM gets only its /24 link and no default route, so nothing it runs can
leave the machine. A server that disappears from the cloud loses its worker and
namespace, as a deleted VM would.

The platform's broker and catalogue listen on loopback only, and RabbitMQ's guest
user logs in from loopback only. The player leaves them so and runs a TCP relay of
its own per service (``testing_service.relay``) on the bridge address, forwarding
to the loopback target: only the VMs reach them, and a relayed connection arrives
from 127.0.0.1, whichever broker user the worker names.

API (stable; other suites use it)::

    relays = relay_targets(amqp_url=settings.amqp_url, mongo_url=settings.mongo_url)
    with VMPlayer(cloud, state_root=Path("/tmp/vmp"), extra_env={...}, relays=relays) as player:
        player.bridge_address   # the bridge on the VMs' /24, e.g. 198.18.3.1
        player.relays           # "amqp" -> "198.18.3.1:5672", "mongo" -> "198.18.3.1:<port>"
        player.relayed_url("amqp", settings.amqp_url)  # what LAMBDA_OS_WORKER_AMQP_URL says
        player.sync()           # start VMs for new ACTIVE servers, stop gone ones
        player.vms              # server id -> PlayedVM (netns, address, process)
        player.restart_worker(server_id)  # kill -9 its worker; systemd starts it again
        player.crash(server_id)           # the VM dies whole; its server stays
    # leaving stops every worker and relay and removes the netns, veths and bridge it made

``own_docker=True`` gives each VM a Docker Engine of its own in its netns
(``testing_service.vmdocker``), with ``own_docker_images`` copied into it, and points
the worker's ``DOCKER_HOST`` there; otherwise workers share the machine's engine.

``extra_env`` is for test-only overrides (e.g. a short heartbeat); the worker's URLs
come from the user data, so the controller must write the relayed ones
(``LAMBDA_OS_WORKER_AMQP_URL`` / ``LAMBDA_OS_WORKER_MONGO_URL``).

CLI: ``python -m testing_service.vmplay [--own-docker]`` plays the VMs of the platform
the settings name until interrupted, relaying to the settings' broker and catalogue.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import docker
import yaml

from provisioner.cloud import Cloud
from provisioner.docker.host import OWNER_LABEL
from provisioner.userdata import ENV_FILE, SERVER_ID_PLACEHOLDER
from testing_service.relay import Relay, relayed_url, url_target
from testing_service.vmdocker import VMDocker

LOGGER = logging.getLogger(__name__)
RESERVED = ipaddress.ip_network("198.18.0.0/15")
# Held while a player picks its /24 and puts it on its bridge, so two players
# starting together cannot both pick the same free one.
SUBNET_LOCK = Path("/tmp/lambda-os-vmplay.lock")
_ROUTE_TYPES = {"unicast", "local", "broadcast", "multicast", "anycast"}
_ROUTE_TYPES |= {"unreachable", "blackhole", "prohibit", "throw", "nat"}
WORKER = [str(Path(sys.executable).with_name("lambda-os")), "worker"]
RUNTIME_IMAGES = ("lambda-os/runtime:python3.11",)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def routed_networks() -> list[ipaddress.IPv4Network]:
    """Every network a route of this machine's root namespace covers, in any table."""
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], check=True, capture_output=True, text=True
    )
    networks = []
    for line in routes.stdout.splitlines():
        words = line.split()
        dest = words[1] if words[0] in _ROUTE_TYPES and len(words) > 1 else words[0]
        if dest != "default":
            networks.append(ipaddress.ip_network(dest, strict=False))
    return networks


def range_in_use(network: ipaddress.IPv4Network = RESERVED) -> bool:
    """Whether any route on this machine already covers part of ``network``."""
    return any(routed.overlaps(network) for routed in routed_networks())


def free_subnet() -> ipaddress.IPv4Network:
    """The first /24 of the benchmarking range that no route on this machine covers."""
    routed = routed_networks()
    for subnet in RESERVED.subnets(new_prefix=24):
        if not any(network.overlaps(subnet) for network in routed):
            return subnet
    raise RuntimeError(f"every /24 of {RESERVED} is routed on this machine: refusing to play VMs")


def relay_targets(amqp_url: str | None = None, mongo_url: str | None = None) -> dict[str, str]:
    """The relays a platform's VMs need: its broker's and catalogue's ``host:port``."""
    targets = {}
    if amqp_url:
        targets["amqp"] = url_target(amqp_url)
    if mongo_url:
        targets["mongo"] = url_target(mongo_url)
    return targets


def worker_env(user_data: str, server_id: str) -> dict[str, str]:
    """The environment file cloud-init would write, rendered for ``server_id``."""
    lines = [line for line in user_data.splitlines() if not line.startswith("## template")]
    config = yaml.safe_load("\n".join(lines))
    for entry in config.get("write_files", []):
        if entry.get("path") == ENV_FILE:
            content = entry["content"].replace(SERVER_ID_PLACEHOLDER, server_id)
            return dict(line.split("=", 1) for line in content.splitlines() if "=" in line)
    raise ValueError(f"user data writes no {ENV_FILE}")


def remove_containers_of(pid: int) -> int:
    """Remove, running or not, the containers the worker process ``pid`` of this machine
    started on the shared engine (``provisioner.docker.host`` labels each with its owner)."""
    client = docker.from_env()
    prefix = f"{socket.gethostname()}/{pid}/"
    removed = 0
    try:
        for container in client.containers.list(all=True, filters={"label": OWNER_LABEL}):
            if container.labels.get(OWNER_LABEL, "").startswith(prefix):
                container.remove(force=True)
                removed += 1
    finally:
        client.close()
    return removed


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
        relays: Mapping[str, str] | None = None,
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
        self._targets = dict(relays or {})
        self._tag = uuid.uuid4().hex[:4]
        self.bridge = f"vmp{self._tag}"
        # Known once started: the /24 is picked then, from the routes of that moment.
        self.subnet = RESERVED
        self.bridge_address = ""
        self.relays: dict[str, str] = {}  # service name -> the relay's host:port
        self._relays: list[Relay] = []
        self.vms: dict[str, PlayedVM] = {}
        self._next = 2
        self._started = False
        self._pending: list[tuple[str, str]] = []

    def start(self) -> Self:
        self._root.mkdir(parents=True, exist_ok=True)
        with open(SUBNET_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.subnet = free_subnet()
            self.bridge_address = str(self.subnet.network_address + 1)
            _ip("link", "add", self.bridge, "type", "bridge")
            self._started = True
            _ip("addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        try:
            for name, target in self._targets.items():
                port = int(target.rpartition(":")[2])
                relay = Relay(self.bridge_address, target, self.subnet, port=port).start()
                self._relays.append(relay)
                self.relays[name] = relay.address
        except BaseException:
            self.stop()
            raise
        return self

    def relayed_url(self, name: str, url: str) -> str:
        """``url`` as a VM must write it: to relay ``name`` on the bridge (user kept)."""
        return relayed_url(url, self.relays[name])

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
        address = str(self.subnet.network_address + n)
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
        process = self._spawn_worker(netns, env, state_dir)
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

    def _spawn_worker(
        self, netns: str, env: dict[str, str], state_dir: Path
    ) -> subprocess.Popen[bytes]:
        base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        log = open(state_dir / "worker.log", "ab")  # noqa: SIM115 - the process owns it
        return subprocess.Popen(
            ["ip", "netns", "exec", netns, *WORKER],
            env={**base, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, server_id: str) -> None:
        """SIGKILL a VM's worker (a crashed host), leaving its netns."""
        vm = self.vms[server_id]
        os.killpg(vm.process.pid, signal.SIGKILL)
        vm.process.wait()

    def restart_worker(self, server_id: str) -> None:
        """``kill -9`` a VM's worker and start it again at once, as the host's systemd unit
        (``Restart=on-failure``) does: the VM, its engine and the containers the dead
        worker started stay as they were."""
        vm = self.vms[server_id]
        self.kill(server_id)
        vm.process = self._spawn_worker(vm.netns, vm.env, vm.state_dir)
        LOGGER.info("restarted the worker of server %s after kill -9", server_id)

    def crash(self, server_id: str) -> None:
        """The VM dies whole, as at a power cut: its worker, the containers it ran and its
        connections go at once. The server stays in the cloud for the controller to
        notice; the player never starts this VM again."""
        vm = self.vms[server_id]
        worker_pid = vm.process.pid
        self.kill(server_id)
        if vm.engine is not None:
            self._stop_engine(vm.netns)
        else:
            remove_containers_of(worker_pid)
        for relay in self._relays:
            relay.cut(vm.address)
        LOGGER.info("crashed the VM of server %s", server_id)

    def _stop_vm(self, vm: PlayedVM) -> None:
        if vm.process.poll() is None:
            os.killpg(vm.process.pid, signal.SIGTERM)
            try:
                vm.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(vm.process.pid, signal.SIGKILL)
                vm.process.wait()
        self._stop_engine(vm.netns)
        for relay in self._relays:
            relay.cut(vm.address)
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
        for relay in self._relays:
            relay.stop()
        self._relays.clear()
        self.relays.clear()
        if self._started:
            subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)
            self._started = False
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    import argparse
    import time

    from lambda_os.settings import Settings
    from provisioner.nova import connect

    parser = argparse.ArgumentParser(
        prog="python -m testing_service.vmplay",
        description="Play the VMs of the platform the settings name, until interrupted.",
    )
    parser.add_argument(
        "--own-docker",
        action="store_true",
        help="give each VM a Docker Engine of its own in its netns (slower to start)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    settings = Settings.from_env()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    relays = relay_targets(settings.amqp_url, settings.mongo_url)
    player = VMPlayer(
        connect(settings),
        Path(f"/tmp/vmplay-{os.getpid()}"),
        relays=relays,
        own_docker=args.own_docker,
    )
    with player:
        print(f"bridge {player.bridge} at {player.bridge_address}; for the controller:")
        print(f"LAMBDA_OS_WORKER_AMQP_URL={player.relayed_url('amqp', settings.amqp_url)}")
        if settings.mongo_url:
            print(f"LAMBDA_OS_WORKER_MONGO_URL={player.relayed_url('mongo', settings.mongo_url)}")
        try:
            while not stop.is_set():
                player.sync()
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
