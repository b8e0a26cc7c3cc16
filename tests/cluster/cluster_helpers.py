"""A live cluster for the suite: a router in this process, worker processes on the local engine.

Not a conftest: the API suites import their own ``conftest`` by name, which a
second one on the path would shadow; tests import the ``live_cluster`` fixture
from here.

Every test gets its own queues and catalogue database (on the session's FerretDB,
or ``MONGO_URL``); each worker process its own host id and short state directory
under /tmp (the agent's socket path must fit in 108 bytes). The router runs as it
would in ``lambda-os listener --placement cluster``: ``serve.router_parts``, its
listener and registry keeper on threads. Everything made is removed afterwards:
the queues, the worker processes and the containers a killed one left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from lambda_os.catalogue import Catalogue
from lambda_os.packages import inspect_package
from lambda_os.records import ExecutionRecord, FunctionRecord
from lambda_os.serve import router_parts
from lambda_os.settings import Settings
from listener.placement import HostLoad, home_host
from listener.topology import Topology, declare, delete

WORKER_PROCESS = Path(__file__).with_name("worker_process.py")
HEARTBEAT_S = 1.0
LOST_AFTER = 3
SLOTS = 2
HANDLER = b"""import time

def handler(event, context):
    start = time.time()
    time.sleep(event.get("sleep", 0))
    return {"n": event["n"], "start": start, "end": time.time()}
