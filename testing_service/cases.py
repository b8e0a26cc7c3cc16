"""The harness's sample functions and what each must produce.

Each case is a function the harness uploads, the event data it sends, and a check
of the execution record that comes back. They cover the outcomes a user meets:
a result, an echo, a timeout, a crash in the handler, and running out of memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HELLO = """
def handler(event, context):
    print("saying hello to", event["name"])
    return {"message": "hello " + event["name"], "function": context.function_name}
"""

ECHO = """
def handler(event, context):
    return event
"""

SLEEP = """
import time

def handler(event, context):
    time.sleep(event["seconds"])
    return "woke up"
"""

RAISE = """
def handler(event, context):
    raise ValueError("boom: " + str(event))
"""

ALLOCATE = """
def handler(event, context):
    hog = bytearray(event["mib"] * 1024 * 1024)
    for i in range(0, len(hog), 4096):
        hog[i] = 1
    return len(hog)
"""


@dataclass(frozen=True)
class Case:
    """One sample function, the event it gets, and the check of its execution record."""

    name: str
    code: str
    data: Any
    expect_status: str
    check: Callable[[dict[str, Any]], str | None]
    config: dict[str, Any] = field(default_factory=dict)


def _result_equals(expected: Any) -> Callable[[dict[str, Any]], str | None]:
    def check(execution: dict[str, Any]) -> str | None:
        if execution.get("result") != expected:
            return f"result {execution.get('result')!r} != {expected!r}"
        return None

    return check


def _error_reason(
    reason: str, error_type: str | None = None
) -> Callable[[dict[str, Any]], str | None]:
    def check(execution: dict[str, Any]) -> str | None:
        error = execution.get("error") or {}
        if error.get("reason") != reason:
            return f"error reason {error.get('reason')!r} != {reason!r}"
        if error_type and error.get("type") != error_type:
            return f"error type {error.get('type')!r} != {error_type!r}"
        return None

    return check


def _hello_check(execution: dict[str, Any]) -> str | None:
    result = execution.get("result") or {}
    if result.get("message") != "hello harness":
        return f"result {result!r} lacks the greeting"
    if "saying hello to harness" not in (execution.get("logs") or ""):
        return "the function's print is not in the logs"
    return None


CASES: tuple[Case, ...] = (
    Case("hello", HELLO, {"name": "harness"}, "succeeded", _hello_check),
    Case(
        "echo",
        ECHO,
        {"list": [1, 2, 3], "nested": {"unicode": "żółw"}},
        "succeeded",
        _result_equals({"list": [1, 2, 3], "nested": {"unicode": "żółw"}}),
    ),
    Case(
        "sleep",
        SLEEP,
        {"seconds": 30},
        "timed_out",
        _error_reason("timeout"),
        config={"timeout_s": 1, "max_retries": 0},
    ),
    Case(
        "raise",
        RAISE,
        {"x": 1},
        "failed",
        _error_reason("handler error", "ValueError"),
        config={"max_retries": 0},
    ),
    Case(
        "allocate",
        ALLOCATE,
        {"mib": 512},
        "failed",
        _error_reason("out of memory"),
        config={"memory_mb": 64, "max_retries": 0},
    ),
)
