"""The fault suite's table: one row per fault, printed at the end of the run.

Each test in this directory appends a ``FaultRow``; ``pytest_terminal_summary``
prints them as the table the README quotes. Faults that restart shared services
(RabbitMQ, the Docker Engine) always bring them back, in ``finally``.
"""

from __future__ import annotations

from typing import Any

import pytest
from fault_helpers import ROWS, FaultRow


@pytest.fixture
def fault_rows() -> list[FaultRow]:
    return ROWS


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not ROWS:
        return
    header = (
        "fault",
        "events sent",
        "executions recorded",
        "duplicates",
        "lost",
        "retried runs",
        "seconds",
    )
    lines = [
        (row.fault, row.sent, row.recorded, row.duplicates, row.lost, row.retried, row.seconds)
        for row in ROWS
    ]
    terminalreporter.section("fault table")
    terminalreporter.write_line("| " + " | ".join(header) + " |")
    terminalreporter.write_line("|" + "---|" * len(header))
    for line in lines:
        terminalreporter.write_line("| " + " | ".join(str(cell) for cell in line) + " |")
