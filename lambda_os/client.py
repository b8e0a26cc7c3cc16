"""A small HTTP client for the platform's API, on the standard library only.

Used by ``lambda-os function`` and by the bundled harness; it speaks only what
swagger/openapi.yaml documents.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any


class ApiError(Exception):
    """The API answered with an error status; ``status`` and ``body`` say which and why."""

    def __init__(self, message: str, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ApiClient:
    """The calls a user makes: functions, their code, invocations and executions."""

    def __init__(self, base_url: str, timeout: float = 60.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token  # sent as X-Auth-Token (a Keystone token) when set

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        raw: bool = False,
    ) -> Any:
        request = urllib.request.Request(self.base_url + path, data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("X-Auth-Token", self.token)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                detail: Any = json.loads(text)
            except ValueError:
                detail = text
            raise ApiError(f"{method} {path}: {exc.code} {text.strip()}", exc.code, detail) from exc
        except urllib.error.URLError as exc:
            raise ApiError(f"{method} {path}: cannot reach {self.base_url}: {exc.reason}") from exc
        if raw:
            return payload
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

    def functions(self, **filters: str) -> list[dict[str, Any]]:
        """Every function matching the filters, following the ``next`` links."""
        query = urllib.parse.urlencode({k: v for k, v in filters.items() if v})
        path: str | None = "/v1/functions" + (f"?{query}" if query else "")
        found: list[dict[str, Any]] = []
        while path:
            page = self._request("GET", path)
            found.extend(page["functions"])
            path = page.get("next")
        return found

    def function(self, function_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/functions/{function_id}")

    def update_code(self, function_id: str, filename: str, code: bytes) -> dict[str, Any]:
        content_type = "application/zip" if filename.endswith(".zip") else "text/x-python"
        return self._request("PUT", f"/v1/functions/{function_id}/code", code, content_type)

    def code(self, function_id: str) -> bytes:
        return self._request("GET", f"/v1/functions/{function_id}/code", raw=True)

    def invoke(self, function_id: str, data: Any) -> dict[str, Any]:
        body = json.dumps(data).encode()
        return self._request(
            "POST", f"/v1/functions/{function_id}/invocations", body, "application/json"
        )

    def execution(self, execution_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/executions/{execution_id}")

    def executions(self, function_id: str | None = None) -> list[dict[str, Any]]:
        """One page of executions (the first 100), of one function or of all visible."""
        query = f"?{urllib.parse.urlencode({'function_id': function_id})}" if function_id else ""
        return self._request("GET", f"/v1/executions{query}")["executions"]

    def logs(self, execution_id: str) -> str:
        return self._request("GET", f"/v1/executions/{execution_id}/logs", raw=True).decode()

    def delete(self, function_id: str) -> None:
        self._request("DELETE", f"/v1/functions/{function_id}")

    def hosts(self) -> dict[str, Any]:
        """``GET /v1/hosts``: the cluster's registered hosts."""
        return self._request("GET", "/v1/hosts")
