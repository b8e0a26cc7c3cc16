"""Run every case end to end: upload, publish an event with reply_to, check the record.

Events go to RabbitMQ exactly as a user would publish them; each carries
``reply_to`` so the harness measures the time from publish to result, then reads
the execution record back through the API to check it was stored. Functions are
uploaded under names unique to this run and deleted afterwards.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pika

from lambda_os.client import ApiClient
from testing_service.cases import CASES, Case


@dataclass
class CaseResult:
    """What one case produced, and whether it matched the expectation."""

    case: str
    path: str
    expected: str
    status: str = "no reply"
    latency_ms: float | None = None
    problem: str | None = "no reply"

    @property
    def ok(self) -> bool:
        return self.problem is None


def check(case: Case, execution: dict[str, Any]) -> str | None:
    """None when the execution is what the case expects, else what is wrong."""
    if execution.get("status") != case.expect_status:
        return f"status {execution.get('status')!r} != {case.expect_status!r}: {execution.get('error')}"
    return case.check(execution)


def upload_cases(client: ApiClient, run_id: str, source: str) -> dict[str, dict[str, Any]]:
    functions = {}
    for case in CASES:
        fields = {
            "name": f"harness-{case.name}-{run_id}",
            "runtime": "python3.11",
            "event_source": source,
            "event_type": case.name,
            **case.config,
        }
        functions[case.name] = client.upload(fields, "main.py", case.code.encode())
    return functions


def run_events(
    client: ApiClient,
    amqp_url: str,
    queue: str,
    source: str,
    run_id: str,
    wait_s: float,
) -> list[CaseResult]:
    """Publish one event per case with reply_to and collect the replies."""
    results = {case.name: CaseResult(case.name, "event", case.expect_status) for case in CASES}
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        reply_queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        sent_at: dict[str, float] = {}
        for case in CASES:
            event = {
                "event_source": source,
                "event_type": case.name,
                "data": case.data,
                "id": f"{run_id}-{case.name}",
            }
            sent_at[case.name] = time.perf_counter()
            # mandatory: an event nobody's queue takes (listener not started) is an error, not a loss.
            channel.basic_publish(
                "",
                queue,
                json.dumps(event).encode(),
                pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    reply_to=reply_queue,
                    correlation_id=case.name,
                ),
                mandatory=True,
            )
        deadline = time.monotonic() + wait_s
        waiting = {case.name for case in CASES}
        for method, properties, body in channel.consume(
            reply_queue, auto_ack=True, inactivity_timeout=0.5
        ):
            if method is not None and properties.correlation_id in waiting:
                name = properties.correlation_id
                reply = json.loads(body)
                result = results[name]
                result.latency_ms = (time.perf_counter() - sent_at[name]) * 1000
                stored = client.execution(reply["id"])  # the record, not just the reply
                result.status = stored.get("status", "?")
                result.problem = check(next(c for c in CASES if c.name == name), stored)
                waiting.discard(name)
            if not waiting or time.monotonic() > deadline:
                break
        channel.cancel()
    finally:
        connection.close()
    return list(results.values())


def run_sync_invocation(client: ApiClient, function: dict[str, Any]) -> CaseResult:
    """The same hello case through POST /v1/functions/{id}/invocations."""
    case = CASES[0]
    result = CaseResult(case.name, "api (sync)", case.expect_status)
    started = time.perf_counter()
    execution = client.invoke(function["id"], case.data)
    result.latency_ms = (time.perf_counter() - started) * 1000
    result.status = execution.get("status", "?")
    result.problem = check(case, execution)
    return result


def print_table(results: list[CaseResult]) -> None:
    header = f"{'case':<10} {'path':<11} {'expected':<10} {'got':<10} {'latency ms':>10}  verdict"
    print(header)
    print("-" * len(header))
    for r in results:
        latency = f"{r.latency_ms:.1f}" if r.latency_ms is not None else "-"
        verdict = "ok" if r.ok else f"FAIL: {r.problem}"
        print(f"{r.case:<10} {r.path:<11} {r.expected:<10} {r.status:<10} {latency:>10}  {verdict}")
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")


def run(api_url: str, amqp_url: str, queue: str, wait_s: float) -> int:
    """Run every case; 0 when all pass, 1 otherwise."""
    client = ApiClient(api_url)
    run_id = uuid.uuid4().hex[:8]
    source = f"harness.{run_id}"
    functions: dict[str, dict[str, Any]] = {}
    try:
        functions = upload_cases(client, run_id, source)
        results = run_events(client, amqp_url, queue, source, run_id, wait_s)
        results.append(run_sync_invocation(client, functions["hello"]))
    finally:
        for function in functions.values():
            client.delete(function["id"])
    print_table(results)
    return 0 if all(r.ok for r in results) else 1
