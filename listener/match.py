"""Match: the functions an event runs.

An ordinary event runs every function registered for its (event_source,
event_type): one query on the catalogue's (event_source, event_type) index.

An event that names a ``function_id`` (the API's asynchronous invocation) runs
that one function, found by id rather than by filtering the match: the API
publishes such events under its own source (``API_EVENT_SOURCE``), and a
function's trigger may be edited between the 202 and the consume, while the
queued execution record must still run the function it was made for.
"""

from __future__ import annotations

from typing import Protocol

from lambda_os.errors import NotFound
from lambda_os.records import FunctionRecord
from listener.events import Event

API_EVENT_SOURCE = "lambda-os.api"
API_EVENT_TYPE = "invoke"


class FunctionFinder(Protocol):
    def find_matching(self, event_source: str, event_type: str) -> list[FunctionRecord]: ...

    def get_function(self, function_id: str) -> FunctionRecord: ...


def match(catalogue: FunctionFinder, event: Event) -> list[FunctionRecord]:
    """The functions to run for ``event``, ordered by id so every delivery runs them alike."""
    if event.function_id is not None:
        try:
            return [catalogue.get_function(event.function_id)]
        except NotFound:
            return []
    functions = catalogue.find_matching(event.event_source, event.event_type)
    return sorted(functions, key=lambda function: function.id)
