"""``lambda-os hosts``: the cluster's hosts, as ``GET /v1/hosts`` gives them, as a table.

One documented API call; ``--json`` prints its answer as it came. API errors are
printed with their status and exit 1, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lambda_os.client import ApiClient, ApiError
from lambda_os.settings import Settings

COLUMNS = ("id", "server_id", "state", "memory", "slots", "warm", "heartbeat_at")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api", default=None, help="API base URL (default http://<api-host>:<api-port>)"
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")


def run_hosts(settings: Settings, args: argparse.Namespace) -> int:
    client = ApiClient(
        args.api or f"http://{settings.api_host}:{settings.api_port}", token=settings.api_token
    )
    try:
        answer = client.hosts()
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        print(host_table(answer["hosts"]))
    return 0


def host_table(hosts: list[dict[str, Any]]) -> str:
    """One line per host: id, server id, state, memory free/total (and what idle containers
    hold of the rest), slots free/total, warm, heartbeat."""
    rows = [COLUMNS]
    for host in hosts:
        rows.append(
            (
                host["id"],
                host.get("server_id") or "-",
                host["state"],
                f"{host['free_memory_mb']}/{host['memory_total_mb']} MB"
                + (f" ({host['idle_memory_mb']} idle)" if host.get("idle_memory_mb") else ""),
                f"{host['free_slots']}/{host['slots_total']}",
                ",".join(host.get("warm") or []) or "-",
                host.get("heartbeat_at") or "-",
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
