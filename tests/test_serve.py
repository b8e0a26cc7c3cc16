"""The ``lambda-os`` commands start the real processes: the API under gunicorn, the listener.

Run apart, the two share a catalogue only through a real MongoDB, so here each is
checked on its own against the real RabbitMQ: the API queues an asynchronous
invocation on its events queue, and the listener declares its queues, consumes,
and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pika
import pytest

from lambda_os.settings import Settings
from listener.topology import Topology, delete

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(*args: str, state_dir: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MONGO_URL"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [sys.executable, "-m", "lambda_os.cli", *args, "--state-dir", str(state_dir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen) -> tuple[int, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return process.returncode, output


@pytest.fixture
def queues(amqp_url):
    """This test's events queue name; its whole topology is deleted afterwards."""
    name = f"test.serve.{uuid.uuid4().hex[:10]}"
    yield name
    settings = Settings(events_queue=name, dead_letter_queue=f"{name}.dead")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    delete(connection.channel(), Topology.from_settings(settings))
    connection.close()


def wait_healthy(base: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, stop(process)[1]
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{base} never became healthy")


def test_api_command_serves_and_queues_an_async_invocation_on_its_broker(
    amqp_url, queues, tmp_path
):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = start(
        "api",
        "--api-port",
        str(port),
        "--events-queue",
        queues,
        "--dead-letter-queue",
        f"{queues}.dead",
        "--amqp-url",
        amqp_url,
        state_dir=tmp_path,
    )
    try:
        wait_healthy(base, api)
        from lambda_os.client import ApiClient

        client = ApiClient(base)
        function = client.upload(
            {"name": "queued", "event_source": "s", "event_type": "t"},
            "main.py",
            b"def handler(event, context):\n    return event\n",
        )
        request = urllib.request.Request(
            f"{base}/v1/functions/{function['id']}/invocations?mode=async",
            data=json.dumps({"n": 1}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
            queued = json.loads(response.read())
    finally:
        code, output = stop(api)
    assert code == 0, output
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    method, _properties, body = connection.channel().basic_get(queues, auto_ack=True)
    connection.close()
    assert method is not None, "the event is not on the API's events queue"
    event = json.loads(body)
    assert (event["data"], event["function_id"]) == ({"n": 1}, function["id"])
    assert queued["status"] == "queued"


def test_listener_command_declares_its_queues_and_stops_cleanly_on_sigterm(
    amqp_url, queues, tmp_path, docker_client
):
    listener = start(
        "listener",
        "--events-queue",
        queues,
        "--dead-letter-queue",
        f"{queues}.dead",
        "--amqp-url",
        amqp_url,
        "--pool-size",
        "0",
        state_dir=tmp_path,
    )
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    deadline = time.monotonic() + 30
    consumers = 0
    while time.monotonic() < deadline and consumers == 0:
        assert listener.poll() is None, stop(listener)[1]
        try:
            consumers = channel.queue_declare(queues, passive=True).method.consumer_count
        except pika.exceptions.ChannelClosedByBroker:  # not declared yet
            channel = connection.channel()
        time.sleep(0.2)
    connection.close()
    code, output = stop(listener)
    assert consumers == 1, output
    assert code == 0, output
