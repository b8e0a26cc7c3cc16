"""The player's TCP relay, on loopback: it carries bytes both ways and lets in only the VMs."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator

import pytest

from testing_service.relay import Relay, relayed_url, url_target

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@pytest.fixture
def echo() -> Iterator[str]:
    """A one-connection-at-a-time echo server on loopback, as the relay's target."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    server.close()


def _connect(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_bytes_go_through_to_the_target_and_back(echo):
    relay = Relay("127.0.0.1", echo, LOOPBACK).start()
    try:
        with _connect(relay.address) as client:
            client.sendall(b"hello " * 20000)
            received = b""
            while len(received) < 120000:
                received += client.recv(65536)
        assert received == b"hello " * 20000
    finally:
        relay.stop()


def test_a_peer_outside_the_vms_subnet_is_closed_unanswered(echo):
    relay = Relay("127.0.0.1", echo, ipaddress.ip_network("198.18.0.0/24")).start()
    try:
        with _connect(relay.address) as client:
            client.sendall(b"ping")
            assert client.recv(10) == b""
    finally:
        relay.stop()


def test_cutting_a_vm_ends_its_relayed_connections(echo):
    relay = Relay("127.0.0.1", echo, LOOPBACK).start()
    try:
        with _connect(relay.address) as client:
            client.sendall(b"ping")
            assert client.recv(10) == b"ping"
            relay.cut("127.0.0.1")
            assert client.recv(10) == b""
    finally:
        relay.stop()


def test_urls_name_their_target_and_keep_their_user_when_relayed():
    assert url_target("amqp://guest:guest@127.0.0.1/%2F") == "127.0.0.1:5672"
    assert url_target("mongodb://127.0.0.1:40123/") == "127.0.0.1:40123"
    assert (
        relayed_url("amqp://guest:guest@127.0.0.1:5672/%2F", "198.18.4.1:5672")
        == "amqp://guest:guest@198.18.4.1:5672/%2F"
    )
    assert relayed_url("mongodb://127.0.0.1:40123/?w=1", "198.18.4.1:40123") == (
        "mongodb://198.18.4.1:40123/?w=1"
    )
    with pytest.raises(ValueError, match="no port"):
        url_target("ftp://127.0.0.1/")
