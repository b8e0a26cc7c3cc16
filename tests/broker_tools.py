"""Broker-side actions the suites take on the real RabbitMQ, through rabbitmqctl."""

from __future__ import annotations

import subprocess


def close_connections_named(name: str, reason: str = "test") -> int:
    """Close, from the broker's side, every connection whose client named itself ``name``."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    closed = 0
    for line in listed.splitlines():
        if f'{{"connection_name","{name}"}}' in line:
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", line.split("\t")[0], reason],
                check=True,
                capture_output=True,
                timeout=60,
            )
            closed += 1
    return closed
