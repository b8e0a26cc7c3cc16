"""The platform's own network for ``network: true`` functions: out to the internet, nowhere else.

Docker's default bridge lets containers talk to each other and to the host. The
egress network is a bridge of our own, ``lambda-os-egress`` on the interface
``lambda-os0``, with inter-container traffic off (``enable_icc=false``), and the
host firewall (``firewall.py``) fenced around that interface. It is created once
per engine and shared by every platform process on it, so it is never removed:
a sibling's containers may be on it.

Nothing runs unprotected: when the network or its rules cannot be put in place
(no iptables, an engine on another machine whose firewall this process cannot
touch, a network of that name made by someone else with other options),
``ensure`` raises ``PermanentError`` with the reason, and the provisioner refuses
``network: true`` functions with it.

The two engine calls (inspect and create a network) go through ``DockerHost``'s
client under its ``engine_errors``, so docker's exceptions are converted as
everywhere else; they sit here rather than in ``host.py`` to keep the whole
egress set-up in one place.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import docker.errors

from lambda_os.errors import PermanentError, TransientError
from provisioner.docker.firewall import Firewall, FirewallUnavailable, resolvers_from
from provisioner.docker.host import PLATFORM_LABEL, DockerHost, engine_errors
from provisioner.docker.platform_addresses import platform_addresses

LOGGER = logging.getLogger(__name__)

NETWORK = "lambda-os-egress"
BRIDGE = "lambda-os0"  # at most 15 characters, a Linux interface name
OPTIONS = {
    "com.docker.network.bridge.name": BRIDGE,
    "com.docker.network.bridge.enable_icc": "false",
    "com.docker.network.bridge.enable_ip_masquerade": "true",
}
RESOLV_CONF = Path("/etc/resolv.conf")


def network_problem(attrs: dict[str, Any]) -> str | None:
    """Why an existing network of our name will not do, or None if it is ours as we make it."""
    if attrs.get("Driver") != "bridge":
        return f"its driver is {attrs.get('Driver')!r}, not 'bridge'"
    options = attrs.get("Options") or {}
    for key, wanted in OPTIONS.items():
        if options.get(key) != wanted:
            return f"its option {key} is {options.get(key)!r}, not {wanted!r}"
    return None


class EgressNetwork:
    """Makes sure the egress network and its firewall exist; thread-safe, done once when it works."""

    def __init__(
        self,
        host: DockerHost,
        firewall: Firewall,
        *,
        engine_is_local: bool = True,
        resolv_conf: Path = RESOLV_CONF,
        platform: Callable[[], Iterable[str]] = platform_addresses,
    ) -> None:
        self.host = host
        self.firewall = firewall
        self.engine_is_local = engine_is_local
        self.resolv_conf = resolv_conf
        # Gathered at each set-up, so an address the host gained since is fenced too.
        self.platform = platform
        self._lock = threading.Lock()
        self._ready = False

    def ensure(self, recheck: bool = False) -> str:
        """The network's name once it and its rules are in place; ``PermanentError`` if they cannot be.

        ``recheck`` looks again (the rules are idempotent; ~30 ms) even when done
        before: before a new container joins, so a network removed or rules flushed
        since (``iptables -F``, a firewall reload) are put back, never skipped.
        """
        with self._lock:
            if self._ready and not recheck:
                return NETWORK
            if not self.engine_is_local:
                raise PermanentError(
                    "network: true functions are refused: the Docker Engine is on another "
                    "machine, whose firewall this process cannot set"
                )
            self._ready = False
            self._network()
            try:
                self.firewall.protect(BRIDGE, self._resolvers(), self._platform())
            except FirewallUnavailable as exc:
                raise PermanentError(
                    f"network: true functions are refused: the firewall that keeps them off "
                    f"the host and private networks cannot be installed: {exc}"
                ) from exc
            self._ready = True
            return NETWORK

    def _platform(self) -> list[str]:
        """The addresses to drop first; unreadable, the firewall is not installed at all."""
        try:
            return list(self.platform())
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise FirewallUnavailable(f"the platform's addresses cannot be read: {exc}") from exc

    def _resolvers(self) -> list[str]:
        try:
            return resolvers_from(self.resolv_conf.read_text())
        except OSError:
            return []

    def _network(self) -> None:
        """Create the network if it is not there; refuse one of our name made otherwise."""
        client = self.host.client
        attrs = self._inspect(client)
        if attrs is None:
            try:
                with engine_errors(f"create network {NETWORK}"):
                    client.networks.create(
                        NETWORK,
                        driver="bridge",
                        options=OPTIONS,
                        labels={PLATFORM_LABEL: "1"},
                        check_duplicate=True,
                    )
                LOGGER.info("created network %s on bridge %s", NETWORK, BRIDGE)
            except PermanentError as exc:
                # 409: a sibling process created it a moment ago.
                cause = exc.__cause__
                if not (isinstance(cause, docker.errors.APIError) and cause.status_code == 409):
                    raise
            attrs = self._inspect(client)
            if attrs is None:
                raise TransientError(f"network {NETWORK} vanished right after it was created")
        problem = network_problem(attrs)
        if problem is not None:
            raise PermanentError(
                f"network: true functions are refused: the network {NETWORK} exists but "
                f"{problem}; remove it (docker network rm {NETWORK}) to have it made again"
            )

    @staticmethod
    def _inspect(client: Any) -> dict[str, Any] | None:
        try:
            with engine_errors(f"inspect network {NETWORK}"):
                return client.api.inspect_network(NETWORK)
        except PermanentError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                return None
            raise
