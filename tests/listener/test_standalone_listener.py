"""``lambda-os standalone`` fails visibly when its listener stops: no API serving events nobody runs.

Against the real RabbitMQ: the events queue is declared beforehand with other
arguments, so the listener thread exits on its own (configuration error) while
the API would go on serving.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pika
import pytest
from listener_helpers import unique

from lambda_os.serve import EXIT_LISTENER_FAILED
from lambda_os.settings import Settings
from listener.topology import Topology, delete

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def conflicting_queue(amqp_url):
    """An events queue declared without our dead-lettering arguments; deleted afterwards."""
    name = unique("test.standalone")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_declare(name, durable=True)
    connection.close()
    yield name
    settings = Settings(events_queue=name, dead_letter_queue=f"{name}.dead")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    delete(connection.channel(), Topology.from_settings(settings))
    connection.close()


def test_standalone_exits_non_zero_when_its_listener_stops(amqp_url, conflicting_queue):
    # Short: the containers' agent sockets live under it (at most 107 bytes).
    state_dir = tempfile.mkdtemp(prefix="lo-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "MONGO_URL"}
    env["PYTHONPATH"] = str(REPO)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lambda_os.cli",
            "standalone",
            "--api-port",
            str(free_port()),
            "--events-queue",
            conflicting_queue,
            "--dead-letter-queue",
            f"{conflicting_queue}.dead",
            "--amqp-url",
            amqp_url,
            "--state-dir",
            state_dir,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.terminate()
        output, _ = process.communicate(timeout=60)
        pytest.fail(f"standalone kept running without its listener:\n{output[-3000:]}")
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    assert process.returncode == EXIT_LISTENER_FAILED, output[-3000:]
    assert "the listener stopped with exit code 2" in output
