"""The addresses a ``network: true`` container must never reach, whatever range they are in.

A worker's credentials (broker, catalogue) travel in the VM's user data, and the
platform's own services listen on the host or next to it. Blocking the private
ranges is not enough: the broker, the catalogue or the API may sit on a public
address, and the host's own public address is public too. So the egress firewall
drops, before any other rule, every address gathered here:

- the metadata service, 169.254.169.254 (it hands out the user data);
- the hosts of the broker's and the catalogue's URLs and the API's address, as the
  settings name them, resolved to IPv4 at set-up;
- every IPv4 address on the host's own interfaces, read at set-up (``ip -j addr``).

Read in a network namespace (``netns``), the host's addresses are that namespace's,
as a worker inside a VM sees them.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import subprocess
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from lambda_os.settings import Settings

LOGGER = logging.getLogger(__name__)

METADATA = "169.254.169.254"
COMMAND_TIMEOUT_S = 10


class UnresolvedHost(OSError):
    """A host the settings name has no address now, so it cannot be fenced."""


def url_hosts(url: str | None) -> list[str]:
    """The host names in a broker or MongoDB URL (a MongoDB URL may list several)."""
    if not url or "://" not in url:
        return []
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    hosts = []
    for part in netloc.split(","):
        if part.startswith("["):  # an IPv6 literal: the egress firewall is IPv4 only
            continue
        name = part.split(":", 1)[0]
        if name:
            hosts.append(name)
    return hosts


def settings_hosts(settings: Settings) -> list[str]:
    """The broker's, the catalogue's and the API's hosts, as the settings name them."""
    hosts: list[str] = []
    for url in (
        settings.amqp_url,
        settings.mongo_url,
        settings.worker_amqp_url,
        settings.worker_mongo_url,
    ):
        hosts += url_hosts(url)
    hosts.append(settings.api_host)
    return hosts


def resolve(name: str, lookup: Callable[..., list[Any]] = socket.getaddrinfo) -> list[str]:
    """The IPv4 addresses of ``name``; ``UnresolvedHost`` when it does not resolve.

    A name that does not resolve now may resolve inside a container later, so it
    fails the set-up (``network: true`` is refused, and tried again for the next
    such function) rather than leave that host unfenced. 0.0.0.0 (an API bound
    everywhere) stands for the host's own addresses, which are gathered anyway.
    """
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        try:
            infos = lookup(name, None, family=socket.AF_INET)
        except OSError as exc:
            raise UnresolvedHost(f"the platform host {name!r} does not resolve: {exc}") from exc
        return sorted({str(info[4][0]) for info in infos})
    if address.version != 4 or address.is_unspecified:
        return []
    return [str(address)]


def host_addresses(netns: str | None = None) -> list[str]:
    """Every IPv4 address on this host's (or network namespace's) interfaces."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    done = subprocess.run(
        [*prefix, "ip", "-j", "-4", "addr", "show"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=True,
    )
    return addresses_from(json.loads(done.stdout or "[]"))


def addresses_from(interfaces: Iterable[dict]) -> list[str]:
    """The IPv4 addresses in ``ip -j addr`` output."""
    found = set()
    for interface in interfaces:
        for info in interface.get("addr_info", []):
            if info.get("family") == "inet" and info.get("local"):
                found.add(info["local"])
    return sorted(found)


def platform_addresses(settings: Settings | None = None, netns: str | None = None) -> list[str]:
    """The metadata address, the platform's hosts and the host's own addresses, each once."""
    found = {METADATA, *host_addresses(netns)}
    if settings is not None:
        for name in settings_hosts(settings):
            found.update(resolve(name))
    return sorted(found, key=ipaddress.ip_address)
