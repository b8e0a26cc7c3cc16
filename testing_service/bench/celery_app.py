"""The Celery application the bench's worker subprocess runs (case 6): one trivial task.

``celery -A testing_service.bench.celery_app worker`` imports this module in the
child process that ``celery_case`` starts; the broker URL and this run's queue
name reach it through ``LAMBDA_OS_BENCH_CELERY_BROKER`` and
``LAMBDA_OS_BENCH_CELERY_QUEUE``, set by the parent for that child only (they are
not platform configuration). Results come back through the ``rpc://`` backend,
replies on the same RabbitMQ, as the platform's come back on ``reply_to``.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery(
    "lambda_os_bench",
    broker=os.environ.get("LAMBDA_OS_BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    backend="rpc://",
)
app.conf.update(
    task_default_queue=os.environ.get("LAMBDA_OS_BENCH_CELERY_QUEUE", "bench.celery"),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # No broadcast queues or event traffic: the bench's own queue and the reply queue only.
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    task_send_sent_event=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.trivial")
def trivial(event: object) -> object:
    """The same trivial function as the platform's: return the event."""
    return event
