"""Request builders shared by the API tests (a uniquely named module, not conftest,
so that importing it cannot pick up another suite's conftest)."""

from __future__ import annotations

import io
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import zipfile

import falcon
import falcon.testing
import pytest

from catalog_api.auth.principal import Principal

# The Host header falcon's TestClient sends, which the tests' settings allow.
TEST_HOST = falcon.testing.helpers.DEFAULT_HOST
HELLO = b'def handler(event, context):\n    return {"hello": event}\n'
# The read time-out of the ``served_api`` fixture: short, so slow-client tests end quickly.
SERVED_READ_TIMEOUT_S = 1.0
HELLO_V2 = b'def handler(event, context):\n    return {"hello again": event}\n'


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


def make_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def function_fields(**overrides: str) -> dict[str, str]:
    return {"name": "hello", "event_source": "demo", "event_type": "greeting", **overrides}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(base: str, server: subprocess.Popen, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            detail = server.stderr.read() if server.stderr else "(stderr not captured)"
            pytest.fail(f"gunicorn exited with {server.returncode}: {detail}")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    pytest.fail(f"gunicorn did not answer /healthz on {base} within {timeout_s}s")


def stop(process: subprocess.Popen, timeout_s: float = 10) -> None:
    """SIGTERM a server the test started, SIGKILL if it lingers."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# Callers by token, for the API's own side of authentication (the role table and the
# scoping); Keystone's validation of real tokens is tried in tests/openstack.
TOKENS = {
    "a-member": Principal("project-a", "alice", frozenset({"member"})),
    "a-reader": Principal("project-a", "rita", frozenset({"reader"})),
    "b-member": Principal("project-b", "bob", frozenset({"member"})),
    "admin": Principal("project-admin", "ada", frozenset({"admin"})),
    "no-role": Principal("project-a", "nora", frozenset()),
}


class TokenTable:
    challenge = 'Keystone uri="http://keystone.invalid"'

    def authenticate(self, req: falcon.Request) -> Principal | None:
        return TOKENS.get(req.get_header("X-Auth-Token") or "")


# -- who may do what: the role table, shared by the in-process and the Keystone suites --

ENDPOINTS = [
    ("GET", "/v1/functions/{id}"),
    ("GET", "/v1/functions/{id}/code"),
    ("PATCH", "/v1/functions/{id}"),
    ("PUT", "/v1/functions/{id}/code?filename=main.py"),
    ("POST", "/v1/functions/{id}/invocations"),
    ("DELETE", "/v1/functions/{id}"),
    ("GET", "/v1/executions/{execution_id}"),
    ("GET", "/v1/executions/{execution_id}/logs"),
    ("GET", "/v1/deadletters/{dead_letter_id}"),
    ("POST", "/v1/deadletters/{dead_letter_id}/replay"),
    # Project A's function has version 1 published and its alias "live" points there.
    ("GET", "/v1/functions/{id}/versions"),
    ("POST", "/v1/functions/{id}/versions"),
    ("GET", "/v1/functions/{id}/versions/1"),
    ("DELETE", "/v1/functions/{id}/versions/1"),
    ("GET", "/v1/functions/{id}/aliases"),
    ("GET", "/v1/functions/{id}/aliases/live"),
    ("PUT", "/v1/functions/{id}/aliases/live"),
    ("DELETE", "/v1/functions/{id}/aliases/live"),
]
BODIES = {
    "PATCH": {"json": {"description": "changed"}},
    "PUT": {"body": HELLO, "headers": {"Content-Type": "text/x-python"}},
    "POST": {"json": {}},
}
# Where one endpoint takes another body than its method's in BODIES.
ENDPOINT_BODIES = {("PUT", "/v1/functions/{id}/aliases/live"): {"json": {"version": 1}}}
READS = {"GET"}
# Without an invoker or replayer the app answers 503 once the caller may act.
MAY_ACT = {"GET": 200, "PATCH": 200, "PUT": 200, "POST": 503, "DELETE": 204}
# Where one endpoint answers otherwise than its method in MAY_ACT, once the caller may act.
ENDPOINT_ALLOWED = {
    ("POST", "/v1/functions/{id}/versions"): 200,  # version 1 is published already
    ("DELETE", "/v1/functions/{id}/versions/1"): 409,  # the alias points to it
}


def body_for(method: str, template: str) -> dict:
    """The request keywords (json, or body and headers) one endpoint of the table takes."""
    return ENDPOINT_BODIES.get((method, template), BODIES.get(method, {}))


def allowed_for(method: str, template: str) -> int:
    """What one endpoint of the table answers a caller who may act on it."""
    return ENDPOINT_ALLOWED.get((method, template), MAY_ACT[method])


CALLERS = ("a-member", "admin", "a-reader", "no-role", "b-member", None)


def expected_status(who: str | None, method: str, allowed: int) -> int:
    """What ``who`` gets on project A's resources: ``allowed`` (the answer once the caller
    may act), 403 for a role that may not (a reader's change), 404 for another project
    (as for an id that does not exist), 401 without a valid token."""
    if who is None:
        return 401
    if who == "b-member":
        return 404
    if who == "no-role" or (who == "a-reader" and method not in READS):
        return 403
    return allowed
