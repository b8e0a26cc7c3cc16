"""The fault suite's table: one row per fault, printed at the end of the run.

Each test in this directory appends a ``FaultRow`` to the fault table
(``tests/fault_table.py``) that the run prints at its end. Faults that restart shared services
(RabbitMQ, the Docker Engine) always bring them back, in ``finally``.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator

import pika
import pytest
from fault_table import ROWS, FaultRow

from lambda_os.settings import Settings
from listener.topology import Topology, declare, delete


@pytest.fixture
def fault_settings(amqp_url: str, runtime_image: str) -> Iterator[Settings]:
    """This test's own queues and state directory, removed after it."""
    # A short state directory: the agent's socket path must fit in 108 bytes.
    state_dir = tempfile.mkdtemp(prefix="los-", dir="/tmp")
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(
        amqp_url=amqp_url,
        events_queue=f"test.faults.{suffix}",
        dead_letter_queue=f"test.faults.dead.{suffix}",
        state_dir=state_dir,
        runtime_image_prefix=runtime_image.rsplit(":", 1)[0],
        concurrency=4,
    )
    topology = Topology.from_settings(settings)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    declare(connection.channel(), topology)
    connection.close()
    yield settings
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    delete(connection.channel(), topology)
    connection.close()
    shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def fault_rows() -> list[FaultRow]:
    return ROWS
