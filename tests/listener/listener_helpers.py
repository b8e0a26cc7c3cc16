"""Test doubles and helpers for the listener suites: a provisioner double, functions, the broker."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from lambda_os.catalogue import Catalogue
from lambda_os.errors import TransientError
from lambda_os.packages import inspect_package
from lambda_os.records import FunctionRecord, utcnow
from provisioner.base import Invocation, Outcome

HANDLER_SOURCE = b"def handler(event, context):\n    return event\n"


class FakeProvisioner:
    """A provisioner double: answers ``{"echo": data, "function": name}`` after ``delay_s``.

    ``transient_failures`` makes the first N runs raise ``TransientError`` (engine down).
    ``runs`` lists every invocation it was given.
    """

    def __init__(
        self,
        capacity: int = 4,
        delay_s: float = 0.0,
        transient_failures: int = 0,
        status: str = "succeeded",
        raises: BaseException | None = None,
    ) -> None:
        self._capacity = capacity
        self.delay_s = delay_s
        self.transient_failures = transient_failures
        self.status = status
        self.raises = raises
        self.runs: list[Invocation] = []
        self._lock = threading.Lock()
        self.closed = False

    @property
    def capacity(self) -> int:
        return self._capacity

    def run(self, invocation: Invocation) -> Outcome:
        with self._lock:
            self.runs.append(invocation)
            if self.transient_failures > 0:
                self.transient_failures -= 1
                raise TransientError("engine unreachable (test double)")
        if self.raises is not None:
            raise self.raises
        started = utcnow()
        if self.delay_s:
            time.sleep(self.delay_s)
        error = None
        if self.status != "succeeded":
            error = {"type": "Crash", "message": "test double", "reason": "crashed"}
        return Outcome(
            status=self.status,
            result={"echo": invocation.data, "function": invocation.function_name},
            error=error,
            logs="ran\n",
            started_at=started,
            finished_at=started + timedelta(milliseconds=5),
            duration_ms=5.0,
            cold_start=True,
            host="test-host",
        )

    def close(self) -> None:
        self.closed = True


def add_function(
    catalogue: Catalogue,
    name: str,
    event_source: str = "orders",
    event_type: str = "created",
    source: bytes = HANDLER_SOURCE,
    **fields: Any,
) -> FunctionRecord:
    info = inspect_package(source, "main.py", fields.get("handler", "main.handler"))
    values = {
        "name": name,
        "runtime": "python3.11",
        "event_source": event_source,
        "event_type": event_type,
        "owner": "tests",
        **fields,
    }
    return catalogue.create_function(values, source, info)


def wait_for(predicate: Callable[[], Any], timeout_s: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@contextmanager
def running(listener: Any) -> Iterator[dict[str, Any]]:
    """Run ``listener.run()`` on a thread; on exit stop it and check it returned 0."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        outcome["code"] = listener.run()

    thread = threading.Thread(target=target, name="listener-under-test", daemon=True)
    thread.start()
    try:
        yield outcome
    finally:
        listener.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the listener did not stop within 30 s"
    assert outcome.get("code") == 0, outcome


def unique(prefix: str) -> str:
    """A name no other test or run uses (as the shared conftest's ``unique``)."""
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


def force_fields(catalogue, execution_id: str, **fields) -> None:
    """Write fields of a stored execution straight into the collection, past the state machine.

    Only for setting up what a crashed or stalled listener leaves behind, which no
    transition of the catalogue makes on purpose.
    """
    catalogue._executions.update_one({"_id": execution_id}, {"$set": fields})


def queue_exists(connection: Any, queue: str) -> bool:
    """Whether the broker has ``queue``, asked on a channel of its own (a miss closes it)."""
    import pika.exceptions

    channel = connection.channel()
    try:
        channel.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return False
    channel.close()
    return True
