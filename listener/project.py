"""Project: which project an event belongs to, read from where the broker let it in.

A project's publisher user may write only to the projects exchange
(``Topology.projects_exchange``) and, by RabbitMQ's topic permissions, only with a
routing key that starts with its own project (``<project>.<anything>``). So the
delivery's exchange and routing key say whose event it is, and the body cannot
lie about it: nothing in the event is trusted for this.

What comes through any other exchange was written by the platform itself or the
operator (the default exchange for the API's invocations, retries and replays,
the host-output exchange for a host's retries and deferrals): it belongs to no
one project and matches as it always did. Those messages that address one
function (``function_id``) name an execution the platform stored, so they stay
within that function's project anyway.
"""

from __future__ import annotations

from collections.abc import Iterable

from lambda_os.errors import InvalidEvent
from lambda_os.records import FunctionRecord
from listener.topology import Topology


def project_of(exchange: str, routing_key: str, topology: Topology) -> str | None:
    """The project of a delivery, or None for the platform's own (any other exchange).

    ``InvalidEvent`` for a message on the projects exchange whose routing key names
    no project (an empty first segment): only an operator can publish one, and it
    belongs to nobody, so it is dead-lettered rather than matched everywhere.
    """
    if exchange != topology.projects_exchange:
        return None
    project = routing_key.partition(".")[0]
    if not project:
        raise InvalidEvent(
            f"routing key {routing_key!r} on {exchange} names no project "
            "(it must be <project>.<anything>)"
        )
    return project


def in_project(functions: Iterable[FunctionRecord], project: str | None) -> list[FunctionRecord]:
    """The functions ``project`` owns; all of them for the platform's own events (None)."""
    if project is None:
        return list(functions)
    return [function for function in functions if function.owner == project]
