"""Broker-side actions the suites take on the real RabbitMQ, through rabbitmqctl."""

from __future__ import annotations

import subprocess


def _connections(*fields: str) -> list[list[str]]:
    """Each open connection's ``client_properties`` then ``fields``, as rabbitmqctl lists them."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", *fields],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [line.split("\t") for line in listed.splitlines()]


def _named(line: list[str], name: str) -> bool:
    return any(f'{{"connection_name","{name}"}}' in cell for cell in line)


def close_connections_named(name: str, reason: str = "test") -> int:
    """Close, from the broker's side, every connection whose client named itself ``name``."""
    closed = 0
    for line in _connections("pid", "client_properties"):
        if _named(line, name):
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", line[0], reason],
                check=True,
                capture_output=True,
                timeout=60,
            )
            closed += 1
    return closed


def connected_at(names: list[str]) -> dict[str, str]:
    """When each named connection was opened, as the broker says; absent names are not open."""
    found = {}
    for line in _connections("client_properties", "connected_at"):
        for name in names:
            if _named(line, name):
                found[name] = line[-1]
    return found
