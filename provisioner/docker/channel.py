"""The host's end of the agent protocol: a listening Unix socket and length-prefixed JSON frames.

The host listens and the agent connects, so the directory holding the socket can
be mounted read-only into the container. With its first frame the agent passes
the read end of the pipe that is the function's stdout and stderr, so the host
reads the output directly, even after the process that wrote it has died. Frames are a 4-byte big-endian length
and a UTF-8 JSON object (the agent, ``provisioner/runtime/*/agent.py``, speaks the
same). A frame over ``MAX_FRAME`` bytes, or one that is not a JSON object, means
the other end is not our agent any more: it is treated like a dead agent.

Measured on the 2-core build machine with ``python -m provisioner.docker.datapath``
(p50 of 2,000): a line echoed over a container's stdio attached through dockerd
0.21 ms; a ``ping`` frame to our agent over this socket 0.11 ms (output pipe polled
too; the marker skipped when the pipe is empty); a whole warm ``DockerProvisioner.run`` 0.30 ms. A first execution on a
pooled container took 6.5 ms, in a fresh container 430 ms; an idle warm container
holds 5.9 MiB. Hence this path, and warm containers with a pool.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import time
from pathlib import Path
from typing import Any

HEADER = struct.Struct(">I")
# The agent refuses results over 6 MiB of JSON; the host does not trust it (the handler runs
# in the agent's process and could write frames itself), so no frame may be larger than such
# a result in its envelope. The agent cuts error text short, so error frames stay far below.
# Both keep the execution record under MongoDB's 16 MiB document limit.
MAX_RESULT_BYTES = 6 * 1024 * 1024
MAX_FRAME = MAX_RESULT_BYTES + 64 * 1024
LOG_LIMIT = 64 * 1024
# The most output taken in one go before looking at the deadline again.
READ_LIMIT = 1024 * 1024
# sun_path is 108 bytes on Linux, with the terminating NUL.
MAX_SOCKET_PATH = 107


class ChannelClosed(Exception):
    """The agent closed the connection or sent something that is not a frame: it is gone."""


class ProtocolViolation(ChannelClosed):
    """The agent is alive but sent what no agent of ours sends: the function wrote it."""


class ReplyTooDeep(ProtocolViolation):
    """The agent's reply nests deeper than this process can decode: the function's result did.

    Our agent encodes up to the interpreter's recursion limit and the host decodes on a
    thread that is already some frames deep, so a result just under that limit gets
    through the agent and not through ``json.loads`` here. The frame is gone, and with
    it the reply's output marker, so the container is not reused.
    """


class ChannelTimeout(Exception):
    """No complete frame arrived before the deadline."""


def listen(path: Path, uid: int) -> socket.socket:
    """A listening socket at ``path`` that only ``uid`` (the container's user) may connect to."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ValueError(
            f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes; use a shorter state_dir"
        )
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        os.chown(path, uid, uid)
        os.chmod(path, 0o600)
        server.listen(1)
    except BaseException:
        server.close()
        raise
    return server


class LogTail:
    """The last ``limit`` bytes of an execution's output, however much it writes."""

    def __init__(self, limit: int = LOG_LIMIT) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = False

    def append(self, data: bytes) -> None:
        self.data += data
        if len(self.data) > 2 * self.limit:
            del self.data[: len(self.data) - self.limit]
            self.dropped = True

    def text(self) -> str:
        """The kept output as text, with a notice in front if earlier output was dropped."""
        if len(self.data) <= self.limit and not self.dropped:
            return self.data.decode("utf-8", "replace")
        notice = b"[earlier output dropped]\n"
        kept = bytes(self.data[-(self.limit - len(notice)) :])
        # The cut may fall inside a character: drop its continuation bytes.
        while kept and kept[0] & 0xC0 == 0x80:
            kept = kept[1:]
        return (notice + kept).decode("utf-8", "replace")


