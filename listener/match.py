"""Match: the functions an event runs.

An ordinary event runs every function registered for its (event_source,
event_type): one query on the catalogue's (event_source, event_type) index.

``function_id`` is the platform's own, not the public contract: the messages the
platform publishes itself address one function with it (the API's invocations,
under ``API_EVENT_SOURCE``; a retry or the dead letter of a failed attempt).
Every one of those is published only after its execution record is stored, so
an event's ``function_id`` is honoured only when the catalogue already holds the
execution of that function on that event. Then it runs that one function, found
by id rather than by filtering the match, since a function's trigger may be
edited between the 202 and the consume while the queued execution must still
run the function it was made for. On any other message ``function_id`` is
ignored: the event runs what its source and type match, as if it were not
there, so a publisher cannot reach a function through another's trigger.

An event that came in through the projects exchange (``Event.project``, set
from the delivery) runs only that project's functions, addressed or matched: a
``function_id`` of another project's function is ignored like a forged one.

An event that names an ``alias`` runs, of the functions it matches, those that
have an alias of that name, each at the version its alias chooses for this event
(``AliasRecord.version_for``: the same on every delivery); a matched function
without one does not run, as if the event were for an event source bound to that
alias only. It costs one catalogue read per matched function (two when the version
is not the current one), on events that name an alias only. The platform's own
addressed messages need none of this: their record names the version already.
"""

from __future__ import annotations

import logging
from typing import Protocol

from lambda_os.errors import NotFound
from lambda_os.records import AliasRecord, ExecutionRecord, FunctionRecord, execution_id_for
from listener.events import Event
from listener.project import in_project

LOGGER = logging.getLogger(__name__)

API_EVENT_SOURCE = "lambda-os.api"
API_EVENT_TYPE = "invoke"


class FunctionFinder(Protocol):
    def find_matching(self, event_source: str, event_type: str) -> list[FunctionRecord]: ...

    def get_function(self, function_id: str) -> FunctionRecord: ...

    def get_execution(self, execution_id: str) -> ExecutionRecord: ...

    def get_alias(self, function_id: str, name: str) -> AliasRecord: ...

    def get_function_version(self, function_id: str, version: int) -> FunctionRecord: ...


def match(catalogue: FunctionFinder, event: Event) -> list[FunctionRecord]:
    """The functions to run for ``event``, ordered by id so every delivery runs them alike."""
    if event.function_id is not None:
        queued = _queued_by_the_platform(catalogue, event, event.function_id)
        if queued is not None and in_project(queued, event.project) == queued:
            return queued
        LOGGER.warning(
            "event %s: function_id %r names no execution the platform queued for its "
            "project; ignored, matching %s/%s instead",
            event.id,
            event.function_id,
            event.event_source,
            event.event_type,
        )
    # Filtered here, not in the query: the (event_source, event_type) index finds the
    # few candidates, and the one rule about projects stays in one place.
    functions = in_project(
        catalogue.find_matching(event.event_source, event.event_type), event.project
    )
    functions = sorted(functions, key=lambda function: function.id)
    if event.alias is None:
        return functions
    aliased = (at_alias(catalogue, function, event.alias, event.id) for function in functions)
    return [function for function in aliased if function is not None]


def at_alias(
    catalogue: FunctionFinder, function: FunctionRecord, alias: str, event_id: str
) -> FunctionRecord | None:
    """``function`` at the version its alias ``alias`` chooses for ``event_id``; None if it
    has no such alias (or the version is gone: the function was deleted meanwhile)."""
    try:
        chosen = catalogue.get_alias(function.id, alias).version_for(event_id, function.id)
    except NotFound:
        LOGGER.debug("event %s: function %s has no alias %r", event_id, function.id, alias)
        return None
    if chosen == function.version:
        return function
    try:
        return catalogue.get_function_version(function.id, chosen)
    except NotFound as exc:
        LOGGER.warning("event %s: alias %r: %s; not run", event_id, alias, exc.description)
        return None


def _queued_by_the_platform(
    catalogue: FunctionFinder, event: Event, function_id: str
) -> list[FunctionRecord] | None:
    """The addressed function (none if it was deleted since), or None if the platform did
    not address this event: no execution of that function on it is stored."""
    try:
        catalogue.get_execution(execution_id_for(event.id, function_id))
    except NotFound:
        return None
    try:
        return [catalogue.get_function(function_id)]
    except NotFound:
        return []
