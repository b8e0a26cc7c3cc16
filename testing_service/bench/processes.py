"""Case ``processes``: ``lambda-os listener`` processes on one queue and a real catalogue server.

Issue 15 asks two things of the MongoDB-wire catalogue (the one ``standalone``
and a cluster run on, not the in-memory one the other throughput cases use):

1. what the catalogue costs per event in the listener: one listener process's
   CPU, and how much of it goes into the catalogue client (our
   ``lambda_os/catalogue.py`` and pymongo/bson under it), from a py-spy profile
   of that process during a second run of the same load;
2. whether a second listener process on the same queue and the same catalogue
   adds throughput: the interpreter's cost is per process, so on two cores the
   second core should show.

Each phase (one listener, then two) starts ``lambda-os listener`` processes, the
command an operator runs, on queues, a fresh database and state directories of
its own, registers one trivial function, warms it, and times events published
all at once (throughput1's load shape). It reads the CPU each part spent per
event (the listener processes, FerretDB, the broker, the load driver, the
containers) and the catalogue commands per event (``cluster.command_counts``).
The catalogue server is the one ``cluster`` starts (``catalogue_server``), or
``MONGO_URL``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pika

from lambda_os.catalogue import connect
from lambda_os.settings import Settings
from listener.topology import Topology, declare, delete
from testing_service.bench import cpu, profiling, stats
from testing_service.bench.cluster import (
    _checked,
    _clear_executions,
    _spec,
    _with_channel,
    catalogue_server,
    command_counts,
    per_event_commands,
)
from testing_service.bench.load import LoadSpec, run_in_child
from testing_service.bench.platform import register

LISTENER_COUNTS = (1, 2)
EVENT_TYPE = "processes"
READY_WAIT_S = 60.0
STOP_WAIT_S = 30.0
# A frame from one of these puts a sample in the catalogue client: our catalogue module,
# and the driver and BSON codec under it (py-spy names frames "function (path:line)").
CATALOGUE_FRAMES = ("lambda_os/catalogue.py", "/pymongo/", "/bson/")


def add_arguments(add: Any) -> None:
    """The case's own flags (``add`` is the bench parser's ``add_argument``)."""
    add(
        "--processes-events",
        type=int,
        default=200,
        help="events per phase of the processes case, all published at once (default 200: "
        "FerretDB as built scans every stored execution on each conditional write, so an "
        "event costs more the longer a run is)",
    )
    add(
        "--processes-profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="profile the one listener process with py-spy in a second run, for the share "
        "of its CPU in the catalogue client (default on; independent of --profile)",
    )


class Listeners:
    """``lambda-os listener`` processes on one queue and one fresh database; ``stop`` ends all."""

    def __init__(self, base: Settings, mongo_url: str, count: int) -> None:
        run_id = uuid.uuid4().hex[:10]
        self.settings = dataclasses.replace(
            base,
            mongo_url=mongo_url,
            mongo_db=f"bench_processes_{run_id}",
            events_queue=f"bench.{run_id}.processes",
            dead_letter_queue=f"bench.{run_id}.processes.dead",
        )
        self.count = count
        self.topology = Topology.from_settings(self.settings)
        # A short path: each state directory holds the agents' sockets (108 bytes at most).
        self.work = Path(tempfile.mkdtemp(prefix="los-bp-", dir="/tmp"))
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []
        self._client: Any = None

    def start(self) -> None:
        """Declare the queues, register the function, start the processes, wait until they consume."""
        _with_channel(self.settings.amqp_url, lambda channel: declare(channel, self.topology))
        catalogue = connect(self.settings.mongo_url, self.settings.mongo_db)
        self._client = catalogue._db.client
        register(catalogue, "bench-processes", EVENT_TYPE)
        for index in range(self.count):
            state_dir = self.work / f"l{index}"
            state_dir.mkdir()
            log = open(self.work / f"listener-{index}.log", "ab")  # noqa: SIM115 - closed in stop()
            self._logs.append(log)
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "lambda_os.cli", "listener"],
                    env=self._env(state_dir),
                    stdout=log,
                    stderr=log,
                )
            )
        self._wait_consuming()

    def _env(self, state_dir: Path) -> dict[str, str]:
        env = {
            **os.environ,
            "MONGO_URL": self.settings.mongo_url or "",
            "MONGO_DB": self.settings.mongo_db,
            "AMQP_URL": self.settings.amqp_url,
            "EVENTS_QUEUE": self.settings.events_queue,
            "DEAD_LETTER_QUEUE": self.settings.dead_letter_queue,
            "LAMBDA_OS_RUNTIME_IMAGE_PREFIX": self.settings.runtime_image_prefix,
            "LAMBDA_OS_STATE_DIR": str(state_dir),
            "LAMBDA_OS_CONCURRENCY": str(self.settings.concurrency),
            "LAMBDA_OS_RESERVED_SLOTS": str(self.settings.reserved_slots),
            "LAMBDA_OS_HOST_MEMORY_MB": str(self.settings.host_memory_mb),
            "LAMBDA_OS_POOL_SIZE": "0",
            "LAMBDA_OS_PLACEMENT": "local",
            "LAMBDA_OS_LOG_LEVEL": "WARNING",
        }
        if self.settings.docker_host:
            env["DOCKER_HOST"] = self.settings.docker_host
        return env

    def _wait_consuming(self) -> None:
        """Until the queue has a consumer per process (each has connected and declared)."""
        connection = pika.BlockingConnection(pika.URLParameters(self.settings.amqp_url))
        try:
            channel = connection.channel()
            deadline = time.monotonic() + READY_WAIT_S
            while time.monotonic() < deadline:
                declared = channel.queue_declare(self.settings.events_queue, passive=True)
                if declared.method.consumer_count >= self.count:
                    return
                dead = [i for i, p in enumerate(self.processes) if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"listener processes {dead} exited: {self._tail(dead[0])}")
                time.sleep(0.2)
        finally:
            connection.close()
        raise RuntimeError(f"the listeners did not consume in time: {self._tail(0)}")

    def _tail(self, index: int) -> str:
        self._logs[index].flush()
        text = (self.work / f"listener-{index}.log").read_text(errors="replace")
        return text[-2000:] or "(nothing logged)"

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def cpu_each(self) -> list[float]:
        """Each listener process's CPU seconds so far (with any children it has)."""
        return [sum(value or 0.0 for value in cpu.tree(pid).values()) for pid in self.pids()]

    def containers(self) -> cpu.CpuSource:
        """The containers these processes own: their owner label starts host/pid/."""
        from provisioner.docker.host import DockerHost

        host = DockerHost(self.settings.docker_host)
        return cpu.containers(lambda: [c["Id"] for c in _owned(host, self.pids())])

    def stop(self) -> None:
        """SIGTERM (each finishes what it holds and removes its containers), then clean up."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()
        try:
            if self.processes:
                _remove_owned(self.settings.docker_host, self.pids())
            _with_channel(self.settings.amqp_url, lambda channel: delete(channel, self.topology))
            if self._client is not None:
                self._client.drop_database(self.settings.mongo_db)
        finally:
            if self._client is not None:
                self._client.close()
            shutil.rmtree(self.work, ignore_errors=True)


def _owned(host: Any, pids: list[int]) -> list[dict[str, Any]]:
    from provisioner.docker.host import OWNER_LABEL

    wanted = {str(pid) for pid in pids}
    return [
        summary
        for summary in host.platform_containers(mine=False)
        if (summary.get("Labels", {}).get(OWNER_LABEL, "").split("/") + ["", ""])[1] in wanted
    ]


def _remove_owned(docker_host: str | None, pids: list[int]) -> None:
    """Containers a listener left behind (one that had to be killed cannot remove its own)."""
    from provisioner.docker.host import DockerHost

    host = DockerHost(docker_host)
    try:
        for summary in _owned(host, pids):
            host.remove(summary["Id"])
    finally:
        host.close()


def catalogue_share(
    path: Path, events: int, listener_cpu_ms: float | None, rate_hz: int = profiling.RATE_HZ
) -> dict[str, Any]:
    """How much of a listener's sampled time was in the catalogue client, from py-spy's raw stacks.

    py-spy samples only the thread holding the GIL (``profiling.sampled``), so a
    sample is Python-side CPU, and a stack with any ``CATALOGUE_FRAMES`` frame is
    the catalogue client's (our module, or pymongo/bson called from it). The share
    applied to the listener's measured CPU per event gives the catalogue's ms per
    event, on the assumption that the CPU spent outside the GIL (socket calls)
    divides the same way; the GIL-held ms per event are given beside it.
    """
    total = catalogue = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        if any(fragment in stack for fragment in CATALOGUE_FRAMES):
            catalogue += int(count)
    share = catalogue / total if total else None

    def gil_ms(samples: int) -> float | None:
        return round(samples / rate_hz * 1000 / events, 3) if events else None

    return {
        "events": events,
        "samples": total,
        "catalogue_samples": catalogue,
        "share": None if share is None else round(share, 3),
        "gil_ms_per_event": gil_ms(total),
        "catalogue_gil_ms_per_event": gil_ms(catalogue),
        "listener_cpu_ms_per_event": listener_cpu_ms,
        "catalogue_cpu_ms_per_event": (
            None if share is None or listener_cpu_ms is None else round(share * listener_cpu_ms, 3)
        ),
    }


def processes_case(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """One listener process, then two, on one catalogue server; see the module doc."""
    profile = args.processes_profile and profiling.py_spy() is not None
    with catalogue_server(settings) as (mongo_url, server_pid):
        phases = {
            str(count): _phase(settings, args, mongo_url, server_pid, count, profile and count == 1)
            for count in LISTENER_COUNTS
        }
    if not args.processes_profile:
        client: dict[str, Any] | None = None
    elif profile:
        client = phases["1"].pop("catalogue_client")
    else:
        client = {"skipped": "py-spy not found"}
    one = phases["1"]["events_per_s"]
    two = phases["2"]["events_per_s"]
    return {
        "catalogue": "MONGO_URL" if settings.mongo_url else "FerretDB (SQLite), the case's own",
        "concurrency_per_listener": settings.concurrency,
        "listeners": phases,
        "two_over_one": round(two / one, 2) if one and two is not None else None,
        "catalogue_client": client,
    }


def _phase(
    settings: Settings,
    args: argparse.Namespace,
    mongo_url: str,
    server_pid: int | None,
    count: int,
    profile: bool,
) -> dict[str, Any]:
    listeners = Listeners(settings, mongo_url, count)
    try:
        listeners.start()
        slots = count * settings.concurrency
        # Every process gets the function warm in each of its slots before the timed run.
        warmup = _spec(listeners.settings, max(args.warmup, 2 * slots), slots, (EVENT_TYPE,))
        _checked(run_in_child(warmup), f"warm-up, {count} listener(s)")
        _clear_executions(mongo_url, listeners.settings.mongo_db)
        spec = _spec(
            listeners.settings,
            args.processes_events,
            args.processes_events,
            (EVENT_TYPE,),
            time_limit_s=args.time_limit_s,
        )
        figures = _timed(listeners, spec, mongo_url, server_pid)
        if profile:
            _clear_executions(mongo_url, listeners.settings.mongo_db)
            figures["catalogue_client"] = _profiled(listeners, spec, Path(args.profile_dir))
    finally:
        listeners.stop()
    return {"listeners": count, "events_asked": args.processes_events, **figures}


def _timed(
    listeners: Listeners, spec: LoadSpec, mongo_url: str, server_pid: int | None
) -> dict[str, Any]:
    """One run of ``spec``: its rate, each part's CPU per event, catalogue commands per event."""
    sources: dict[str, cpu.CpuSource] = {
        "broker": cpu.named,
        "listener": lambda: {
            key: value for pid in listeners.pids() for key, value in cpu.tree(pid).items()
        },
        "containers": listeners.containers(),
    }
    if server_pid is not None:
        sources["catalogue"] = cpu.workers(server_pid)
    meter = cpu.CpuMeter(sources)
    commands_before = command_counts(mongo_url)
    each_before: list[float] = []

    def started() -> None:
        meter.start()
        each_before.extend(listeners.cpu_each())

    result = run_in_child(spec, started=started)
    meter.stop()
    each = [round(b - a, 3) for a, b in zip(each_before, listeners.cpu_each(), strict=True)]
    _checked(result, f"throughput, {listeners.count} listener(s)", partial=True)
    events = result["received"]
    return {
        "events": events,
        "stopped_by_time_limit": result["timed_out"],
        "seconds": round(result["seconds"], 3),
        "events_per_s": stats.rate(events, result["seconds"]),
        # How the work split between the processes: near equal if both cores were used.
        "listener_cpu_s_each": each,
        "catalogue_commands_per_event": per_event_commands(
            commands_before, command_counts(mongo_url), events
        ),
        **meter.figures(events, load_driver=result.get("cpu_s")),
    }


def _profiled(listeners: Listeners, spec: LoadSpec, directory: Path) -> dict[str, Any]:
    """The same load again with py-spy on the (one) listener process: its catalogue share.

    A second run, as ``cases._maybe_profiled`` does: on two cores py-spy's own CPU
    would slow the run whose rate is reported. The listener's CPU is read over
    this run too, so the share and the CPU it is applied to come from one run.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "processes-1-listener.raw.txt"
    meter = cpu.CpuMeter({"listener": cpu.workers(listeners.pids()[0])})
    with profiling.sampled(path, pid=listeners.pids()[0]):
        result = run_in_child(spec, started=meter.start)
        meter.stop()
    _checked(result, "profiled run, 1 listener", partial=True)
    events = result["received"]
    listener_ms = meter.figures(events).get("cpu_ms_per_event", {}).get("listener")
    return {
        **catalogue_share(path, events, listener_ms),
        "steps": profiling.breakdown(path, events)["steps"],
        "file": str(path),
    }
