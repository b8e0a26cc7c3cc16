"""The host firewall that keeps ``network: true`` containers to the public internet.

Docker's own rules let a container on a bridge reach the host's listeners (the
broker's management port, the API, the engine's published ports), every other
container, the cloud's metadata address and the private networks around the
host. The platform's egress bridge is fenced in here, in two places:

- ``FORWARD`` (through ``DOCKER-USER``, the chain Docker leaves to the operator
  and never flushes): packets in from the bridge jump to ``LAMBDA-OS-EGRESS``,
  which first drops the platform's own addresses, public or not (the metadata
  service, the broker, the catalogue, the API and the host's own interfaces:
  ``platform_addresses.py``), then any destination that is not a public address: the host's own
  addresses, loopback, link-local (169.254.0.0/16, the metadata service), the
  RFC 1918 networks, carrier-grade NAT (100.64.0.0/10) and the other reserved
  ranges. Only DNS to the host's own resolvers is let through, so names still
  resolve when the resolver sits on a private address (it usually does).
- ``INPUT``: packets in from the bridge to the host itself are dropped.

Our chain is rewritten whole in one ``iptables-restore --noflush`` transaction,
so a second process (or a restart with other resolvers) never leaves it half
built or doubled; the two jumps are checked (``-C``) before they are inserted.
Two processes inserting a jump at the same moment can leave it twice, which is
harmless. The chain is one per engine: processes on one engine told of different
brokers rewrite each other's platform drops (the last one's stand), which is why a
cluster host runs one worker per engine. Nothing here sends a packet; the rules are read back with ``-S``.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

LOGGER = logging.getLogger(__name__)

CHAIN = "LAMBDA-OS-EGRESS"
COMMENT = "lambda-os egress"
# Every IPv4 range that is not the public internet (RFC 6890 and friends).
BLOCKED = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
XTABLES_WAIT_S = "10"
COMMAND_TIMEOUT_S = 30


class FirewallUnavailable(Exception):
    """The rules cannot be installed here; ``network: true`` must not run unprotected."""


class Firewall(Protocol):
    """What the provisioner needs: fence in one bridge, or say why it cannot."""

    def protect(
        self, bridge: str, resolvers: Iterable[str] = (), platform: Iterable[str] = ()
    ) -> None:
        """Install the rules for ``bridge`` (idempotent); ``FirewallUnavailable`` if it cannot.

        ``platform`` are addresses dropped before anything else, even DNS.
        """
        ...


@dataclass(frozen=True)
class Rules:
    """The rules for one bridge, as iptables arguments (pure, so they can be read and tested)."""

    chain: list[list[str]]  # the body of ``CHAIN``, in order
    jumps: list[tuple[str, list[str]]]  # (built-in or Docker chain, rule) inserted first in it


def egress_rules(bridge: str, resolvers: Iterable[str] = (), platform: Iterable[str] = ()) -> Rules:
    """The rules that keep packets from ``bridge`` to public addresses (DNS to ``resolvers`` aside).

    The ``platform`` addresses are dropped first, so no later exception (DNS to a
    resolver on the same address, say) can open a way to them.
    """
    tag = ["-m", "comment", "--comment", COMMENT]
    chain: list[list[str]] = [
        ["-d", f"{address}/32", *tag, "-j", "DROP"]
        for address in sorted(set(platform), key=ipaddress.ip_address)
    ]
    for resolver in sorted(set(resolvers)):
        for proto in ("udp", "tcp"):
            chain.append(
                ["-d", f"{resolver}/32", "-p", proto, "--dport", "53", *tag, "-j", "RETURN"]
            )
    chain.append(["-m", "addrtype", "--dst-type", "LOCAL", *tag, "-j", "DROP"])
    chain += [["-d", cidr, *tag, "-j", "DROP"] for cidr in BLOCKED]
    jumps = [
        ("DOCKER-USER", ["-i", bridge, *tag, "-j", CHAIN]),
        ("INPUT", ["-i", bridge, *tag, "-j", "DROP"]),
    ]
    return Rules(chain, jumps)


def resolvers_from(resolv_conf: str) -> list[str]:
    """The IPv4 name servers in a resolv.conf text, loopback ones left out.

    The engine replaces a loopback resolver with public ones in the containers'
    own resolv.conf, and queries the others from the container's namespace, so
    those are the ones the firewall must let DNS through to.
    """
    found: list[str] = []
    for line in resolv_conf.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                address = ipaddress.ip_address(parts[1])
            except ValueError:
                continue
            if address.version == 4 and not address.is_loopback:
                found.append(str(address))
    return found


class Iptables:
    """The ``Firewall`` on the host's ``iptables`` (legacy or nft, as Docker uses it).

    With ``netns`` the rules go into that network namespace's own tables (each
    namespace has its own netfilter state), as a VM's would: tests use it.
    """

    def __init__(self, iptables: str = "iptables", netns: str | None = None) -> None:
        self.iptables = iptables
        self.restore = f"{iptables}-restore"
        self.netns = netns
        self._prefix = ["ip", "netns", "exec", netns] if netns else []

    def protect(
        self, bridge: str, resolvers: Iterable[str] = (), platform: Iterable[str] = ()
    ) -> None:
        for tool in (self.iptables, self.restore):
            if shutil.which(tool) is None:
                raise FirewallUnavailable(f"{tool} is not installed on this host")
        platform = list(platform)
        rules = egress_rules(bridge, resolvers, platform)
        script = ["*filter", f":{CHAIN} - [0:0]"]
        script += [_line(["-A", CHAIN, *rule]) for rule in rules.chain]
        script.append("COMMIT")
        self._run([self.restore, "-w", XTABLES_WAIT_S, "--noflush"], "\n".join(script) + "\n")
        for parent, rule in rules.jumps:
            present = self._call([self.iptables, "-w", XTABLES_WAIT_S, "-C", parent, *rule])
            if present.returncode != 0:
                self._run([self.iptables, "-w", XTABLES_WAIT_S, "-I", parent, "1", *rule])
        LOGGER.info(
            "firewall for bridge %s installed in %s, DOCKER-USER and INPUT (%d platform drops)",
            bridge,
            CHAIN,
            len(set(platform)),
        )

    def _call(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [*self._prefix, *argv],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FirewallUnavailable(f"{argv[0]} could not run: {exc}") from exc

    def _run(self, argv: list[str], stdin: str | None = None) -> None:
        done = self._call(argv, stdin)
        if done.returncode != 0:
            raise FirewallUnavailable(
                f"{' '.join(argv[:4])} failed ({done.returncode}): {done.stderr.strip()[:500]}"
            )


def _line(argv: list[str]) -> str:
    """One iptables-restore line; the comment holds a space, so it is quoted."""
    return " ".join(f'"{arg}"' if " " in arg else arg for arg in argv)
