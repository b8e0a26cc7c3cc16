"""Case ``cluster``: the platform across hosts, a router in front of ``lambda-os worker`` processes.

One run measures what issue 13 asks of the cluster:

1. ``hop``: one event at a time to a trivial function, on the standalone path (a
   listener that runs the function itself) and through the router to one worker,
   on the same FerretDB catalogue: the extra hop's latency is the difference;
2. ``scaling``: a function that sleeps ``--cluster-sleep-ms`` on 1, 2 and 4 workers,
   as many events in flight as the workers have slots, so every slot is kept busy
   and none waits in the delay queue: throughput, and its ratio over 1 worker;
3. ``warm``: ``--cluster-functions`` functions on the 4 workers under steady load
   (events cycling over them, the slots' worth in flight): the share of events that
   found a warm container (the reply's ``cold_start`` false), after a warm-up.

Every worker is a ``lambda-os worker`` process on the local Docker Engine with its
own slots, state directory and queue; the router (``serve.router_parts``, what
``lambda-os listener --placement cluster`` runs) lives in this process, as the
bench's listener does, so its CPU is this process's. The catalogue is a FerretDB
server of the case's own (or ``MONGO_URL``), each phase on a fresh database, so
no phase pays for the executions an earlier one left. Each throughput phase also
reads the CPU every part spent per event (FerretDB, the router, the workers, the
broker, the containers) and the catalogue commands per event (FerretDB's
``serverStatus``; with a real MongoDB, its ``opcounters``).
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
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import pymongo

from lambda_os.catalogue import Catalogue, connect
from lambda_os.catalogue_server import CatalogueServer
from lambda_os.packages import inspect_package
from lambda_os.settings import Settings
from listener.topology import Topology, declare, delete
from testing_service.bench import cpu, stats
from testing_service.bench.load import LoadSpec, run_in_child
from testing_service.bench.platform import EVENT_SOURCE, OWNER, running_platform

SLEEP_SOURCE = b"""import time

def handler(event, context):
    time.sleep(event.get("sleep_ms", 0) / 1000)
    return event
