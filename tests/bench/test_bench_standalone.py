"""Case 3d's process: how ``lambda-os standalone`` is started, and that nothing of it outlives the case.

The command line and environment are plain data, checked without a broker; the
clean-up is checked on the real process, RabbitMQ and Docker Engine.
"""

from __future__ import annotations

from pathlib import Path

import pika
import pika.exceptions
import pytest

from lambda_os.settings import Settings
from testing_service.bench.standalone import (
    REPO,
    command,
    environment,
    owner_pid,
    running_standalone,
    standalone_settings,
)


def _settings(tmp_path: Path) -> Settings:
    base = Settings(mongo_url="mongodb://shared:27017", concurrency=3, auth="keystone")
    return standalone_settings(base, "run1", tmp_path, 18123, "memory")


def test_the_process_gets_its_own_port_queues_state_dir_and_case_3as_pool(tmp_path: Path) -> None:
    argv = command(_settings(tmp_path))

    assert argv[0].endswith("/lambda-os") and argv[1] == "standalone"
    flags = dict(zip(argv[2::2], argv[3::2]))
    assert flags == {
        "--api-port": "18123",
        "--events-queue": "bench.run1.events",
        "--dead-letter-queue": "bench.run1.dead",
        "--state-dir": str(tmp_path),
        "--pool-size": "0",
    }


def test_the_process_is_open_on_loopback_quiet_and_on_its_own_catalogue(tmp_path: Path) -> None:
    settings = _settings(tmp_path)

    assert (settings.api_host, settings.auth, settings.log_level) == (
        "127.0.0.1",
        "none",
        "WARNING",
    )
    assert (settings.mongo_url, settings.embedded_catalogue) == (None, "memory")
    assert settings.concurrency == 3


def test_the_environment_is_the_benchs_settings_and_nothing_else_of_ours(tmp_path: Path) -> None:
    inherited = {"MONGO_URL": "mongodb://shared:27017", "HOME": "/root", "PYTHONPATH": "/x"}

    env = environment(_settings(tmp_path), inherited)

    assert "MONGO_URL" not in env
    assert env["HOME"] == "/root"
    assert env["LAMBDA_OS_CONCURRENCY"] == "3"
    assert env["EVENTS_QUEUE"] == "bench.run1.events"
    assert env["PYTHONPATH"].split(":") == [str(REPO), "/x"]


@pytest.mark.integration
def test_the_process_its_queues_and_state_dir_are_gone_after_a_failing_case(
    amqp_url: str, runtime_image: str, docker_client: object
) -> None:
    base = Settings(amqp_url=amqp_url, runtime_image_prefix=runtime_image.rsplit(":", 1)[0])

    with (
        pytest.raises(RuntimeError, match="the case failed"),
        running_standalone(base) as standalone,
    ):
        process, settings = standalone.process, standalone.settings
        raise RuntimeError("the case failed")

    assert process.poll() is not None
    assert not Path(settings.state_dir).exists()
    containers = docker_client.api.containers(all=True)  # type: ignore[attr-defined]
    assert [c["Id"] for c in containers if owner_pid(c) in standalone.seen_pids] == []
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            connection.channel().queue_declare(settings.events_queue, passive=True)
    finally:
        connection.close()
