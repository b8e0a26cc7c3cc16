"""The fault table: one row per injected fault, printed at the end of the run.

The fault suites (``tests/faults`` on one machine's processes, ``tests/openstack``
on Nova hosts) each append a ``FaultRow``; the root conftest's
``pytest_terminal_summary`` prints them as the table the README quotes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FaultRow:
    """One line of the fault table."""

    fault: str
    sent: int
    recorded: int
    duplicates: int
    lost: int
    retried: int
    seconds: float
    overlapping: int | None = None  # executions whose runs overlapped in time, where measured


ROWS: list[FaultRow] = []

HEADER = (
    "fault",
    "events sent",
    "executions recorded",
    "duplicates",
    "lost",
    "retried runs",
    "overlapping runs",
    "seconds",
)


def write_table(terminalreporter: Any) -> None:
    """The rows so far as a Markdown table in pytest's summary (nothing if no fault ran)."""
    if not ROWS:
        return
    terminalreporter.section("fault table")
    terminalreporter.write_line("| " + " | ".join(HEADER) + " |")
    terminalreporter.write_line("|" + "---|" * len(HEADER))
    for row in ROWS:
        cells = (
            row.fault,
            row.sent,
            row.recorded,
            row.duplicates,
            row.lost,
            row.retried,
            "-" if row.overlapping is None else row.overlapping,
            row.seconds,
        )
        terminalreporter.write_line("| " + " | ".join(str(cell) for cell in cells) + " |")