"""
WORKER_COUNTS = (1, 2, 4)
HEARTBEAT_S = 1.0
REGISTER_WAIT_S = 60.0
# Each host's budget: room for a warm container of every function in each of its slots
# (20 functions x 2 slots x 128 MB), so the warm-hit run measures placement, not eviction.
WORKER_MEMORY_MB = 8192
# Events per function before the warm-hit run is timed: every function's home and the
# hosts it spills to have their containers by then (the steady state).
WARMUP_PER_FUNCTION = 4


def add_arguments(add: Any) -> None:
    """The case's own count flags (``add`` is the bench parser's ``add_argument``)."""
    add(
        "--cluster-latency-events",
        type=int,
        default=200,
        help="events timed one at a time, standalone and through the router (default 200)",
    )
    add(
        "--cluster-events",
        type=int,
        default=400,
        help="events per worker count in the cluster's throughput (default 400)",
    )
    add(
        "--cluster-warm-events",
        type=int,
        default=400,
        help="events over the functions of the cluster's warm-hit run (default 400)",
    )
    add(
        "--cluster-functions",
        type=int,
        default=20,
        help="functions in the cluster's warm-hit run (default 20)",
    )
    add(
        "--cluster-slots",
        type=int,
        default=2,
        help="slots (concurrency) of each cluster worker (default 2)",
    )
    add(
        "--cluster-sleep-ms",
        type=int,
        default=50,
        help="how long the cluster's throughput function sleeps (default 50)",
    )


class Cluster:
    """A router in this process, worker processes, one catalogue database; ``stop`` ends all."""

    def __init__(self, base: Settings, mongo_url: str, database: str, slots: int) -> None:
        from lambda_os.serve import router_parts

        run_id = uuid.uuid4().hex[:10]
        self.settings = dataclasses.replace(
            base,
            mongo_url=mongo_url,
            mongo_db=database,
            events_queue=f"bench.{run_id}.cluster",
            dead_letter_queue=f"bench.{run_id}.cluster.dead",
            placement="cluster",
            heartbeat_interval_s=HEARTBEAT_S,
            sweep_interval_s=5.0,
        )
        self.slots = slots
        self.topology = Topology.from_settings(self.settings)
        self.work = Path(tempfile.mkdtemp(prefix="los-bc-", dir="/tmp"))
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[Any] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        _with_channel(self.settings.amqp_url, lambda channel: declare(channel, self.topology))
        self.catalogue = connect(mongo_url, database)
        self.parts = router_parts(self.settings)
        self.parts.keeper.join(self._stop)
        # The router's three jobs, as ``run_router`` runs them: the registry, the events,
        # and the relay of the hosts' replies (workers send them through the results queue).
        jobs = (
            (self.parts.keeper.run, (self._stop,)),
            (self.parts.listener.run, ()),
            (self.parts.relay.run, (self._stop,)),
        )
        for target, args in jobs:
            thread = threading.Thread(target=target, args=args, daemon=True, name="bench-router")
            thread.start()
            self._threads.append(thread)

    def add_workers(self, count: int) -> None:
        """Start workers until there are ``count``, and wait until the router places on them."""
        while len(self.workers) < count:
            host_id = f"bench-{len(self.workers) + 1}-{uuid.uuid4().hex[:6]}"
            state_dir = self.work / host_id[:12]
            state_dir.mkdir()
            env = {
                **os.environ,
                "MONGO_URL": self.settings.mongo_url or "",
                "MONGO_DB": self.settings.mongo_db,
                "AMQP_URL": self.settings.amqp_url,
                "EVENTS_QUEUE": self.settings.events_queue,
                "DEAD_LETTER_QUEUE": self.settings.dead_letter_queue,
                "LAMBDA_OS_RUNTIME_IMAGE_PREFIX": self.settings.runtime_image_prefix,
                "LAMBDA_OS_STATE_DIR": str(state_dir),
                "LAMBDA_OS_HOST_ID": host_id,
                "LAMBDA_OS_CONCURRENCY": str(self.slots),
                "LAMBDA_OS_RESERVED_SLOTS": "0",
                "LAMBDA_OS_POOL_SIZE": "0",
                "LAMBDA_OS_HOST_MEMORY_MB": str(WORKER_MEMORY_MB),
                "LAMBDA_OS_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
                "LAMBDA_OS_LOG_LEVEL": "WARNING",
            }
            if self.settings.docker_host:
                env["DOCKER_HOST"] = self.settings.docker_host
            log = open(self.work / f"{host_id}.log", "ab")  # noqa: SIM115 - closed in stop()
            self._logs.append(log)
            self.workers[host_id] = subprocess.Popen(
                [sys.executable, "-m", "lambda_os.cli", "worker"],
                env=env,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + REGISTER_WAIT_S
        wanted = set(self.workers)
        while time.monotonic() < deadline:
            if wanted <= {host.id for host in self.parts.router.hosts}:
                return
            dead = [h for h, p in self.workers.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"cluster workers {dead} exited; see {self.work}")
            time.sleep(0.2)
        raise RuntimeError(f"cluster workers did not register in time; see {self.work}")

    def worker_pids(self) -> list[int]:
        return [process.pid for process in self.workers.values()]

    def stop(self) -> None:
        # The router first: a router that outlived its workers would mark them lost.
        self.parts.listener.stop()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.parts.mover.close()
        for process in self.workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()
        queues = [self.topology.host_queue(host_id) for host_id in self.workers]

        def clean(channel: Any) -> None:
            for queue in queues:
                channel.queue_delete(queue)
            delete(channel, self.topology)

        _with_channel(self.settings.amqp_url, clean)
        shutil.rmtree(self.work, ignore_errors=True)


def _with_channel(amqp_url: str, action: Any) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        action(connection.channel())
    finally:
        connection.close()


@contextmanager
def catalogue_server(settings: Settings) -> Iterator[tuple[str, int | None]]:
    """``MONGO_URL`` when set (no pid to meter), else a FerretDB of this case's own."""
    if settings.mongo_url:
        yield settings.mongo_url, None
        return
    data = Path(tempfile.mkdtemp(prefix="los-bc-db-", dir="/tmp"))
    server = CatalogueServer(data)
    try:
        server.start()
        yield server.url, server.pid
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def command_counts(mongo_url: str) -> dict[str, int]:
    """Commands the server has answered so far, by name (FerretDB) or by kind (MongoDB)."""
    client: Any = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    try:
        status = client.admin.command("serverStatus")
    finally:
        client.close()
    commands = status.get("metrics", {}).get("commands", {})
    counts = {
        name: int(value.get("total", 0))
        for name, value in commands.items()
        if isinstance(value, dict) and "total" in value
    }
    if not counts:
        counts = {name: int(n) for name, n in status.get("opcounters", {}).items()}
    return counts


