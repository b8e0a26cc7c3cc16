"""``lambda-os send``: publish one event and print the outcome of every execution it causes.

A client of the platform, like the harness: it publishes exactly what the event
contract (swagger/events.md) describes, with ``reply_to`` set to a private queue,
and prints each reply (one per matching function) until every execution the event
caused has replied (each reply says how many there are), or ``--wait`` runs out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

import pika
import pika.exceptions

from lambda_os.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="the event's event_source")
    parser.add_argument("--type", required=True, dest="event_type", help="the event's event_type")
    parser.add_argument("--data", default="null", help="the event's data, as JSON (default null)")
    parser.add_argument("--id", default=None, help="the event's id (default: a new one)")
    parser.add_argument(
        "--alias",
        default=None,
        help="run each matched function at the version its alias of this name chooses "
        "(functions without one do not run)",
    )
    parser.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for replies (0: do not wait)"
    )


def run_send(settings: Settings, args: argparse.Namespace) -> int:
    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as exc:
        print(f"--data is not JSON: {exc}", file=sys.stderr)
        return 2
    event_id = args.id or uuid.uuid4().hex
    event = {
        "event_source": args.source,
        "event_type": args.event_type,
        "data": data,
        "id": event_id,
    }
    if args.alias is not None:
        event["alias"] = args.alias
    body = json.dumps(event).encode()
    try:
        connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    except pika.exceptions.AMQPError as exc:
        print(f"cannot connect to RabbitMQ at {settings.amqp_url}: {exc!r}", file=sys.stderr)
        return 1
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        reply_queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        try:
            channel.basic_publish(
                "",
                settings.events_queue,
                body,
                pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=event_id,
                    reply_to=reply_queue if args.wait > 0 else None,
                    correlation_id=event_id,
                ),
                mandatory=True,
            )
        except pika.exceptions.UnroutableError:
            print(
                f"queue {settings.events_queue!r} does not exist: is a listener running?",
                file=sys.stderr,
            )
            return 1
        print(f"published event {event_id} to {settings.events_queue}", file=sys.stderr)
        deadline = time.monotonic() + args.wait
        replies = 0
        expected: int | None = None  # each reply says how many executions the event caused
        while (left := deadline - time.monotonic()) > 0 and replies != expected:
            for method, properties, reply in channel.consume(
                reply_queue, auto_ack=True, inactivity_timeout=min(left, 0.5)
            ):
                if method is not None:
                    replies += 1
                    expected = (properties.headers or {}).get("x-lambda-executions", expected)
                    print(json.dumps(json.loads(reply), indent=2, ensure_ascii=False))
                break
        if args.wait > 0:
            print(f"{replies} execution(s) replied within {args.wait:g}s", file=sys.stderr)
        return 0
    finally:
        connection.close()
