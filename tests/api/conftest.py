"""Fixtures for the API suites: the app on a mongomock catalogue, and request builders.

Requests go through falcon's TestClient, which drives the real WSGI app (routing,
body reading, error handlers) without a socket.
"""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from falcon.testing import Result, TestClient

from catalog_api.app import create_app
from lambda_os.catalogue import Catalogue
from lambda_os.settings import Settings

HELLO = b'def handler(event, context):\n    return {"hello": event}\n'
HELLO_V2 = b'def handler(event, context):\n    return {"hello again": event}\n'

Multipart = Callable[..., tuple[bytes, str]]


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def client(catalogue: Catalogue, settings: Settings) -> TestClient:
    """The API with no invoker, on a fresh in-memory catalogue."""
    return TestClient(create_app(catalogue, settings))


def encode_multipart(
    fields: dict[str, str] | None = None,
    files: dict[str, tuple[str, bytes, str]] | None = None,
) -> tuple[bytes, str]:
    """A multipart/form-data body as curl -F sends it; returns (body, Content-Type)."""
    boundary = "----lambda-os-" + uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in (fields or {}).items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    for name, (filename, data, content_type) in (files or {}).items():
        out.write(
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


@pytest.fixture
def multipart() -> Multipart:
    return encode_multipart


def make_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def zip_of() -> Callable[[dict[str, bytes]], bytes]:
    return make_zip


def function_fields(**overrides: str) -> dict[str, str]:
    return {"name": "hello", "event_source": "demo", "event_type": "greeting", **overrides}


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
        return client.simulate_post(
            "/v1/functions", body=body, headers={"Content-Type": form_type}
        )

    return post


@pytest.fixture
def created(upload: Callable[..., Result]) -> dict[str, Any]:
    """A function named hello, created from hello.py."""
    result = upload()
    assert result.status_code == 201, result.text
    return result.json
