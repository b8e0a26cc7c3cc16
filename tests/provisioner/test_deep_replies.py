"""A reply nested deeper than the host can decode is the function's outcome, not a crash. No engine."""

from __future__ import annotations

import json
import socket
import struct
import time

import pytest

from provisioner.docker.channel import Channel, ProtocolViolation, ReplyTooDeep


def frame(text: str) -> bytes:
    body = text.encode()
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_a_reply_too_deep_to_decode_is_refused_as_a_protocol_violation(depth):
    host_end, agent_end = socket.socketpair()
    channel = Channel(host_end)
    try:
        agent_end.sendall(
            frame('{"type":"result","ok":true,"result":' + "[" * depth + "]" * depth + "}")
        )
        with pytest.raises(ReplyTooDeep, match="nested too deeply") as caught:
            channel._next_frame(time.monotonic() + 5)
    finally:
        host_end.close()
        agent_end.close()

    assert isinstance(caught.value, ProtocolViolation)  # the container is not reused


def test_the_next_frame_after_a_deep_one_is_read_as_usual():
    host_end, agent_end = socket.socketpair()
    channel = Channel(host_end)
    try:
        agent_end.sendall(frame("[" * 5000 + "]" * 5000) + frame(json.dumps({"type": "pong"})))
        with pytest.raises(ReplyTooDeep):
            channel._next_frame(time.monotonic() + 5)
        assert channel._next_frame(time.monotonic() + 5) == {"type": "pong"}
    finally:
        host_end.close()
        agent_end.close()