def per_event_commands(
    before: dict[str, int], after: dict[str, int], events: int
) -> dict[str, Any]:
    """The catalogue commands per event between two readings, biggest first, and their sum."""
    spent = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    spent = {name: n for name, n in spent.items() if n > 0 and name != "serverStatus"}
    if not events:
        return {"total": None}
    by_name = {
        name: round(n / events, 2) for name, n in sorted(spent.items(), key=lambda kv: -kv[1])
    }
    return {"total": round(sum(spent.values()) / events, 2), **by_name}


def _spec(
    cluster_settings: Settings,
    count: int,
    window: int,
    types: tuple[str, ...],
    time_limit_s: float = 120.0,
    **data: Any,
) -> LoadSpec:
    return LoadSpec(
        amqp_url=cluster_settings.amqp_url,
        queue=cluster_settings.events_queue,
        count=count,
        window=window,
        event_types=types,
        time_limit_s=time_limit_s,
        data={"n": 1, **data},
    )


def _checked(result: dict[str, Any], what: str, partial: bool = False) -> dict[str, Any]:
    """A load result, or ``RuntimeError`` on a failed or missing reply; with ``partial`` a
    run cut off by its time limit is kept (its rate is over the replies that came)."""
    bad = {status: n for status, n in result["statuses"].items() if status != "succeeded"}
    missing = result["received"] < result["sent"] and not (partial and result["timed_out"])
    if bad or missing:
        raise RuntimeError(
            f"{what}: {result['received']} of {result['sent']} replies, non-successes {bad}, "
            f"first reply {result['replies'][:1]}"
        )
    return result


def _latency(samples: list[float]) -> dict[str, Any]:
    return {**stats.latency(samples), "p95_ms": stats.percentile(samples, 0.95)}


