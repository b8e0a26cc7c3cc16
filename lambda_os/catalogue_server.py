"""A MongoDB-wire catalogue server of our own: FerretDB on SQLite, as a child process.

``lambda-os standalone`` keeps its catalogue in one (functions and executions
survive a crashed API worker and a restart), and the test session runs the
real-server suites against one. Production names a real MongoDB in
``MONGO_URL`` instead. ``deploy/setup.sh`` builds the binary from
``deploy/ferretdb`` into the virtualenv, beside the interpreter.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Self

LOGGER = logging.getLogger(__name__)

BINARY_NAME = "lambda-os-ferretdb"


class CatalogueServerError(RuntimeError):
    """The server could not be found or did not start; the message says why."""


def find_binary() -> Path | None:
    """The FerretDB binary set-up built: beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / BINARY_NAME
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(BINARY_NAME)
    return Path(found) if found else None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


_PR_SET_PDEATHSIG = 1
# Loaded here, in the parent: between fork and exec the child only makes the call.
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """In the child: SIGTERM when our process dies, even by SIGKILL, so no server is orphaned."""
    try:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except AttributeError:
        pass  # no prctl (not Linux): stop() still ends it


class CatalogueServer:
    """One FerretDB process serving ``data_dir`` on ``host:port`` (a free port when 0)."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        host: str = "127.0.0.1",
        binary: Path | None = None,
        log: IO[bytes] | int | None = subprocess.DEVNULL,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self._binary = binary or find_binary()
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self, timeout_s: float = 20.0) -> str:
        """Start the server and wait until it accepts connections; its URL."""
        if self._binary is None:
            raise CatalogueServerError(
                f"{BINARY_NAME} is not built: run deploy/setup.sh (it needs Go), "
                "or name a MongoDB in MONGO_URL"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                str(self._binary),
                "--listen-addr",
                f"{self.host}:{self.port}",
                "--sqlite-dir",
                str(self.data_dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            # Its own process group: a Ctrl-C meant for us reaches it through stop() only.
            start_new_session=True,
            # Safe with threads here: it calls one C function, loaded before the fork.
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise CatalogueServerError(
                    f"{self._binary} exited with {self._process.returncode} at start"
                )
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                LOGGER.info(
                    "catalogue server (FerretDB) on %s, data in %s", self.url, self.data_dir
                )
                return self.url
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise CatalogueServerError(f"{self._binary} did not listen on {self.url} in {timeout_s} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it lingers; idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
