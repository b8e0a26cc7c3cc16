"""Case 3d's platform: the real ``lambda-os standalone`` process, started as an operator would.

Case 3a measures a ``Listener`` built inside the bench's own process; this one
measures what is deployed: the console script beside this interpreter, a
gunicorn master and its one worker holding the API and the listener thread
(``serve.run_standalone``). It gets a free API port, queues and a state
directory of this run's own and the pool size case 3a uses; its one trivial
function is uploaded through the HTTP API, as ``curl -F`` does, so the event
path it then serves is the one a user's function takes.

The catalogue is the in-memory one by default, as case 3a's, so the two differ
only in being the deployed process (``--standalone-catalogue ferretdb``: the
command's own default, a FerretDB server of its own). The process is configured
by the bench's settings alone: every option's environment variable is set from
them and no other is passed on, so a ``MONGO_URL`` in the shell cannot point it
at a shared catalogue. It runs the code the bench runs (``PYTHONPATH``), not
whatever checkout the virtualenv was installed from.

Whatever happens, the process (and its process group) is stopped, containers it
left are removed, and its queues and state directory are deleted.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import docker
import pika

from lambda_os.catalogue_server import free_port
from lambda_os.client import ApiClient
from lambda_os.settings import OPTIONS, Settings
from listener.topology import Topology, delete
from provisioner.docker.host import OWNER_LABEL, PLATFORM_LABEL
from testing_service.bench import cpu
from testing_service.bench.platform import EVENT_SOURCE, TRIVIAL_SOURCE, bench_settings

COMMAND = Path(sys.executable).with_name("lambda-os")
# The checkout this module is in: the process imports it first, as the bench does.
REPO = Path(__file__).resolve().parents[2]
HEALTHY_WAIT_S = 60.0
STOP_WAIT_S = 60.0
# Case 3a's one function receives this type (``catalogue_with(1, …)``).
EVENT_TYPE = "trivial-0"
CATALOGUES = ("memory", "ferretdb")
# Given as flags, as deploy/test.sh starts its harness's platform; the rest go in the environment.
RUN_FLAGS = ("api_port", "events_queue", "dead_letter_queue", "state_dir", "pool_size")


def add_arguments(add: Callable[..., Any]) -> None:
    """This case's flag, beside the bench's own."""
    add(
        "--standalone-catalogue",
        default="memory",
        choices=CATALOGUES,
        help=(
            "the catalogue of case 3d's lambda-os standalone process (default memory, as case "
            "3a's listener; ferretdb: the command's own default, a server of its own)"
        ),
    )


def standalone_settings(
    base: Settings, run_id: str, state_dir: Path, api_port: int, catalogue: str
) -> Settings:
    """What the process is told: ``base`` on this run's queues, port and state directory.

    Open on loopback (``auth`` none) so the bench can upload without credentials,
    and at WARNING: case 3a silences the same per-execution INFO lines in its
    process, and writing them is work the in-process listener does not do.
    """
    return bench_settings(
        base,
        run_id,
        state_dir,
        api_host="127.0.0.1",
        api_port=api_port,
        auth="none",
        api_token=None,
        embedded_catalogue=catalogue,
        pool_size=0,
        log_level="WARNING",
    )


def command(settings: Settings) -> list[str]:
    """``lambda-os standalone`` with this run's own port, queues, state directory and pool."""
    flags = [
        item
        for field in RUN_FLAGS
        for item in ("--" + field.replace("_", "-"), str(getattr(settings, field)))
    ]
    return [str(COMMAND), "standalone", *flags]


def environment(settings: Settings, inherited: dict[str, str]) -> dict[str, str]:
    """``inherited`` without any option's variable, then every set option from ``settings``."""
    own = {option.env for option in OPTIONS}
    env = {name: value for name, value in inherited.items() if name not in own}
    for option in OPTIONS:
        value = getattr(settings, option.field)
        if value is not None:
            env[option.env] = str(value)
    path = inherited.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{path}" if path else str(REPO)
    return env


