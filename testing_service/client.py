"""A small HTTP client for the platform's API, on the standard library only."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any


class ApiError(Exception):
    """The API answered with an error status."""


class ApiClient:
    """Just the calls the harness makes: upload, invoke, read executions, delete."""

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> Any:
        request = urllib.request.Request(self.base_url + path, data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(
                f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}"
            ) from exc
        return json.loads(payload) if payload else None

    def upload(self, fields: dict[str, Any], filename: str, code: bytes) -> dict[str, Any]:
        """POST /v1/functions as multipart/form-data, the way curl -F does it."""
        boundary = uuid.uuid4().hex
        parts = []
        for key, value in fields.items():
            text = json.dumps(value) if isinstance(value, (dict, list, bool)) else str(value)
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{text}\r\n'.encode()
            )
        parts.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="code"; filename="{filename}"\r\n'
                "Content-Type: text/x-python\r\n\r\n"
            ).encode()
            + code
            + b"\r\n"
        )
        parts.append(f"--{boundary}--\r\n".encode())
        return self._request(
            "POST",
            "/v1/functions",
            b"".join(parts),
            f"multipart/form-data; boundary={boundary}",
        )

    def invoke(self, function_id: str, data: Any) -> dict[str, Any]:
        body = json.dumps(data).encode()
        return self._request(
            "POST", f"/v1/functions/{function_id}/invocations", body, "application/json"
        )

    def execution(self, execution_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/executions/{execution_id}")

    def executions(self, function_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/v1/executions?function_id={function_id}")["executions"]

    def delete(self, function_id: str) -> None:
        self._request("DELETE", f"/v1/functions/{function_id}")
