"""The eight cases of the benchmark, each a function from the options to a dict of figures.

Every case builds what it needs on queues and containers of its own, bounds
itself by count and time, and removes what it made; see the package docstring
for what each one measures.
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path
from typing import Any

import pika

from lambda_os.settings import Settings
from testing_service.bench import cpu, profiling, stats
from testing_service.bench.cluster import cluster_case
from testing_service.bench.floor import FloorConsumer
from testing_service.bench.load import LoadSpec, drive, run_in_child
from testing_service.bench.memory import container_memory
from testing_service.bench.platform import (
    Platform,
    catalogue_with,
    new_catalogue,
    register,
    running_platform,
)
from testing_service.bench.processes import processes_case
from testing_service.bench.standalone import Standalone, running_standalone

RUNTIME = "python3.11"
POOL_WAIT_S = 120.0


def _spec(settings: Settings, queue: str, count: int, **fields: Any) -> LoadSpec:
    return LoadSpec(amqp_url=settings.amqp_url, queue=queue, count=count, **fields)


def _checked(result: dict[str, Any], what: str, partial: bool = False) -> dict[str, Any]:
    """A load result, or ``RuntimeError`` if replies were not successes or went missing.

    With ``partial`` a run cut off by its time limit is kept: its rate is over
    the replies that came, and ``_rate`` marks it.
    """
    bad = {status: n for status, n in result["statuses"].items() if status != "succeeded"}
    missing = result["received"] < result["sent"] and not (partial and result["timed_out"])
    if missing or bad:
        raise RuntimeError(
            f"{what}: {result['received']} of {result['sent']} replies, non-successes {bad}, "
            f"first reply {result['replies'][:1]}"
        )
    return result


def _rate(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "events": result["received"],
        "seconds": round(result["seconds"], 3),
        "events_per_s": stats.rate(result["received"], result["seconds"]),
        "stopped_by_time_limit": result.get("timed_out", False),
    }


def broker_floor(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Case 1: pika publish → consume → reply → ack, no work, with the listener's prefetch."""
    queue = f"bench.{uuid.uuid4().hex[:10]}.floor"
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        connection.channel().queue_declare(queue, durable=True)
        consumer = FloorConsumer(settings.amqp_url, queue, prefetch=settings.concurrency)
        with consumer.running():
            run_in_child(_spec(settings, queue, min(args.warmup, 50)))
            latency = run_in_child(_spec(settings, queue, args.latency_events))
            meter = cpu.CpuMeter({"broker": cpu.named, "consumer": cpu.this_process})
            spec = _spec(settings, queue, args.floor_events, window=args.floor_events)
            rate = run_in_child(spec, started=meter.start)
            meter.stop()
    finally:
        connection.channel().queue_delete(queue)
        connection.close()
    return {
        "latency": stats.latency(_checked(latency, "floor latency")["latencies_ms"]),
        "throughput": _rate(_checked(rate, "floor throughput")),
        **meter.figures(rate["received"], load_driver=rate.get("cpu_s")),
    }


