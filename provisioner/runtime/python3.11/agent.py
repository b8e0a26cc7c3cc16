"""The runtime agent: runs inside a function's container and serves its executions.

It connects to the Unix socket the host listens on (in a directory the host
bind-mounts read-only; connect() works on a read-only mount) and then serves
one message at a time, so one container can answer many executions while it
stays warm. Frames are a 4-byte big-endian length and a UTF-8 JSON object:

    agent -> host   {"type": "ready", "pid", "python", "marker"} + the output pipe (SCM_RIGHTS)
    host  -> agent  {"type": "load", "task_dir", "handler", "environment",
                     "function_name", "function_version", "memory_limit_in_mb"}
    agent -> host   {"type": "loaded"} or {"type": "result", "ok": false, "error": {...}}
    host  -> agent  {"type": "invoke", "execution_id", "event_id", "event_source",
                     "event_type", "data", "timeout_ms"}
    agent -> host   {"type": "result", "ok": true, "result", "clean", "cleanup_us"}
                    or {..., "ok": false, "error"}

The function's output is caught at the file-descriptor level (fds 1 and 2 are
a pipe) so prints and subprocess output both land. The pipe's read end is
passed to the host with the first frame, so the host reads the output itself
as it comes, and a function that crashes or is killed at its timeout still
leaves what it printed. The marker the agent writes into the pipe before a
reply tells the host it has read everything the function wrote before it; a
reply with ``"mark": false`` says the pipe was already empty, so no marker.

Every execution starts clean. The handler runs in the agent's own process, so
module state lives on between executions of the same function version, as in
AWS Lambda. When it returns, the marker goes into the pipe at once (whatever is
written after the return falls behind it, and the host drops it), and then every
other process in the container except PID 1 (docker-init) is killed: the
container is its own PID namespace, and everything in it runs as the agent's
uid, so ``kill(-1, SIGKILL)`` reaches exactly those, and a fork bomb cannot
outrun it (the kernel refuses a fork to a process with SIGKILL pending). A
thread cannot be killed from inside its process, so a reply whose ``clean`` is
false (threads still running, or a process that would not go) tells the host
to retire the container.

Standard library only: it runs on the image's bare Debian python3.
"""

from __future__ import annotations

import array
import fcntl
import importlib
import json
import os
import signal
import socket
import struct
import sys
import termios
import time
import traceback

SOCKET_PATH = "/run/lambda-os/agent.sock"
HEADER = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024
MAX_RESULT_BYTES = 6 * 1024 * 1024
# The host refuses frames over MAX_RESULT_BYTES and a little. Each field of an error is cut
# to this many characters, so an error frame stays far below that however long the
# exception's text (a character is up to 12 bytes once JSON-escaped).
MAX_ERROR_CHARS = 64 * 1024
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# How long the processes a handler left get to die and be reaped; the host retires a
# container whose cleanup takes longer (a process stuck in the kernel, say).
CLEANUP_S = 2.0
# How long threads that were already ending when the handler returned get to finish.
THREADS_ENDING_S = 0.05


class Context:
    """What a handler learns about its execution, besides the event."""

    def __init__(self, message: dict, function: dict) -> None:
        self.event_id = message.get("event_id", "")
        self.event_source = message.get("event_source", "")
        self.event_type = message.get("event_type", "")
        self.execution_id = message.get("execution_id", "")
        self.attempt = message.get("attempt", 1)  # 2 and up when the platform retries
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


def frame(message: dict) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


class Channel:
    """The framed connection to the host."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, message: dict) -> None:
        self.sock.sendall(frame(message))

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
    """fds 1 and 2 redirected into a pipe whose read end is handed to the host.

    The host reads the function's output straight from the pipe, so what was
    written before the process died (``os._exit``, the OOM killer, the timeout's
    SIGKILL) is still there to read: nothing is held in this process. Before each
    reply the agent writes a marker into the pipe; the host reads up to it, so it
    knows it has all the output that came before the reply.
    """

    def __init__(self) -> None:
        self.marker = os.urandom(16).hex().encode()
        self.read_fd, self.write_fd = os.pipe()
        try:
            fcntl.fcntl(self.write_fd, F_SETPIPE_SZ, 1024 * 1024)
        except OSError:
            pass  # the default 64 KiB pipe works too, with more wake-ups
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.write_fd, 1)
        os.dup2(self.write_fd, 2)

    def hand_over(self, sock: socket.socket, frame: bytes) -> None:
        """Send the first frame with the pipe's read end attached, and let go of it.

        A duplicate of the read end is kept only to ask how much is unread.
        """
        socket.send_fds(sock, [frame], [self.read_fd])
        self.peek_fd = os.dup(self.read_fd)
        os.close(self.read_fd)

    def mark(self) -> bool:
        """Write the marker after everything the function has written so far, if needed.

        When the pipe is empty the host has already read every byte: no marker
        is written, and the reply says so, which saves the host a wake-up.
        """
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass  # the function closed or replaced it
        unread = array.array("i", [0])
        try:
            fcntl.ioctl(self.peek_fd, termios.FIONREAD, unread)
        except OSError:
            unread[0] = 1
        if unread[0] == 0:
            return False
        os.write(self.write_fd, self.marker)
        return True


def clip(text: str, keep_end: bool = False) -> str:
    """``text`` cut to ``MAX_ERROR_CHARS``, saying so; a traceback keeps its end."""
    if len(text) <= MAX_ERROR_CHARS:
        return text
    if keep_end:
        return "[cut] " + text[-MAX_ERROR_CHARS:]
    return text[:MAX_ERROR_CHARS] + " [cut]"


def error_from(exc: BaseException, tb: bool = True) -> dict:
    error = {"type": clip(type(exc).__name__), "message": clip(str(exc))}
    if tb:
        error["traceback"] = clip("".join(traceback.format_exception(exc)), keep_end=True)
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
            "message": clip(f"the handler's result is not JSON-serialisable: {exc}"),
        }
    if len(text) > MAX_RESULT_BYTES:
        return None, {
            "type": "ResultTooLarge",
            "message": f"the result is {len(text)} bytes of JSON; the limit is {MAX_RESULT_BYTES}",
        }
    return text, None


def result_frame(text: str, mark: bool, left: str | None, cleanup_us: int) -> bytes:
    """A success frame with the result's JSON text spliced in, so it is not encoded twice."""
    head = {
        "type": "result",
        "ok": True,
        "mark": mark,
        "clean": left is None,
        "left": left,
        "cleanup_us": cleanup_us,
    }
    body = (json.dumps(head, separators=(",", ":"))[:-1] + ',"result":' + text + "}").encode()
    return HEADER.pack(len(body)) + body


