"""A listener process for the kill -9 fault: settings from the environment, a short lease.

Run by tests/faults/test_faults.py as ``python listener_process.py``; the lease
margin is a few seconds so the second process takes over the executions the
killed one held without waiting the default minute.
"""

from __future__ import annotations

import logging
import sys

from lambda_os.catalogue import connect
from lambda_os.settings import Settings
from listener.service import Backoff, Listener
from provisioner.docker import DockerProvisioner

LEASE_MARGIN_S = 3.0


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    settings = Settings.from_env()
    catalogue = connect(settings.mongo_url, settings.mongo_db)
    provisioner = DockerProvisioner(settings)
    listener = Listener(
        settings,
        catalogue,
        provisioner,
        backoff=Backoff(initial_s=0.2, cap_s=2.0),
        transient_delay_s=0.5,
        lease_margin_s=LEASE_MARGIN_S,
    )
    listener.install_signal_handlers()
    try:
        return listener.run()
    finally:
        provisioner.close()


if __name__ == "__main__":
    sys.exit(main())
