"""Project publishers: one RabbitMQ user per project, which can publish that project's
events and nothing else, made and removed through the management HTTP API.

The listener takes an event's project from where the broker let it in
(``listener.project``), so the broker must let each project in only under its own
name. A project's user ``lambda-os-project-<project>`` has, on the platform's vhost:

- configure ``^$`` and read ``^$``: it declares, binds and consumes nothing, so it
  reads no queue (another project's replies or the events queue included);
- write only ``^<projects exchange>$``: never the default exchange (``amq.default``),
  through which the platform's own messages (invocations, retries) travel and which
  reaches every queue by name;
- a topic permission on the projects exchange with write ``^<project>\\.``: RabbitMQ
  refuses (``ACCESS_REFUSED``, closing the channel) a publish whose routing key does
  not start with the user's own project and a dot; read ``^$``.

Project ids are routing-key segments here, so only ids without ``.``, ``*``, ``#``
or spaces can have a publisher (Keystone's hex ids and the lab's names qualify).
The password is random, made here, and shown once, in the AMQP URL the command prints.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lambda_os.errors import PermanentError
from listener.topology import Topology
from provisioner.broker_accounts import PLATFORM_TAG_PREFIX, ManagementAPI, quote_segment

USER_PREFIX = "lambda-os-project-"
PROJECT_TAG = "lambda-os-project"
NOTHING = "^$"
_PROJECT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class InvalidProject(PermanentError):
    """A project id that cannot be the first segment of a routing key."""

    title = "Invalid project"


@dataclass(frozen=True)
class ProjectCredentials:
    """The broker user a project publishes as; the password is shown only here."""

    project: str
    username: str
    password: str


@dataclass(frozen=True)
class ProjectPermissions:
    """A project user's permissions and its topic permission on the projects exchange."""

    configure: str
    write: str
    read: str
    exchange: str
    topic_write: str
    topic_read: str

    @classmethod
    def for_project(cls, topology: Topology, project: str) -> ProjectPermissions:
        check_project(project)
        exchange = topology.projects_exchange
        return cls(
            configure=NOTHING,
            write=f"^{re.escape(exchange)}$",
            read=NOTHING,
            exchange=exchange,
            topic_write=f"^{re.escape(project)}\\.",
            topic_read=NOTHING,
        )


def check_project(project: str) -> str:
    """``project`` if it can have a publisher, else ``InvalidProject`` saying why."""
    if not _PROJECT_ID.fullmatch(project):
        raise InvalidProject(
            f"project id {project!r} cannot name a publisher: it must be 1 to 64 letters, "
            "digits, '-' or '_' (it is the first segment of the events' routing key)"
        )
    return project


def username(project: str) -> str:
    return f"{USER_PREFIX}{project}"


class ProjectPublishers:
    """Make and remove projects' publisher users on the platform's vhost."""

    def __init__(
        self,
        api: ManagementAPI,
        vhost: str,
        topology: Topology,
        platform: str,
        passwords: Callable[[], str] = lambda: secrets.token_urlsafe(24),
    ) -> None:
        self._api = api
        self._vhost = vhost
        self._topology = topology
        self._platform = platform
        self._passwords = passwords

    def create(self, project: str) -> ProjectCredentials:
        """Make (or reset) the project's user with a new password and its permissions only.

        The permissions are set before anything is returned, and a user made again
        gets a new password: the old one stops working.
        """
        permissions = ProjectPermissions.for_project(self._topology, project)
        name = username(project)
        self._existing(name)
        password = self._passwords()
        tags = [PROJECT_TAG, PLATFORM_TAG_PREFIX + self._platform]
        self._api.call(
            "PUT", f"/api/users/{quote_segment(name)}", {"password": password, "tags": tags}
        )
        where = f"{quote_segment(self._vhost)}/{quote_segment(name)}"
        self._api.call(
            "PUT",
            f"/api/permissions/{where}",
            {
                "configure": permissions.configure,
                "write": permissions.write,
                "read": permissions.read,
            },
        )
        self._api.call(
            "PUT",
            f"/api/topic-permissions/{where}",
            {
                "exchange": permissions.exchange,
                "write": permissions.topic_write,
                "read": permissions.topic_read,
            },
        )
        return ProjectCredentials(project, name, password)

    def delete(self, project: str) -> bool:
        """Remove the project's user (its connections close); False if there was none."""
        check_project(project)
        name = username(project)
        if self._existing(name) is None:
            return False
        self._api.call("DELETE", f"/api/users/{quote_segment(name)}", missing_ok=True)
        return True

    def _existing(self, name: str) -> dict[str, Any] | None:
        """The user ``name`` if it exists; ``PermanentError`` if it is not a project publisher.

        The name is ours by convention only: a user an operator made under it is
        left alone rather than given new permissions or removed.
        """
        user = self._api.call("GET", f"/api/users/{quote_segment(name)}", missing_ok=True)
        if user is None:
            return None
        tags = user.get("tags", [])
        if isinstance(tags, str):  # older servers answer a comma-separated string
            tags = tags.split(",")
        if PROJECT_TAG not in tags:
            raise PermanentError(
                f"broker user {name!r} exists and is not a project publisher; left alone"
            )
        return user