"""


class LiveCluster:
    """The router, the workers, and the calls a test makes on them."""

    def __init__(self, settings: Settings, catalogue: Catalogue, work: Path) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.work = work
        self.topology = Topology.from_settings(settings)
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[Any] = []
        self._state_dirs: list[str] = []
        self._stop = threading.Event()
        self._routers: list[Any] = []
        self._threads: list[threading.Thread] = []
        self.add_router()
        self.connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.replies = f"test.cluster.replies.{uuid.uuid4().hex[:10]}"
        self.channel.queue_declare(self.replies, durable=False)

    def add_router(self) -> Any:
        """Another router on the same queues and catalogue, joined as ``run_router`` joins."""
        parts = router_parts(self.settings)
        parts.keeper.join(self._stop)
        threads = [
            threading.Thread(target=parts.keeper.run, args=(self._stop,), daemon=True),
            threading.Thread(target=parts.relay.run, args=(self._stop,), daemon=True),
            threading.Thread(target=parts.listener.run, daemon=True),
        ]
        for thread in threads:
            thread.start()
        self._routers.append(parts)
        self._threads += threads
        return parts.router

    def start_worker(self, host_id: str, amqp_url: str | None = None) -> None:
        """A worker process for ``host_id``, on the shared broker URL or ``amqp_url``."""
        state_dir = tempfile.mkdtemp(prefix="lc-", dir="/tmp")
        self._state_dirs.append(state_dir)
        env = {
            **os.environ,
            "MONGO_URL": self.settings.mongo_url or "",
            "MONGO_DB": self.settings.mongo_db,
            "AMQP_URL": amqp_url or self.settings.amqp_url,
            "EVENTS_QUEUE": self.settings.events_queue,
            "DEAD_LETTER_QUEUE": self.settings.dead_letter_queue,
            "LAMBDA_OS_RUNTIME_IMAGE_PREFIX": self.settings.runtime_image_prefix,
            "LAMBDA_OS_STATE_DIR": state_dir,
            "LAMBDA_OS_HOST_ID": host_id,
            "LAMBDA_OS_SERVER_ID": f"nova-{host_id}",
            "LAMBDA_OS_CONCURRENCY": str(SLOTS),
            "LAMBDA_OS_RESERVED_SLOTS": "0",
            "LAMBDA_OS_POOL_SIZE": "1",
            "LAMBDA_OS_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
        }
        log = open(self.work / f"{host_id}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        self.workers[host_id] = subprocess.Popen(
            [sys.executable, str(WORKER_PROCESS)], env=env, stderr=log
        )

    def wait_for_hosts(self, *host_ids: str, timeout_s: float = 45.0) -> None:
        """Until each host is registered, active, and in the router's view."""
        deadline = time.monotonic() + timeout_s
        wanted = set(host_ids)
        while time.monotonic() < deadline:
            active = {h.id for h in self.catalogue.list_hosts("active")}
            views = [{h.id for h in parts.router.hosts} for parts in self._routers]
            if wanted <= active and all(wanted <= seen for seen in views):
                return
            time.sleep(0.2)
        pytest.fail(f"hosts {sorted(wanted)} did not register; see {self.work}/*.log")

    def function(self, name: str, **fields: Any) -> FunctionRecord:
        info = inspect_package(HANDLER, "main.py", "main.handler")
        base = {
            "name": name,
            "runtime": "python3.11",
            "event_source": "cluster",
            "event_type": name,
            "owner": "tests",
            "timeout_s": 10,
        }
        return self.catalogue.create_function({**base, **fields}, HANDLER, info)

    def home_of(self, function: FunctionRecord) -> str:
        hosts = [
            HostLoad(h.id, h.queue, h.slots_total, h.memory_total_mb)
            for h in self.catalogue.list_hosts("active")
        ]
        return home_host(function.id, function.version, hosts).id

    def send(self, function: FunctionRecord, n: int, sleep: float = 0.0) -> str:
        event_id = f"evt-{uuid.uuid4().hex[:12]}"
        body = {
            "event_source": "cluster",
            "event_type": function.event_type,
            "data": {"n": n, "sleep": sleep},
            "id": event_id,
        }
        self.channel.basic_publish(
            "",
            self.settings.events_queue,
            json.dumps(body).encode(),
            pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                reply_to=self.replies,
                correlation_id=event_id,
            ),
            mandatory=True,
        )
        return event_id

    def finished(
        self, function: FunctionRecord, count: int, timeout_s: float = 45.0
    ) -> list[ExecutionRecord]:
        """Every execution of the function once ``count`` of them are final."""
        deadline = time.monotonic() + timeout_s
        records: list[ExecutionRecord] = []
        while time.monotonic() < deadline:
            records = self.catalogue.list_executions({"function_id": function.id}, 1000).items
            if sum(1 for r in records if r.finished) >= count:
                return records
            time.sleep(0.2)
        states = sorted((r.status, r.placed_on or "-") for r in records)
        pytest.fail(f"{count} executions did not finish in time: {states}; see {self.work}")

    def reply_ids(self) -> list[str]:
        """The correlation ids of the replies that came back so far."""
        ids = []
        while True:
            method, properties, _body = self.channel.basic_get(self.replies, auto_ack=True)
            if method is None:
                return ids
            ids.append(properties.correlation_id)

    def kill(self, host_id: str) -> None:
        self.workers[host_id].send_signal(signal.SIGKILL)
        self.workers[host_id].wait()

    def stop(self) -> None:
        for process in self.workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for parts in self._routers:
            parts.listener.stop()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        for parts in self._routers:
            parts.mover.close()
        for log in self._logs:
            log.close()
        if self.connection.is_open:
            self.channel.queue_delete(self.replies)
            for host_id in self.workers:
                self.channel.queue_delete(self.topology.host_queue(host_id))
            self.connection.close()
        for state_dir in self._state_dirs:
            shutil.rmtree(state_dir, ignore_errors=True)
        # A killed worker's containers: the next provisioner on this engine would remove them.
        from provisioner.docker.host import DockerHost

        DockerHost(None).remove_abandoned()


@pytest.fixture
def live_cluster(amqp_url, runtime_image, mongo_url, real_catalogue) -> Iterator[LiveCluster]:
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(
        mongo_url=mongo_url,
        mongo_db=real_catalogue._db.name,
        amqp_url=amqp_url,
        events_queue=f"test.cluster.{suffix}",
        dead_letter_queue=f"test.cluster.dead.{suffix}",
        runtime_image_prefix=runtime_image.rsplit(":", 1)[0],
        placement="cluster",
        heartbeat_interval_s=HEARTBEAT_S,
        host_lost_after=LOST_AFTER,
        sweep_interval_s=1.0,
    )
    topology = Topology.from_settings(settings)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    declare(connection.channel(), topology)
    connection.close()
    work = Path(tempfile.mkdtemp(prefix="cluster-", dir="/tmp"))
    cluster = LiveCluster(settings, real_catalogue, work)
    try:
        yield cluster
    finally:
        cluster.stop()
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        delete(connection.channel(), topology)
        connection.close()
        shutil.rmtree(work, ignore_errors=True)
