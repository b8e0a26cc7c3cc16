"""``lambda-os standalone`` on its default catalogue keeps what it was given through crashes.

Against the real RabbitMQ and Docker Engine, with the embedded FerretDB that
standalone starts for itself: a ``kill -9`` of the API worker, and then a full
restart of the process, keep every function and execution, and an event queued
while the platform was down still runs after the restart. ``/healthz`` says
which catalogue it is and whether the listener consumes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from listener_helpers import unique, wait_for
from test_standalone_listener import free_port

from lambda_os.catalogue_server import find_binary
from listener.events import encode_event
from listener.topology import Topology, delete

pytestmark = [pytest.mark.integration, pytest.mark.mongo]
REPO = Path(__file__).resolve().parents[2]
HELLO = b"def handler(event, context):\n    return {'hello': event}\n"


class Standalone:
    def __init__(self, amqp_url: str, queue: str, state_dir: str) -> None:
        self.port = free_port()
        self.queue = queue
        self.base = f"http://127.0.0.1:{self.port}"
        self._command = [
            sys.executable,
            "-m",
            "lambda_os.cli",
            "standalone",
            "--api-port",
            str(self.port),
            "--events-queue",
            queue,
            "--dead-letter-queue",
            f"{queue}.dead",
            "--amqp-url",
            amqp_url,
            "--state-dir",
            state_dir,
        ]
        self._env = {k: v for k, v in os.environ.items() if k != "MONGO_URL"}
        self._env["PYTHONPATH"] = str(REPO)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self._command, cwd=REPO, env=self._env, stdout=subprocess.DEVNULL
        )
        wait_for(lambda: self.health().get("status") == "ok", timeout_s=60, what="healthz ok")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=90)

    def health(self) -> dict:
        try:
            with urllib.request.urlopen(self.base + "/healthz", timeout=2) as response:
                return json.load(response)
        except (OSError, ValueError):
            return {}

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.base + path, timeout=30) as response:
            return json.load(response)

    def worker_pid(self) -> int:
        children = subprocess.run(
            ["pgrep", "-P", str(self.process.pid), "-f", "lambda_os.cli standalone"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert len(children) == 1, children
        return int(children[0])


@pytest.fixture
def standalone(amqp_url: str, runtime_image: str) -> Iterator[Standalone]:
    if find_binary() is None:
        pytest.fail("the FerretDB catalogue server is not built (run deploy/setup.sh)")
    queue = unique("test.persist")
    state_dir = tempfile.mkdtemp(prefix="lo-", dir="/tmp")
    platform = Standalone(amqp_url, queue, state_dir)
    try:
        yield platform
    finally:
        platform.stop()
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        delete(connection.channel(), Topology(queue, f"{queue}.dead"))
        connection.close()
        shutil.rmtree(state_dir, ignore_errors=True)


def upload(base: str, code: bytes, directory: Path) -> dict:
    """Upload as the README does, with curl."""
    (directory / "hello.py").write_bytes(code)
    form = ["-F", "code=@hello.py", "-F", "name=hello", "-F", "event_source=demo"]
    run = subprocess.run(
        ["curl", "-sS", "-f", *form, "-F", "event_type=greeting", f"{base}/v1/functions"],
        cwd=directory,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return json.loads(run.stdout)


def test_functions_executions_and_queued_events_survive_a_worker_crash_and_a_restart(
    standalone, amqp_url, tmp_path
):
    standalone.start()
    assert standalone.health()["listener"]["status"] == "consuming"
    function = upload(standalone.base, HELLO, tmp_path)
    invoked = urllib.request.Request(
        f"{standalone.base}/v1/functions/{function['id']}/invocations",
        data=b'{"n": 1}',
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(invoked, timeout=60) as response:
        first = json.load(response)
    assert first["status"] == "succeeded"

    os.kill(standalone.worker_pid(), signal.SIGKILL)
    time.sleep(1)  # gunicorn starts a new worker on the same catalogue
    wait_for(lambda: standalone.health().get("status") == "ok", timeout_s=60, what="a new worker")
    assert standalone.health()["functions"] == 1
    assert standalone.get(f"/v1/executions/{first['id']}")["status"] == "succeeded"

    standalone.stop()
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().basic_publish(
        exchange="",
        routing_key=standalone.queue,
        body=encode_event("demo", "greeting", {"while": "down"}, id="queued-while-down"),
        properties=pika.BasicProperties(delivery_mode=2),
    )
    connection.close()
    standalone.start()

    assert standalone.health()["functions"] == 1
    assert standalone.get(f"/v1/executions/{first['id']}")["result"] == {"hello": {"n": 1}}
    ran = wait_for(
        lambda: [
            e
            for e in standalone.get(f"/v1/executions?function_id={function['id']}")["executions"]
            if e["event_id"] == "queued-while-down" and e["status"] == "succeeded"
        ],
        timeout_s=60,
        what="the event queued while the platform was down",
    )
    assert ran[0]["result"] == {"hello": {"while": "down"}}
