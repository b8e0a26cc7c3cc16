"""A TCP relay: the played VMs reach a loopback-only service through it, and nothing else does.

RabbitMQ and the catalogue listen on 127.0.0.1, and RabbitMQ's guest user may log in
from loopback only. Opening them to the VM bridge would change the services; a relay
of the player's own, listening on the bridge address and connecting to the loopback
target, changes nothing: the relayed connection arrives from 127.0.0.1, so whatever
user the worker names (guest or its own) logs in as it would on the machine itself.
The relay reads no byte of what it carries.

A connection from outside the VMs' subnet is closed unanswered: the bridge address is
a local address, and Linux would accept a packet for it on any interface.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from urllib.parse import urlsplit, urlunsplit

LOGGER = logging.getLogger(__name__)
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "mongodb": 27017}
_CHUNK = 65536


def url_target(url: str) -> str:
    """The ``host:port`` a service URL connects to (its scheme's port when it names none)."""
    parts = urlsplit(url)
    if parts.hostname is None:
        raise ValueError(f"{url!r} names no host")
    port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    if port is None:
        raise ValueError(f"{url!r} names no port and {parts.scheme!r} has no default")
    return f"{parts.hostname}:{port}"


def relayed_url(url: str, address: str) -> str:
    """``url`` with its host and port replaced by the relay's ``address`` (user kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{address}" if userinfo else address
    return urlunsplit(parts._replace(netloc=netloc))


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


class Relay:
    """Listens on ``listen_host`` and forwards each connection from ``allowed`` to ``target``.

    ``port`` is tried first (the target's own, so a relayed URL looks like the real
    one); when it is taken on that address, any free port will do.
    """

    def __init__(
        self,
        listen_host: str,
        target: str,
        allowed: ipaddress.IPv4Network,
        port: int = 0,
    ) -> None:
        self._target = _split(target)
        self._allowed = allowed
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._server.bind((listen_host, port))
        except OSError:
            if port == 0:
                self._server.close()
                raise
            self._server.bind((listen_host, 0))  # the target's port is taken here: any will do
        self._server.listen(64)
        self._server.settimeout(0.5)  # so the accept loop sees stop() within half a second
        host, port = self._server.getsockname()
        self.address = f"{host}:{port}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: dict[socket.socket, str] = {}  # each relayed socket -> the VM's address
        self._thread = threading.Thread(target=self._accept, name=f"relay {self.address}")

    def start(self) -> Relay:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every relayed connection, as a VM going away would."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._server.close()
        with self._lock:
            for sock in self._open:
                _close(sock)
            self._open.clear()

    def cut(self, peer: str) -> None:
        """Cut the connections from the VM at ``peer``: a deleted VM's end goes with it."""
        with self._lock:
            for sock in [s for s, p in self._open.items() if p == peer]:
                _close(sock)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, (peer, _port) = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if ipaddress.ip_address(peer) not in self._allowed:
                LOGGER.warning("relay %s: refusing %s, not a VM", self.address, peer)
                _close(client)
                continue
            threading.Thread(target=self._connect, args=(client, peer), daemon=True).start()

    def _connect(self, client: socket.socket, peer: str) -> None:
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError as exc:
            LOGGER.warning("relay %s: %s:%d unreachable: %s", self.address, *self._target, exc)
            _close(client)
            return
        upstream.settimeout(None)
        client.settimeout(None)
        with self._lock:
            if self._stop.is_set():
                _close(client)
                _close(upstream)
                return
            self._open.update({client: peer, upstream: peer})
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        with self._lock:
            self._open.pop(client, None)
            self._open.pop(upstream, None)
        _close(client)
        _close(upstream)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        """Copy until ``source`` ends, then pass the end on (half-close), as TCP would."""
        try:
            while data := source.recv(_CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
