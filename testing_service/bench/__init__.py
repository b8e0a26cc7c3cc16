"""``lambda-os bench``: the platform measured side by side with what it replaces.

One command, on one machine, prints a table and writes a JSON file:

1. ``floor``: the broker floor, a pika consumer doing no work (publish → consume →
   reply → ack);
2. ``warm``: warm latency, one event at a time with ``reply_to`` to a warm trivial
   function, and the resident size of its idle warm container (part of case 7);
3. ``throughput1`` / ``throughput100``: events/s for one function, and for 100
   functions receiving events with 10,000 registered; ``throughput1_noid``: one
   function, events without ids; ``standalone``: one function on the real
   ``lambda-os standalone`` process, API and listener together, as deployed
   (``testing_service.bench.standalone``);
4. ``cold``: a new function's first execution, with the pre-warmed pool and without;
5. ``per_event``: a ``docker run`` of the runtime image for every event;
6. ``celery``: the same task on a Celery worker on the same RabbitMQ;
7. ``memory``: the listener's resident size before and after N events;
8. ``cluster`` (not in the default run: it starts worker processes and a FerretDB of
   its own): a router and ``lambda-os worker`` processes, throughput on 1, 2 and 4
   workers, the warm-hit rate with 20 functions, and the hop's latency over
   standalone (``testing_service.bench.cluster``).
9. ``processes`` (not in the default run either: it starts ``lambda-os listener``
   processes and a FerretDB of its own): one listener process, then two, on one
   queue and the real catalogue server: throughput, CPU per event of every part,
   catalogue commands per event, and the share of the listener's CPU in the
   catalogue client (py-spy) (``testing_service.bench.processes``).

The platform runs in this process (a ``Listener`` with a ``DockerProvisioner`` and
the in-memory catalogue, on queues of the run's own); the load comes from a
child process (``load``), as a Celery client is apart from its worker. With
``--profile`` cases 2 and 3a run their load a second time with py-spy sampling
the listener, and the JSON says where its CPU time goes per event (the figures
come from the first, unsampled run). The throughput runs of cases 1, 3 and 6
also say how much CPU each process (broker, load driver, consumer, containers)
spent per event (``cpu``): on two cores their sum, not the listener's share
alone, caps the rate. Speed is measured and printed here, never asserted in a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform as host_platform
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any

from lambda_os.settings import Settings

LOGGER = logging.getLogger(__name__)

DEFAULT_CASES = (
    "floor,warm,throughput1,throughput1_noid,standalone,throughput100,cold,per_event,celery,memory"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench's own flags; the platform's settings flags are added beside them."""
    add = parser.add_argument
    add(
        "--out",
        default="bench-results.json",
        help="JSON file to write (default bench-results.json)",
    )
    add(
        "--cases",
        default=DEFAULT_CASES,
        help=f"comma-separated cases to run (default {DEFAULT_CASES}; also: cluster, processes)",
    )
    add("--warmup", type=int, default=200, help="events sent before each timed run (default 200)")
    add(
        "--latency-events",
        type=int,
        default=1000,
        help="events timed one at a time in cases 1, 2, 6 (default 1000)",
    )
    add(
        "--floor-events",
        type=int,
        default=5000,
        help="events for the broker floor's throughput (default 5000)",
    )
    add(
        "--throughput-events",
        type=int,
        default=3000,
        help="events per throughput case (default 3000)",
    )
    add(
        "--registered",
        type=int,
        default=10_000,
        help="functions registered in case 3b (default 10000)",
    )
    add(
        "--receiving",
        type=int,
        default=100,
        help="of which receive events in case 3b (default 100)",
    )
    add(
        "--cold-starts",
        type=int,
        default=10,
        help="first executions timed per cold-start mode (default 10)",
    )
    add(
        "--per-event",
        type=int,
        default=20,
        help="events run a container each in case 5 (default 20)",
    )
    add(
        "--celery-events",
        type=int,
        default=3000,
        help="tasks for Celery's throughput (default 3000)",
    )
    add(
        "--celery-pool",
        default="prefork",
        choices=("prefork", "threads", "solo"),
        help="Celery worker pool (default prefork, the fastest measured here)",
    )
    add(
        "--celery-concurrency",
        type=int,
        default=2,
        help="Celery worker concurrency (default 2, one per core)",
    )
    add(
        "--memory-events",
        type=int,
        default=100_000,
        help="events for the listener memory case (default 100000)",
    )
    add(
        "--memory-time-limit-s",
        type=float,
        default=240.0,
        help="stop the memory case after this long (default 240)",
    )
    add(
        "--time-limit-s",
        type=float,
        default=120.0,
        help="stop a throughput run after this long (default 120)",
    )
    from testing_service.bench.cluster import add_arguments as cluster_arguments

    cluster_arguments(add)
    from testing_service.bench.standalone import add_arguments as standalone_arguments

    standalone_arguments(add)

    from testing_service.bench.processes import add_arguments as processes_arguments

    processes_arguments(add)
    add(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="profile the listener with py-spy in a second run of cases 2 and 3a (default on)",
    )
    add(
        "--profile-dir",
        default="bench-profile",
        help="where py-spy's raw stacks go (default bench-profile)",
    )


def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    """Run the chosen cases, print the table, write the JSON; 1 if a case failed."""
    from testing_service.bench import profiling, report
    from testing_service.bench.cases import CASES

    names = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = [name for name in names if name not in CASES]
    if unknown:
        print(f"unknown cases {unknown}; choose from {sorted(CASES)}")
        return 2
    if args.profile and profiling.py_spy() is None:
        print("py-spy not found: running without --profile")
        args.profile = False
    # The listener's per-execution INFO lines would bury the table.
    for name in ("listener", "provisioner", "lambda_os"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    results: dict[str, Any] = {"meta": _meta(settings, args), "cases": {}}
    failed = False
    for name in names:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            results["cases"][name] = CASES[name](settings, args)
        except Exception as exc:  # one case failing must not lose the others' figures
            failed = True
            LOGGER.exception("case %s failed", name)
            results["cases"][name] = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        results["cases"][name]["wall_s"] = round(time.monotonic() - started, 1)
    results["meta"]["load_average_after"] = os.getloadavg()
    results["ratios"] = report.ratios(results["cases"])
    results["targets"] = report.targets(results["cases"], results["ratios"])
    Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(report.table(results))
    print(f"\nwrote {args.out}")
    return 1 if failed else 0


def _meta(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    options = {
        key: value for key, value in vars(args).items() if key not in Settings.__dataclass_fields__
    }
    options.pop("command", None)
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": commit or None,
        "cpus": os.cpu_count(),
        "python": host_platform.python_version(),
        "load_average_before": os.getloadavg(),
        "concurrency": settings.concurrency,
        "pool_size": settings.pool_size,
        "host_memory_mb": settings.host_memory_mb,
        "options": options,
    }
