"""The runtime agent: runs inside a function's container and serves its executions.

It connects to the Unix socket the host listens on (in a directory the host
bind-mounts read-only; connect() works on a read-only mount) and then serves
one message at a time, so one container can answer many executions while it
stays warm. Frames are a 4-byte big-endian length and a UTF-8 JSON object:

    agent -> host   {"type": "ready", "pid": ..., "python": "3.11.2"}
    host  -> agent  {"type": "load", "task_dir", "handler", "environment",
                     "function_name", "function_version", "memory_limit_in_mb"}
    agent -> host   {"type": "loaded"} or {"type": "result", "ok": false, "error": {...}}
    host  -> agent  {"type": "invoke", "execution_id", "event_id", "event_source",
                     "event_type", "data", "timeout_ms"}
    agent -> host   {"type": "log", "data": "..."}*  then  {"type": "result", "ok", ...}

The function's output is caught at the file-descriptor level (fds 1 and 2 are
a pipe) so prints and subprocess output both land, and it is streamed to the
host as it comes: a function that crashes or is killed at its timeout still
leaves what it printed. A marker written through the pipe after the handler
returns tells the reader thread that everything before it has been sent.

Standard library only: it runs on the image's bare Debian python3.
"""

from __future__ import annotations

import codecs
import importlib
import json
import os
import socket
import struct
import sys
import threading
import time
import traceback

SOCKET_PATH = "/run/lambda-os/agent.sock"
HEADER = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024
MAX_RESULT_BYTES = 6 * 1024 * 1024
LOG_CHUNK = 64 * 1024


class Context:
    """What a handler learns about its execution, besides the event."""

    def __init__(self, message: dict, function: dict) -> None:
        self.event_id = message.get("event_id", "")
        self.event_source = message.get("event_source", "")
        self.event_type = message.get("event_type", "")
        self.execution_id = message.get("execution_id", "")
        self.function_name = function.get("function_name", "")
        self.function_version = function.get("function_version", 0)
        self.memory_limit_in_mb = function.get("memory_limit_in_mb", 0)
        self._deadline = time.monotonic() + message.get("timeout_ms", 0) / 1000.0

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the platform kills this execution."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    @property
    def remaining_time_in_millis(self) -> int:
        return self.get_remaining_time_in_millis()

    def __repr__(self) -> str:
        return (
            f"Context(execution_id={self.execution_id!r}, event_id={self.event_id!r}, "
            f"function_name={self.function_name!r}, function_version={self.function_version!r})"
        )


class Channel:
    """The framed connection to the host; the main and log threads both send on it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()

    def send(self, message: dict) -> None:
        body = json.dumps(message, separators=(",", ":")).encode()
        with self.lock:
            self.sock.sendall(HEADER.pack(len(body)) + body)

    def recv(self) -> dict | None:
        header = self._exactly(HEADER.size)
        if header is None:
            return None
        (size,) = HEADER.unpack(header)
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes is over the limit")
        body = self._exactly(size)
        if body is None:
            return None
        return json.loads(body)

    def _exactly(self, size: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < size:
            chunk = self.sock.recv(size - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)


class Output:
    """fds 1 and 2 redirected into a pipe whose reader streams log frames to the host."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.marker = os.urandom(16).hex().encode()
        read_fd, self.write_fd = os.pipe()
        self.reader = os.fdopen(read_fd, "rb", buffering=0)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.write_fd, 1)
        os.dup2(self.write_fd, 2)
        self.drained = threading.Event()
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        threading.Thread(target=self._pump, name="output", daemon=True).start()

    def _pump(self) -> None:
        pending = b""
        keep = len(self.marker) - 1
        while True:
            chunk = self.reader.read(LOG_CHUNK)
            if not chunk:
                return
            pending += chunk
            while (at := pending.find(self.marker)) >= 0:
                self._send(pending[:at], final=True)
                pending = pending[at + len(self.marker) :]
                self.drained.set()
            # Hold back a tail that could be the start of a marker split across reads.
            if len(pending) > keep:
                self._send(pending[:-keep] if keep else pending, final=False)
                pending = pending[-keep:] if keep else b""

    def _send(self, data: bytes, final: bool) -> None:
        text = self.decoder.decode(data, final=final)
        if text:
            try:
                self.channel.send({"type": "log", "data": text})
            except OSError:
                pass

    def drain(self) -> None:
        """Return once everything written to fds 1 and 2 so far has been sent to the host."""
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        self.drained.clear()
        os.write(self.write_fd, self.marker)
        self.drained.wait()


def error_from(exc: BaseException, tb: bool = True) -> dict:
    error = {"type": type(exc).__name__, "message": str(exc)}
    if tb:
        error["traceback"] = "".join(traceback.format_exception(exc))
    return error


def load(message: dict):
    """Import the handler from the package directory, with the function's environment."""
    task_dir = message["task_dir"]
    os.environ.update(message.get("environment") or {})
    os.chdir(task_dir)
    sys.path.insert(0, task_dir)
    module_name, _, function_name = message["handler"].rpartition(".")
    module = importlib.import_module(module_name)
    handler = getattr(module, function_name)
    if not callable(handler):
        raise TypeError(f"handler {message['handler']!r} is not callable")
    return handler


def encode_result(result) -> tuple[str | None, dict | None]:
    """The result as JSON text, or the error that says why it cannot be returned."""
    try:
        text = json.dumps(result, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        return None, {
            "type": type(exc).__name__,
            "message": f"the handler's result is not JSON-serialisable: {exc}",
        }
    if len(text) > MAX_RESULT_BYTES:
        return None, {
            "type": "ResultTooLarge",
            "message": f"the result is {len(text)} bytes of JSON; the limit is {MAX_RESULT_BYTES}",
        }
    return text, None


def serve(channel: Channel) -> None:
    output = Output(channel)
    channel.send({"type": "ready", "pid": os.getpid(), "python": sys.version.split()[0]})
    handler = None
    function: dict = {}
    while True:
        message = channel.recv()
        if message is None:
            return
        kind = message.get("type")
        if kind == "load":
            function = message
            try:
                handler = load(message)
            except BaseException as exc:  # noqa: BLE001 - the function's import can raise anything
                output.drain()
                channel.send({"type": "result", "ok": False, "error": error_from(exc)})
                continue
            output.drain()
            channel.send({"type": "loaded"})
        elif kind == "invoke":
            if handler is None:
                channel.send(
                    {
                        "type": "result",
                        "ok": False,
                        "error": {"type": "RuntimeError", "message": "no handler loaded"},
                    }
                )
                continue
            context = Context(message, function)
            try:
                result = handler(message.get("data"), context)
            except BaseException as exc:  # noqa: BLE001 - SystemExit too is the function's
                output.drain()
                channel.send({"type": "result", "ok": False, "error": error_from(exc)})
                continue
            text, error = encode_result(result)
            output.drain()
            if error is not None:
                channel.send({"type": "result", "ok": False, "error": error})
            else:
                body = '{"type":"result","ok":true,"result":' + text + "}"
                data = body.encode()
                with channel.lock:
                    channel.sock.sendall(HEADER.pack(len(data)) + data)
        elif kind == "ping":
            channel.send({"type": "pong"})


def main() -> int:
    path = os.environ.get("LAMBDA_OS_AGENT_SOCKET", SOCKET_PATH)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    # The function must not find the platform's variables in its environment.
    os.environ.pop("LAMBDA_OS_AGENT_SOCKET", None)
    serve(Channel(sock))
    return 0


if __name__ == "__main__":
    sys.exit(main())