def reap_children() -> None:
    """Collect the agent's own exited children; docker-init reaps every other orphan."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def others_alive() -> list[int]:
    """Pids in the container besides PID 1 and the agent, zombies included (they hold pids)."""
    me = os.getpid()
    return [
        int(name) for name in os.listdir("/proc") if name.isdigit() and int(name) not in (1, me)
    ]


def end_processes() -> str | None:
    """Kill every process but PID 1 and the agent; None once all are gone, else what is left.

    ``kill(-1)`` fails with ESRCH when nothing is left to signal, zombies aside: the
    usual case costs that call and a ``waitpid`` for the agent's own zombies.
    """
    deadline = time.monotonic() + CLEANUP_S
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            reap_children()
            return None
        except PermissionError:
            pass  # only processes the agent cannot signal are left; /proc says which
        reap_children()
        left = others_alive()
        if not left:
            return None
        if time.monotonic() > deadline:
            return f"{len(left)} processes did not end within {CLEANUP_S} s"
        time.sleep(0.001)


def threads_left() -> str | None:
    """None if the agent's process runs only its own thread, else how many others it runs.

    ``/proc/self/task`` sees native threads too; a thread that has just been joined
    may still be leaving the kernel, so it gets a moment.
    """
    deadline = time.monotonic() + THREADS_ENDING_S
    while (count := len(os.listdir("/proc/self/task"))) > 1:
        if time.monotonic() > deadline:
            return f"{count - 1} threads the function started are still running"
        time.sleep(0.001)
    return None


def clean_up() -> str | None:
    """End what the handler left behind; None if nothing of it runs any more, else why not."""
    for timer in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):
        signal.setitimer(timer, 0)  # a timer would fire its handler in a later execution
    return end_processes() or threads_left()


def serve(channel: Channel) -> None:
    output = Output()
    agent_pid = os.getpid()
    hello = {"type": "ready", "pid": agent_pid, "python": sys.version.split()[0]}
    output.hand_over(channel.sock, frame({**hello, "marker": output.marker.decode()}))
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
                handler, failure = load(message), None
            except BaseException as exc:  # noqa: BLE001 - the function's import can raise anything
                failure = exc
            if os.getpid() != agent_pid:
                os._exit(0)  # a child the function forked came back here: only the agent answers
            if failure is not None:
                mark = output.mark()
                channel.send(
                    {"type": "result", "ok": False, "error": error_from(failure), "mark": mark}
                )
                continue
            channel.send({"type": "loaded", "mark": output.mark()})
        elif kind == "invoke":
            if handler is None:
                error = {"type": "RuntimeError", "message": "no handler loaded"}
                channel.send({"type": "result", "ok": False, "error": error, "mark": output.mark()})
                continue
            context = Context(message, function)
            try:
                result, failure = handler(message.get("data"), context), None
            except BaseException as exc:  # noqa: BLE001 - SystemExit too is the function's
                result, failure = None, exc
            if os.getpid() != agent_pid:
                os._exit(0)  # a child the handler forked returned from it: only the agent answers
            mark = output.mark()
            # Timed so the bench can show what a clean start costs each execution.
            cleaning = time.perf_counter_ns()
            left = clean_up()
            cleanup_us = (time.perf_counter_ns() - cleaning) // 1000
            if failure is not None:
                text, error = None, error_from(failure)
            else:
                text, error = encode_result(result)
            if error is not None:
                reply = {"type": "result", "ok": False, "error": error, "mark": mark}
                channel.send(
                    {**reply, "clean": left is None, "left": left, "cleanup_us": cleanup_us}
                )
            else:
                channel.sock.sendall(result_frame(text, mark, left, cleanup_us))
        elif kind == "ping":
            channel.send({"type": "pong", "mark": output.mark()})


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
