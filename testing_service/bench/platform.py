"""The platform under test: a real ``Listener`` with a ``DockerProvisioner``, in this process.

Each case gets its own in-memory catalogue (mongomock, as ``lambda-os
standalone`` runs without ``MONGO_URL``) and its own uniquely named queues, so
cases do not inherit each other's execution records, and nothing of the
platform's own queues is touched. Everything made here (queues, containers,
the state directory) is removed on the way out, whatever happened.
"""

from __future__ import annotations

import dataclasses
import gc
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika

from lambda_os.catalogue import COLLECTIONS, Catalogue
from lambda_os.embedded import embedded_database
from lambda_os.packages import inspect_package
from lambda_os.records import FunctionRecord, utcnow
from lambda_os.serve import gunicorn_options, standalone_ceiling
from lambda_os.settings import Settings
from listener.service import Listener
from listener.topology import Topology, declare, delete
from provisioner.docker import DockerProvisioner

TRIVIAL_SOURCE = b"def handler(event, context):\n    return event\n"
EVENT_SOURCE = "bench"
OWNER = "bench"


def new_catalogue(kept: int) -> tuple[Catalogue, Any]:
    """An empty embedded catalogue, as ``connect(None, …)`` makes for ``lambda-os standalone``
    (keeping ``kept`` finished executions), and its database (for bulk registration),
    without indexes yet."""
    database = embedded_database(f"bench_{uuid.uuid4().hex[:8]}", indexed=COLLECTIONS)
    return Catalogue(database, cache_matches=True, keep_finished=kept), database


def register(catalogue: Catalogue, name: str, event_type: str) -> FunctionRecord:
    """One trivial function, through the catalogue's ordinary ``create_function``."""
    info = inspect_package(TRIVIAL_SOURCE, "main.py", "main.handler")
    fields = {
        "name": name,
        "runtime": "python3.11",
        "event_source": EVENT_SOURCE,
        "event_type": event_type,
        "owner": OWNER,
    }
    return catalogue.create_function(fields, TRIVIAL_SOURCE, info)


def catalogue_with(receiving: int, registered: int, kept: int) -> tuple[Catalogue, tuple[str, ...]]:
    """A catalogue holding ``registered`` functions, of which ``receiving`` get events.

    The receiving ones go through ``create_function``; the others are inserted in
    one ``insert_many`` of ``FunctionRecord`` documents sharing the first one's
    package, before the indexes exist: mongomock checks a unique index by scanning
    the collection, so 10,000 ``create_function`` calls would take many minutes
    here without telling anything about the event path. Their event types never
    receive an event, as most functions on a real platform are idle.
    """
    catalogue, database = new_catalogue(kept)
    types = tuple(f"trivial-{i}" for i in range(receiving))
    records = [register(catalogue, f"bench-{i}", event_type) for i, event_type in enumerate(types)]
    first = records[0]
    now = utcnow()
    idle = [
        dataclasses.replace(
            first,
            id=uuid.uuid4().hex,
            name=f"bench-idle-{i}",
            event_type=f"idle-{i}",
            created_at=now,
            updated_at=now,
        ).to_document()
        for i in range(max(0, registered - receiving))
    ]
    if idle:
        database["functions"].insert_many(idle)
    catalogue.ensure_indexes()
    return catalogue, types


@dataclass
class Platform:
    """A running listener and what it was built from."""

    settings: Settings
    catalogue: Catalogue
    provisioner: DockerProvisioner
    listener: Listener

    def rss_bytes(self) -> int:
        """This process's resident size (the listener runs in it), after a collection."""
        gc.collect()
        return process_rss_bytes()

    def containers(self) -> list[dict[str, Any]]:
        """The containers this platform's provisioner has now (warm, pooled or busy)."""
        return self.provisioner.host.platform_containers(mine=True)


def process_rss_bytes(pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def bench_settings(base: Settings, run_id: str, state_dir: Path, **overrides: Any) -> Settings:
    """``base`` on queues and a state directory of this run's own, with the in-memory catalogue."""
    return dataclasses.replace(
        base,
        mongo_url=None,
        events_queue=f"bench.{run_id}.events",
        dead_letter_queue=f"bench.{run_id}.dead",
        state_dir=str(state_dir),
        **overrides,
    )


@contextmanager
def running_platform(base: Settings, catalogue: Catalogue, **overrides: Any) -> Iterator[Platform]:
    """A listener consuming its own queues with a Docker provisioner; all removed afterwards."""
    run_id = uuid.uuid4().hex[:10]
    # A short path: the agent's socket path must fit in 108 bytes.
    state_dir = Path(tempfile.mkdtemp(prefix="los-bench-", dir="/tmp"))
    settings = bench_settings(base, run_id, state_dir, **overrides)
    topology = Topology.from_settings(settings)
    provisioner: DockerProvisioner | None = None
    thread: threading.Thread | None = None
    listener: Listener | None = None
    try:
        _with_channel(settings.amqp_url, lambda channel: declare(channel, topology))
        provisioner = DockerProvisioner(settings)
        # Alone on its catalogue, as ``lambda-os standalone``'s listener is, so with its
        # ceiling: a quota that cannot bind is not counted (without it every event
        # counts the project's running executions, a scan of mongomock's collection).
        ceiling = standalone_ceiling(
            provisioner.capacity, gunicorn_options(settings, workers=1)["threads"]
        )
        listener = Listener(
            settings, catalogue, provisioner, name="lambda-os bench listener", quota_ceiling=ceiling
        )
        thread = threading.Thread(target=listener.run, name="bench-listener", daemon=True)
        thread.start()
        yield Platform(settings, catalogue, provisioner, listener)
    finally:
        if listener is not None and thread is not None:
            listener.stop()
            thread.join(timeout=60)
        if provisioner is not None:
            provisioner.close()
        try:
            _with_channel(settings.amqp_url, lambda channel: delete(channel, topology))
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)


def _with_channel(amqp_url: str, action: Any) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        action(connection.channel())
    finally:
        connection.close()
