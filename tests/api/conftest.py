"""Fixtures for the API suites: the app on a mongomock catalogue, a multipart upload, a live server.

Requests go through falcon's TestClient, which drives the real WSGI app (routing,
body reading, error handlers) without a socket.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers import (
    HELLO,
    SERVED_READ_TIMEOUT_S,
    TEST_HOST,
    encode_multipart,
    free_port,
    function_fields,
    stop,
    wait_until_healthy,
)
from falcon.testing import Result, TestClient

from catalog_api.app import create_app
from lambda_os.catalogue import Catalogue
from lambda_os.settings import Settings

# The Host falcon's TestClient sends, allowed as a deployment allows its own name.


@pytest.fixture
def settings() -> Settings:
    return Settings(allowed_hosts=TEST_HOST)


@pytest.fixture
def client(catalogue: Catalogue, settings: Settings) -> TestClient:
    """The API with no invoker, on a fresh in-memory catalogue."""
    return TestClient(create_app(catalogue, settings))


@pytest.fixture
def upload(client: TestClient) -> Callable[..., Result]:
    """POST a function as a multipart form, the way curl -F does."""

    def post(
        code: bytes = HELLO,
        filename: str = "hello.py",
        content_type: str = "text/x-python",
        **fields: str,
    ) -> Result:
        body, form_type = encode_multipart(
            function_fields(**fields), {"code": (filename, code, content_type)}
        )
        return client.simulate_post("/v1/functions", body=body, headers={"Content-Type": form_type})

    return post


@pytest.fixture
def created(upload: Callable[..., Result]) -> dict[str, Any]:
    """A function named hello, created from hello.py."""
    result = upload()
    assert result.status_code == 201, result.text
    return result.json


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def live_api() -> Iterator[str]:
    """A gunicorn running get_app() on 127.0.0.1, one worker, in-memory catalogue."""
    base = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "MONGO_URL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            base.removeprefix("http://"),
            "--workers",
            "1",
            "catalog_api.app:get_app()",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_healthy(base, server)
        yield base
    finally:
        stop(server)


@pytest.fixture(scope="module")
def served_api() -> Iterator[str]:
    """The API as ``lambda-os api`` serves it (live_server.py), with an echoing invoker."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "MONGO_URL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(
        LAMBDA_OS_API_PORT=str(port),
        LAMBDA_OS_API_READ_TIMEOUT_S=str(SERVED_READ_TIMEOUT_S),
        LAMBDA_OS_LOG_LEVEL="WARNING",
    )
    # Not a pipe: the slow-client tests make gunicorn log, and nobody drains a pipe.
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("live_server.py"))],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_healthy(base, server)
        yield base
    finally:
        stop(server)
