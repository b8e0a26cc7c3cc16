"""The seam the invocation endpoint runs functions through.

The API does not run containers or talk to RabbitMQ itself: ``create_app`` is
handed an ``Invoker`` (the real one wires the provisioner, the catalogue and the
broker; tests hand a double). Without one, invocations answer 503.
"""

from __future__ import annotations

from typing import Any, Protocol

from lambda_os.records import ExecutionRecord, FunctionRecord


class Invoker(Protocol):
    """Run a function on request data, now or through the events queue."""

    def invoke(
        self, function: FunctionRecord, data: Any, alias: str | None = None
    ) -> ExecutionRecord:
        """Run ``function`` on ``data`` to completion and store the execution record.

        ``function`` is the record of the version to run; ``alias`` the alias that
        chose it, kept on the execution record.

        Returns the stored, finished record (``succeeded``, ``failed`` or
        ``timed_out``); a function's own failure is an outcome, not an exception.
        Raises ``TransientError`` when the backend or the catalogue is unavailable.
        """
        ...

    def submit(
        self, function: FunctionRecord, data: Any, alias: str | None = None
    ) -> ExecutionRecord:
        """Store a ``queued`` execution record and publish the event for it.

        Publishes with publisher confirms and returns only once the broker holds
        the message, so a 202 means the execution will happen. Raises
        ``TransientError`` when the broker or the catalogue is unavailable.
        """
        ...
