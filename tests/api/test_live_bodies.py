"""Bodies and slow clients on a live gunicorn, as ``lambda-os api`` serves the API.

falcon's TestClient always sends a Content-Length and never stalls, so these
run against ``served_api`` (tests/api/conftest.py) over real sockets. Every
socket has its own time-out, so a server that hangs fails the test instead of
hanging it.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from api_helpers import HELLO, HELLO_V2, SERVED_READ_TIMEOUT_S, encode_multipart, function_fields

from catalog_api.forms import MAX_EVENT_BODY

CLIENT_TIMEOUT_S = 10.0


def address(base: str) -> tuple[str, int]:
    parts = urlsplit(base)
    return parts.hostname, parts.port


def chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def chunked(base: str, method: str, path: str, data: bytes, content_type: str):
    """Send ``data`` with Transfer-Encoding: chunked; the status and the JSON answer."""
    connection = http.client.HTTPConnection(*address(base), timeout=CLIENT_TIMEOUT_S)
    try:
        connection.request(
            method,
            path,
            body=chunks(data),
            headers={"Content-Type": content_type},
            encode_chunked=True,
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def create(base: str, chunked_body: bool = False) -> dict:
    body, form_type = encode_multipart(
        function_fields(name=f"f{time.monotonic_ns()}"),
        {"code": ("hello.py", HELLO, "text/x-python")},
    )
    if chunked_body:
        status, answer = chunked(base, "POST", "/v1/functions", body, form_type)
    else:
        connection = http.client.HTTPConnection(*address(base), timeout=CLIENT_TIMEOUT_S)
        connection.request("POST", "/v1/functions", body=body, headers={"Content-Type": form_type})
        response = connection.getresponse()
        status, answer = response.status, json.loads(response.read())
        connection.close()
    assert status == 201, answer
    return answer


def test_chunked_invocation_body_is_the_event_data(served_api):
    function = create(served_api)
    data = {"name": "world", "items": list(range(500))}

    status, answer = chunked(
        served_api,
        "POST",
        f"/v1/functions/{function['id']}/invocations",
        json.dumps(data).encode(),
        "application/json",
    )

    assert status == 200, answer
    assert answer["event"] == data
    assert answer["result"] == {"event": data}


def test_chunked_multipart_upload_creates_the_function_with_its_code(served_api):
    function = create(served_api, chunked_body=True)

    assert function["code_size"] == len(HELLO)


def test_chunked_raw_code_upload_replaces_the_code(served_api):
    function = create(served_api)

    status, answer = chunked(
        served_api,
        "PUT",
        f"/v1/functions/{function['id']}/code?filename=hello.py",
        HELLO_V2,
        "text/x-python",
    )

    assert status == 200, answer
    assert (answer["version"], answer["code_size"]) == (2, len(HELLO_V2))


def test_chunked_body_over_the_limit_is_413(served_api):
    function = create(served_api)
    too_big = b'"' + b"x" * MAX_EVENT_BODY + b'"'

    status, answer = chunked(
        served_api,
        "POST",
        f"/v1/functions/{function['id']}/invocations",
        too_big,
        "application/json",
    )

    assert status == 413, answer


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; the socket's time-out bounds each wait."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_headers_that_stop_arriving_are_dropped_after_the_read_timeout(served_api):
    with socket.create_connection(address(served_api), timeout=CLIENT_TIMEOUT_S) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        try:
            read_until_closed(sock)
        except TimeoutError:
            pytest.fail(f"the server still held the connection after {CLIENT_TIMEOUT_S} s")
        waited = time.monotonic() - started

    assert SERVED_READ_TIMEOUT_S * 0.5 <= waited < SERVED_READ_TIMEOUT_S + 5


def test_body_shorter_than_its_content_length_gets_408(served_api):
    function = create(served_api)
    request = (
        f"POST /v1/functions/{function['id']}/invocations HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        '{"short": 1}'
    ).encode()
    with socket.create_connection(address(served_api), timeout=CLIENT_TIMEOUT_S) as sock:
        sock.sendall(request)
        try:
            answer = read_until_closed(sock)
        except TimeoutError:
            pytest.fail(f"no answer and no close within {CLIENT_TIMEOUT_S} s")

    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"the body stopped arriving" in answer


def test_stalled_clients_on_every_thread_do_not_stop_the_api(served_api):
    # More stalled connections than the worker has threads (max(4, concurrency) = 8).
    stalled = [
        socket.create_connection(address(served_api), timeout=CLIENT_TIMEOUT_S) for _ in range(12)
    ]
    try:
        for sock in stalled:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        connection = http.client.HTTPConnection(*address(served_api), timeout=CLIENT_TIMEOUT_S)
        try:
            connection.request("GET", "/healthz")
            assert connection.getresponse().status == 200
        except TimeoutError:
            pytest.fail(f"the API did not answer within {CLIENT_TIMEOUT_S} s")
        finally:
            connection.close()
    finally:
        for sock in stalled:
            sock.close()


def test_headers_trickled_a_byte_at_a_time_are_dropped_at_one_deadline(served_api):
    # Each byte comes well within the read time-out; only a deadline on them all stops this.
    pause_s = SERVED_READ_TIMEOUT_S / 4
    with socket.create_connection(address(served_api), timeout=CLIENT_TIMEOUT_S) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        closed = False
        while not closed and time.monotonic() - started < CLIENT_TIMEOUT_S:
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            readable, _, _ = select.select([sock], [], [], pause_s)
            if readable:
                try:
                    closed = sock.recv(65536) == b""
                except ConnectionResetError:
                    closed = True
        waited = time.monotonic() - started

    assert closed, f"the server still read trickled headers after {CLIENT_TIMEOUT_S} s"
    assert waited < SERVED_READ_TIMEOUT_S + 3


def test_a_kept_alive_connection_gets_a_fresh_deadline_for_each_request(served_api):
    connection = http.client.HTTPConnection(*address(served_api), timeout=CLIENT_TIMEOUT_S)
    try:
        for _ in range(3):
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            assert response.status == 200
            response.read()
            time.sleep(SERVED_READ_TIMEOUT_S * 0.6)  # three of these outlast one deadline
    finally:
        connection.close()
