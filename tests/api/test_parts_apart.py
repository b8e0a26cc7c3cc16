""" "Running the parts apart", as the README says: ``lambda-os api`` and ``lambda-os listener``
as two processes on one real catalogue server, and the curl walk-through and the bundled
harness against that pair.

The catalogue is the session's FerretDB (or the MongoDB in ``MONGO_URL``), in a
database of this module's own; the queues are this module's own too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from api_helpers import free_port, wait_until_healthy
from test_live_curl import run_walkthrough

from listener.topology import Topology, delete

pytestmark = [pytest.mark.integration, pytest.mark.mongo]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def parts_apart(mongo_url: str, amqp_url: str, runtime_image: str) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:10]
    base = f"http://127.0.0.1:{free_port()}"
    queue = f"test.apart.{suffix}"
    env = {
        **os.environ,
        "MONGO_URL": mongo_url,
        "MONGO_DB": f"apart_{suffix}",
        "AMQP_URL": amqp_url,
        "EVENTS_QUEUE": queue,
        "DEAD_LETTER_QUEUE": f"{queue}.dead",
        "LAMBDA_OS_API_PORT": base.rsplit(":", 1)[1],
        "LAMBDA_OS_API_WORKERS": "2",
        "LAMBDA_OS_STATE_DIR": tempfile.mkdtemp(prefix="los-", dir="/tmp"),
        "LAMBDA_OS_RUNTIME_IMAGE_PREFIX": runtime_image.rsplit(":", 1)[0],
    }
    command = [sys.executable, "-m", "lambda_os.cli"]
    api = subprocess.Popen([*command, "api"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    listener = subprocess.Popen([*command, "listener"], cwd=REPO, env=env)
    try:
        wait_until_healthy(base, api)
        yield {"base": base, "queue": queue, "amqp": amqp_url}
    finally:
        for process in (api, listener):
            process.terminate()
        for process in (api, listener):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        delete(connection.channel(), Topology(queue, f"{queue}.dead"))
        connection.close()


def test_the_curl_walkthrough_passes_against_the_api_process(parts_apart, tmp_path):
    run = run_walkthrough(parts_apart["base"], tmp_path)

    assert run.stdout.count("downloaded code is identical") == 2


def test_the_harness_passes_against_the_api_and_listener_processes(parts_apart):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "testing_service",
            "--api",
            parts_apart["base"],
            "--amqp",
            parts_apart["amqp"],
            "--queue",
            parts_apart["queue"],
        ],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert re.search(r"^[1-9]\d* passed, 0 failed$", run.stdout, re.MULTILINE), run.stdout
