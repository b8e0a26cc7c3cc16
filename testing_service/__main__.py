"""``python -m testing_service --api URL --amqp URL``: check a running platform end to end."""

from __future__ import annotations

import argparse
import sys

from testing_service.runner import run


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testing_service",
        description="Upload sample functions, publish events to RabbitMQ, check every result.",
    )
    parser.add_argument("--api", default="http://127.0.0.1:8080", help="base URL of the API")
    parser.add_argument(
        "--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F", help="RabbitMQ URL"
    )
    parser.add_argument("--queue", default="lambda.events", help="the platform's events queue")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for all results")
    args = parser.parse_args()
    return run(args.api, args.amqp, args.queue, args.wait)


if __name__ == "__main__":
    sys.exit(main())
