"""Where the listener's time goes per event: py-spy samples of this process, grouped by step.

``sampled`` runs ``py-spy record`` on this process (the listener runs in it;
the load driver does not) for the length of a case, writing raw collapsed
stacks. ``breakdown`` files each sample under the innermost step of the event
path it was in (consume, parse, match, claim, lease, update, invocation,
provisioner round trip, reply, ack) and divides by the events handled, giving
milliseconds per event for each step. Only the thread holding the GIL is
sampled (``--gil``): with eight worker threads on two cores, threads waiting for
the GIL or blocked in a system call would otherwise be counted as busy. So the
figures are the Python CPU time each step costs, the budget that caps one
listener process's throughput; time spent waiting (for the container's answer,
for a broker confirm) shows in the latencies, not here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RATE_HZ = 250

# (step, path fragment, function names): the innermost frame naming one of these wins.
STEPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("reply publish", "listener/consume.py", ("_reply", "_publish_reply")),
    ("ack and settle", "listener/consume.py", ("_settle",)),
    ("parse", "listener/events.py", ("parse_event",)),
    ("match (find_matching)", "lambda_os/catalogue.py", ("find_matching", "get_function")),
    ("create/start execution", "lambda_os/catalogue.py", ("create_execution", "start_execution")),
    ("acquire_execution (lease)", "lambda_os/catalogue.py", ("acquire_execution",)),
    ("fenced outcome write", "lambda_os/catalogue.py", ("_fenced_update",)),
    ("get_execution", "lambda_os/catalogue.py", ("get_execution",)),
    ("record conversion", "lambda_os/records.py", ("from_document", "to_document", "to_api")),
    ("Invocation building", "listener/execute.py", ("_invocation",)),
    ("provisioner channel round trip", "provisioner/docker/channel.py", ("request",)),
)
# When no step above is on the stack: the first of these (innermost frame first).
AREAS: tuple[tuple[str, str], ...] = (
    ("catalogue, other", "lambda_os/catalogue.py"),
    ("package cache lookup", "provisioner/docker/cache.py"),
    ("provisioner, other", "provisioner/"),
    ("execute, other", "listener/execute.py"),
    ("consume loop (pika I/O)", "listener/consume.py"),
    ("listener, other", "listener/"),
    ("pika, other", "/pika/"),
    ("logging", "/logging/"),
)


def py_spy() -> str | None:
    """py-spy on the PATH, or beside this interpreter (a virtualenv not activated)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


@contextmanager
def sampled(output: Path, rate_hz: int = RATE_HZ, pid: int | None = None) -> Iterator[Path]:
    """py-spy samples of this process (or ``pid``) while the block runs, in ``output`` (raw
    collapsed stacks)."""
    executable = py_spy()
    if executable is None:
        raise RuntimeError("py-spy is not installed: pip install '.[bench]'")
    process = subprocess.Popen(
        [
            executable,
            "record",
            "--pid",
            str(pid or os.getpid()),
            "--rate",
            str(rate_hz),
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
            "--gil",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)  # attaching takes a moment
    try:
        yield output
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def classify(frames: list[str]) -> str:
    """The step a sample belongs to; ``frames`` run from the root to the innermost."""
    for frame in reversed(frames):
        for step, fragment, functions in STEPS:
            if fragment in frame and frame.split(" (", 1)[0].rsplit(".", 1)[-1] in functions:
                return step
    for frame in reversed(frames):
        for area, fragment in AREAS:
            if fragment in frame:
                return area
    return "other (interpreter, threads, GC, bench)"


def breakdown(path: Path, events: int, rate_hz: int = RATE_HZ) -> dict[str, Any]:
    """Samples per step, as shares and as CPU ms per event."""
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        step = classify(stack.split(";"))
        counts[step] = counts.get(step, 0) + int(count)
        total += int(count)
    steps = [
        {
            "step": step,
            "samples": samples,
            "share": round(samples / total, 3) if total else 0.0,
            "gil_ms_per_event": round(samples / rate_hz * 1000 / events, 4) if events else None,
        }
        for step, samples in sorted(counts.items(), key=lambda item: -item[1])
    ]
    return {"events": events, "rate_hz": rate_hz, "samples": total, "steps": steps}
