"""The gunicorn worker the API runs in: gthread, with a time-out on every read from a client.

gunicorn's gthread worker hands a connection to a thread once its first bytes
arrive, then reads the rest of the request with a blocking socket and no
time-out: a client that stops halfway through its headers, or sends less body
than its Content-Length, holds that thread for as long as it keeps the
connection open, and a handful of them stop the API. gunicorn has no setting
for this (its ``timeout`` is the worker's heartbeat, not a read time-out).

So each request is read under time-outs of ``read_timeout_s`` seconds: the
headers must all arrive within that much time from their first byte (a client
trickling one byte at a time gets no more), and the body may pause for at most
that long between bytes (a 50 MiB upload may take as long as it needs). A late
header ends the connection; a stalled body raises ``TimeoutError`` out of
``wsgi.input``, which the API answers with 408 (``catalog_api.forms.read_body``).
Once the application has returned, the socket goes back to blocking, so a large
answer to a slow reader is not cut off.

The header deadline needs gunicorn's parser to read through ``_HeaderDeadline``:
its ``SocketUnreader`` holds the socket as ``sock``, and ``handle_request`` is
called once the headers are parsed. Both are gunicorn internals (23.0); the live
tests in tests/api/test_live_bodies.py fail if they change.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class BoundedReadWorker(ThreadWorker):
    """gthread with a per-read time-out on requests; ``bounded_read_worker`` sets it."""

    read_timeout_s: float = 30.0

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = _writes_unbounded(self.wsgi)

    def handle(self, conn: Any) -> Any:
        # gthread makes the socket blocking (no time-out) each time a request starts.
        conn.sock.settimeout(self.read_timeout_s)
        reader = conn.parser.unreader
        if not isinstance(reader.sock, _HeaderDeadline):
            reader.sock = _HeaderDeadline(reader.sock, self.read_timeout_s)
        reader.sock.start()
        return super().handle(conn)

    def handle_request(self, req: Any, conn: Any) -> Any:
        conn.parser.unreader.sock.stop()  # the headers are in; the body may take its time
        return super().handle_request(req, conn)


class _HeaderDeadline:
    """The socket as gunicorn's parser reads it: until ``stop``, reads end at one deadline."""

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        self._sock = sock
        self._timeout_s = timeout_s
        self._deadline: float | None = None

    def start(self) -> None:
        self._deadline = time.monotonic() + self._timeout_s

    def stop(self) -> None:
        self._deadline = None
        self._sock.settimeout(self._timeout_s)

    def recv(self, size: int) -> bytes:
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the request headers did not arrive in time")
            self._sock.settimeout(min(self._timeout_s, remaining))
        return self._sock.recv(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def bounded_read_worker(read_timeout_s: float) -> type[BoundedReadWorker]:
    """The worker class for gunicorn's ``worker_class`` with this read time-out."""
    return type("BoundedReadWorker", (BoundedReadWorker,), {"read_timeout_s": read_timeout_s})


def _writes_unbounded(app: WSGIApp) -> WSGIApp:
    def served(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            return app(environ, start_response)
        finally:
            # The body has been read: sendall's time-out would bound the whole answer.
            sock = environ.get("gunicorn.socket")
            if sock is not None:
                sock.settimeout(None)

    return served
