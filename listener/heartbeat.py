"""Heartbeat: a cluster host registers itself and says, every few seconds, that it is alive.

``lambda-os worker`` runs a ``Listener`` on the host's own queue with the local
provisioner, and this beside it. The host registers (``Catalogue.register_host``)
once its listener consumes, so no router places work on a queue nobody has
declared; then every interval it heartbeats what it has free, what runs and
which function versions are warm. Routers mark a host lost when it falls silent;
a lost host's heartbeat is refused (``heartbeat_host`` is conditional), so it
registers again, saying so in the log: its queue was emptied and its runs handed
over meanwhile, and the runs it still finishes are fenced out by their leases.
On a clean stop the host drains: routers place nothing more on it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from lambda_os.errors import LambdaError
from lambda_os.records import HostBeat, HostRecord
from provisioner.base import Invocation, Outcome, Usage

LOGGER = logging.getLogger(__name__)


class HostStore(Protocol):
    """The catalogue's part in a host's heartbeat."""

    def register_host(self, record: HostRecord) -> HostRecord: ...

    def heartbeat_host(self, host_id: str, beat: HostBeat) -> bool: ...

    def drain_host(self, host_id: str) -> bool: ...

    def get_host(self, host_id: str) -> HostRecord: ...


class CountingProvisioner:
    """The host's provisioner, counting the executions it runs now for the heartbeat."""

    def __init__(self, provisioner: Any) -> None:
        self._provisioner = provisioner
        self._lock = threading.Lock()
        self._running = 0

    @property
    def capacity(self) -> int:
        return self._provisioner.capacity

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    def run(self, invocation: Invocation) -> Outcome:
        with self._lock:
            self._running += 1
        try:
            return self._provisioner.run(invocation)
        finally:
            with self._lock:
                self._running -= 1

    def usage(self) -> Usage:
        return self._provisioner.usage()

    def close(self) -> None:
        self._provisioner.close()


class Heartbeat:
    """Registers ``host`` when ``ready`` and heartbeats it until stopped (see the module doc)."""

    def __init__(
        self,
        catalogue: HostStore,
        host: HostRecord,
        provisioner: CountingProvisioner,
        interval_s: float,
    ) -> None:
        self._catalogue = catalogue
        self._host = host
        self._provisioner = provisioner
        self._interval_s = interval_s
        self._registered = False

    def beat(self) -> HostBeat:
        usage = self._provisioner.usage()
        running = self._provisioner.running
        return HostBeat(
            free_memory_mb=usage.free_memory_mb,
            free_slots=max(0, self._provisioner.capacity - running),
            running=running,
            warm=usage.warm,
            idle_memory_mb=usage.idle_memory_mb,
        )

    def beat_once(self) -> None:
        """Register if not yet (or again, after being marked lost); else heartbeat."""
        beat = self.beat()
        if self._registered and self._catalogue.heartbeat_host(self._host.id, beat):
            return
        if self._registered and self._retired():
            return  # its server is deleted: this worker is about to go with it
        if self._registered:
            LOGGER.warning(
                "host %s was marked lost (its heartbeats were late); registering again",
                self._host.id,
            )
        self._catalogue.register_host(self._host)
        self._catalogue.heartbeat_host(self._host.id, beat)
        self._registered = True
        LOGGER.info("host %s registered: queue %s", self._host.id, self._host.queue)

    def run(self, stop: threading.Event, ready: Callable[[], bool]) -> None:
        """Wait for ``ready`` (the listener consumes), then beat every interval until ``stop``."""
        while not ready():
            if stop.wait(0.2):
                return
        while True:
            try:
                self.beat_once()
            except LambdaError as exc:
                LOGGER.warning("heartbeat of host %s failed: %s", self._host.id, exc.description)
            if stop.wait(self._interval_s):
                return

    def _retired(self) -> bool:
        """Whether the controller retired this host (deleted its server): then it must not
        register again, as a host wrongly found lost does."""
        try:
            retired = self._catalogue.get_host(self._host.id).state == "retired"
        except LambdaError:
            return False
        if retired:
            LOGGER.info("host %s was retired with its server; no more heartbeats", self._host.id)
        return retired

    def drain(self) -> None:
        """Routers place nothing more here (a clean stop)."""
        try:
            self._catalogue.drain_host(self._host.id)
        except LambdaError as exc:
            LOGGER.warning("could not drain host %s: %s", self._host.id, exc.description)
