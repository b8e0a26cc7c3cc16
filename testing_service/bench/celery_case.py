"""Case 6: the same trivial workload through Celery workers on the same RabbitMQ, no isolation.

A ``celery worker`` subprocess (``pool`` with concurrency 2, one per core) consumes a
queue of this run's own; this process is the client, publishing with
``apply_async`` and reading results from the ``rpc://`` backend, as the load
driver does for the platform: latency one task at a time, throughput with every
task published before the results are collected. The worker is stopped and its
queue deleted at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika

WORKER_START_TIMEOUT_S = 60.0


def celery_broker_url(amqp_url: str) -> str:
    """pika spells the default vhost ``%2F``, kombu ``/``: the same broker either way."""
    return amqp_url.replace("/%2F", "//")


@contextmanager
def celery_worker(amqp_url: str, pool: str, concurrency: int) -> Iterator[Any]:
    """A worker subprocess on a fresh queue; yields the client's ``trivial`` task bound to it."""
    queue = f"bench.celery.{uuid.uuid4().hex[:10]}"
    env = dict(
        os.environ,
        LAMBDA_OS_BENCH_CELERY_BROKER=celery_broker_url(amqp_url),
        LAMBDA_OS_BENCH_CELERY_QUEUE=queue,
    )
    from testing_service.bench import celery_app

    app = celery_app.app
    app.conf.broker_url = env["LAMBDA_OS_BENCH_CELERY_BROKER"]
    app.conf.task_default_queue = queue
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "testing_service.bench.celery_app",
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            f"--queues={queue}",
            f"--hostname=bench-{queue[-10:]}@localhost",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=WARNING",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        celery_app.trivial.apply_async(({"ready": True},), queue=queue).get(
            timeout=WORKER_START_TIMEOUT_S
        )
        yield _Client(celery_app.trivial, queue, worker.pid)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        app.close()
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            connection.channel().queue_delete(queue=queue)
        finally:
            connection.close()


class _Client:
    """Times tasks on one worker."""

    def __init__(self, task: Any, queue: str, pid: int) -> None:
        self.task = task
        self.queue = queue
        self.pid = pid

    def latency(self, count: int) -> list[float]:
        samples = []
        for index in range(count):
            started = time.perf_counter()
            self.task.apply_async(({"n": index},), queue=self.queue).get(timeout=30)
            samples.append((time.perf_counter() - started) * 1000)
        return samples

    def throughput(self, count: int, time_limit_s: float) -> dict[str, Any]:
        first = time.perf_counter()
        results = [
            self.task.apply_async(({"n": index},), queue=self.queue) for index in range(count)
        ]
        received = 0
        for result in results:
            left = first + time_limit_s - time.perf_counter()
            if left <= 0:
                break
            result.get(timeout=left)
            received += 1
        return {"received": received, "seconds": time.perf_counter() - first, "sent": count}
