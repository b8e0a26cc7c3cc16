"""A TCP relay for tests: a played VM reaches the broker and catalogue on loopback through it.

The VM's netns has its own loopback, so the machine's RabbitMQ and FerretDB (on
127.0.0.1) are out of its reach; this listens on the player's bridge address and
copies bytes both ways to a loopback port. Connections reach the target from
127.0.0.1, so RabbitMQ's loopback-only ``guest`` still works. Traffic stays on the
bridge the test made and on loopback.
"""

from __future__ import annotations

import socket
import threading
from typing import Self


class TcpRelay:
    """``listen_host:<free port>`` -> ``target``, until ``stop``."""

    def __init__(self, listen_host: str, target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server((listen_host, 0))
        self.host, self.port = self._server.getsockname()[:2]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self._server.accept()
            except OSError:
                return  # closed by stop()
            try:
                outbound = socket.create_connection(self.target, timeout=5)
            except OSError:
                inbound.close()
                continue
            outbound.settimeout(None)
            with self._lock:
                self._sockets += [inbound, outbound]
            for source, sink in ((inbound, outbound), (outbound, inbound)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        try:  # wakes the accept() blocked in the other thread (close alone does not)
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()
