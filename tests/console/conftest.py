"""Fixtures of the console's browser tests: a real platform, and Debian's headless chromium.

``platform`` is ``lambda-os standalone`` on a loopback port of its own, with its own
events queue, RabbitMQ and Docker, the in-memory catalogue, and API tokens
(``--auth tokens``), so the console is driven through the same login and token
header as any client. ``browser`` is chromium driven by selenium through Debian's
chromedriver, named by path: selenium-manager, which would download a driver or a
browser, is never run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest

from listener.topology import Topology, delete

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("LAMBDA_OS_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("LAMBDA_OS_CHROMEDRIVER", "/usr/bin/chromedriver"))
# Headless, and quiet: no update checks, sync or other traffic of the browser's own.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1100",
)


def missing(reason: str) -> None:
    """Skip with the reason, or fail under CI (as tests/conftest.py's ``missing`` does)."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Platform:
    """A running ``lambda-os standalone``: where it answers, its queue and its admin's password."""

    base: str
    queue: str
    admin_password: str
    amqp_url: str

    def publish(self, body: bytes) -> None:
        """Put a raw message on the platform's events queue, as any publisher would."""
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            connection.channel().basic_publish("", self.queue, body)
        finally:
            connection.close()

    def get(self, path: str, token: str) -> dict:
        request = urllib.request.Request(self.base + path, headers={"X-Auth-Token": token})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def post(self, path: str, token: str, body: object) -> dict:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"X-Auth-Token": token, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def login(self) -> str:
        request = urllib.request.Request(
            self.base + "/v1/auth/tokens",
            data=json.dumps({"name": "admin", "password": self.admin_password}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["token"]


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
            return json.load(response).get("status") == "ok"
    except (OSError, ValueError, urllib.error.URLError):
        return False


@pytest.fixture(scope="module")
def platform(amqp_url: str, runtime_image: str, tmp_path_factory) -> Iterator[Platform]:
    queue = f"test.console.{uuid.uuid4().hex[:10]}"
    # Short: the containers' agent sockets live under it (at most 107 bytes).
    state_dir = tempfile.mkdtemp(prefix="lo-", dir="/tmp")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "MONGO_URL"}
    env["PYTHONPATH"] = str(REPO)
    log_path = tmp_path_factory.mktemp("console") / "standalone.log"
    command = [
        sys.executable, "-m", "lambda_os.cli", "standalone",
        "--api-port", str(port),
        "--api-workers", "1",
        "--auth", "tokens",
        "--embedded-catalogue", "memory",
        "--events-queue", queue,
        "--dead-letter-queue", f"{queue}.dead",
        "--amqp-url", amqp_url,
        "--state-dir", state_dir,
        "--runtime-image-prefix", runtime_image.rsplit(":", 1)[0],
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 90
        while not _healthy(base):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"standalone did not become healthy:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        password = (Path(state_dir) / "admin-secret").read_text().strip()
        yield Platform(base, queue, password, amqp_url)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        delete(connection.channel(), Topology(queue, f"{queue}.dead"))
        connection.close()
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[object]:
    """Headless chromium in a fresh profile, driven by selenium."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed (pip install -e '.[test]')")
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.is_file():
            missing(f"{binary} is missing (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
