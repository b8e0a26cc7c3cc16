"""A listener process for the multi-process faults: settings from the environment, a short lease.

Run by the fault suites as ``python listener_process.py``; the lease margin is a
few seconds so a surviving process takes over the executions a killed or stopped
one held without waiting the default minute. With ``LAMBDA_OS_TEST_RUN_LOG`` set,
every run this process makes is appended to that file as a JSON line (execution,
attempt, and the start and end the function itself reported), so the test can
check that no execution ever ran on two listeners at once.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import Any

from lambda_os.catalogue import connect
from lambda_os.settings import Settings
from listener.service import Backoff, Listener
from provisioner.base import Invocation, Outcome
from provisioner.docker import DockerProvisioner

LEASE_MARGIN_S = 3.0


class RunLog:
    """The real provisioner, writing one line per run to a file of this process's own."""

    def __init__(self, provisioner: Any, path: str) -> None:
        self._provisioner = provisioner
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the process's life
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._provisioner.capacity

    def run(self, invocation: Invocation) -> Outcome:
        outcome = self._provisioner.run(invocation)
        result = outcome.result if isinstance(outcome.result, dict) else {}
        line = {
            "pid": os.getpid(),
            "execution_id": invocation.execution_id,
            "event_id": invocation.event_id,
            "attempt": invocation.attempt,
            "status": outcome.status,
            "start": result.get("start"),
            "end": result.get("end"),
        }
        with self._lock:
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()
        return outcome

    def close(self) -> None:
        self._provisioner.close()
        self._file.close()


def main() -> int:
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s [{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    settings = Settings.from_env()
    catalogue = connect(settings.mongo_url, settings.mongo_db)
    provisioner: Any = DockerProvisioner(settings)
    run_log = os.environ.get("LAMBDA_OS_TEST_RUN_LOG")
    if run_log:
        provisioner = RunLog(provisioner, run_log)
    listener = Listener(
        settings,
        catalogue,
        provisioner,
        backoff=Backoff(initial_s=0.2, cap_s=2.0),
        transient_delay_s=0.5,
        lease_margin_s=LEASE_MARGIN_S,
        name=os.environ.get("LAMBDA_OS_TEST_LISTENER_NAME", "lambda-os listener"),
    )
    listener.install_signal_handlers()
    try:
        return listener.run()
    finally:
        provisioner.close()


if __name__ == "__main__":
    sys.exit(main())
