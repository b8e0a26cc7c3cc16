"""The platform end to end on the test cloud: Nova servers the controller boots, played as hosts.

Not a conftest (see ``cluster_helpers``): tests import the ``nova_cluster`` fixture
from here. A test asks it for a cluster with the settings its scenario needs
(``nova_cluster(scale_max_hosts=3, ...)``) and gets:

- a cloud of its own platform name (``make_cloud``), so ``servers()`` is this test's;
- a ``VMPlayer`` with relays to the session's RabbitMQ and FerretDB, on a thread
  that plays every ACTIVE server within a fraction of a second, as a VM boots;
- settings whose worker URLs name those relays, so the user data the controller
  writes reaches the broker and catalogue from inside a VM;
- a router, with the calls of ``cluster_helpers.LiveCluster`` (``function``,
  ``send``, ``finished``), on queues and a catalogue database of the test's own;
- a controller, in this process (``start_controller``) or as ``lambda-os
  controller`` (``controller_process``), started when the test says.

Intervals are short (heartbeats every half second, a scaling pass every half
second, no cooldown unless asked) so a scenario runs in seconds. Everything made is
removed afterwards: controllers, workers, netns and relays, queues, servers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pika
import pytest

from lambda_os.catalogue import Catalogue
from lambda_os.settings import OPTIONS, Settings
from listener.topology import Topology, declare, delete
from provisioner.cloud import Server
from provisioner.controller import Controller
from provisioner.nova import NovaCloud, connect
from testing_service.vmplay import VMPlayer, relay_targets

# The router and its calls are the cluster suite's; one copy of them serves both suites.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))
from cluster_helpers import LiveCluster

LOGGER = logging.getLogger(__name__)
HEARTBEAT_S = 0.5
LOST_AFTER = 6
SLOTS = 2
HOST_MEMORY_MB = 1024
T = TypeVar("T")
# The hosts' own settings, which user data leaves to the image's defaults: small
# hosts (2 slots, 1 GiB) that a handful of events fill, and no pre-started pool
# containers, which would hold memory and load the machine the tests share.
WORKER_ENV = {
    "LAMBDA_OS_CONCURRENCY": str(SLOTS),
    "LAMBDA_OS_RESERVED_SLOTS": "0",
    "LAMBDA_OS_POOL_SIZE": "0",
    "LAMBDA_OS_HOST_MEMORY_MB": str(HOST_MEMORY_MB),
}


def eventually(check: Callable[[], T], what: str, timeout_s: float = 60.0) -> T:
    """``check()`` once it is truthy; fails the test saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout_s:.0f} s (last: {value!r})")
        time.sleep(0.2)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes ``Settings.from_env`` read ``settings`` back."""
    defaults = Settings()
    env = {}
    for option in OPTIONS:
        value = getattr(settings, option.field)
        if value is not None and value != getattr(defaults, option.field):
            env[option.env] = str(value)
    return env


class NovaCluster:
    """One test's platform: its cloud, played VMs, router and controller(s)."""

    def __init__(
        self,
        cloud: NovaCloud,
        catalogue: Catalogue,
        settings: Settings,
        player: VMPlayer,
        work: Path,
    ) -> None:
        self.cloud = cloud
        self.catalogue = catalogue
        self.settings = settings
        self.player = player
        self.work = work
        self.live = LiveCluster(settings, catalogue, work)
        self._stop = threading.Event()
        self._play_lock = threading.Lock()
        self._player_thread = threading.Thread(target=self._play, name="vmplay", daemon=True)
        self._player_thread.start()
        self._controller_stop: threading.Event | None = None
        self._controller_thread: threading.Thread | None = None
        self._processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []

    # -- the VMs ------------------------------------------------------------------

    def _play(self) -> None:
        while not self._stop.is_set():
            try:
                with self._play_lock:
                    self.player.sync()
            except Exception:  # a failed pass is tried again, as a booting VM would retry
                LOGGER.exception("playing the VMs failed; trying again")
            self._stop.wait(0.3)

    def servers(self) -> list[Server]:
        """The platform's servers, each once (Nova can list one twice while it builds)."""
        return list({s.id: s for s in self.cloud.servers()}.values())

    def server_of(self, host_id: str) -> Server:
        (server,) = [s for s in self.servers() if s.host_id == host_id]
        return server

    def delete_vm(self, server_id: str) -> None:
        """Delete a server through the cloud directly, its VM dying with it (no drain)."""
        with self._play_lock:
            self.player.kill(server_id)
        self.cloud.delete(server_id)

    def crash_vm(self, server_id: str) -> None:
        """The VM dies whole (worker, containers, connections); its server stays in Nova."""
        with self._play_lock:
            self.player.crash(server_id)

    def restart_worker(self, server_id: str) -> None:
        """``kill -9`` the VM's worker, which its systemd unit starts again."""
        with self._play_lock:
            self.player.restart_worker(server_id)

    def active_hosts(self) -> set[str]:
        return {h.id for h in self.catalogue.list_hosts("active")}

    def wait_for_hosts(self, count: int, timeout_s: float = 60.0) -> set[str]:
        """The active hosts once there are ``count``, each on a server and seen by the routers."""

        def ready() -> set[str] | None:
            hosts = self.active_hosts()
            on_servers = {s.host_id for s in self.servers() if s.status == "ACTIVE"}
            seen = {h.id for h in self.live._routers[0].router.hosts}
            if len(hosts) == count and hosts <= on_servers and hosts <= seen:
                return hosts
            return None

        return eventually(ready, f"{count} active hosts on their servers", timeout_s)

    def exactly_once(self, function: Any, event_ids: list[str]) -> dict[str, Any]:
        """Each event's one execution once all are final; fails on a lost or second record."""
        records = self.live.finished(function, len(event_ids), timeout_s=90)
        by_event: dict[str, list[Any]] = {}
        for record in records:
            by_event.setdefault(record.event_id, []).append(record)
        assert sorted(by_event) == sorted(event_ids), "an event was lost or is not ours"
        assert all(len(found) == 1 for found in by_event.values()), by_event
        failed = [r for r in records if r.status != "succeeded"]
        assert not failed, [(r.event_id, r.status, r.error) for r in failed]
        return {event_id: found[0] for event_id, found in by_event.items()}

    # -- controllers --------------------------------------------------------------

    def start_controller(self, **changes: Any) -> Controller:
        """A controller in this process on its own thread, as ``lambda-os controller`` runs one."""
        settings = dataclasses.replace(self.settings, **changes)
        controller = Controller(connect(settings), self.catalogue, settings)
        self._controller_stop = threading.Event()
        self._controller_thread = threading.Thread(
            target=controller.run, args=(self._controller_stop,), name="controller", daemon=True
        )
        self._controller_thread.start()
        return controller

    def stop_controller(self) -> None:
        if self._controller_stop is not None and self._controller_thread is not None:
            self._controller_stop.set()
            self._controller_thread.join(timeout=30)
            self._controller_stop = self._controller_thread = None

    def controller_process(self) -> subprocess.Popen[bytes]:
        """``lambda-os controller`` on this platform's settings, as a user starts it."""
        env = {
            **{k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ},
            **settings_env(self.settings),
        }
        log = open(self.work / f"controller-{len(self._processes)}.log", "ab")  # noqa: SIM115
        self._logs.append(log)
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("lambda-os")), "controller"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._processes.append(process)
        return process

    # -- clean-up -----------------------------------------------------------------

    def stop(self) -> None:
        self.stop_controller()
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for log in self._logs:
            log.close()
        hosts = [h.id for h in self.catalogue.list_hosts()]
        self._stop.set()
        self._player_thread.join(timeout=30)
        # All workers drain at once; the player would stop them one after another.
        running = [vm.process for vm in self.player.vms.values() if vm.process.poll() is None]
        for process in running:
            os.killpg(process.pid, signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass  # the player's stop kills it
        self.player.stop()
        self.live.stop()
        connection = pika.BlockingConnection(pika.URLParameters(self.settings.amqp_url))
        channel = connection.channel()
        for host_id in hosts:
            channel.queue_delete(self.live.topology.host_queue(host_id))
        connection.close()
        for server in self.servers():
            self.cloud.delete(server.id)


@pytest.fixture
def nova_cluster(
    make_cloud, openstack_settings, amqp_url, mongo_url, real_catalogue, runtime_image
) -> Iterator[Callable[..., NovaCluster]]:
    """Makes this test's ``NovaCluster`` with the settings changes its scenario needs."""
    made: list[NovaCluster] = []
    cleanup: list[Callable[[], None]] = []

    def build(
        cloud: NovaCloud, player: VMPlayer, work: Path, suffix: str, changes: dict[str, Any]
    ) -> NovaCluster:
        quick = {
            "placement": "cluster",
            "heartbeat_interval_s": HEARTBEAT_S,
            "host_lost_after": LOST_AFTER,
            "sweep_interval_s": 1.0,
            "scale_min_hosts": 1,
            "scale_max_hosts": 1,
            "scale_cooldown_s": 0.0,
            "scale_interval_s": 0.5,
            "scale_register_grace_s": 60.0,
        }
        settings = dataclasses.replace(
            openstack_settings,
            cloud_platform=cloud.platform,
            mongo_url=mongo_url,
            mongo_db=real_catalogue._db.name,
            amqp_url=amqp_url,
            events_queue=f"test.nova.{suffix}",
            dead_letter_queue=f"test.nova.dead.{suffix}",
            runtime_image_prefix=runtime_image.rsplit(":", 1)[0],
            worker_amqp_url=player.relayed_url("amqp", amqp_url),
            worker_mongo_url=player.relayed_url("mongo", mongo_url),
            **{**quick, **changes},
        )
        topology = Topology.from_settings(settings)
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        declare(connection.channel(), topology)
        connection.close()

        def forget_topology() -> None:
            connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
            delete(connection.channel(), topology)
            connection.close()

        cleanup.append(forget_topology)
        return NovaCluster(cloud, real_catalogue, settings, player, work)

    def make(worker_env: dict[str, str] | None = None, **changes: Any) -> NovaCluster:
        """A cluster on settings ``changes``; ``worker_env`` adds to the hosts' ``WORKER_ENV``."""
        cloud = make_cloud()
        work = Path(tempfile.mkdtemp(prefix="novacl-", dir="/tmp"))
        cleanup.append(lambda: shutil.rmtree(work, ignore_errors=True))
        suffix = uuid.uuid4().hex[:10]
        env = {
            **WORKER_ENV,
            "LAMBDA_OS_RUNTIME_IMAGE_PREFIX": runtime_image.rsplit(":", 1)[0],
            **(worker_env or {}),
        }
        player = VMPlayer(
            connect(dataclasses.replace(openstack_settings, cloud_platform=cloud.platform)),
            work / "vms",
            extra_env=env,
            relays=relay_targets(amqp_url=amqp_url, mongo_url=mongo_url),
        ).start()
        try:
            cluster = build(cloud, player, work, suffix, changes)
        except BaseException:
            player.stop()
            raise
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.stop()
        for step in reversed(cleanup):
            step()