def cluster_case(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """The three phases above on one catalogue server; see the module doc."""
    with catalogue_server(settings) as (mongo_url, server_pid):
        standalone = _standalone_latency(settings, args, mongo_url)
        cluster_run = _cluster_phases(settings, args, mongo_url, server_pid)
    hop = cluster_run.pop("hop_latency")
    p50 = {"standalone": standalone["p50_ms"], "cluster": hop["p50_ms"]}
    return {
        "standalone_latency": standalone,
        "cluster_latency": hop,
        "hop_added_p50_ms": _minus(hop["p50_ms"], standalone["p50_ms"]),
        "hop_added_p95_ms": _minus(hop["p95_ms"], standalone["p95_ms"]),
        "p50_ms": p50,
        "catalogue": "MONGO_URL" if settings.mongo_url else "FerretDB (SQLite), the case's own",
        "slots_per_worker": args.cluster_slots,
        **cluster_run,
    }


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def _standalone_latency(settings: Settings, args: argparse.Namespace, mongo_url: str) -> Any:
    """One event at a time through a local-placement listener on the same kind of catalogue."""
    catalogue = connect(mongo_url, f"bench_standalone_{uuid.uuid4().hex[:8]}", sole_writer=True)
    _register_sleeper(catalogue, "bench-standalone", "standalone")
    with running_platform(settings, catalogue, pool_size=0) as platform:
        spec = _spec(platform.settings, min(args.warmup, 20), 1, ("standalone",))
        _checked(run_in_child(spec), "standalone warm-up")
        spec = dataclasses.replace(spec, count=args.cluster_latency_events)
        result = _checked(run_in_child(spec), "standalone latency")
    _drop(mongo_url, catalogue)
    return _latency(result["latencies_ms"])


def _register_sleeper(catalogue: Catalogue, name: str, event_type: str, concurrency: int = 10):
    info = inspect_package(SLEEP_SOURCE, "main.py", "main.handler")
    fields = {
        "name": name,
        "runtime": "python3.11",
        "event_source": EVENT_SOURCE,
        "event_type": event_type,
        "owner": OWNER,
        "concurrency": concurrency,
    }
    return catalogue.create_function(fields, SLEEP_SOURCE, info)


def _drop(mongo_url: str, catalogue: Catalogue) -> None:
    client: Any = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(catalogue._db.name)
    finally:
        client.close()


def _cluster_phases(
    settings: Settings, args: argparse.Namespace, mongo_url: str, server_pid: int | None
) -> dict[str, Any]:
    slots = args.cluster_slots
    cluster = Cluster(settings, mongo_url, f"bench_cluster_{uuid.uuid4().hex[:8]}", slots)
    try:
        most = max(WORKER_COUNTS) * slots
        _register_sleeper(cluster.catalogue, "bench-hop", "hop")
        _register_sleeper(cluster.catalogue, "bench-sleep", "sleep", concurrency=most)
        cluster.add_workers(1)
        hop_spec = _spec(cluster.settings, min(args.warmup, 20), 1, ("hop",))
        _checked(run_in_child(hop_spec), "cluster warm-up")
        hop_spec = dataclasses.replace(hop_spec, count=args.cluster_latency_events)
        hop = _latency(_checked(run_in_child(hop_spec), "cluster latency")["latencies_ms"])
        scaling: dict[str, Any] = {}
        for workers in WORKER_COUNTS:
            cluster.add_workers(workers)
            scaling[str(workers)] = _throughput(cluster, args, mongo_url, server_pid, workers)
        one = scaling["1"]["events_per_s"]
        ratios = {n: _ratio(figures["events_per_s"], one) for n, figures in scaling.items()}
        warm = _warm_hits(cluster, args, mongo_url)
    finally:
        cluster.stop()
    return {
        "hop_latency": hop,
        "throughput": scaling,
        "throughput_ratio": ratios,
        "warm": warm,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _clear_executions(mongo_url: str, database: str) -> None:
    """Nothing is in flight between phases: each starts on an empty executions collection."""
    client: Any = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    try:
        client[database]["executions"].delete_many({})
    finally:
        client.close()


def _throughput(
    cluster: Cluster,
    args: argparse.Namespace,
    mongo_url: str,
    server_pid: int | None,
    workers: int,
) -> dict[str, Any]:
    window = workers * cluster.slots
    sleep_ms = args.cluster_sleep_ms
    # Every worker gets the function warm in each of its slots before the timed run.
    warmup = _spec(cluster.settings, max(4 * window, 8), window, ("sleep",), sleep_ms=sleep_ms)
    _checked(run_in_child(warmup), f"throughput warm-up, {workers} workers")
    _clear_executions(mongo_url, cluster.settings.mongo_db)
    sources: dict[str, cpu.CpuSource] = {
        "broker": cpu.named,
        "router": cpu.this_process,
        "workers": lambda: {
            key: value for pid in cluster.worker_pids() for key, value in cpu.tree(pid).items()
        },
        "containers": _containers(cluster),
    }
    if server_pid is not None:
        sources["catalogue"] = cpu.workers(server_pid)
    meter = cpu.CpuMeter(sources)
    before = command_counts(mongo_url)
    deferred = cluster.parts.listener.counters.snapshot().get("deferred", 0)
    spec = _spec(
        cluster.settings,
        args.cluster_events,
        window,
        ("sleep",),
        time_limit_s=args.time_limit_s,
        sleep_ms=sleep_ms,
    )
    result = run_in_child(spec, started=meter.start)
    meter.stop()
    _checked(result, f"throughput, {workers} workers", partial=True)
    after = command_counts(mongo_url)
    events = result["received"]
    return {
        "workers": workers,
        "in_flight": window,
        "events": events,
        "events_asked": args.cluster_events,
        "stopped_by_time_limit": result["timed_out"],
        "seconds": round(result["seconds"], 3),
        "events_per_s": stats.rate(events, result["seconds"]),
        # Events the router sent to wait for room (a delay queue): each costs a second or more.
        "waited_for_room": cluster.parts.listener.counters.snapshot().get("deferred", 0) - deferred,
        "ideal_events_per_s": round(window * 1000 / sleep_ms, 1) if sleep_ms else None,
        "latency": _latency(result["latencies_ms"]),
        "catalogue_commands_per_event": per_event_commands(before, after, events),
        **meter.figures(events, load_driver=result.get("cpu_s")),
    }


def _containers(cluster: Cluster) -> cpu.CpuSource:
    """The containers of this run's workers (their label names the host's state directory)."""
    from provisioner.docker.host import DockerHost

    host = DockerHost(cluster.settings.docker_host)

    def ids() -> list[str]:
        return [c["Id"] for c in host.platform_containers(mine=False)]

    return cpu.containers(ids)


def _warm_hits(cluster: Cluster, args: argparse.Namespace, mongo_url: str) -> dict[str, Any]:
    """Steady load over many functions on every worker: how many events found a warm container."""
    count = args.cluster_functions
    slots = len(cluster.workers) * cluster.slots
    types = tuple(f"warm-{i}" for i in range(count))
    for i, event_type in enumerate(types):
        _register_sleeper(cluster.catalogue, f"bench-warm-{i}", event_type, concurrency=slots)
    sleep_ms = args.cluster_sleep_ms
    warmup = _spec(cluster.settings, WARMUP_PER_FUNCTION * count, slots, types, sleep_ms=sleep_ms)
    warmed = _checked(run_in_child(warmup), "warm-hit warm-up")
    _clear_executions(mongo_url, cluster.settings.mongo_db)
    spec = _spec(
        cluster.settings,
        args.cluster_warm_events,
        slots,
        types,
        time_limit_s=args.time_limit_s,
        sleep_ms=sleep_ms,
    )
    spec = dataclasses.replace(spec, keep_replies=args.cluster_warm_events)
    result = _checked(run_in_child(spec), "warm-hit run", partial=True)
    replies = [reply for reply in result["replies"] if isinstance(reply, dict)]
    warm = sum(1 for reply in replies if reply.get("cold_start") is False)
    # Still cold starts late in the run means containers are lost (evicted), not yet made.
    late = replies[len(replies) // 2 :]
    late_warm = sum(1 for reply in late if reply.get("cold_start") is False)
    return {
        "functions": count,
        "workers": len(cluster.workers),
        "in_flight": slots,
        "warmup_events": warmed["received"],
        "events": len(replies),
        "stopped_by_time_limit": result["timed_out"],
        "warm_hits": warm,
        "warm_hit_rate": round(warm / len(replies), 4) if replies else None,
        "warm_hit_rate_second_half": round(late_warm / len(late), 4) if late else None,
        "events_per_s": stats.rate(result["received"], result["seconds"]),
    }
