"""``lambda-os function …``: manage functions through the API from the command line.

A thin layer over ``lambda_os.client.ApiClient``: every action is one documented
API call, and prints the API's JSON answer. API errors are printed with their
status and exit 1, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lambda_os.client import ApiClient, ApiError
from lambda_os.settings import Settings

CONFIG_FLAGS = (
    ("--runtime", str, "runtime, from GET /v1/runtimes (default python3.11)"),
    ("--handler", str, "module.function to call (default main.handler)"),
    ("--memory-mb", int, "memory limit, 64-4096 (default 128)"),
    ("--timeout-s", int, "time limit, 1-900 (default 30)"),
    ("--description", str, "free text"),
    ("--max-retries", int, "retries after a failed execution (default 2)"),
    ("--concurrency", int, "executions at once (default 10)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api", default=None, help="API base URL (default http://<api-host>:<api-port>)"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="upload a new function (a .py file or a .zip)")
    create.add_argument("--name", required=True, help="1-64 of [A-Za-z0-9_-]")
    create.add_argument("--code", required=True, type=Path, help="the .py file or .zip package")
    create.add_argument("--event-source", required=True, help="events' event_source to run on")
    create.add_argument("--event-type", required=True, help="events' event_type to run on")
    for flag, kind, help_text in CONFIG_FLAGS:
        create.add_argument(flag, type=kind, help=help_text)
    create.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="environment variable"
    )
    create.add_argument("--network", action="store_true", help="give the container a network")

    listing = actions.add_parser("list", help="list functions")
    for flag in ("--name", "--event-source", "--event-type"):
        listing.add_argument(flag, help=f"only functions with this {flag[2:]}")

    for action, help_text in (
        ("get", "show one function"),
        ("delete", "delete a function and its code"),
        ("executions", "list a function's executions"),
    ):
        actions.add_parser(action, help=help_text).add_argument("id", help="function id")

    update = actions.add_parser("update-code", help="upload new code: the version grows by 1")
    update.add_argument("id", help="function id")
    update.add_argument("code", type=Path, help="the .py file or .zip package")

    download = actions.add_parser("download", help="the code, byte for byte as uploaded")
    download.add_argument("id", help="function id")
    download.add_argument("-o", "--output", type=Path, required=True, help="file to write")

    invoke = actions.add_parser("invoke", help="run the function now on DATA; print the record")
    invoke.add_argument("id", help="function id")
    invoke.add_argument("--data", default="null", help="the event data, as JSON")


def run_function(settings: Settings, args: argparse.Namespace) -> int:
    client = ApiClient(
        args.api or f"http://{settings.api_host}:{settings.api_port}", token=settings.api_token
    )
    try:
        result = _dispatch(client, args)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _dispatch(client: ApiClient, args: argparse.Namespace) -> Any:
    if args.action == "create":
        fields: dict[str, Any] = {
            "name": args.name,
            "event_source": args.event_source,
            "event_type": args.event_type,
        }
        for flag, _kind, _help in CONFIG_FLAGS:
            value = getattr(args, flag[2:].replace("-", "_"))
            if value is not None:
                fields[flag[2:].replace("-", "_")] = value
        if args.env:
            fields["environment"] = dict(_key_value(item) for item in args.env)
        if args.network:
            fields["network"] = True
        return client.upload(fields, args.code.name, args.code.read_bytes())
    if args.action == "list":
        filters = {"name": args.name, "event_source": args.event_source}
        return client.functions(**filters, event_type=args.event_type)
    if args.action == "get":
        return client.function(args.id)
    if args.action == "delete":
        client.delete(args.id)
        print(f"deleted {args.id}", file=sys.stderr)
        return None
    if args.action == "executions":
        return client.executions(args.id)
    if args.action == "update-code":
        return client.update_code(args.id, args.code.name, args.code.read_bytes())
    if args.action == "download":
        data = client.code(args.id)
        args.output.write_bytes(data)
        print(f"wrote {len(data)} bytes to {args.output}", file=sys.stderr)
        return None
    if args.action == "invoke":
        return client.invoke(args.id, json.loads(args.data))
    raise ValueError(f"unknown action {args.action!r}")


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--env takes KEY=VALUE, not {item!r}")
    return key, value
