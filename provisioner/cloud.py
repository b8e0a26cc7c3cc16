"""The cloud seam: the few things the scaling controller asks of the cloud that runs its hosts.

Each worker host is one cloud server. The controller boots servers, finds the ones
this platform made, reads one, and deletes one; nothing else of the cloud's API is
needed, so nothing else crosses this interface. The real implementation is
``provisioner.nova`` (python-novaclient on a keystoneauth1 session); the controller
receives a ``Cloud`` and never imports novaclient.

A server belongs to the platform by its metadata: ``PLATFORM_KEY`` names the
platform (so two deployments can share one project) and ``HOST_ID_KEY`` the
host id the controller gave it, which is how it finds a host again after a
restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

PLATFORM_KEY = "lambda-os:platform"
HOST_ID_KEY = "lambda-os:host-id"


@dataclass(frozen=True)
class ServerSpec:
    """What to boot. ``network`` None boots with no network at all (Nova's ``none``).

    ``metadata`` is extra metadata; the platform and host id keys are added by the
    cloud and cannot be overridden here.
    """

    name: str
    host_id: str
    image: str
    flavor: str
    network: str | None = None
    user_data: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Server:
    """One server as the cloud reports it.

    ``status`` is Nova's (``BUILD``, ``ACTIVE``, ``ERROR``, ``DELETED``, ...);
    ``fault`` its message when the status is ``ERROR``. ``addresses`` maps each
    network name to the server's addresses on it. ``user_data`` is what the server
    was booted with, or None when the cloud does not show it to this user.
    """

    id: str
    name: str
    status: str
    metadata: Mapping[str, str]
    addresses: Mapping[str, tuple[str, ...]]
    created: datetime
    user_data: str | None = None
    fault: str | None = None

    @property
    def host_id(self) -> str | None:
        """The platform's id for the host this server runs, from its metadata."""
        return self.metadata.get(HOST_ID_KEY)


class Cloud(Protocol):
    """What the scaling controller needs from the cloud.

    Failures are ``TransientError`` (unreachable, overloaded, over quota: try again
    later) or ``PermanentError`` (bad credentials, unknown image or flavor: the
    configuration must change).
    """

    def boot(self, spec: ServerSpec) -> Server:
        """Ask for a server and return it as first reported (usually ``BUILD``).

        A ``TransientError`` does not prove that no server was made (the answer may
        have been lost): look for the host id in ``servers()`` before booting it again.
        """
        ...

    def servers(self) -> list[Server]:
        """Every server of this platform, whatever its status; other servers are left out."""
        ...

    def get(self, server_id: str) -> Server | None:
        """The server, or None once it is gone."""
        ...

    def delete(self, server_id: str) -> None:
        """Ask for the server to be deleted; a server already gone is not an error."""
        ...
