"""The stream of events a fault is injected into, and how its outcome is counted.

``Stream`` publishes events with ids ``<fault>-<n>`` through the listener's own
confirmed ``Publisher``, retrying each until the broker holds it (the broker
may be down mid-stream), so "sent" means confirmed. ``CountingProvisioner``
wraps the real provisioner and counts every successful run per (event,
function): two of them for one key is a duplicate even if only one record shows.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading
import time
from typing import Any

from lambda_os.errors import TransientError
from listener.events import encode_event
from listener.publish import Publisher
from provisioner.base import Invocation, Outcome


class CountingProvisioner:
    """The real provisioner, counting successful runs per (event id, function id)."""

    def __init__(self, provisioner: Any) -> None:
        self._provisioner = provisioner
        self._lock = threading.Lock()
        self.successes: collections.Counter[tuple[str, str]] = collections.Counter()
        self.runs = 0

    @property
    def capacity(self) -> int:
        return self._provisioner.capacity

    def run(self, invocation: Invocation) -> Outcome:
        outcome = self._provisioner.run(invocation)
        with self._lock:
            self.runs += 1
            if outcome.status == "succeeded":
                self.successes[(invocation.event_id, invocation.function_id)] += 1
        return outcome

    def close(self) -> None:
        self._provisioner.close()


class Stream:
    """Publish ``count`` events on a thread, one every ``interval_s``; ``sent`` holds their marks.

    Each event's data carries its mark (``mark_of`` reads it back from a record), which
    is also its id unless ``with_ids`` is False: then the listener assigns the ids.
    """

    def __init__(
        self,
        settings: Any,
        fault: str,
        count: int,
        interval_s: float = 0.02,
        with_ids: bool = True,
    ) -> None:
        self._publisher = Publisher(settings, name=f"fault stream {fault}")
        self._fault = fault
        self._with_ids = with_ids
        self._count = count
        self._interval_s = interval_s
        self.sent: list[str] = []
        self.publish_retries = 0
        self._thread = threading.Thread(target=self._run, name="fault-stream", daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the stream did not finish publishing"
        self._publisher.close()

    def _run(self) -> None:
        for index in range(self._count):
            mark = f"{self._fault}-{index:04d}"
            event_id = mark if self._with_ids else None
            body = encode_event("faults", "tick", {"n": index, "mark": mark}, id=event_id)
            deadline = time.monotonic() + 60
            while True:
                try:
                    self._publisher.publish(body, message_id=event_id)
                    break
                except TransientError:
                    # The broker is down or restarting: keep the event until it holds it.
                    self.publish_retries += 1
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            self.sent.append(mark)
            time.sleep(self._interval_s)


def mark_of(record: Any) -> str:
    """The ``Stream`` mark of the event an execution record ran."""
    event = record.event if isinstance(record.event, dict) else {}
    return str(event.get("mark", record.event_id))


def restart_rabbitmq() -> None:
    """``stop_app`` then ``start_app``: quick, and the node (other vhosts) stays up."""
    try:
        subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=120)
        time.sleep(1.0)
    finally:
        subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)
        subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=False, timeout=120)


DOCKERD = "nohup dockerd >/var/log/lambda-os/dockerd.log 2>&1 &"


def dockerd_pid() -> int | None:
    found = subprocess.run(
        ["pidof", "dockerd"], check=False, capture_output=True, text=True
    ).stdout.split()
    return int(found[0]) if found else None


def docker_answers() -> bool:
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (docker.errors.DockerException, OSError):
        return False


def restart_dockerd() -> None:
    """Stop the Docker Engine (SIGTERM) and start it again as deploy/setup.sh does."""
    pid = dockerd_pid()
    try:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
    finally:
        if dockerd_pid() is None:
            os.makedirs("/var/log/lambda-os", exist_ok=True)
            # Its own session, so nothing that ends this test's process group ends dockerd.
            subprocess.Popen(DOCKERD, shell=True, start_new_session=True)
        deadline = time.monotonic() + 90
        while not docker_answers():
            if time.monotonic() > deadline:
                raise AssertionError("the Docker Engine did not answer within 90 s of its restart")
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
