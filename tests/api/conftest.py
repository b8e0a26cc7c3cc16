"""Fixtures for the API suites: the app on a mongomock catalogue, and a multipart upload.

Requests go through falcon's TestClient, which drives the real WSGI app (routing,
body reading, error handlers) without a socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from api_helpers import HELLO, encode_multipart, function_fields
from falcon.testing import Result, TestClient

from catalog_api.app import create_app
from lambda_os.catalogue import Catalogue
from lambda_os.settings import Settings


@pytest.fixture
def settings() -> Settings:
    return Settings()


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