@dataclasses.dataclass
class Standalone:
    """A running ``lambda-os standalone`` and how to reach it."""

    settings: Settings
    process: subprocess.Popen[bytes]
    log_path: Path
    docker_client: Any
    event_types: tuple[str, ...] = (EVENT_TYPE,)
    # Every pid seen in its process tree: containers are labelled with the worker's.
    seen_pids: set[int] = dataclasses.field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    def tree(self) -> dict[str, float | None]:
        """The process and its descendants (the gunicorn worker, FerretDB), as a CPU part."""
        readings = cpu.tree(self.process.pid)
        self.seen_pids.update(int(pid) for pid in readings)
        return readings

    def containers(self) -> list[dict[str, Any]]:
        """Its containers now: the platform's, labelled by a process of its tree."""
        self.tree()
        return [
            summary
            for summary in self.docker_client.api.containers(
                all=True, filters={"label": [f"{PLATFORM_LABEL}=1"]}
            )
            if owner_pid(summary) in self.seen_pids
        ]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_healthy(self, wait_s: float = HEALTHY_WAIT_S) -> None:
        """Until ``/healthz`` says 200 (the catalogue answers and the listener consumes)."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"lambda-os standalone exited with {self.process.returncode}:\n"
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=2):
                    self.tree()
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(
            f"lambda-os standalone was not healthy within {wait_s} s:\n{self.log_tail()}"
        )

    def upload_trivial(self) -> dict[str, Any]:
        """Case 3a's function and event type, through ``POST /v1/functions``."""
        fields = {
            "name": "bench-0",
            "runtime": "python3.11",
            "event_source": EVENT_SOURCE,
            "event_type": EVENT_TYPE,
        }
        return ApiClient(self.base_url).upload(fields, "main.py", TRIVIAL_SOURCE)

    def stop(self, wait_s: float = STOP_WAIT_S) -> int:
        """SIGTERM (finish what is in flight), then SIGKILL to its whole group if it hangs."""
        self.tree()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def remove_leftovers(self) -> None:
        """Remove the containers a process of its tree left (none after a clean stop)."""
        for summary in self.containers():
            self.docker_client.api.remove_container(summary["Id"], force=True)


def owner_pid(summary: dict[str, Any]) -> int | None:
    """The pid of the process that started a container (a ``containers()`` summary)."""
    # The owner label is hostname/pid/start time/instance (provisioner.docker.host.Owner).
    parts = ((summary.get("Labels") or {}).get(OWNER_LABEL) or "").split("/")
    return int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else None


@contextmanager
def running_standalone(base: Settings, catalogue: str = "memory") -> Iterator[Standalone]:
    """A healthy ``lambda-os standalone`` with case 3a's function uploaded; all removed after."""
    client = (
        docker.DockerClient(base_url=base.docker_host) if base.docker_host else docker.from_env()
    )
    run_id = uuid.uuid4().hex[:10]
    # A short path: the agent's socket path must fit in 108 bytes.
    state_dir = Path(tempfile.mkdtemp(prefix="los-bench-", dir="/tmp"))
    settings = standalone_settings(base, run_id, state_dir, free_port(), catalogue)
    log_path = state_dir / "standalone.log"
    log: IO[bytes] | None = None
    standalone: Standalone | None = None
    try:
        log = open(log_path, "ab")  # noqa: SIM115 - the process writes it until it stops
        process = subprocess.Popen(
            command(settings),
            env=environment(settings, dict(os.environ)),
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own group, so a hung process is killed with its worker and FerretDB.
            start_new_session=True,
        )
        standalone = Standalone(settings, process, log_path, client)
        standalone.wait_healthy()
        standalone.upload_trivial()
        yield standalone
    finally:
        try:
            if standalone is not None:
                standalone.stop()
                standalone.remove_leftovers()
        finally:
            if log is not None:
                log.close()
            client.close()
            try:
                _delete_topology(settings)
            finally:
                shutil.rmtree(state_dir, ignore_errors=True)


def _delete_topology(settings: Settings) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        delete(connection.channel(), Topology.from_settings(settings))
    finally:
        connection.close()
