"""The ``lambda-os`` command: one entry point, one subcommand per way of running the platform.

Subcommands only parse flags into ``Settings`` and hand over to ``lambda_os.serve``
(or the benchmark); they hold no logic of their own.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lambda_os import function_cli, hosts_cli, project_user_cli, send
from lambda_os import settings as settings_module
from testing_service import bench


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lambda-os",
        description="Lambda on OpenStack: run functions in containers on events from RabbitMQ.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in (
        (
            "api",
            "serve the REST API with gunicorn (needs MONGO_URL to share the catalogue)",
        ),
        (
            "listener",
            (
                "consume events from RabbitMQ and run the matching functions "
                "(or, with --placement cluster, place them on the cluster's hosts)"
            ),
        ),
        (
            "worker",
            (
                "a cluster host: run what the routers place in this host's own queue, "
                "on the local Docker Engine, and heartbeat (needs MONGO_URL)"
            ),
        ),
        (
            "controller",
            (
                "scale the cluster through Nova: boot hosts when busy, drain and delete them "
                "when idle, replace lost servers, recording why (needs MONGO_URL and OS_CLOUD)"
            ),
        ),
        (
            "standalone",
            "API and listener in one process; the in-memory catalogue unless MONGO_URL is set",
        ),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        settings_module.add_arguments(sub)
    send_help = "publish one event to RabbitMQ and print each execution's outcome"
    sub = commands.add_parser("send", help=send_help, description=send_help)
    send.add_arguments(sub)
    settings_module.add_arguments(sub)
    hosts_help = "list the cluster's hosts through the API: state, slots, memory, warm functions"
    sub = commands.add_parser("hosts", help=hosts_help, description=hosts_help)
    hosts_cli.add_arguments(sub)
    settings_module.add_arguments(sub)
    function_help = "manage functions through the API: create, list, get, update-code, …"
    sub = commands.add_parser("function", help=function_help, description=function_help)
    function_cli.add_arguments(sub)
    project_user_help = (
        "make or remove a project's own event publisher on the broker (the operator's; "
        "needs LAMBDA_OS_BROKER_ADMIN_URL); create prints its AMQP URL once"
    )
    sub = commands.add_parser("project-user", help=project_user_help, description=project_user_help)
    project_user_cli.add_arguments(sub)
    settings_module.add_arguments(sub)
    bench_help = "measure the platform beside the broker floor, docker run per event and Celery"
    sub = commands.add_parser("bench", help=bench_help, description=bench_help)
    bench.add_arguments(sub)
    settings_module.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_module.load(args)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pika narrates every connection step at INFO; our own lines say what matters.
    logging.getLogger("pika").setLevel(max(logging.WARNING, logging.getLogger().level))
    if args.command == "send":
        return send.run_send(settings, args)
    if args.command == "function":
        return function_cli.run_function(settings, args)
    if args.command == "hosts":
        return hosts_cli.run_hosts(settings, args)
    if args.command == "project-user":
        return project_user_cli.run_project_user(settings, args)
    if args.command == "bench":
        return bench.run_bench(settings, args)
    from lambda_os import serve

    runners = {
        "api": serve.run_api,
        "listener": serve.run_listener,
        "worker": serve.run_worker,
        "controller": serve.run_controller,
        "standalone": serve.run_standalone,
    }
    return runners[args.command](settings)


if __name__ == "__main__":
    sys.exit(main())
