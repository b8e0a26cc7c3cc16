"""Broker accounts: one RabbitMQ user per cluster host, made and removed through the
management HTTP API.

A host's worker needs the broker for three things: consume its own invocation
queue, publish its retries, deferrals and replies, and dead-letter what fails for
good. Its user is given exactly that on the platform's vhost, so a compromised host
can neither read another host's invocations nor write into any queue directly:

- configure and read: only ``^<events queue>\\.host\\.<host id>$`` (declaring that
  queue names the dead-letter exchange, for which RabbitMQ checks read on the queue
  and write on the exchange);
- write: only the platform's exchange for host outputs (``<events queue>.from-hosts``,
  whose bindings the routers own) and the dead-letter exchange; never the default
  exchange (``amq.default``), which would reach every queue by name.

Users are named ``lambda-os-host-<host id>`` and tagged with the platform, so a
controller lists (and removes) only its own platform's users, never an operator's
or another platform's on the same broker. The password is random, made here, and
travels only in the new host's user data.

The API is spoken with the standard library's urllib: four calls do not justify a
dependency, and the controller's other clients (keystoneauth) are for OpenStack.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from lambda_os.errors import PermanentError, TransientError
from listener.topology import Topology

USER_PREFIX = "lambda-os-host-"
HOST_TAG = "lambda-os-host"
PLATFORM_TAG_PREFIX = "lambda-os-platform:"
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class HostCredentials:
    """The broker user a host's worker logs in as; the password is shown only here."""

    host_id: str
    username: str
    password: str


@dataclass(frozen=True)
class HostPermissions:
    """The three RabbitMQ permission patterns of a host's user (regular expressions)."""

    configure: str
    write: str
    read: str

    @classmethod
    def for_host(cls, topology: Topology, host_id: str) -> HostPermissions:
        own = f"^{re.escape(topology.host_queue(host_id))}$"
        outputs = "|".join(
            re.escape(name)
            for name in (topology.from_hosts_exchange, topology.dead_letter_exchange)
        )
        return cls(configure=own, write=f"^({outputs})$", read=own)


class BrokerAccounts(Protocol):
    """The broker users of a platform's hosts (the controller's seam to the broker)."""

    def create_host_user(self, host_id: str) -> HostCredentials: ...

    def delete_host_user(self, host_id: str) -> None: ...

    def host_users(self) -> list[str]: ...


def username(host_id: str) -> str:
    return f"{USER_PREFIX}{host_id}"


class ManagementAccounts:
    """``BrokerAccounts`` on RabbitMQ's management API (``/api/users``, ``/api/permissions``).

    ``admin_url`` is ``http(s)://user:password@host:port``; ``vhost`` is the one the
    hosts' AMQP URL names. ``opener`` stands in for ``urllib.request.urlopen``.
    """

    def __init__(
        self,
        admin_url: str,
        vhost: str,
        topology: Topology,
        platform: str,
        opener: Callable[..., Any] = urllib.request.urlopen,
        passwords: Callable[[], str] = lambda: secrets.token_urlsafe(24),
    ) -> None:
        parts = urllib.parse.urlsplit(admin_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PermanentError("the broker admin URL must be http(s)://user:password@host:port")
        netloc = parts.netloc.rpartition("@")[2]  # host[:port], without the credentials
        self._base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        user = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._auth = f"Basic {token}"
        self._vhost = vhost
        self._topology = topology
        self._platform = platform
        self._opener = opener
        self._passwords = passwords

    def create_host_user(self, host_id: str) -> HostCredentials:
        """Make (or reset) the host's user with a new password and its permissions only."""
        name = username(host_id)
        password = self._passwords()
        tags = [HOST_TAG, PLATFORM_TAG_PREFIX + self._platform]
        self._call("PUT", f"/api/users/{_quote(name)}", {"password": password, "tags": tags})
        permissions = HostPermissions.for_host(self._topology, host_id)
        self._call(
            "PUT",
            f"/api/permissions/{_quote(self._vhost)}/{_quote(name)}",
            {
                "configure": permissions.configure,
                "write": permissions.write,
                "read": permissions.read,
            },
        )
        return HostCredentials(host_id, name, password)

    def delete_host_user(self, host_id: str) -> None:
        """Remove the host's user; one already gone is no error. Its connections close too."""
        self._call("DELETE", f"/api/users/{_quote(username(host_id))}", missing_ok=True)

    def host_users(self) -> list[str]:
        """The host ids of this platform's host users."""
        platform_tag = PLATFORM_TAG_PREFIX + self._platform
        ids = []
        for user in self._call("GET", "/api/users") or []:
            name = user.get("name", "")
            tags = user.get("tags", [])
            if isinstance(tags, str):  # older servers answer a comma-separated string
                tags = tags.split(",")
            if name.startswith(USER_PREFIX) and HOST_TAG in tags and platform_tag in tags:
                ids.append(name[len(USER_PREFIX) :])
        return sorted(ids)

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, missing_ok: bool = False
    ) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self._base + path, data=data, method=method)
        request.add_header("Authorization", self._auth)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        what = f"broker management API {method} {path}"
        try:
            with self._opener(request, timeout=TIMEOUT_S) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and missing_ok:
                return None
            detail = exc.read()[:300].decode("utf-8", "replace")
            if exc.code >= 500 or exc.code == 429:
                raise TransientError(f"{what}: {exc.code} {detail}") from exc
            raise PermanentError(f"{what}: {exc.code} {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise TransientError(f"{what}: {exc}") from exc
        return json.loads(raw) if raw else None


def _quote(segment: str) -> str:
    """One path segment: the default vhost ``/`` is ``%2F`` to the API."""
    return urllib.parse.quote(segment, safe="")


def vhost_of(amqp_url: str) -> str:
    """The vhost an AMQP URL names, as pika reads it: the path, unquoted; ``/`` when empty."""
    path = urllib.parse.urlsplit(amqp_url).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


def with_credentials(amqp_url: str, credentials: HostCredentials) -> str:
    """The AMQP URL with the host's user and password in place of the shared ones."""
    parts = urllib.parse.urlsplit(amqp_url)
    host = parts.netloc.rpartition("@")[2]
    userinfo = (
        f"{urllib.parse.quote(credentials.username, safe='')}:"
        f"{urllib.parse.quote(credentials.password, safe='')}"
    )
    return urllib.parse.urlunsplit(
        (parts.scheme, f"{userinfo}@{host}", parts.path, parts.query, parts.fragment)
    )


def connect(settings: Any, topology: Topology) -> BrokerAccounts | None:
    """The accounts for ``settings.broker_admin_url``, or None when it is unset."""
    if not settings.broker_admin_url:
        return None
    vhost = vhost_of(settings.worker_amqp_url or settings.amqp_url)
    return ManagementAccounts(settings.broker_admin_url, vhost, topology, settings.cloud_platform)