def warm_latency(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Case 2 (and the idle warm container of case 7): one event at a time to a warm function."""
    catalogue, types = catalogue_with(1, 1, settings.embedded_executions_kept)
    with running_platform(settings, catalogue, pool_size=0) as platform:
        queue = platform.settings.events_queue
        _checked(run_in_child(_spec(settings, queue, args.warmup, event_types=types)), "warm-up")
        spec = _spec(settings, queue, args.latency_events, event_types=types, keep_replies=1)
        platform.provisioner.cleanup_us.clear()
        result, profile = _maybe_profiled(args, "warm-latency", spec)
        _checked(result, "warm latency")
        cleanup = sorted(platform.provisioner.cleanup_us)
        samples = result["latencies_ms"]
        tenth = max(1, len(samples) // 10)
        time.sleep(1.0)  # idle, as a warm container waits between events
        idle = _idle_container(platform)
    return {
        "latency": stats.latency(samples),
        "first_tenth_p50_ms": stats.latency(samples[:tenth])["p50_ms"],
        "last_tenth_p50_ms": stats.latency(samples[-tenth:])["p50_ms"],
        "sample_reply": result["replies"][0] if result["replies"] else None,
        # What each execution's clean start cost in this same run (agent and host check).
        "cleanup_us": {
            "executions": len(cleanup),
            "p50": cleanup[len(cleanup) // 2] if cleanup else None,
            "p99": cleanup[min(len(cleanup) - 1, len(cleanup) * 99 // 100)] if cleanup else None,
        },
        "idle_warm_container": idle,
        "profile": profile,
    }


def throughput_one(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Case 3a: events for one trivial function, all published at once."""
    catalogue, types = catalogue_with(1, 1, settings.embedded_executions_kept)
    with running_platform(settings, catalogue, pool_size=0) as platform:
        return _throughput(platform, settings, args, types, "throughput-1", profile=True)


def throughput_one_without_ids(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Case 3c: as 3a, but the events carry no id (the listener numbers them)."""
    catalogue, types = catalogue_with(1, 1, settings.embedded_executions_kept)
    with running_platform(settings, catalogue, pool_size=0) as platform:
        return _throughput(
            platform, settings, args, types, "throughput-1-no-ids", profile=False, with_ids=False
        )


def throughput_standalone(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Case 3d: as 3a, but on the real ``lambda-os standalone`` process (``standalone``)."""
    with running_standalone(settings, args.standalone_catalogue) as process:
        figures = _throughput(
            process, settings, args, process.event_types, "throughput-standalone", profile=False
        )
    return {**figures, "catalogue": args.standalone_catalogue}


def throughput_many(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Case 3b: events spread over ``--receiving`` functions, ``--registered`` in the catalogue.

    Each receiving function keeps at least one warm container, so the host's
    memory budget is raised, if needed, to hold them all (at the catalogue's
    default 128 MB each, plus headroom for parallel runs); the JSON says so.
    """
    catalogue, types = catalogue_with(
        args.receiving, args.registered, settings.embedded_executions_kept
    )
    needed = (args.receiving + settings.concurrency) * 128
    budget = max(settings.host_memory_mb, needed)
    with running_platform(settings, catalogue, pool_size=0, host_memory_mb=budget) as platform:
        figures = _throughput(platform, settings, args, types, "throughput-100", profile=False)
    figures.update(
        registered=args.registered,
        receiving=args.receiving,
        host_memory_mb=budget,
        host_memory_mb_raised=budget != settings.host_memory_mb,
    )
    return figures


def _throughput(
    platform: Platform | Standalone,
    settings: Settings,
    args: argparse.Namespace,
    types: tuple[str, ...],
    name: str,
    profile: bool,
    with_ids: bool = True,
) -> dict[str, Any]:
    queue = platform.settings.events_queue
    # Warm every function, with enough in flight that each has the containers a burst uses.
    warmup = max(args.warmup, 2 * len(types))
    _checked(
        run_in_child(
            _spec(
                settings,
                queue,
                warmup,
                window=settings.concurrency,
                event_types=types,
                with_ids=with_ids,
            )
        ),
        f"{name} warm-up",
    )
    spec = _spec(
        settings,
        queue,
        args.throughput_events,
        window=args.throughput_events,
        event_types=types,
        time_limit_s=args.time_limit_s,
        with_ids=with_ids,
    )
    meter = cpu.CpuMeter(
        {
            "broker": cpu.named,
            **_consumer(platform),
            "containers": cpu.containers(lambda: [c["Id"] for c in platform.containers()]),
        }
    )
    result, breakdown = _maybe_profiled(args if profile else None, name, spec, meter)
    _checked(result, name, partial=True)
    return {
        **_rate(result),
        "events_asked": args.throughput_events,
        "profile": breakdown,
        **meter.figures(result["received"], load_driver=result.get("cpu_s")),
    }


def _consumer(platform: Platform | Standalone) -> dict[str, cpu.CpuSource]:
    """The part that consumes the events: this process, or the standalone process's tree."""
    if isinstance(platform, Standalone):
        return {"standalone": platform.tree}
    return {"listener": cpu.this_process}


def _maybe_profiled(
    args: argparse.Namespace | None, name: str, spec: LoadSpec, meter: cpu.CpuMeter | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``run_in_child(spec)``, read by ``meter``; with ``args.profile``, a profile of a second run.

    The figures never come from a sampled run: on two cores py-spy's own CPU
    and its reads of this process would slow the listener it watches. The same
    load is run again under py-spy for the breakdown of where the time goes.
    """
    started = meter.start if meter is not None else None
    result = run_in_child(spec, started=started)
    if meter is not None:
        meter.stop()
    if args is None or not args.profile:
        return result, None
    directory = Path(args.profile_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.collapsed.txt"
    with profiling.sampled(path):
        profiled = run_in_child(spec)
    breakdown = profiling.breakdown(path, profiled["received"])
    breakdown["file"] = str(path)
    return result, breakdown


def cold_start(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Case 4: a new function's first execution, with the pre-warmed pool and without."""
    pool_size = settings.pool_size or 2
    return {
        "with_pool": _cold(settings, args.cold_starts, pool_size),
        "without_pool": _cold(settings, args.cold_starts, 0),
    }


def _cold(settings: Settings, count: int, pool_size: int) -> dict[str, Any]:
    catalogue, _database = new_catalogue(settings.embedded_executions_kept)
    catalogue.ensure_indexes()
    latencies, durations, colds = [], [], []
    with running_platform(settings, catalogue, pool_size=pool_size) as platform:
        queue = platform.settings.events_queue
        for index in range(count):
            event_type = f"cold-{index}"
            register(catalogue, f"bench-cold-{index}", event_type)
            deadline = time.monotonic() + POOL_WAIT_S
            while len(platform.provisioner.pooled(RUNTIME)) < pool_size:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the pool did not reach {pool_size} containers")
                time.sleep(0.02)
            result = _checked(
                drive(_spec(settings, queue, 1, event_types=(event_type,))), "cold start"
            )
            latencies += result["latencies_ms"]
            reply = result["replies"][0]
            durations.append(reply.get("duration_ms"))
            colds.append(reply.get("cold_start"))
    return {
        "pool_size": pool_size,
        "latency": stats.latency(latencies),
        "execution_duration": stats.latency([d for d in durations if d is not None]),
        "all_cold_start": all(colds),
    }


def container_per_event(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Case 5: ``docker run`` of the runtime image for every event."""
    from testing_service.bench.per_event import container_per_event as run

    image = f"{settings.runtime_image_prefix}:{RUNTIME}"
    result = run(image, args.per_event, parallel=2, docker_host=settings.docker_host)
    return {
        "latency": stats.latency(result["latencies_ms"]),
        "events": result["received"],
        "seconds": round(result["seconds"], 3),
        "events_per_s": stats.rate(result["received"], result["seconds"]),
        "parallel": result["parallel"],
        "sample_result": result["sample_result"],
    }


def celery(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Case 6: the same trivial task on Celery workers, results over ``rpc://``."""
    from testing_service.bench.celery_case import celery_worker

    with celery_worker(settings.amqp_url, args.celery_pool, args.celery_concurrency) as client:
        client.latency(min(args.warmup, 50))
        latencies = client.latency(args.latency_events)
        # The client runs in this process: here it is the load driver.
        meter = cpu.CpuMeter(
            {
                "broker": cpu.named,
                "load_driver": cpu.this_process,
                "worker": cpu.workers(client.pid),
            }
        )
        meter.start()
        rate = client.throughput(args.celery_events, args.time_limit_s)
        meter.stop()
    return {
        "pool": args.celery_pool,
        "concurrency": args.celery_concurrency,
        "latency": stats.latency(latencies),
        **_rate(rate),
        **meter.figures(rate["received"]),
    }


def listener_memory(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Case 7: the listener process's resident size before and after ``--memory-events``.

    The in-memory catalogue lives in the listener's process and keeps the newest
    ``embedded_executions_kept`` finished executions, by design; on MongoDB the
    listener keeps none. So the listener is first filled to that bound, and the
    growth is measured from there: what the bound itself holds is reported on
    its own (``catalogue_fill_bytes``), and the growth after it is what a leak
    would show.
    """
    catalogue, types = catalogue_with(1, 1, settings.embedded_executions_kept)
    with running_platform(settings, catalogue, pool_size=0) as platform:
        queue = platform.settings.events_queue
        _checked(
            run_in_child(_spec(settings, queue, args.warmup, window=8, event_types=types)),
            "memory warm-up",
        )
        start = platform.rss_bytes()
        fill = platform.settings.embedded_executions_kept
        _checked(
            run_in_child(
                _spec(
                    settings,
                    queue,
                    fill,
                    window=256,
                    event_types=types,
                    time_limit_s=args.memory_time_limit_s,
                )
            ),
            "filling the in-memory catalogue to its bound",
        )
        before = platform.rss_bytes()
        result = run_in_child(
            _spec(
                settings,
                queue,
                args.memory_events,
                window=256,
                event_types=types,
                time_limit_s=args.memory_time_limit_s,
            )
        )
        after = platform.rss_bytes()
    events = result["received"]
    growth = after - before
    return {
        "events_asked": args.memory_events,
        "events": events,
        "stopped_by_time_limit": result["timed_out"],
        "seconds": round(result["seconds"], 3),
        "events_per_s": stats.rate(events, result["seconds"]),
        "rss_start_bytes": start,
        "catalogue_fill_events": fill,
        "catalogue_fill_bytes": before - start,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "growth_bytes": growth,
        "growth_bytes_per_event": round(growth / events, 1) if events else None,
    }


def _idle_container(platform: Platform) -> dict[str, Any]:
    containers = platform.containers()
    if len(containers) != 1:
        return {"error": f"expected one warm container, found {len(containers)}"}
    figures = container_memory(containers[0]["Id"], platform.provisioner.host.client)
    return {"container": containers[0]["Id"][:12], **figures}


CASES = {
    "floor": broker_floor,
    "warm": warm_latency,
    "throughput1": throughput_one,
    "throughput1_noid": throughput_one_without_ids,
    "standalone": throughput_standalone,
    "throughput100": throughput_many,
    "cold": cold_start,
    "per_event": container_per_event,
    "celery": celery,
    "memory": listener_memory,
    "cluster": cluster_case,
    "processes": processes_case,
}