class Output:
    """The function's output pipe (fds 1 and 2 in the container), read by the host.

    The agent writes a marker into the pipe before a reply unless the pipe was
    already empty (the reply then says ``"mark": false``); ``marks`` counts the
    markers read, so the reader knows when it holds every byte the function
    wrote before that reply. Bytes go to the current ``sink``.
    """

    def __init__(self, fd: int, marker: bytes) -> None:
        self.fd = fd
        self.marker = marker
        self.pending = b""
        self.marks = 0
        self.eof = False
        self.closed = False
        self.sink: LogTail | None = None
        os.set_blocking(fd, False)

    def read_available(self, limit: int = READ_LIMIT) -> None:
        """Read what is in the pipe now, up to ``limit`` bytes, without waiting.

        The cap is what lets a caller keep its deadline: processes a function left
        running can keep the pipe full for ever, so "until it is empty" may never come.
        """
        taken = 0
        while not self.eof and taken < limit:
            try:
                chunk = os.read(self.fd, min(READ_LIMIT, limit - taken))
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                self._emit(self.pending)
                self.pending = b""
                return
            taken += len(chunk)
            self._feed(chunk)

    def _feed(self, chunk: bytes) -> None:
        data = self.pending + chunk
        while (at := data.find(self.marker)) >= 0:
            self._emit(data[:at])
            data = data[at + len(self.marker) :]
            self.marks += 1
        # Hold back only a tail that could be the start of a marker split across reads.
        held = next(
            (
                n
                for n in range(min(len(data), len(self.marker) - 1), 0, -1)
                if data.endswith(self.marker[:n])
            ),
            0,
        )
        self._emit(data[: len(data) - held])
        self.pending = data[len(data) - held :]

    def flush_pending(self) -> None:
        """Hand on bytes held back as a possible marker start, when no marker is coming."""
        self._emit(self.pending)
        self.pending = b""

    def _emit(self, data: bytes) -> None:
        if data and self.sink is not None:
            self.sink.append(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = self.eof = True
            os.close(self.fd)


class Channel:
    """A connected agent: its framed socket and its output pipe. One user at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.output: Output | None = None
        self.marks_expected = 0
        self.poller = select.poll()
        self.poller.register(sock.fileno(), select.POLLIN)

    def handshake(self, deadline: float) -> dict[str, Any]:
        """Read the agent's ``ready`` frame and take the output pipe that comes with it."""
        self.sock.settimeout(max(0.0, deadline - time.monotonic()))
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 64 * 1024, 1)
        except (TimeoutError, BlockingIOError) as exc:  # a timeout of 0 makes it non-blocking
            raise ChannelTimeout() from exc
        except OSError as exc:
            raise ChannelClosed(f"agent connection lost: {exc}") from exc
        if not data:
            raise ChannelClosed("agent closed the connection before saying it was ready")
        self.buffer += data
        self.sock.setblocking(True)
        hello = self._next_frame(deadline)
        if not fds or not isinstance(hello.get("marker"), str):
            for fd in fds:
                os.close(fd)
            raise ChannelClosed("agent did not hand over its output pipe")
        self.output = Output(fds[0], hello["marker"].encode())
        self.poller.register(fds[0], select.POLLIN)
        return hello

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message, separators=(",", ":")).encode()
        try:
            self.sock.sendall(HEADER.pack(len(body)) + body)
        except OSError as exc:
            raise ChannelClosed(f"agent connection lost while sending: {exc}") from exc

    def request(self, message: dict[str, Any], deadline: float, sink: LogTail) -> dict[str, Any]:
        """Send ``message``; return the reply with all output written before it in ``sink``.

        ``ChannelTimeout`` at ``deadline`` (``time.monotonic()``); ``ChannelClosed``
        when the agent is gone. Either way ``sink`` holds what the function wrote.
        """
        assert self.output is not None
        self.output.sink = None
        # What the last execution's processes wrote after its handler returned, behind the
        # marker, before the agent killed them: it belongs to no execution, and is dropped.
        # Nothing writes between executions, so one read's worth takes it all.
        self.output.read_available()
        self.output.sink = sink
        try:
            self.send(message)
            reply = self._next_frame(deadline)
            if reply.get("mark") is False:
                self.output.flush_pending()  # the pipe was empty: no marker is coming
            else:
                self.marks_expected += 1
                while self.output.marks < self.marks_expected and not self.output.eof:
                    self._wait(deadline)
            return reply
        except (ChannelClosed, ChannelTimeout):
            self.output.read_available()  # one read's worth: the deadline has passed
            raise
        finally:
            self.output.sink = None

    def _next_frame(self, deadline: float) -> dict[str, Any]:
        while True:
            if len(self.buffer) >= HEADER.size:
                (size,) = HEADER.unpack_from(self.buffer)
                if size > MAX_FRAME:
                    raise ProtocolViolation(f"agent sent a frame of {size} bytes")
                end = HEADER.size + size
                if len(self.buffer) >= end:
                    body = bytes(self.buffer[HEADER.size : end])
                    del self.buffer[:end]
                    try:
                        message = json.loads(body)
                    except ValueError as exc:
                        raise ProtocolViolation(
                            f"agent sent a frame that is not JSON: {exc}"
                        ) from exc
                    except RecursionError as exc:
                        raise ReplyTooDeep(
                            f"agent sent a frame of {size} bytes nested too deeply to decode"
                        ) from exc
                    if not isinstance(message, dict):
                        raise ProtocolViolation("agent sent a frame that is not a JSON object")
                    return message
            self._wait(deadline)

    def _wait(self, deadline: float) -> None:
        """Wait for the socket or the output pipe, and take in what arrived.

        At most one read's worth of output is taken, so a pipe that never runs dry
        still brings the caller back here, to the deadline, after each read.
        """
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ChannelTimeout()
        for fd, _events in self.poller.poll(remaining * 1000):
            if self.output is not None and fd == self.output.fd:
                self.output.read_available()
                if self.output.eof:
                    self.poller.unregister(fd)
                continue
            try:
                chunk = self.sock.recv(1024 * 1024)
            except OSError as exc:
                raise ChannelClosed(f"agent connection lost: {exc}") from exc
            if not chunk:
                raise ChannelClosed("agent closed the connection")
            self.buffer += chunk

    def close(self) -> None:
        self.sock.close()
        if self.output is not None:
            self.output.close()
