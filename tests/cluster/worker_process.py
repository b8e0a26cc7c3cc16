"""A cluster host for the live tests: ``lambda-os worker`` with a short lease and quick reconnects.

Run as ``python worker_process.py`` with the settings in the environment (its own
host id and state directory); the lease margin is a few seconds, as the fault
suites' listener processes have it.
"""

from __future__ import annotations

import logging
import os
import sys

from lambda_os.serve import run_worker
from lambda_os.settings import Settings
from listener.service import Backoff


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s [{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pika").setLevel(logging.WARNING)
    return run_worker(
        Settings.from_env(),
        backoff=Backoff(initial_s=0.2, cap_s=2.0),
        transient_delay_s=0.5,
        lease_margin_s=3.0,
    )


if __name__ == "__main__":
    sys.exit(main())
