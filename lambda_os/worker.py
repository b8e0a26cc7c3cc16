"""The gunicorn worker the API runs in: gthread, with a time-out on every read from a client.

gunicorn's gthread worker hands a connection to a thread once its first bytes
arrive, then reads the rest of the request with a blocking socket and no
time-out: a client that stops halfway through its headers, or sends less body
than its Content-Length, holds that thread for as long as it keeps the
connection open, and a handful of them stop the API. gunicorn has no setting
for this (its ``timeout`` is the worker's heartbeat, not a read time-out).

So each request is read under a socket time-out of ``read_timeout_s`` seconds
between bytes: a stall in the headers ends the connection, and a stall in the
body raises ``TimeoutError`` out of ``wsgi.input``, which the API answers with
408 (``catalog_api.forms.read_body``). Once the application has returned, the
socket goes back to blocking, so a large answer to a slow reader is not cut off.
"""

from __future__ import annotations

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
        return super().handle(conn)


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
