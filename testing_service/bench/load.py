"""The load driver: publish events with ``reply_to`` and time each reply, in a process of its own.

Every case that goes through RabbitMQ (the broker floor, the platform) is driven
by this one loop, so their figures compare like with like: events are published
to the default exchange, persistent, as swagger/events.md tells publishers to,
with at most ``window`` unanswered at a time; a reply's latency is from its
event's publish to its arrival, and throughput is replies over the time from the
first publish to the last reply. ``window=1`` measures latency one event at a
time; a wide window measures throughput.

``drive`` runs in a child process (``run_in_child``) so that the publisher does not
share a GIL with the consumer it measures, as a Celery client does not share one
with its worker. It reports its own CPU (``cpu_s``), since on two cores the
driver's CPU per event is part of what caps a rate (``cpu``); the child tells the
parent when it is about to start, so the parent's readings leave out its start-up.
"""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pika

from testing_service.bench.cpu import self_cpu_s


@dataclass(frozen=True)
class LoadSpec:
    """What to publish: ``count`` events cycling over ``event_types``, ``window`` in flight."""

    amqp_url: str
    queue: str
    count: int
    window: int = 1
    event_source: str = "bench"
    event_types: tuple[str, ...] = ("trivial",)
    time_limit_s: float = 120.0
    keep_replies: int = 1
    data: dict[str, Any] = field(default_factory=lambda: {"n": 1})
    with_ids: bool = True  # False: no "id", as most publishers send; the listener assigns one


def drive(spec: LoadSpec) -> dict[str, Any]:
    """Publish ``spec.count`` events and wait for their replies (bounded by ``time_limit_s``)."""
    cpu_started = self_cpu_s()
    connection = pika.BlockingConnection(pika.URLParameters(spec.amqp_url))
    try:
        channel = connection.channel()
        reply_queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        run = uuid.uuid4().hex[:8]
        sent_at: dict[str, float] = {}
        latencies: list[float] = []
        statuses: dict[str, int] = {}
        replies: list[Any] = []
        times = {"last": 0.0}

        def on_reply(_channel: Any, _method: Any, properties: Any, body: bytes) -> None:
            now = time.perf_counter()
            started = sent_at.pop(properties.correlation_id, None)
            if started is None:
                return
            latencies.append((now - started) * 1000)
            times["last"] = now
            payload = json.loads(body) if body else None
            status = payload.get("status", "replied") if isinstance(payload, dict) else "replied"
            statuses[status] = statuses.get(status, 0) + 1
            if len(replies) < spec.keep_replies:
                replies.append(payload)

        channel.basic_consume(reply_queue, on_reply, auto_ack=True)
        sent = 0
        first = time.perf_counter()
        deadline = first + spec.time_limit_s
        types = spec.event_types
        while (sent < spec.count or sent_at) and time.perf_counter() < deadline:
            while sent < spec.count and len(sent_at) < spec.window:
                correlation = f"{run}-{sent}"
                event = {
                    "event_source": spec.event_source,
                    "event_type": types[sent % len(types)],
                    "data": spec.data,
                }
                if spec.with_ids:
                    event["id"] = correlation
                body = json.dumps(event).encode()
                properties = pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    reply_to=reply_queue,
                    correlation_id=correlation,
                )
                sent_at[correlation] = time.perf_counter()
                channel.basic_publish("", spec.queue, body, properties)
                sent += 1
            connection.process_data_events(time_limit=0.5)
        elapsed = (times["last"] or time.perf_counter()) - first
        return {
            "sent": sent,
            "received": len(latencies),
            "seconds": elapsed,
            "latencies_ms": latencies,
            "statuses": statuses,
            "replies": replies,
            "timed_out": bool(sent_at) or sent < spec.count,
            "cpu_s": self_cpu_s() - cpu_started,
        }
    finally:
        connection.close()


def _child(spec: LoadSpec, pipe: Any) -> None:
    try:
        pipe.send(("started", None))
        pipe.send(("ok", drive(spec)))
    except Exception as exc:  # noqa: BLE001 -- reported to the parent, which raises it there
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        pipe.close()


def run_in_child(spec: LoadSpec, started: Callable[[], None] | None = None) -> dict[str, Any]:
    """``drive(spec)`` in a fresh (spawned) process; its result, or ``RuntimeError``.

    ``started`` is called when the child, imports done, is about to drive.
    """
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(spec, child), name="bench-load", daemon=True)
    process.start()
    child.close()
    wait_s = spec.time_limit_s + 60
    deadline = time.monotonic() + wait_s
    try:
        kind = "started"
        while kind == "started":
            if not parent.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"the load driver did not answer within {wait_s} s")
            kind, value = parent.recv()
            if kind == "started" and started is not None:
                started()
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()
    if kind != "ok":
        raise RuntimeError(f"the load driver failed: {value}")
    return value
