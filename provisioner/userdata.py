"""The cloud-init user data a Nova host boots with: install Docker, write the worker's
environment, start ``lambda-os worker``.

The controller names the host (its id, so the worker registers under the id the
server's metadata carries) and passes on where the catalogue and the broker are, and
the host's own broker user when it made one (``provisioner.broker_accounts``); the
server's own Nova id is only known once it boots, so it is left to cloud-init's Jinja
rendering (``v1.instance_id``, the instance UUID on OpenStack). The document is built
as data and dumped with PyYAML, so a URL with YAML's special characters cannot change
its shape.
"""

from __future__ import annotations

import yaml

from lambda_os.settings import Settings

ENV_FILE = "/etc/lambda-os/worker.env"
UNIT_FILE = "/etc/systemd/system/lambda-os-worker.service"
# The host image carries the platform installed here (deploy/ builds it).
WORKER_COMMAND = "/opt/lambda-os/.venv/bin/lambda-os worker"
SERVER_ID_PLACEHOLDER = "{{ v1.instance_id }}"

_UNIT = f"""[Unit]
Description=lambda-os worker
After=docker.service network-online.target
Requires=docker.service

[Service]
EnvironmentFile={ENV_FILE}
ExecStart={WORKER_COMMAND}
Restart=on-failure
KillSignal=SIGTERM
TimeoutStopSec=300

[Install]
WantedBy=multi-user.target
"""


def worker_environment(
    settings: Settings, host_id: str, amqp_url: str | None = None
) -> dict[str, str]:
    """What the worker on the new host is told, as its environment file will hold it.

    ``amqp_url`` is the host's own (its broker user); without it the host gets the
    shared worker URL.
    """
    env = {
        # The hosts may reach the broker and catalogue at other addresses than we do.
        "MONGO_URL": settings.worker_mongo_url or settings.mongo_url or "",
        "MONGO_DB": settings.mongo_db,
        "AMQP_URL": amqp_url or settings.worker_amqp_url or settings.amqp_url,
        "EVENTS_QUEUE": settings.events_queue,
        # The worker declares the events queue with its dead-letter arguments: another
        # name than the routers' makes RabbitMQ refuse the declaration.
        "DEAD_LETTER_QUEUE": settings.dead_letter_queue,
        # Routers judge a host lost after host_lost_after of *their* intervals.
        "LAMBDA_OS_HEARTBEAT_INTERVAL_S": str(settings.heartbeat_interval_s),
        "LAMBDA_OS_HOST_ID": host_id,
        "LAMBDA_OS_SERVER_ID": SERVER_ID_PLACEHOLDER,
    }
    for name, value in env.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"{name} holds a line break: it cannot go in an environment file")
    return env


def host_user_data(settings: Settings, host_id: str, amqp_url: str | None = None) -> str:
    """The ``#cloud-config`` (a Jinja template, for the server id) for host ``host_id``."""
    env = worker_environment(settings, host_id, amqp_url)
    config = {
        "package_update": True,
        "packages": ["docker.io"],
        "write_files": [
            {
                "path": ENV_FILE,
                "permissions": "0600",
                "content": "".join(f"{name}={value}\n" for name, value in env.items()),
            },
            {"path": UNIT_FILE, "permissions": "0644", "content": _UNIT},
        ],
        "runcmd": [
            ["systemctl", "enable", "--now", "docker"],
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "lambda-os-worker"],
        ],
    }
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=1000)
    return "## template: jinja\n#cloud-config\n" + body
