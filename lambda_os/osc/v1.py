"""``openstack function create|list|show|delete|invoke`` and
``openstack function execution list|show|log``.

Each command is one documented API call through ``ApiClient``; an API error ends
the command with its message (osc-lib prints it, with no traceback).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from osc_lib import exceptions
from osc_lib.command import command

from lambda_os.client import ApiClient, ApiError

FUNCTION_COLUMNS = ("id", "name", "runtime", "event_source", "event_type", "version", "owner")
EXECUTION_COLUMNS = ("id", "function_id", "status", "duration_ms", "created_at")


def _client(cmd: command.Command) -> ApiClient:
    return cmd.app.client_manager.function


def _call(action: Any, *args: Any) -> Any:
    try:
        return action(*args)
    except ApiError as exc:
        raise exceptions.CommandError(str(exc)) from exc


def _show(record: dict[str, Any]) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    keys = tuple(sorted(record))
    values = tuple(
        json.dumps(record[k]) if isinstance(record[k], (dict, list)) else record[k] for k in keys
    )
    return keys, values


class CreateFunction(command.ShowOne):
    """Upload a function: its code (a .py file or a .zip) and the events it runs on."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("name", help="1-64 of [A-Za-z0-9_-]")
        parser.add_argument("--code", required=True, type=Path, help=".py file or .zip")
        parser.add_argument("--event-source", required=True)
        parser.add_argument("--event-type", required=True)
        parser.add_argument("--runtime", default="python3.11")
        parser.add_argument("--handler", default="main.handler")
        parser.add_argument("--memory-mb", type=int)
        parser.add_argument("--timeout-s", type=int)
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        fields = {
            "name": args.name,
            "runtime": args.runtime,
            "handler": args.handler,
            "event_source": args.event_source,
            "event_type": args.event_type,
        }
        for name in ("memory_mb", "timeout_s"):
            if getattr(args, name) is not None:
                fields[name] = getattr(args, name)
        try:
            code = args.code.read_bytes()
        except OSError as exc:
            raise exceptions.CommandError(f"cannot read {args.code}: {exc}") from exc
        return _show(_call(_client(self).upload, fields, args.code.name, code))


class ListFunctions(command.Lister):
    """The functions of the token's project."""

    def take_action(self, args: argparse.Namespace) -> Any:
        functions = _call(_client(self).functions)
        return FUNCTION_COLUMNS, [tuple(f.get(c) for c in FUNCTION_COLUMNS) for f in functions]


class ShowFunction(command.ShowOne):
    """One function's configuration."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", help="function id")
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        return _show(_call(_client(self).function, args.id))


class DeleteFunction(command.Command):
    """Delete a function and its code."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", nargs="+", help="function id(s)")
        return parser

    def take_action(self, args: argparse.Namespace) -> None:
        for function_id in args.id:
            _call(_client(self).delete, function_id)


class InvokeFunction(command.ShowOne):
    """Run a function now on the given event data and show its execution."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", help="function id")
        parser.add_argument("--data", default="null", help="the event data, as JSON")
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        try:
            data = json.loads(args.data)
        except ValueError as exc:
            raise exceptions.CommandError(f"--data is not JSON: {exc}") from exc
        return _show(_call(_client(self).invoke, args.id, data))


class ListExecutions(command.Lister):
    """Executions of the token's project, or of one function."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--function", default=None, help="only this function's")
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        records = _call(_client(self).executions, args.function)
        return EXECUTION_COLUMNS, [tuple(r.get(c) for c in EXECUTION_COLUMNS) for r in records]


class ShowExecution(command.ShowOne):
    """One execution: its event, outcome and timing."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", help="execution id")
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        return _show(_call(_client(self).execution, args.id))


class ExecutionLog(command.Command):
    """An execution's stdout and stderr."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", help="execution id")
        return parser

    def take_action(self, args: argparse.Namespace) -> None:
        self.app.stdout.write(_call(_client(self).logs, args.id))
