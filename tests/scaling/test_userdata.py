"""A host's user data is a cloud-config that installs Docker and starts its worker."""

from __future__ import annotations

import pytest
import yaml

from lambda_os.settings import Settings
from provisioner.userdata import ENV_FILE, SERVER_ID_PLACEHOLDER, host_user_data

SETTINGS = Settings(mongo_url="mongodb://db:27017/?replicaSet=rs: 0#x", amqp_url="amqp://u:p@mq/")


def parsed(text: str) -> dict:
    return yaml.safe_load(text)


def env_file(config: dict) -> dict[str, str]:
    (entry,) = [f for f in config["write_files"] if f["path"] == ENV_FILE]
    return dict(line.split("=", 1) for line in entry["content"].splitlines())


def test_user_data_is_a_jinja_cloud_config_that_parses_as_yaml():
    text = host_user_data(SETTINGS, "h1")
    assert text.splitlines()[:2] == ["## template: jinja", "#cloud-config"]
    assert "docker.io" in parsed(text)["packages"]


def test_the_worker_environment_names_the_catalogue_broker_host_and_server():
    env = env_file(parsed(host_user_data(SETTINGS, "h1")))
    assert env["MONGO_URL"] == SETTINGS.mongo_url
    assert env["AMQP_URL"] == "amqp://u:p@mq/"
    assert env["LAMBDA_OS_HOST_ID"] == "h1"
    assert env["LAMBDA_OS_SERVER_ID"] == SERVER_ID_PLACEHOLDER


def test_the_worker_is_started_as_a_service_after_docker():
    config = parsed(host_user_data(SETTINGS, "h1"))
    assert ["systemctl", "enable", "--now", "lambda-os-worker"] == config["runcmd"][-1]
    units = [f["content"] for f in config["write_files"] if f["path"].endswith(".service")]
    assert "lambda-os worker" in units[0] and "Requires=docker.service" in units[0]


def test_a_setting_with_a_line_break_is_refused():
    with pytest.raises(ValueError, match="AMQP_URL"):
        host_user_data(Settings(amqp_url="amqp://x/\nEVIL=1"), "h1")


def test_hosts_that_reach_the_broker_and_catalogue_elsewhere_are_given_those_urls():
    import dataclasses

    settings = dataclasses.replace(
        SETTINGS,
        worker_amqp_url="amqp://u:p@198.18.0.1/",
        worker_mongo_url="mongodb://198.18.0.1:27017/",
    )
    env = env_file(parsed(host_user_data(settings, "h1")))
    assert env["AMQP_URL"] == "amqp://u:p@198.18.0.1/"
    assert env["MONGO_URL"] == "mongodb://198.18.0.1:27017/"


def test_a_host_with_its_own_broker_user_is_given_its_own_url():
    env = env_file(parsed(host_user_data(SETTINGS, "h1", "amqp://lambda-os-host-h1:pw@mq/")))
    assert env["AMQP_URL"] == "amqp://lambda-os-host-h1:pw@mq/"


def test_the_worker_shares_the_routers_dead_letter_queue_and_heartbeat_interval():
    import dataclasses

    settings = dataclasses.replace(
        SETTINGS, dead_letter_queue="mine.dead", heartbeat_interval_s=0.5
    )
    env = env_file(parsed(host_user_data(settings, "h1")))
    assert env["DEAD_LETTER_QUEUE"] == "mine.dead"
    assert float(env["LAMBDA_OS_HEARTBEAT_INTERVAL_S"]) == 0.5
    read = Settings.from_env(env)
    assert (read.dead_letter_queue, read.heartbeat_interval_s) == ("mine.dead", 0.5)
