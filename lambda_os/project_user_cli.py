"""``lambda-os project-user create|delete <project>``: a project's own event publisher.

The operator's command (it needs ``LAMBDA_OS_BROKER_ADMIN_URL``, the broker's
administrator): ``create`` makes or resets the project's broker user
(``provisioner.project_publishers``) and prints its AMQP URL, the only time the
password is shown; ``delete`` removes it. Errors are printed and exit 1, never a
traceback.
"""

from __future__ import annotations

import argparse
import sys

from lambda_os.errors import LambdaError
from lambda_os.settings import Settings
from listener.topology import Topology
from provisioner.broker_accounts import ManagementAPI, vhost_of, with_credentials
from provisioner.project_publishers import ProjectPublishers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=("create", "delete"),
        help="create (or reset, with a new password) or delete the project's publisher user",
    )
    parser.add_argument("project", help="the project id (a function's owner)")


def run_project_user(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.broker_admin_url:
        print(
            "error: LAMBDA_OS_BROKER_ADMIN_URL (the broker's management API, "
            "http://user:password@host:15672) is needed to manage broker users",
            file=sys.stderr,
        )
        return 1
    topology = Topology.from_settings(settings)
    try:
        publishers = ProjectPublishers(
            ManagementAPI(settings.broker_admin_url),
            vhost_of(settings.amqp_url),
            topology,
            settings.cloud_platform,
        )
        if args.action == "delete":
            if publishers.delete(args.project):
                print(f"deleted the publisher of project {args.project}", file=sys.stderr)
            else:
                print(f"project {args.project} had no publisher", file=sys.stderr)
            return 0
        credentials = publishers.create(args.project)
    except LambdaError as exc:
        print(f"error: {exc.description}", file=sys.stderr)
        return 1
    print(with_credentials(settings.amqp_url, credentials))
    print(
        f"project {args.project}: publish to exchange {topology.projects_exchange!r} with "
        f"routing key '{args.project}.<anything>'; the password is shown only this once",
        file=sys.stderr,
    )
    return 0
