"""Specification: one busy function cannot starve the others of the host's slots (issue #18)."""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.integration

SLEEPER = """
import time
def handler(event, context):
    time.sleep(event)
    return event
"""

QUICK = """
def handler(event, context):
    return "done"
"""


def test_a_function_with_many_long_runs_leaves_a_slot_for_another_functions_quick_run(
    backend, invocation, docker_client
):
    provisioner = backend(pool_size=0, warm_idle_s=0.0, concurrency=4)
    # Its own concurrency (10) is more than the host's 4 slots: it could take them all.
    long_runs = [invocation(SLEEPER, 8, timeout_s=60, concurrency=10) for _ in range(5)]
    function_id = long_runs[0].function_id
    outcomes = []
    threads = [
        threading.Thread(target=lambda r=r: outcomes.append(provisioner.run(r))) for r in long_runs
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while (
        len(
            docker_client.containers.list(filters={"label": f"lambda-os.function-id={function_id}"})
        )
        < 3
    ):
        assert time.monotonic() < deadline, "the long runs never started"
        time.sleep(0.05)

    quick = provisioner.run(invocation(QUICK))
    for thread in threads:
        thread.join()

    assert quick.status == "succeeded"
    assert [outcome.status for outcome in outcomes] == ["succeeded"] * 5
    # It started while the first long runs were still sleeping, not after one ended.
    assert quick.started_at < min(outcome.finished_at for outcome in outcomes)
