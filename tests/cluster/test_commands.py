"""The commands as an operator runs them: ``lambda-os worker`` and ``lambda-os listener
--placement cluster``, one event through them, and a clean stop that drains the host."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pika
import pytest

from lambda_os.packages import inspect_package
from lambda_os.records import utcnow
from lambda_os.settings import Settings
from listener.topology import Topology, delete

pytestmark = [pytest.mark.integration, pytest.mark.mongo]

LAMBDA_OS = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "lambda-os"
ECHO = b"def handler(event, context):\n    return event\n"


def test_a_worker_and_a_router_started_as_commands_run_an_event_and_stop_cleanly(
    amqp_url, runtime_image, mongo_url, real_catalogue
):
    if not LAMBDA_OS.exists():
        pytest.skip(f"{LAMBDA_OS} is not installed")
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(events_queue=f"test.cmd.{suffix}", dead_letter_queue=f"test.cmd.d.{suffix}")
    topology = Topology.from_settings(settings).for_host(f"cmd-{suffix}")
    state_dir = tempfile.mkdtemp(prefix="lc-", dir="/tmp")
    env = {
        **os.environ,
        "MONGO_URL": mongo_url,
        "MONGO_DB": real_catalogue._db.name,
        "AMQP_URL": amqp_url,
        "EVENTS_QUEUE": settings.events_queue,
        "DEAD_LETTER_QUEUE": settings.dead_letter_queue,
        "LAMBDA_OS_RUNTIME_IMAGE_PREFIX": runtime_image.rsplit(":", 1)[0],
        "LAMBDA_OS_STATE_DIR": state_dir,
        "LAMBDA_OS_CONCURRENCY": "2",
        "LAMBDA_OS_POOL_SIZE": "0",
        "LAMBDA_OS_HEARTBEAT_INTERVAL_S": "1",
    }
    info = inspect_package(ECHO, "main.py", "main.handler")
    fields = {
        "name": "cmd",
        "runtime": "python3.11",
        "event_source": "cmd",
        "event_type": "hello",
        "owner": "tests",
    }
    real_catalogue.create_function(fields, ECHO, info)
    worker = subprocess.Popen(
        [str(LAMBDA_OS), "worker", "--host-id", f"cmd-{suffix}", "--server-id", "nova-7"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    router = subprocess.Popen(
        [str(LAMBDA_OS), "listener", "--placement", "cluster"], env=env, stderr=subprocess.DEVNULL
    )
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            hosts = real_catalogue.list_hosts("active")
            routers = real_catalogue.live_routers(utcnow() - timedelta(seconds=10))
            if hosts and routers:
                break
            time.sleep(0.2)
        assert [(h.id, h.server_id) for h in hosts] == [(f"cmd-{suffix}", "nova-7")]
        replies = channel.queue_declare("", exclusive=True).method.queue
        channel.basic_publish(
            "",
            settings.events_queue,
            json.dumps({"event_source": "cmd", "event_type": "hello", "data": {"hi": 1}}).encode(),
            pika.BasicProperties(reply_to=replies, correlation_id="c1", message_id="m1"),
        )
        reply = None
        deadline = time.monotonic() + 30
        while reply is None and time.monotonic() < deadline:
            method, _properties, body = channel.basic_get(replies, auto_ack=True)
            if method is not None:
                reply = json.loads(body)
            time.sleep(0.1)
        assert reply is not None and reply["status"] == "succeeded"
        assert reply["result"] == {"hi": 1}
    finally:
        for process in (router, worker):
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=60) for process in (router, worker)]
        delete(channel, topology)
        connection.close()
        shutil.rmtree(state_dir, ignore_errors=True)
    assert codes == [0, 0]
    assert real_catalogue.get_host(f"cmd-{suffix}").state == "draining"
    assert real_catalogue.live_routers(utcnow() - timedelta(seconds=10)) == []
